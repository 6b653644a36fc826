"""Key lifecycle: create roots, agencies and brokers; certify; rotate; revoke; prune.

Every operation is a pure function from identities (and `now`, Unix seconds) to new identities
and signed documents; the caller persists the returned identity *before* publishing what was
issued, so a serial or revocation-list number is never handed out twice.

Invariants:
- A root certifies only agencies of its own country (name constraint), only for roles named
  explicitly, and never beyond its own validity. Serials and list numbers only go up.
- A certification request's proof of possession is verified before anything is signed.
- A certificate is imported only if it certifies this identity's own key and verifies against
  the pinned root as of `now`.
- Rotation adds a key and keeps every old one; only `prune_encryption_keys` removes keys, and
  only those whose validity ended at least the retention time ago.
- A revocation list holds every entry the root ever issued.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import nacl.signing

from keys.identity import AgencyIdentity, BrokerIdentity, HeldEncryptionKey, RootIdentity
from keys.request import CertificationRequest, check_agency_id, check_name, create_request, parse_request
from protocol import codec
from protocol.certificate import (
    COUNTRY,
    MAX_REVOCATIONS,
    AgencyCertificate,
    EncryptionKey,
    Revocation,
    RevocationList,
    Role,
    RootCertificate,
    TrustStore,
    country_of,
)
from protocol.errors import CertificateExpired, Conflict, InvalidField, UntrustedCertificate
from protocol.primitives import KEY_ID_BYTES, Random, system_random, x25519_public

DAY_SECONDS = 86400
DEFAULT_ROOT_DAYS = 3650
DEFAULT_AGENCY_DAYS = 730
DEFAULT_ENCRYPTION_DAYS = 90
MAX_VALID_DAYS = 36500
MAX_REASON = 200


def _days(valid_days: int, field: str) -> int:
    if isinstance(valid_days, bool) or not 1 <= valid_days <= MAX_VALID_DAYS:
        raise InvalidField(field, f"a whole number of days from 1 to {MAX_VALID_DAYS}")
    return valid_days * DAY_SECONDS


def _signing_key(rng: Random) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(rng(32))


# --- national root ----------------------------------------------------------------------------


def create_root(
    country: str, name: str, now: int, valid_days: int = DEFAULT_ROOT_DAYS, *, rng: Random = system_random
) -> RootIdentity:
    """A new national root key with its self-signed certificate, valid from `now`."""
    if not COUNTRY.fullmatch(country):
        raise InvalidField("country", "a two-letter country code in capitals, such as TH or LA")
    key = _signing_key(rng)
    cert = RootCertificate.create(
        key,
        country=country,
        name=check_name(name),
        not_before=now,
        not_after=now + _days(valid_days, "valid_days"),
    )
    return RootIdentity(signing_seed=bytes(key), certificate=cert, next_serial=1, next_crl_number=1)


def certify(
    root: RootIdentity,
    request: bytes | CertificationRequest,
    roles: Iterable[Role],
    now: int,
    valid_days: int = DEFAULT_AGENCY_DAYS,
) -> tuple[RootIdentity, AgencyCertificate]:
    """Certify the key in a verified request. Returns the root with its serial bumped (save it
    first) and the certificate to hand back to the agency."""
    req = request if isinstance(request, CertificationRequest) else parse_request(request)
    role_set = frozenset(Role(r) for r in roles)
    if not role_set:
        raise InvalidField("role", "at least one role (agency, auditor, operator or broker)")
    if country_of(req.agency_id) != root.country:
        raise InvalidField(
            "agency id",
            f"an id starting with {root.country}-: the {root.country} root certifies only its own "
            f"country's agencies, and {req.agency_id} belongs to {country_of(req.agency_id)}",
        )
    not_after = now + _days(valid_days, "valid_days")
    root_cert = root.certificate
    if not root_cert.not_before <= now < root_cert.not_after:
        raise CertificateExpired(f"the {root.country} root is not valid now; create a new root.")
    if not_after > root_cert.not_after:
        raise InvalidField(
            "valid_days",
            f"at most {(root_cert.not_after - now) // DAY_SECONDS} days: the root expires sooner",
        )
    cert = AgencyCertificate.issue(
        root.signing_key,
        root_cert,
        serial=root.next_serial,
        agency_id=req.agency_id,
        name=req.name,
        roles=role_set,
        signing_key=req.public_key,
        not_before=now,
        not_after=not_after,
    )
    return replace(root, next_serial=root.next_serial + 1), cert


def issue_revocation_list(root: RootIdentity, now: int) -> tuple[RootIdentity, RevocationList]:
    """A new revocation list (next number) with every entry issued so far."""
    crl = RevocationList.issue(
        root.signing_key,
        root.certificate,
        number=root.next_crl_number,
        issued_at=now,
        entries=root.revocations,
    )
    return replace(root, next_crl_number=root.next_crl_number + 1), crl


def revoke(
    root: RootIdentity, key_id: bytes, revoked_at: int, reason: str, now: int
) -> tuple[RootIdentity, RevocationList]:
    """Revoke a signing or encryption key from `revoked_at` on; returns the root with the entry
    and list number recorded (save it first) and the new list to publish."""
    if len(key_id) != KEY_ID_BYTES:
        raise InvalidField("key id", f"{KEY_ID_BYTES} bytes ({2 * KEY_ID_BYTES} hex digits)")
    reason = codec.nfc(reason).strip()
    if not reason or len(reason) > MAX_REASON:
        raise InvalidField("reason", f"1 to {MAX_REASON} characters")
    if revoked_at < 0:
        raise InvalidField("revoked_at", "a Unix time")
    for entry in root.revocations:
        if entry.key_id == key_id:
            raise Conflict(f"key {key_id.hex()} is already revoked from {entry.revoked_at}.")
    if len(root.revocations) >= MAX_REVOCATIONS:
        raise InvalidField("revocations", f"at most {MAX_REVOCATIONS} per root")
    entries = tuple(
        sorted((*root.revocations, Revocation(key_id, revoked_at, reason)), key=lambda e: e.key_id)
    )
    return issue_revocation_list(replace(root, revocations=entries), now)


# --- agency -----------------------------------------------------------------------------------


def _new_encryption_key(
    signing_key: nacl.signing.SigningKey, agency_id: str, now: int, valid_days: int, rng: Random
) -> HeldEncryptionKey:
    secret = rng(32)
    statement = EncryptionKey.issue(
        signing_key,
        agency_id=agency_id,
        public_key=x25519_public(secret),
        not_before=now,
        not_after=now + _days(valid_days, "valid_days"),
    )
    return HeldEncryptionKey(secret_key=secret, statement=statement)


def create_agency(
    agency_id: str,
    name: str,
    now: int,
    enc_valid_days: int = DEFAULT_ENCRYPTION_DAYS,
    *,
    rng: Random = system_random,
) -> AgencyIdentity:
    """A new agency: a signing key (to be certified) and a first encryption key signed by it."""
    check_agency_id(agency_id)
    key = _signing_key(rng)
    first = _new_encryption_key(key, agency_id, now, enc_valid_days, rng)
    return AgencyIdentity(
        agency_id=agency_id,
        name=check_name(name),
        signing_seed=bytes(key),
        certificate=None,
        encryption_keys=(first,),
    )


def agency_request(agency: AgencyIdentity) -> bytes:
    """The certification request for the agency's signing key."""
    return create_request(agency.signing_key, agency_id=agency.agency_id, name=agency.name)


def _verified_for(
    cert_bytes: bytes, holder_id: str, public_key: bytes, root: RootCertificate, now: int
) -> AgencyCertificate:
    cert = AgencyCertificate.parse(cert_bytes)
    if cert.agency_id != holder_id or cert.signing_key != public_key:
        raise InvalidField(
            "certificate",
            f"a certificate for {holder_id}'s own signing key; this one certifies {cert.agency_id} "
            f"key {cert.key_id.hex()}",
        )
    return TrustStore([root]).verify_agency(cert, now)


def import_certificate(
    agency: AgencyIdentity, cert_bytes: bytes, root: RootCertificate, now: int
) -> AgencyIdentity:
    """Store a certificate issued for this agency, after verifying it against the pinned root."""
    cert = _verified_for(cert_bytes, agency.agency_id, agency.public_key, root, now)
    return replace(agency, certificate=cert)


def rotate_encryption_key(
    agency: AgencyIdentity,
    now: int,
    valid_days: int = DEFAULT_ENCRYPTION_DAYS,
    *,
    rng: Random = system_random,
) -> AgencyIdentity:
    """Add a new encryption key valid from `now`; it becomes the current one at once. Old keys
    stay (old envelopes still open, and senders holding the old statement may still use it until
    it expires: that remaining validity is the overlap)."""
    new = _new_encryption_key(agency.signing_key, agency.agency_id, now, valid_days, rng)
    return replace(agency, encryption_keys=(*agency.encryption_keys, new))


def prune_encryption_keys(agency: AgencyIdentity, now: int, retention_seconds: int) -> AgencyIdentity:
    """Drop encryption keys that expired at least `retention_seconds` before `now`. Envelopes
    sealed to a dropped key can no longer be opened: run only after their retention ended."""
    if retention_seconds < 0:
        raise InvalidField("retention", "zero or more seconds")
    kept = tuple(k for k in agency.encryption_keys if k.not_after + retention_seconds > now)
    return replace(agency, encryption_keys=kept)


# --- broker -----------------------------------------------------------------------------------


def create_broker(broker_id: str, name: str, *, rng: Random = system_random) -> BrokerIdentity:
    """A new broker: a receipt-signing key (to be certified with role broker) and a separate
    audit checkpoint key."""
    check_agency_id(broker_id)
    receipt = _signing_key(rng)
    checkpoint = _signing_key(rng)
    return BrokerIdentity(
        broker_id=broker_id,
        name=check_name(name),
        receipt_seed=bytes(receipt),
        checkpoint_seed=bytes(checkpoint),
    )


def broker_request(broker: BrokerIdentity) -> bytes:
    """The certification request for the broker's receipt key (certify it with role broker)."""
    return create_request(broker.receipt_key, agency_id=broker.broker_id, name=broker.name)


def import_broker_certificate(
    broker: BrokerIdentity, cert_bytes: bytes, root: RootCertificate, now: int
) -> BrokerIdentity:
    """Store the broker's receipt-key certificate; it must carry the broker role."""
    cert = _verified_for(cert_bytes, broker.broker_id, broker.public_key, root, now)
    if not cert.has_role(Role.BROKER):
        raise UntrustedCertificate(
            "this certificate lacks the broker role; ask the national authority to certify the "
            "broker's request with --role broker.",
            reason="broker certificate without the broker role",
        )
    return replace(broker, certificate=cert)

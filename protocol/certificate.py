"""Certificates, encryption-key statements and revocation lists, and the trust decisions on them.

Chain: a national root (self-signed, pinned out of band by fingerprint) certifies an agency's
long-lived Ed25519 signing key; the agency's signing key in turn signs its current X25519
encryption keys, so routine rotation needs no root ceremony. A root certifies only its own
country's agencies. A root-signed revocation list names revoked key ids and the time from
which they are refused.

Every signed structure travels as `[bin body, bin signature]`: the body's exact bytes are
verified and kept, never re-serialised. Verification takes `at` (the time the decision is
made for) and raises a specific `UntrustedCertificate` subclass; nothing returns a bool.

A certificate's or key statement's `key_id` is computed once, when the object is made (it is a
field outside `__init__`, `__eq__` and `repr`), not on every access: trust decisions, envelopes
and signed requests read it many times per operation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import nacl.signing

from protocol import codec
from protocol.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    KeyRevoked,
    MalformedInput,
    UnsupportedVersion,
    UntrustedCertificate,
    VerificationError,
)
from protocol.primitives import KEY_ID_BYTES, PUBLIC_KEY_BYTES, SIGNATURE_BYTES, key_id, sign, verify


def _set_key_id(obj: object, public_key: bytes) -> None:
    """Fill a frozen certificate's `key_id` field once, when it is made (see the classes)."""
    object.__setattr__(obj, "key_id", key_id(public_key))


COUNTRY = re.compile(r"[A-Z]{2}")
AGENCY_ID = re.compile(r"[A-Z]{2}-[A-Z0-9](?:[A-Z0-9-]{0,62}[A-Z0-9])?")
MAX_NAME = 200
MAX_REVOCATIONS = 4096
VERSION = 1

CTX_ROOT = b"casebridge/root-certificate-v1\x00"
CTX_AGENCY = b"casebridge/agency-certificate-v1\x00"
CTX_ENCRYPTION_KEY = b"casebridge/encryption-key-v1\x00"
CTX_REVOCATION = b"casebridge/revocation-list-v1\x00"

SIGNED_LIMITS = codec.Limits(max_bytes=1 << 18, max_array_len=MAX_REVOCATIONS)


class Role(StrEnum):
    """What a certificate lets its holder do at the broker."""

    AGENCY = "agency"  # send referrals, read its own inbox
    AUDITOR = "auditor"  # read the audit log
    OPERATOR = "operator"  # register certificates and revocations, operate the broker
    BROKER = "broker"  # sign accepted and expired receipts and audit checkpoints


def country_of(agency_id: str) -> str:
    return agency_id[:2]


def split_signed(data: bytes, what: str, limits: codec.Limits = SIGNED_LIMITS) -> tuple[bytes, bytes]:
    """Split `[bin body, bin signature]`; raises `MalformedInput`."""
    outer = codec.array(codec.decode(data, limits=limits), what, 2)
    return codec.bin_(outer[0], f"{what}.body"), codec.bin_(outer[1], f"{what}.signature", SIGNATURE_BYTES)


def join_signed(body: bytes, signature: bytes) -> bytes:
    return codec.encode([body, signature])


def _header(items: list[object], magic: str, what: str) -> None:
    codec.literal(items[0], f"{what}.magic", magic)
    if codec.int_(items[1], f"{what}.version") != VERSION:
        raise UnsupportedVersion(reason=f"{what} version {items[1]}")


def _validity(not_before: int, not_after: int, what: str) -> None:
    if not_after <= not_before:
        raise MalformedInput(reason=f"{what}: not_after must be later than not_before")


def _check_window(not_before: int, not_after: int, at: int, what: str) -> None:
    if at < not_before:
        raise CertificateNotYetValid(reason=f"{what} valid from {not_before}, checked at {at}")
    if at >= not_after:
        raise CertificateExpired(reason=f"{what} expired at {not_after}, checked at {at}")


# --- national root --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RootCertificate:
    country: str
    name: str
    public_key: bytes
    not_before: int
    not_after: int
    raw: bytes = field(repr=False)
    key_id: bytes = field(init=False, repr=False, compare=False)
    """The 16-byte id of `public_key` (`protocol.primitives.key_id`)."""

    def __post_init__(self) -> None:
        _set_key_id(self, self.public_key)

    @classmethod
    def create(
        cls, signing_key: nacl.signing.SigningKey, *, country: str, name: str, not_before: int, not_after: int
    ) -> RootCertificate:
        body = codec.encode(
            [
                "CB-ROOT",
                VERSION,
                country,
                codec.nfc(name),
                bytes(signing_key.verify_key),
                not_before,
                not_after,
            ]
        )
        return cls.parse(join_signed(body, sign(signing_key, CTX_ROOT, body)))

    @classmethod
    def parse(cls, data: bytes) -> RootCertificate:
        """Parse and check the self-signature. Trust comes only from pinning its fingerprint."""
        body, signature = split_signed(data, "root certificate")
        items = codec.array(codec.decode(body), "root certificate", 7)
        _header(items, "CB-ROOT", "root certificate")
        cert = cls(
            country=codec.str_(items[2], "country", pattern=COUNTRY),
            name=codec.str_(items[3], "name", max_len=MAX_NAME),
            public_key=codec.bin_(items[4], "public_key", PUBLIC_KEY_BYTES),
            not_before=codec.int_(items[5], "not_before"),
            not_after=codec.int_(items[6], "not_after"),
            raw=bytes(data),
        )
        _validity(cert.not_before, cert.not_after, "root certificate")
        verify(cert.public_key, CTX_ROOT, body, signature, what="root certificate")
        return cert


# --- agency certificate ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgencyCertificate:
    serial: int
    agency_id: str
    country: str
    name: str
    roles: tuple[Role, ...]
    signing_key: bytes
    issuer_key_id: bytes
    not_before: int
    not_after: int
    raw: bytes = field(repr=False)
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    key_id: bytes = field(init=False, repr=False, compare=False)
    """The 16-byte id of `signing_key` (`protocol.primitives.key_id`)."""

    def __post_init__(self) -> None:
        _set_key_id(self, self.signing_key)

    def has_role(self, role: Role) -> bool:
        return role in self.roles

    @classmethod
    def issue(
        cls,
        root_key: nacl.signing.SigningKey,
        root: RootCertificate,
        *,
        serial: int,
        agency_id: str,
        name: str,
        roles: Iterable[Role],
        signing_key: bytes,
        not_before: int,
        not_after: int,
    ) -> AgencyCertificate:
        """Sign an agency certificate with a national root key (the root's own country only)."""
        if bytes(root_key.verify_key) != root.public_key:
            raise ValueError("the signing key is not this root's key")
        body = codec.encode(
            [
                "CB-AGENCY",
                VERSION,
                serial,
                agency_id,
                root.country,
                codec.nfc(name),
                sorted({str(r) for r in roles}),
                signing_key,
                root.key_id,
                not_before,
                not_after,
            ]
        )
        cert = cls.parse(join_signed(body, sign(root_key, CTX_AGENCY, body)))
        if cert.country != country_of(cert.agency_id):
            raise UntrustedCertificate(reason="agency id is not in the root's country")
        return cert

    @classmethod
    def parse(cls, data: bytes) -> AgencyCertificate:
        """Parse only: the signature is checked by `TrustStore.verify_agency`."""
        body, signature = split_signed(data, "agency certificate")
        items = codec.array(codec.decode(body), "agency certificate", 11)
        _header(items, "CB-AGENCY", "agency certificate")
        roles_raw = codec.array(items[6], "roles", max_len=len(Role))
        codec.sorted_unique(roles_raw, "roles")
        try:
            roles = tuple(Role(codec.str_(r, "roles")) for r in roles_raw)
        except ValueError as e:
            raise MalformedInput(reason=f"roles: unknown role in {roles_raw!r}") from e
        cert = cls(
            serial=codec.int_(items[2], "serial"),
            agency_id=codec.str_(items[3], "agency_id", pattern=AGENCY_ID),
            country=codec.str_(items[4], "country", pattern=COUNTRY),
            name=codec.str_(items[5], "name", max_len=MAX_NAME),
            roles=roles,
            signing_key=codec.bin_(items[7], "signing_key", PUBLIC_KEY_BYTES),
            issuer_key_id=codec.bin_(items[8], "issuer_key_id", KEY_ID_BYTES),
            not_before=codec.int_(items[9], "not_before"),
            not_after=codec.int_(items[10], "not_after"),
            raw=bytes(data),
            body=body,
            signature=signature,
        )
        _validity(cert.not_before, cert.not_after, "agency certificate")
        return cert


# --- encryption key statement ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncryptionKey:
    """An agency's X25519 public key, signed by the agency's certified signing key."""

    agency_id: str
    signer_key_id: bytes
    public_key: bytes
    not_before: int
    not_after: int
    raw: bytes = field(repr=False)
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    key_id: bytes = field(init=False, repr=False, compare=False)
    """The 16-byte id of `public_key` (`protocol.primitives.key_id`)."""

    def __post_init__(self) -> None:
        _set_key_id(self, self.public_key)

    @classmethod
    def issue(
        cls,
        agency_signing_key: nacl.signing.SigningKey,
        *,
        agency_id: str,
        public_key: bytes,
        not_before: int,
        not_after: int,
    ) -> EncryptionKey:
        body = codec.encode(
            [
                "CB-ENCKEY",
                VERSION,
                agency_id,
                key_id(bytes(agency_signing_key.verify_key)),
                public_key,
                not_before,
                not_after,
            ]
        )
        return cls.parse(join_signed(body, sign(agency_signing_key, CTX_ENCRYPTION_KEY, body)))

    @classmethod
    def parse(cls, data: bytes) -> EncryptionKey:
        body, signature = split_signed(data, "encryption key")
        items = codec.array(codec.decode(body), "encryption key", 7)
        _header(items, "CB-ENCKEY", "encryption key")
        stmt = cls(
            agency_id=codec.str_(items[2], "agency_id", pattern=AGENCY_ID),
            signer_key_id=codec.bin_(items[3], "signer_key_id", KEY_ID_BYTES),
            public_key=codec.bin_(items[4], "public_key", PUBLIC_KEY_BYTES),
            not_before=codec.int_(items[5], "not_before"),
            not_after=codec.int_(items[6], "not_after"),
            raw=bytes(data),
            body=body,
            signature=signature,
        )
        _validity(stmt.not_before, stmt.not_after, "encryption key")
        return stmt


# --- revocation list ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Revocation:
    key_id: bytes
    revoked_at: int
    reason: str


@dataclass(frozen=True, slots=True)
class RevocationList:
    country: str
    issuer_key_id: bytes
    number: int
    issued_at: int
    entries: tuple[Revocation, ...]
    raw: bytes = field(repr=False)
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    def revoked_at(self, kid: bytes) -> int | None:
        for entry in self.entries:
            if entry.key_id == kid:
                return entry.revoked_at
        return None

    @classmethod
    def issue(
        cls,
        root_key: nacl.signing.SigningKey,
        root: RootCertificate,
        *,
        number: int,
        issued_at: int,
        entries: Iterable[Revocation],
    ) -> RevocationList:
        if bytes(root_key.verify_key) != root.public_key:
            raise ValueError("the signing key is not this root's key")
        ordered = sorted(entries, key=lambda e: e.key_id)
        body = codec.encode(
            [
                "CB-CRL",
                VERSION,
                root.country,
                root.key_id,
                number,
                issued_at,
                [[e.key_id, e.revoked_at, e.reason] for e in ordered],
            ],
            limits=SIGNED_LIMITS,
        )
        return cls.parse(join_signed(body, sign(root_key, CTX_REVOCATION, body)))

    @classmethod
    def parse(cls, data: bytes) -> RevocationList:
        body, signature = split_signed(data, "revocation list")
        items = codec.array(codec.decode(body, limits=SIGNED_LIMITS), "revocation list", 7)
        _header(items, "CB-CRL", "revocation list")
        entries = []
        for i, raw in enumerate(codec.array(items[6], "entries", max_len=MAX_REVOCATIONS)):
            e = codec.array(raw, f"entries[{i}]", 3)
            entries.append(
                Revocation(
                    key_id=codec.bin_(e[0], f"entries[{i}].key_id", KEY_ID_BYTES),
                    revoked_at=codec.int_(e[1], f"entries[{i}].revoked_at"),
                    reason=codec.str_(e[2], f"entries[{i}].reason", max_len=200),
                )
            )
        codec.sorted_unique([e.key_id for e in entries], "entries")
        return cls(
            country=codec.str_(items[2], "country", pattern=COUNTRY),
            issuer_key_id=codec.bin_(items[3], "issuer_key_id", KEY_ID_BYTES),
            number=codec.int_(items[4], "number"),
            issued_at=codec.int_(items[5], "issued_at"),
            entries=tuple(entries),
            raw=bytes(data),
            body=body,
            signature=signature,
        )


# --- trust decisions ------------------------------------------------------------------------


class TrustStore:
    """Pinned national roots and the newest verified revocation list of each country.

    Empty means deny: with no pinned root nothing verifies. Revocation lists only move forward
    (a lower number than the one held is refused), so an old list cannot un-revoke a key.
    """

    def __init__(self, roots: Iterable[RootCertificate]) -> None:
        self._roots: dict[bytes, RootCertificate] = {r.key_id: r for r in roots}
        self._revocations: dict[str, RevocationList] = {}

    @property
    def roots(self) -> Mapping[bytes, RootCertificate]:
        return dict(self._roots)

    def revocation_list(self, country: str) -> RevocationList | None:
        return self._revocations.get(country)

    def root_for(self, issuer_key_id: bytes, at: int) -> RootCertificate:
        root = self._roots.get(issuer_key_id)
        if root is None:
            raise UntrustedCertificate(reason=f"issuer {issuer_key_id.hex()} is not a pinned root")
        _check_window(root.not_before, root.not_after, at, f"root {root.country}")
        return root

    def accept_revocation_list(self, data: bytes) -> RevocationList:
        crl = RevocationList.parse(data)
        root = self._roots.get(crl.issuer_key_id)
        if root is None or root.country != crl.country:
            raise UntrustedCertificate(reason="revocation list not issued by a pinned root of its country")
        verify(root.public_key, CTX_REVOCATION, crl.body, crl.signature, what="revocation list")
        held = self._revocations.get(crl.country)
        if held is not None and crl.number < held.number:
            raise VerificationError(reason=f"revocation list {crl.number} is older than held {held.number}")
        if held is not None and crl.number == held.number and crl.raw != held.raw:
            raise VerificationError(reason=f"two different revocation lists numbered {crl.number}")
        self._revocations[crl.country] = crl
        return crl

    def _check_revoked(self, country: str, kid: bytes, at: int, what: str) -> None:
        crl = self._revocations.get(country)
        revoked_at = crl.revoked_at(kid) if crl is not None else None
        if revoked_at is not None and at >= revoked_at:
            raise KeyRevoked(reason=f"{what} {kid.hex()} revoked at {revoked_at}, checked at {at}")

    def verify_agency(self, data: bytes | AgencyCertificate, at: int) -> AgencyCertificate:
        """Verify an agency certificate against the pinned roots as of time `at`."""
        cert = data if isinstance(data, AgencyCertificate) else AgencyCertificate.parse(data)
        root = self.root_for(cert.issuer_key_id, at)
        verify(root.public_key, CTX_AGENCY, cert.body, cert.signature, what="agency certificate")
        if cert.country != root.country or country_of(cert.agency_id) != root.country:
            raise UntrustedCertificate(
                reason=f"root of {root.country} cannot certify {cert.agency_id} ({cert.country})"
            )
        _check_window(cert.not_before, cert.not_after, at, f"certificate of {cert.agency_id}")
        self._check_revoked(root.country, cert.key_id, at, "signing key")
        return cert

    def verify_encryption_key(
        self, data: bytes | EncryptionKey, agency: AgencyCertificate, at: int
    ) -> EncryptionKey:
        """Verify an encryption key statement against an already verified agency certificate."""
        stmt = data if isinstance(data, EncryptionKey) else EncryptionKey.parse(data)
        if stmt.agency_id != agency.agency_id or stmt.signer_key_id != agency.key_id:
            raise UntrustedCertificate(reason=f"encryption key not signed by {agency.agency_id}'s key")
        verify(agency.signing_key, CTX_ENCRYPTION_KEY, stmt.body, stmt.signature, what="encryption key")
        _check_window(stmt.not_before, stmt.not_after, at, f"encryption key of {agency.agency_id}")
        self._check_revoked(agency.country, stmt.key_id, at, "encryption key")
        return stmt

"""Plain-text descriptions of key files for `casebridge keys fingerprint`.

`describe_file` recognises every file the keys commands write (keystore, root or agency
certificate, encryption key statement, revocation list, certification request, public bundle)
from its bytes alone and lists what it is, its ids, validity and the read-aloud fingerprints.
Signatures that can be checked from the file alone (a root's self-signature, a request's proof
of possession) are checked; a chain is checked only against a root the caller pins, and the
output says plainly when it was not. Any check that fails raises; nothing is shown as trusted.
"""

from __future__ import annotations

from datetime import UTC, datetime

from keys.bundle import parse_bundle, verify_bundle
from keys.fingerprint import fingerprint, key_id_hex
from keys.identity import AgencyIdentity, BrokerIdentity, RootIdentity
from keys.keystore import read_header
from keys.request import parse_request
from protocol import codec
from protocol.certificate import (
    SIGNED_LIMITS,
    AgencyCertificate,
    EncryptionKey,
    RevocationList,
    RootCertificate,
    TrustStore,
)
from protocol.errors import MalformedInput

ANY_LIMITS = codec.Limits(max_bytes=4 << 20, max_bin_len=4 << 20)


def when(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def row(label: str, value: object) -> str:
    return f"{label + ':':<24}{value}"


UNCHECKED = row("chain", "not checked (give --root-cert to verify against a pinned root)")


def key_lines(role: str, public_key: bytes) -> list[str]:
    return [
        row(f"{role} key id", key_id_hex(public_key)),
        row(f"{role} fingerprint", fingerprint(public_key)),
    ]


def _validity(not_before: int, not_after: int) -> str:
    return row("valid", f"{when(not_before)} to {when(not_after)}")


def root_lines(cert: RootCertificate) -> list[str]:
    return [
        f"national root certificate of {cert.country}",
        row("name", cert.name),
        _validity(cert.not_before, cert.not_after),
        row("self-signature", "verified (trust it only after comparing the fingerprint aloud)"),
        *key_lines("root", cert.public_key),
    ]


def agency_lines(cert: AgencyCertificate) -> list[str]:
    return [
        f"agency certificate of {cert.agency_id}",
        row("name", cert.name),
        row("roles", ", ".join(cert.roles)),
        row("serial", cert.serial),
        row("issuer", f"root of {cert.country}, key id {cert.issuer_key_id.hex()}"),
        _validity(cert.not_before, cert.not_after),
        *key_lines("signing", cert.signing_key),
    ]


def encryption_lines(stmt: EncryptionKey) -> list[str]:
    return [
        f"encryption key of {stmt.agency_id}",
        row("signed by", f"key id {stmt.signer_key_id.hex()}"),
        _validity(stmt.not_before, stmt.not_after),
        *key_lines("encryption", stmt.public_key),
    ]


def revocation_lines(crl: RevocationList) -> list[str]:
    lines = [
        f"revocation list of {crl.country}, number {crl.number}, issued {when(crl.issued_at)}",
        row("issuer", f"root key id {crl.issuer_key_id.hex()}"),
        row("entries", len(crl.entries)),
    ]
    lines += [f"  revoked {e.key_id.hex()} from {when(e.revoked_at)}: {e.reason}" for e in crl.entries]
    return lines


def _signed_magic(value: object) -> str | None:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, bytes) for v in value)):
        return None
    body = codec.decode(value[0], limits=SIGNED_LIMITS)
    if isinstance(body, list) and body and isinstance(body[0], str):
        return body[0]
    return None


def describe_file(data: bytes, *, root: RootCertificate | None, now: int) -> list[str]:
    """Describe any keys file; verify its chain against `root` when one is given."""
    value = codec.decode(data, limits=ANY_LIMITS)
    head = value[0] if isinstance(value, list) and value else None
    trust = TrustStore([root]) if root is not None else None
    if head == "CB-KEYSTORE":
        header = read_header(data)
        p = header.profile
        return [
            f"{header.kind} keystore (sealed with a passphrase)",
            row("kdf", f"argon2id, {p.name} (opslimit {p.opslimit}, memlimit {p.memlimit >> 20} MiB)"),
            row("keys", "give --unlock to show this keystore's public keys"),
        ]
    if head == "CB-PUBLIC":
        bundle = parse_bundle(data)
        checked = row("chain", "verified against the pinned root") if trust else UNCHECKED
        if trust is not None:
            verify_bundle(data, trust, now)
        lines = ["public bundle", *agency_lines(bundle.certificate), checked]
        for stmt in bundle.encryption_keys:
            lines += ["", *encryption_lines(stmt)]
        return lines
    magic = _signed_magic(value)
    if magic == "CB-ROOT":
        return root_lines(RootCertificate.parse(data))
    if magic == "CB-AGENCY":
        cert = AgencyCertificate.parse(data)
        if trust is None:
            return [*agency_lines(cert), UNCHECKED]
        trust.verify_agency(cert, now)
        return [*agency_lines(cert), row("chain", "verified against the pinned root, valid now")]
    if magic == "CB-ENCKEY":
        return [
            *encryption_lines(EncryptionKey.parse(data)),
            row("signature", "checked against its agency's certificate only"),
        ]
    if magic == "CB-CRL":
        crl = RevocationList.parse(data)
        if trust is None:
            return [*revocation_lines(crl), row("signature", "not checked (give --root-cert)")]
        trust.accept_revocation_list(data)
        return [*revocation_lines(crl), row("signature", "verified against the pinned root")]
    if magic == "CB-CSR":
        req = parse_request(data)
        return [
            f"certification request of {req.agency_id}",
            row("name", req.name),
            row("proof of possession", "verified"),
            *key_lines("signing", req.public_key),
        ]
    raise MalformedInput(reason="not a CaseBridge key file (keystore, certificate, request, key or list)")


def identity_lines(identity: RootIdentity | AgencyIdentity | BrokerIdentity, now: int) -> list[str]:
    """The public side of an unlocked identity."""
    if isinstance(identity, RootIdentity):
        return [
            *root_lines(identity.certificate),
            row("next serial", identity.next_serial),
            row("next list", f"{identity.next_crl_number} ({len(identity.revocations)} keys revoked)"),
        ]
    if isinstance(identity, BrokerIdentity):
        cert = "not yet imported" if identity.certificate is None else f"serial {identity.certificate.serial}"
        return [
            f"broker {identity.broker_id} ({identity.name})",
            row("certificate", cert),
            *key_lines("receipt", identity.public_key),
            *key_lines("checkpoint", identity.checkpoint_public_key),
        ]
    cert = "not yet imported" if identity.certificate is None else f"serial {identity.certificate.serial}"
    lines = [
        f"agency {identity.agency_id} ({identity.name})",
        row("certificate", cert),
        *key_lines("signing", identity.public_key),
    ]
    for held in identity.encryption_keys:
        state = "valid" if held.valid_at(now) else "not valid now (kept for old envelopes)"
        lines += ["", *encryption_lines(held.statement), row("state", state)]
    return lines

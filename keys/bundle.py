"""An agency's public bundle: what it hands partners or the broker's directory.

`["CB-PUBLIC", 1, bin certificate, [bin encryption-key statement, ...]]`: the agency's
certificate and every encryption key statement valid at export time, newest first. The bundle
itself is not signed: each part carries its own signature, and `verify_bundle` checks the
certificate against the pinned roots and every statement against the certificate, so a bundle
from an untrusted channel (the broker's directory included) is safe to accept through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keys.identity import AgencyIdentity
from protocol import codec
from protocol.certificate import AgencyCertificate, EncryptionKey, TrustStore
from protocol.errors import CertificateExpired, InvalidField, MalformedInput
from protocol.primitives import key_id

MAGIC = "CB-PUBLIC"
VERSION = 1
MAX_KEYS = 64
BUNDLE_LIMITS = codec.Limits(max_bytes=256 << 10)


@dataclass(frozen=True, slots=True)
class PublicBundle:
    certificate: AgencyCertificate
    encryption_keys: tuple[EncryptionKey, ...]
    raw: bytes = field(repr=False)


def export_public(agency: AgencyIdentity, now: int) -> bytes:
    """The public bundle of a certified agency, with its encryption keys valid at `now`."""
    if agency.certificate is None:
        raise InvalidField(
            "keystore", "a certified agency: import its certificate first (keys agency import-cert)"
        )
    valid = sorted(
        (k.statement for k in agency.encryption_keys if k.valid_at(now)),
        key=lambda s: (-s.not_before, s.key_id),
    )
    if not valid:
        raise CertificateExpired(
            f"{agency.agency_id} holds no encryption key valid now; run `casebridge keys rotate` first.",
            reason="no valid encryption key to export",
        )
    return codec.encode([MAGIC, VERSION, agency.certificate.raw, [s.raw for s in valid]])


def parse_bundle(data: bytes) -> PublicBundle:
    """Parse a bundle's structure; nothing is trusted until `verify_bundle`."""
    items = codec.array(codec.decode(data, limits=BUNDLE_LIMITS), "public bundle", 4)
    codec.literal(items[0], "magic", MAGIC)
    codec.literal(items[1], "version", VERSION)
    cert = AgencyCertificate.parse(codec.bin_(items[2], "certificate"))
    raws = codec.array(items[3], "encryption_keys", max_len=MAX_KEYS)
    statements = tuple(EncryptionKey.parse(codec.bin_(r, "encryption_keys")) for r in raws)
    if not statements:
        raise MalformedInput(reason="public bundle without an encryption key")
    if len({key_id(s.public_key) for s in statements}) != len(statements):
        raise MalformedInput(reason="public bundle lists a key twice")
    return PublicBundle(certificate=cert, encryption_keys=statements, raw=bytes(data))


def verify_bundle(data: bytes, trust: TrustStore, at: int) -> PublicBundle:
    """Parse and verify a bundle as of `at`: the certificate chains to a pinned root and is not
    revoked, and every encryption key is signed by it, valid and not revoked. Raises otherwise."""
    bundle = parse_bundle(data)
    cert = trust.verify_agency(bundle.certificate, at)
    for statement in bundle.encryption_keys:
        trust.verify_encryption_key(statement, cert, at)
    return bundle

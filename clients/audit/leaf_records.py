"""One audit-log leaf as the officer's tools see it: its index, kind, time, the envelope and agencies
it names, and a flat JSON-safe row for reports.

The leaf format itself is `protocol.auditlog` (the module the broker writes leaves with); this
module only adapts it for verification, search and export.

Invariants:
- `parse_leaf` raises `MalformedInput` naming what is wrong (a leaf of an unknown version too).
- A row holds ids, times, sizes, hex hashes and key ids, and the names in certificates (agencies
  are organisations): never a signature, a whole signed record, personal data or ciphertext (a
  leaf holds none of the last two to begin with).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from protocol import auditlog, codec, leaf_check
from protocol.auditlog import Leaf, LeafKind
from protocol.certificate import AgencyCertificate, RevocationList, RootCertificate
from protocol.errors import MalformedInput, UnsupportedVersion
from protocol.merkle import leaf_hash
from protocol.receipt import Receipt

KINDS = tuple(str(kind) for kind in LeafKind)
TRUST_KINDS = frozenset(
    {LeafKind.ROOT_CONFIGURED, LeafKind.CERTIFICATE_REGISTERED, LeafKind.REVOCATION_LIST_REGISTERED}
)
"""Leaves that carry certificates or revocation lists: kept by the trusted state for `trace`."""
_RECORDS = frozenset({"certificate", "statement", "revocation_list", "receipt", "sender_signature"})
"""Signed records and signatures: shown in a row by what they say, never whole."""


@dataclass(frozen=True, slots=True)
class LeafRecord:
    """A parsed leaf at `index`, with its RFC 6962 leaf hash."""

    index: int
    leaf: Leaf
    leaf_hash: bytes

    @property
    def kind(self) -> LeafKind:
        return self.leaf.kind

    @property
    def time(self) -> int:
        return self.leaf.time

    @property
    def envelope_id(self) -> bytes | None:
        ids = auditlog.envelope_ids(self.leaf)
        return ids[0] if ids else None

    @property
    def agencies(self) -> tuple[str, ...]:
        return auditlog.agencies(self.leaf)

    def certificate(self) -> AgencyCertificate | None:
        f = self.leaf.fields
        return (
            AgencyCertificate.parse(f.certificate) if isinstance(f, auditlog.CertificateRegistered) else None
        )

    def root_certificate(self) -> RootCertificate | None:
        f = self.leaf.fields
        return RootCertificate.parse(f.certificate) if isinstance(f, auditlog.RootConfigured) else None

    def revocation_list(self) -> RevocationList | None:
        f = self.leaf.fields
        if isinstance(f, auditlog.RevocationListRegistered) and f.revocation_list is not None:
            return RevocationList.parse(f.revocation_list)
        return None

    def receipt(self) -> Receipt | None:
        f = self.leaf.fields
        return f.parsed() if isinstance(f, auditlog.ReceiptRecorded) else None

    def row(self) -> dict[str, Any]:
        """The leaf as one flat, JSON-safe row (hex for bytes) for exports and `--json`."""
        envelope_id = self.envelope_id
        row: dict[str, Any] = {
            "index": self.index,
            "kind": str(self.kind),
            "time": self.time,
            "envelope_id": None if envelope_id is None else envelope_id.hex(),
            "agencies": list(self.agencies),
            "leaf_hash": self.leaf_hash.hex(),
        }
        for name, value in _fields(self.leaf.fields).items():
            row.setdefault(name, value)
        row.update(_summary(self))
        return row


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, str) else value


def _fields(fields: auditlog.LeafFields) -> dict[str, Any]:
    return {
        f.name: _plain(getattr(fields, f.name)) for f in dataclasses.fields(fields) if f.name not in _RECORDS
    }


def _summary(record: LeafRecord) -> dict[str, Any]:
    """What the signed record inside a leaf says, for people reading a report."""
    if (cert := record.certificate()) is not None:
        return {"name": cert.name, "roles": [str(r) for r in cert.roles], "serial": cert.serial}
    if (root := record.root_certificate()) is not None:
        return {"name": root.name}
    if (crl := record.revocation_list()) is not None:
        return {"revoked": len(crl.entries)}
    if (receipt := record.receipt()) is not None:
        return {
            "sender_id": receipt.subject.sender_id,
            "signer_id": receipt.signer_id,
            "signer_key_id": receipt.signer_key_id.hex(),
            "receipt_time": receipt.time,
            "reason": None if receipt.reason is None else str(receipt.reason),
            "log_index": receipt.log_index,
        }
    return {}


def parse_leaf(index: int, data: bytes, digest: bytes | None = None) -> LeafRecord:
    """Parse the leaf stored at `index` (whose leaf hash is `digest`, when the caller has it), or
    raise `MalformedInput` saying what is wrong."""
    try:
        leaf = auditlog.parse_leaf(data)
    except UnsupportedVersion as e:
        raise MalformedInput(reason=e.reason) from e
    return LeafRecord(index, leaf, leaf_hash(data) if digest is None else digest)


CheckedLeaf = leaf_check.LeafSummary
"""A leaf known to parse, by its kind and time: all a verification without observers needs."""


def check_leaf(data: bytes) -> CheckedLeaf:
    """What `parse_leaf` accepts and raises, at a fraction of its cost (`protocol.leaf_check`)."""
    found = leaf_check.fast_check(data)
    if found is not None:
        return found
    try:
        return leaf_check.check_leaf(data)
    except UnsupportedVersion as e:
        raise MalformedInput(reason=e.reason) from e


def peek_kind(data: bytes) -> str | None:
    """The kind a leaf claims, for naming a leaf that does not parse (None if not even that)."""
    try:
        items = codec.decode(data, limits=auditlog.LEAF_LIMITS)
    except MalformedInput:
        return None
    if isinstance(items, list) and len(items) > 1 and isinstance(items[1], str) and len(items[1]) <= 64:
        return items[1]
    return None

"""What the audit store keeps besides leaves: tree heads, signed checkpoints, cosignatures.

Plain frozen records, the same for every engine. A checkpoint's `note` is the signed note exactly
as the broker signed it; cosignatures are kept apart (one line each, verified before storing) and
joined to the note only when it is published.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.errors import StorageUnavailable


@dataclass(frozen=True, slots=True)
class TreeHead:
    """The size and RFC 6962 root of the stored tree."""

    size: int
    root_hash: bytes


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    seq: int
    size: int
    root_hash: bytes
    note: bytes = field(repr=False)
    signed_at: int


@dataclass(frozen=True, slots=True)
class StoredCosignature:
    checkpoint_seq: int
    witness: str
    line: str = field(repr=False)
    """The witness's signature line (`— <name> <base64>`), verified against its vkey."""
    cosigned_at: int
    received_at: int


class AuditLogDamaged(StorageUnavailable):
    """The stored leaves, tree nodes and checkpoints disagree: someone or something changed the
    database behind the broker's back. Nothing is served from a damaged log."""

    title = "Audit log damaged"
    remedy = (
        "The stored audit log does not match its own tree or its last signed checkpoint. Stop the "
        "broker, keep the data directory for investigation, and restore the last backup whose "
        "audit check passes (docs/audit-log.md, 'When the log is damaged')."
    )

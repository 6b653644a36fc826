"""What the audit log needs from a storage engine beyond appending leaves: the stored Merkle tree,
checkpoints and cosignatures.

`AuditStore` extends `broker.storage.interfaces.AuditLog` (record, size, leaves). SQLite
implements it (`broker.storage.sqlite.audit.SqliteAuditLog`); an engine that does not yet is
refused at start by `audit_store`, with a message naming what is missing.

Invariants every implementation keeps (besides those of `AuditLog`):
- Appends go through one sequencer (`broker.audit.sequencer`) and store every full-subtree hash
  the leaf completes in the transaction that appends the leaf.
- Proofs and tiles are read from stored nodes (one query per proof), never recomputed from
  leaves; leaves handed out for verification were first checked against their stored hashes.
- Checkpoints and cosignatures, like leaves and nodes, are never changed or deleted, and a
  checkpoint never covers fewer leaves than the one before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from broker.audit.records import StoredCheckpoint, StoredCosignature, TreeHead
from broker.storage.interfaces import Store
from protocol.errors import ConfigError
from protocol.merkle import NodeId


@runtime_checkable
class AuditStore(Protocol):
    async def record(self, leaf: bytes, now: int) -> int:
        """Append one entry in its own transaction (broker start and stop, say); its index."""
        ...

    async def size(self) -> int: ...

    async def leaves(self, start: int, end: int) -> list[bytes]: ...

    async def open_tree(self) -> TreeHead:
        """Load the sequencer from the stored border nodes (hashing, once, leaves stored without
        nodes by an older schema); the head of the stored tree."""
        ...

    async def checked_leaves(self, start: int, end: int) -> list[bytes]:
        """Leaves [start, end), each checked against its stored leaf hash (`AuditLogDamaged`)."""
        ...

    async def tree_head(self, size: int | None = None) -> TreeHead:
        """The root of the first `size` leaves (every committed leaf if None), from stored nodes."""
        ...

    async def node_hashes(self, nodes: Sequence[NodeId]) -> list[bytes]: ...

    async def level_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        """Nodes `start` up to `end` of tree level `level` (`AuditLogDamaged` if one is missing)."""
        ...

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]: ...

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]: ...

    async def envelope_leaves(self, envelope_id: bytes) -> list[tuple[int, bytes]]:
        """(index, leaf) of every leaf naming the envelope, in log order, each checked against
        its stored leaf hash."""
        ...

    async def add_checkpoint(
        self, size: int, root_hash: bytes, note: bytes, signed_at: int
    ) -> StoredCheckpoint: ...

    async def latest_checkpoint(self) -> StoredCheckpoint | None: ...

    async def add_cosignature(self, cosignature: StoredCosignature) -> bool:
        """Store a verified cosignature; False if the witness already cosigned this checkpoint."""
        ...

    async def cosignatures(self, checkpoint: StoredCheckpoint) -> list[StoredCosignature]:
        """The newest cosignature of each witness over this checkpoint's size and root."""
        ...

    async def witness_sizes(self) -> dict[str, int]:
        """For each witness, the largest tree size it cosigned."""
        ...


def audit_store(store: Store) -> AuditStore:
    """The engine's audit log as an `AuditStore`, or a `ConfigError` if the engine lacks it."""
    audit = store.audit
    if not isinstance(audit, AuditStore):
        raise ConfigError(
            f"the storage engine {type(store).__name__} does not keep the audit log's Merkle tree "
            "and checkpoints yet; run the broker on SQLite until it does (docs/audit-log.md)."
        )
    return audit

"""The audit log in PostgreSQL: leaves, their Merkle tree, checkpoints and cosignatures, with one
sequencer across every replica and append-only twice over.

Invariants:
- Appends happen inside the transaction holding the change they record, through this replica's
  `SequencedWriter` (`broker.storage.postgresql.sequencing`), which takes the sequencer lock
  (`pg_advisory_xact_lock(AUDIT_LOCK_ID)`, released by its commit or rollback) before reading
  the stored tail: appends from every replica are serialised, indexes run 0, 1, 2, ... without
  gaps, and a failed append rolls back the change it records. Every transaction that allocates
  an inbox cursor or a feed seq runs there too, which serialises those as well.
- The leaf, every tree node it completes and its envelope index entries are written together.
  The sequencer's range is rebuilt from the stored border nodes under the lock for every
  transaction, never kept between transactions: another replica may have appended meanwhile,
  and a rolled-back append must leave no trace (a size check alone cannot tell those apart).
- Nothing in a log table is changed or deleted: triggers refuse UPDATE, DELETE and TRUNCATE
  (and inserts out of order), and the broker's role holds only SELECT and INSERT on the log
  tables (migrations 0001, 0002), so even a broker running arbitrary SQL cannot rewrite them.
- Proofs and tiles come from stored nodes in one query per call; a missing node, or a leaf that
  no longer matches its stored hash, raises `AuditLogDamaged`.
- Checkpoints from several replicas are serialised by their own lock; a replica whose tree head
  is behind the newest stored checkpoint gets that checkpoint back instead of storing an older
  one (the tree never shrinks).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from broker.audit.records import AuditLogDamaged, StoredCheckpoint, StoredCosignature, TreeHead
from broker.audit.sequencer import AUDIT_LOCK_ID, Sequencer
from broker.storage.postgresql.audit_appender import AuditAppender
from broker.storage.postgresql.database import Connection, Database
from broker.storage.postgresql.sequencing import SequencedWriter
from protocol.merkle import (
    EMPTY_ROOT,
    NodeId,
    ProofPlan,
    border_nodes,
    consistency_plan,
    inclusion_plan,
    leaf_hash,
    root_plan,
)

CHECKPOINT_LOCK_ID = AUDIT_LOCK_ID + 1
BACKFILL_BATCH = 4096
_SIZE = "SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log"
_CHECKPOINT_COLUMNS = "seq, size, root_hash, note, signed_at"

log = logging.getLogger("casebridge.broker.audit")


async def _hashes(conn: Connection, nodes: Sequence[NodeId]) -> list[bytes]:
    if not nodes:
        return []
    rows = await conn.fetch(
        "SELECT n.level, n.idx, n.hash FROM audit_nodes n "
        "JOIN unnest($1::integer[], $2::bigint[]) AS w (level, idx) ON n.level = w.level AND n.idx = w.idx",
        [n.level for n in nodes],
        [n.index for n in nodes],
    )
    found = {(int(r[0]), int(r[1])): bytes(r[2]) for r in rows}
    missing = [(n.level, n.index) for n in nodes if (n.level, n.index) not in found]
    if missing:
        raise AuditLogDamaged(reason=f"audit tree node {missing[0]} is not stored")
    return [found[(n.level, n.index)] for n in nodes]


async def _prove(conn: Connection, plan: ProofPlan) -> list[bytes]:
    return plan.assemble(await _hashes(conn, plan.nodes))


def _checked(idx: int, leaf: bytes, digest: bytes | None) -> bytes:
    """The leaf, if it still hashes to the leaf hash stored when it was appended."""
    if digest is None or leaf_hash(bytes(leaf)) != bytes(digest):
        raise AuditLogDamaged(reason=f"audit leaf {idx} does not match its stored hash")
    return bytes(leaf)


def _checkpoint(row: Sequence[Any]) -> StoredCheckpoint:
    return StoredCheckpoint(int(row[0]), int(row[1]), bytes(row[2]), bytes(row[3]), int(row[4]))


async def _store_nodes(conn: Connection, sequencer: Sequencer, leaf: bytes) -> int:
    index, nodes = sequencer.append(leaf)
    await conn.execute(
        "INSERT INTO audit_nodes (level, idx, hash) "
        "SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bytea[])",
        [n.level for n, _ in nodes],
        [n.index for n, _ in nodes],
        [digest for _, digest in nodes],
    )
    return index


class PostgresAuditLog:
    """Implements `broker.audit.store.AuditStore` (and so `broker.storage.interfaces.AuditLog`)."""

    def __init__(self, db: Database, writer: SequencedWriter) -> None:
        self._db = db
        self._writer = writer

    # --- appends (under the sequencer lock) --------------------------------------------------

    async def record(self, leaf: bytes, now: int) -> int:
        async def append(conn: Connection, appender: AuditAppender) -> int:
            return appender.append(leaf, now)

        return await self._writer.run(append)

    async def open_tree(self) -> TreeHead:
        """The head of the stored tree, hashing (once) leaves stored without their nodes by
        schema 1 (which never had a checkpoint: once one exists, that is damage)."""
        async with self._db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK_ID)
            size = int(await conn.fetchval(_SIZE))
            hashed = int(
                await conn.fetchval("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_nodes WHERE level = 0")
            )
            if hashed > size:
                raise AuditLogDamaged(reason=f"{hashed} leaf hashes stored for {size} leaves")
            if hashed < size and await conn.fetchval("SELECT 1 FROM audit_checkpoints LIMIT 1"):
                raise AuditLogDamaged(reason=f"leaves {hashed}..{size} were stored without their tree nodes")
            sequencer = Sequencer()
            sequencer.resume(hashed, await _hashes(conn, border_nodes(hashed)))
            if hashed < size:
                log.warning("audit_tree_backfill", extra={"first": hashed, "end": size})
            for start in range(hashed, size, BACKFILL_BATCH):
                rows = await conn.fetch(
                    "SELECT leaf FROM audit_log WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                    start,
                    start + BACKFILL_BATCH,
                )
                for row in rows:
                    await _store_nodes(conn, sequencer, bytes(row[0]))
            return TreeHead(size, sequencer.root() if size else EMPTY_ROOT)

    # --- reads ---------------------------------------------------------------------------------

    async def size(self) -> int:
        async with self._db.connection() as conn:
            return int(await conn.fetchval(_SIZE))

    async def leaves(self, start: int, end: int) -> list[bytes]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT leaf FROM audit_log WHERE idx >= $1 AND idx < $2 ORDER BY idx", start, end
            )
        return [bytes(r[0]) for r in rows]

    async def checked_leaves(self, start: int, end: int) -> list[bytes]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT l.idx, l.leaf, n.hash FROM audit_log l LEFT JOIN audit_nodes n "
                "ON n.level = 0 AND n.idx = l.idx WHERE l.idx >= $1 AND l.idx < $2 ORDER BY l.idx",
                start,
                end,
            )
        if len(rows) != end - start:
            raise AuditLogDamaged(reason=f"audit leaves missing in [{start}, {end})")
        return [_checked(r[0], r[1], r[2]) for r in rows]

    async def tree_head(self, size: int | None = None) -> TreeHead:
        # No transaction needed: the size only grows, and the nodes of every committed size
        # were committed with it and never change.
        async with self._db.connection() as conn:
            n = int(await conn.fetchval(_SIZE)) if size is None else size
            return TreeHead(n, (await _prove(conn, root_plan(n)))[0] if n else EMPTY_ROOT)

    async def node_hashes(self, nodes: Sequence[NodeId]) -> list[bytes]:
        async with self._db.connection() as conn:
            return await _hashes(conn, nodes)

    async def level_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT hash FROM audit_nodes WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx",
                level,
                start,
                end,
            )
        if len(rows) != end - start:
            raise AuditLogDamaged(reason=f"audit tree level {level} lacks nodes in [{start}, {end})")
        return [bytes(r[0]) for r in rows]

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        plan = inclusion_plan(index, size)
        async with self._db.connection() as conn:
            return await _prove(conn, plan)

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        plan = consistency_plan(size1, size2)
        async with self._db.connection() as conn:
            return await _prove(conn, plan)

    async def envelope_leaves(self, envelope_id: bytes) -> list[tuple[int, bytes]]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT l.idx, l.leaf, n.hash FROM audit_envelope_leaves e "
                "JOIN audit_log l ON l.idx = e.idx LEFT JOIN audit_nodes n ON n.level = 0 AND n.idx = l.idx "
                "WHERE e.envelope_id = $1 ORDER BY l.idx",
                envelope_id,
            )
        return [(int(r[0]), _checked(r[0], r[1], r[2])) for r in rows]

    # --- checkpoints and cosignatures ------------------------------------------------------------

    async def add_checkpoint(
        self, size: int, root_hash: bytes, note: bytes, signed_at: int
    ) -> StoredCheckpoint:
        async with self._db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CHECKPOINT_LOCK_ID)
            latest = await conn.fetchrow(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"  # noqa: S608
            )
            if latest is not None and int(latest[1]) > size:
                return _checkpoint(tuple(latest))
            seq = 0 if latest is None else int(latest[0]) + 1
            await conn.execute(
                "INSERT INTO audit_checkpoints (seq, size, root_hash, note, signed_at) "
                "VALUES ($1, $2, $3, $4, $5)",
                seq,
                size,
                root_hash,
                note,
                signed_at,
            )
        return StoredCheckpoint(seq, size, root_hash, note, signed_at)

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"  # noqa: S608
            )
        return None if row is None else _checkpoint(tuple(row))

    async def add_cosignature(self, cosignature: StoredCosignature) -> bool:
        c = cosignature
        async with self._db.connection() as conn:
            stored = await conn.fetchval(
                "INSERT INTO audit_cosignatures (checkpoint_seq, witness, line, cosigned_at, received_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (checkpoint_seq, witness) DO NOTHING RETURNING 1",
                c.checkpoint_seq,
                c.witness,
                c.line,
                c.cosigned_at,
                c.received_at,
            )
        return stored is not None

    async def cosignatures(self, checkpoint: StoredCheckpoint) -> list[StoredCosignature]:
        """The newest cosignature of each witness over this checkpoint's tree head (checkpoints of
        the same size and root have the same text, so a cosignature of one holds for all)."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT ON (c.witness) c.checkpoint_seq, c.witness, c.line, c.cosigned_at, "
                "c.received_at FROM audit_cosignatures c "
                "JOIN audit_checkpoints k ON k.seq = c.checkpoint_seq "
                "WHERE k.size = $1 AND k.root_hash = $2 ORDER BY c.witness, c.cosigned_at DESC",
                checkpoint.size,
                checkpoint.root_hash,
            )
        return [StoredCosignature(int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows]

    async def witness_sizes(self) -> dict[str, int]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT c.witness, MAX(k.size) FROM audit_cosignatures c "
                "JOIN audit_checkpoints k ON k.seq = c.checkpoint_seq GROUP BY c.witness"
            )
        return {str(r[0]): int(r[1]) for r in rows}

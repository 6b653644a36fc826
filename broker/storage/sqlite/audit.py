"""The audit log in SQLite: leaves, their Merkle tree, checkpoints and cosignatures.

Layout: each `audit_log` row holds a leaf and, in `nodes`, the hashes of every full subtree that
leaf completes, lowest level first (its own leaf hash first). Leaf i completes the nodes
(l, ((i + 1) >> l) - 1) for l = 0 .. the number of trailing one bits of i, so node (l, k) is
found at offset 32 * l of row ((k + 1) << l) - 1. Keeping them in the leaf's row costs one row
write per append instead of three (measured in docs/performance.md, Audit log).

Invariants:
- Appends run on the writer thread only (the one sequencer, `broker.audit.sequencer`, checked
  against the stored tip each time, since an offline command may append beside a serving
  broker), inside the transaction of the change they record: the leaf, the tree nodes it
  completes (in the same row) and its envelope index entries are written together, so leaves and
  tree always agree; an append that fails raises, which rolls back the whole change.
- Indexes run 0, 1, 2, ... without gaps; a row is inserted with its nodes, and nothing in a log
  table is ever changed or deleted (triggers, migrations 0001 and 0002). The one exception:
  rows written by schema 1, before the tree existed, get their nodes once, in order, from the
  leaves (`_sync`), and only while no checkpoint exists.
- Proofs and tiles are read from stored nodes in one query per call (`SqliteHashReader`), never
  recomputed from leaves; a missing node or a leaf that no longer matches its stored hash raises
  `AuditLogDamaged`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from broker.audit.records import AuditLogDamaged, StoredCheckpoint, StoredCosignature, TreeHead
from broker.audit.sequencer import Sequencer, Tip
from broker.storage.sqlite.database import Database
from protocol import auditlog
from protocol.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    NodeId,
    ProofPlan,
    border_nodes,
    consistency_plan,
    inclusion_plan,
    leaf_hash,
    root_plan,
)

ROWS_PER_QUERY = 500
BACKFILL_BATCH = 4096
_LATEST_CHECKPOINT = (
    "SELECT seq, size, root_hash, note, signed_at FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
)

log = logging.getLogger("casebridge.broker.audit")


def node_row(node: NodeId) -> int:
    """The index of the leaf whose row holds node (level, index): the leaf that completed it."""
    return ((node.index + 1) << node.level) - 1


class SqliteHashReader:
    """`protocol.merkle.HashReader` over one connection: stored node hashes, one query per call
    (two past `ROWS_PER_QUERY` distinct rows)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _rows(self, indexes: Sequence[int]) -> dict[int, bytes]:
        wanted = list(dict.fromkeys(indexes))
        found: dict[int, bytes] = {}
        for at in range(0, len(wanted), ROWS_PER_QUERY):
            chunk = wanted[at : at + ROWS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT idx, nodes FROM audit_log WHERE idx IN ({marks}) AND nodes IS NOT NULL"  # noqa: S608
            found.update((int(idx), bytes(nodes)) for idx, nodes in self._conn.execute(query, chunk))
        return found

    def hashes(self, nodes: Sequence[NodeId]) -> list[bytes]:
        rows = self._rows([node_row(n) for n in nodes])
        found = []
        for node in nodes:
            stored = rows.get(node_row(node), b"")
            digest = stored[HASH_SIZE * node.level : HASH_SIZE * (node.level + 1)]
            if len(digest) != HASH_SIZE:
                raise AuditLogDamaged(reason=f"audit tree node ({node.level}, {node.index}) is not stored")
            found.append(digest)
        return found

    def level_range(self, level: int, start: int, end: int) -> list[bytes]:
        """Nodes `start` up to `end` of one tree level."""
        return self.hashes([NodeId(level, index) for index in range(start, end)])


def _stored_tip(conn: sqlite3.Connection) -> Tip:
    """Size and last leaf hash of the stored tree (one descending primary-key read); a last row
    without nodes (schema 1 data) gives a tip no sequencer has."""
    row = conn.execute("SELECT idx, substr(nodes, 1, 32) FROM audit_log ORDER BY idx DESC LIMIT 1").fetchone()
    if row is None:
        return (0, None)
    return (int(row[0]) + 1, None if row[1] is None else bytes(row[1]))


def _stored_size(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log").fetchone()[0])


def _file_under_envelope(conn: sqlite3.Connection, envelope_id: bytes, index: int) -> None:
    """Index leaf `index` under its envelope (filed by the envelope's first leaf)."""
    row = conn.execute(
        "SELECT first_idx FROM audit_envelopes WHERE envelope_id = ?", (envelope_id,)
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO audit_envelopes (envelope_id, first_idx) VALUES (?, ?)", (envelope_id, index)
        )
    first = index if row is None else int(row[0])
    conn.execute("INSERT INTO audit_envelope_leaves (first_idx, idx) VALUES (?, ?)", (first, index))


def _checked(idx: int, leaf: bytes, digest: bytes | None) -> bytes:
    """The leaf, if it still hashes to the leaf hash stored when it was appended."""
    if digest is None or leaf_hash(bytes(leaf)) != bytes(digest):
        raise AuditLogDamaged(reason=f"audit leaf {idx} does not match its stored hash")
    return bytes(leaf)


def _checkpoint(row: Sequence[Any]) -> StoredCheckpoint:
    seq, size, root, note, signed_at = row
    return StoredCheckpoint(int(seq), int(size), bytes(root), bytes(note), int(signed_at))


def _prove(conn: sqlite3.Connection, plan: ProofPlan) -> list[bytes]:
    return plan.assemble(SqliteHashReader(conn).hashes(plan.nodes))


class SqliteAuditLog:
    """Implements `broker.audit.store.AuditStore` (and so `broker.storage.interfaces.AuditLog`)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._sequencer = Sequencer()

    # --- appends (writer thread) -------------------------------------------------------------

    def _sync(self, conn: sqlite3.Connection) -> int:
        """Bring the sequencer to the stored tree: from the stored border nodes, after giving
        rows written by schema 1 (before the tree existed, so before any checkpoint) their nodes,
        in order. Once a checkpoint exists, a row without nodes is damage."""
        self._sequencer.forget()
        size = _stored_size(conn)
        row = conn.execute("SELECT MIN(idx) FROM audit_log WHERE nodes IS NULL").fetchone()
        hashed = size if row[0] is None else int(row[0])
        if hashed < size and conn.execute("SELECT 1 FROM audit_checkpoints LIMIT 1").fetchone():
            raise AuditLogDamaged(reason=f"leaves {hashed}..{size} are stored without their tree nodes")
        last = SqliteHashReader(conn).hashes([NodeId(0, hashed - 1)])[0] if hashed else None
        self._sequencer.resume(hashed, SqliteHashReader(conn).hashes(border_nodes(hashed)), last_leaf=last)
        if hashed < size:
            log.warning("audit_tree_backfill", extra={"first": hashed, "end": size})
        for start in range(hashed, size, BACKFILL_BATCH):
            rows = conn.execute(
                "SELECT idx, leaf FROM audit_log WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, start + BACKFILL_BATCH),
            ).fetchall()
            for idx, leaf in rows:
                index, nodes = self._sequencer.append(bytes(leaf))
                if index != idx:
                    raise AuditLogDamaged(reason=f"audit leaf {index} is missing")
                conn.execute(
                    "UPDATE audit_log SET nodes = ? WHERE idx = ? AND nodes IS NULL",
                    (b"".join(digest for _, digest in nodes), idx),
                )
        return size

    def append(self, conn: sqlite3.Connection, leaf: bytes, now: int) -> int:
        """Append `leaf` in the transaction open on `conn`; returns its index."""
        if self._sequencer.tip != _stored_tip(conn):
            self._sync(conn)
        index, nodes = self._sequencer.append(leaf)
        conn.execute(
            "INSERT INTO audit_log (idx, leaf, recorded_at, nodes) VALUES (?, ?, ?, ?)",
            (index, leaf, now, b"".join(digest for _, digest in nodes)),
        )
        envelope_id = auditlog.unsafe_envelope_id(leaf)
        if envelope_id is not None:
            _file_under_envelope(conn, envelope_id, index)
        return index

    async def record(self, leaf: bytes, now: int) -> int:
        return await self._db.write(lambda conn: self.append(conn, leaf, now))

    def _open_tree(self, conn: sqlite3.Connection) -> TreeHead:
        size = self._sync(conn)
        return TreeHead(size, self._sequencer.root() if size else EMPTY_ROOT)

    async def open_tree(self) -> TreeHead:
        """The head of the stored tree, with the sequencer loaded from the stored border nodes
        (and any leaves stored without nodes hashed once)."""
        return await self._db.write(self._open_tree, bulk=True)

    # --- reads ---------------------------------------------------------------------------------

    async def size(self) -> int:
        return await self._db.read(_stored_size)

    async def leaves(self, start: int, end: int) -> list[bytes]:
        def job(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(
                "SELECT leaf FROM audit_log WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
            ).fetchall()
            return [bytes(r[0]) for r in rows]

        return await self._db.scan(job)

    async def checked_leaves(self, start: int, end: int) -> list[bytes]:
        """Leaves [start, end), each checked against its stored leaf hash (`AuditLogDamaged` if
        one was changed or is missing)."""

        def job(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(
                "SELECT idx, leaf, substr(nodes, 1, 32) FROM audit_log "
                "WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end),
            ).fetchall()
            if len(rows) != end - start:
                raise AuditLogDamaged(reason=f"audit leaves missing in [{start}, {end})")
            return [_checked(idx, leaf, digest) for idx, leaf, digest in rows]

        return await self._db.scan(job)

    async def tree_head(self, size: int | None = None) -> TreeHead:
        """The root of the first `size` leaves (all committed leaves if None), from stored nodes."""

        def job(conn: sqlite3.Connection) -> TreeHead:
            n = _stored_size(conn) if size is None else size
            return TreeHead(n, _prove(conn, root_plan(n))[0] if n else EMPTY_ROOT)

        return await self._db.read(job)

    async def node_hashes(self, nodes: Sequence[NodeId]) -> list[bytes]:
        return await self._db.scan(lambda conn: SqliteHashReader(conn).hashes(nodes))

    async def level_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        """Stored hashes of nodes `start` up to `end` of one tree level (a tlog-tiles hash tile)."""
        return await self._db.scan(lambda conn: SqliteHashReader(conn).level_range(level, start, end))

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        plan = inclusion_plan(index, size)
        return await self._db.read(lambda conn: _prove(conn, plan))

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        plan = consistency_plan(size1, size2)
        return await self._db.read(lambda conn: _prove(conn, plan))

    async def envelope_leaves(self, envelope_id: bytes) -> list[tuple[int, bytes]]:
        """(index, leaf) of every leaf naming the envelope, in log order, each checked against
        its stored leaf hash."""

        def job(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            rows = conn.execute(
                "SELECT l.idx, l.leaf, substr(l.nodes, 1, 32) FROM audit_envelopes e "
                "JOIN audit_envelope_leaves x ON x.first_idx = e.first_idx JOIN audit_log l ON l.idx = x.idx "
                "WHERE e.envelope_id = ? ORDER BY l.idx",
                (envelope_id,),
            ).fetchall()
            return [(int(idx), _checked(idx, leaf, digest)) for idx, leaf, digest in rows]

        return await self._db.read(job)

    # --- checkpoints and cosignatures ------------------------------------------------------------

    async def add_checkpoint(
        self, size: int, root_hash: bytes, note: bytes, signed_at: int
    ) -> StoredCheckpoint:
        """Store a signed checkpoint; if a newer one covers more entries already (a checkpointer
        that fell behind), store nothing and return that one: the tree never shrinks."""

        def job(conn: sqlite3.Connection) -> StoredCheckpoint:
            latest = conn.execute(_LATEST_CHECKPOINT).fetchone()
            if latest is not None and int(latest[1]) > size:
                return _checkpoint(latest)
            seq = 0 if latest is None else int(latest[0]) + 1
            conn.execute(
                "INSERT INTO audit_checkpoints (seq, size, root_hash, note, signed_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (seq, size, root_hash, note, signed_at),
            )
            return StoredCheckpoint(seq, size, root_hash, note, signed_at)

        return await self._db.write(job)

    async def latest_checkpoint(self) -> StoredCheckpoint | None:
        def job(conn: sqlite3.Connection) -> StoredCheckpoint | None:
            row = conn.execute(_LATEST_CHECKPOINT).fetchone()
            return None if row is None else _checkpoint(row)

        return await self._db.read(job)

    async def add_cosignature(self, cosignature: StoredCosignature) -> bool:
        """Store a verified cosignature; False if the witness already cosigned this checkpoint."""
        c = cosignature

        def job(conn: sqlite3.Connection) -> bool:
            held = conn.execute(
                "SELECT 1 FROM audit_cosignatures WHERE checkpoint_seq = ? AND witness = ?",
                (c.checkpoint_seq, c.witness),
            ).fetchone()
            if held is not None:
                return False
            conn.execute(
                "INSERT INTO audit_cosignatures (checkpoint_seq, witness, line, cosigned_at, received_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (c.checkpoint_seq, c.witness, c.line, c.cosigned_at, c.received_at),
            )
            return True

        return await self._db.write(job)

    async def cosignatures(self, checkpoint: StoredCheckpoint) -> list[StoredCosignature]:
        """The newest cosignature of each witness over this checkpoint's tree head (checkpoints of
        the same size and root have the same text, so a cosignature of one holds for all)."""

        def job(conn: sqlite3.Connection) -> list[StoredCosignature]:
            rows = conn.execute(
                "SELECT c.checkpoint_seq, c.witness, c.line, c.cosigned_at, c.received_at "
                "FROM audit_cosignatures c JOIN audit_checkpoints k ON k.seq = c.checkpoint_seq "
                "WHERE k.size = ? AND k.root_hash = ? ORDER BY c.witness, c.cosigned_at DESC",
                (checkpoint.size, checkpoint.root_hash),
            ).fetchall()
            newest: dict[str, StoredCosignature] = {}
            for seq, witness, line, cosigned_at, received_at in rows:
                newest.setdefault(witness, StoredCosignature(seq, witness, line, cosigned_at, received_at))
            return list(newest.values())

        return await self._db.read(job)

    async def witness_sizes(self) -> dict[str, int]:
        """For each witness, the largest tree size it cosigned."""

        def job(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT c.witness, MAX(k.size) FROM audit_cosignatures c "
                "JOIN audit_checkpoints k ON k.seq = c.checkpoint_seq GROUP BY c.witness"
            ).fetchall()
            return {str(w): int(s) for w, s in rows}

        return await self._db.read(job)

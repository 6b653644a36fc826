"""The audit log's tail inside one transaction that holds the sequencer (PostgreSQL).

`AuditAppender.locked` begins a transaction, takes the sequencer lock
(`pg_advisory_xact_lock(AUDIT_LOCK_ID)`, shared by every replica, released by commit or
rollback) and reads the stored size and border nodes; `append` then gives each leaf the next
index and computes the tree nodes it completes, in memory; `flush` writes every leaf, node,
envelope index entry and change notification of the transaction in one statement.

Invariants:
- The lock is its own statement, and the tail is read by the next one: at READ COMMITTED each
  statement's snapshot is taken when it starts, so the tail read after the lock was granted
  includes every append committed before, and indexes continue the stored tree without a gap.
- The compact range is rebuilt from the stored border nodes in every transaction, never kept
  between transactions: another replica may have appended, and a rolled-back transaction must
  leave no trace (a size check alone cannot tell those apart). A border node not stored is
  damage (`AuditLogDamaged`), and nothing is appended.
- Leaves and nodes are written together, in index order, by the transaction that appended
  them; the log tables' triggers refuse anything out of order. A change may append before it
  knows whether it applies and take its leaves back (`rollback`) while they are the tail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broker.audit.records import AuditLogDamaged
from broker.audit.sequencer import AUDIT_LOCK_ID
from broker.storage.postgresql.changes import CHANNEL, encode
from broker.storage.postgresql.database import Connection
from broker.storage.records import Change
from protocol import auditlog
from protocol.errors import CaseBridgeError
from protocol.merkle import CompactRange, border_nodes, leaf_hash

_BEGIN_LOCKED = f"BEGIN; SELECT pg_advisory_xact_lock({AUDIT_LOCK_ID:d})"
_TIP = (
    "SELECT s.size, b.level, "
    "(SELECT n.hash FROM audit_nodes AS n WHERE n.level = b.level AND n.idx = (s.size >> b.level) - 1) "
    "FROM (SELECT COALESCE(MAX(idx) + 1, 0) AS size FROM audit_log) AS s "
    "LEFT JOIN generate_series(0, 62) AS b (level) ON (s.size >> b.level) & 1 = 1"
)
"""The stored size and the hashes of its border nodes (one primary-key lookup per set bit of
the size, whatever the planner knows of the tables); a border node not stored reads NULL."""
_FLUSH = (
    "WITH leaves AS (INSERT INTO audit_log (idx, leaf, recorded_at) "
    "SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bigint[]) AS l (idx, leaf, recorded_at) "
    "ORDER BY idx), "
    "nodes AS (INSERT INTO audit_nodes (level, idx, hash) "
    "SELECT * FROM unnest($4::integer[], $5::bigint[], $6::bytea[])), "
    "named AS (INSERT INTO audit_envelope_leaves (envelope_id, idx) "
    "SELECT * FROM unnest($7::bytea[], $8::bigint[])) "
    "SELECT pg_notify($9, payload) FROM unnest($10::text[]) WITH ORDINALITY AS c (payload, n) ORDER BY n"
)


def envelope_ids(leaf: bytes) -> tuple[bytes, ...]:
    """The envelopes a leaf names; none for bytes that are not a CaseBridge leaf (the storage
    contract appends arbitrary bytes, and the tree covers them all the same)."""
    try:
        return auditlog.envelope_ids(auditlog.parse_leaf(leaf))
    except CaseBridgeError:
        return ()


@dataclass(frozen=True, slots=True)
class Mark:
    """Where an `AuditAppender` stood, to go back to."""

    size: int
    border: tuple[bytes, ...]
    rows: tuple[int, int, int]


class AuditAppender:
    """The audit log's tail inside one transaction holding the sequencer: `append` gives a leaf
    its index and computes the tree nodes it completes (the sequencer's compact range,
    `broker.audit.sequencer`); `flush` writes them all, with the change notifications, in one
    statement. Made by `locked`."""

    __slots__ = ("_changes", "_leaves", "_named", "_nodes", "_range")

    def __init__(self, tree: CompactRange) -> None:
        self._range = tree
        self._leaves: list[tuple[int, bytes, int]] = []
        self._nodes: list[tuple[int, int, bytes]] = []
        self._named: list[tuple[bytes, int]] = []
        self._changes: list[Change] = []

    @classmethod
    async def locked(cls, conn: Connection) -> AuditAppender:
        """Begin a transaction on `conn` holding the sequencer, then read the stored tail (a
        statement of its own: READ COMMITTED takes its snapshot after the lock was granted)."""
        await conn.execute(_BEGIN_LOCKED)
        rows = await conn.fetch(_TIP)
        size = int(rows[0][0])
        stored = {int(r[1]): bytes(r[2]) for r in rows if r[1] is not None and r[2] is not None}
        border = []
        for node in border_nodes(size):
            if node.level not in stored:
                raise AuditLogDamaged(reason=f"audit tree node ({node.level}, {node.index}) is not stored")
            border.append(stored[node.level])
        return cls(CompactRange.from_border(size, border))

    def append(self, leaf: bytes, now: int) -> int:
        """Give `leaf` the next index; it is written at `flush`."""
        index = self._range.size
        nodes = self._range.append(leaf_hash(leaf))
        self._leaves.append((index, leaf, now))
        self._nodes.extend((node.level, node.index, digest) for node, digest in nodes)
        self._named.extend((envelope_id, index) for envelope_id in envelope_ids(leaf))
        return index

    def mark(self) -> Mark:
        rows = (len(self._leaves), len(self._nodes), len(self._named))
        return Mark(self._range.size, self._range.border, rows)

    def rollback(self, mark: Mark) -> None:
        """Take back every leaf appended since `mark`, which must be the tail's last mark (the
        change those leaves recorded did not apply; a change that does not apply announces
        nothing)."""
        self._range = CompactRange.from_border(mark.size, mark.border)
        leaves, nodes, named = mark.rows
        del self._leaves[leaves:], self._nodes[nodes:], self._named[named:]

    def announce(self, changes: Sequence[Change]) -> None:
        """Queue `changes` for the other replicas: delivered if and when the batch commits."""
        self._changes.extend(changes)

    async def flush(self, conn: Connection, origin: str) -> None:
        if not self._leaves and not self._changes:
            return
        await conn.execute(
            _FLUSH,
            [i for i, _, _ in self._leaves],
            [leaf for _, leaf, _ in self._leaves],
            [at for _, _, at in self._leaves],
            [level for level, _, _ in self._nodes],
            [index for _, index, _ in self._nodes],
            [digest for _, _, digest in self._nodes],
            [envelope_id for envelope_id, _ in self._named],
            [index for _, index in self._named],
            CHANNEL,
            [encode(origin, change) for change in self._changes],
        )

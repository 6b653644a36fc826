"""The audit log's single sequencer: gives each leaf its index and the tree nodes it completes.

Engine-neutral; a storage engine drives it inside the transaction that appends a leaf:

    engine.hold_sequencer_lock()          # SQLite: its one writer thread per process, and
                                          # SQLite's write lock across processes;
                                          # PostgreSQL: pg_advisory_xact_lock(AUDIT_LOCK_ID)
    tip = engine.stored_tip()             # (size, hash of the last leaf), one indexed read
    if sequencer.tip != tip:              # an append rolled back here, or made elsewhere
        sequencer.resume(size, engine.node_hashes(border_nodes(size)), last_leaf=...)
    index, nodes = sequencer.append(leaf) # then store the leaf at index and every node

Invariants:
- Only one sequencer appends at a time: the engine serialises appends (SQLite's write lock,
  PostgreSQL's transaction-scoped advisory lock), so indexes are gapless and every node is
  computed from the tree as committed.
- The compact range in memory is used only while its tip (size and last leaf hash) equals the
  stored tip read in the same transaction. An append rolled back here leaves it ahead; one made
  by another process (an offline operator command beside a serving broker, another replica)
  changes the stored tip; both together may leave the sizes equal, but not the last leaf. Then
  it is rebuilt from the stored border nodes (`CompactRange.from_border`, log2(size) hashes),
  never by rehashing leaves.
- Every node `append` returns is stored in the same transaction as the leaf, so the stored tree
  and the stored leaves always agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol.merkle import CompactRange, NodeId, leaf_hash

AUDIT_LOCK_ID = 0x6361_7365_6272_6467
"""The PostgreSQL advisory lock key the sequencer holds ("casebrdg"), one per database."""

Tip = tuple[int, bytes | None]
"""A tree's size and its last leaf hash (None for the empty tree)."""


class Sequencer:
    """Holds the right border of the tree between appends. Not thread-safe: the engine calls it
    only while it holds the sequencer lock (on SQLite, only from the writer thread)."""

    __slots__ = ("_last", "_range")

    def __init__(self) -> None:
        self._range: CompactRange | None = None
        self._last: bytes | None = None

    @property
    def size(self) -> int | None:
        """The size of the range in memory (None before the first load)."""
        return None if self._range is None else self._range.size

    @property
    def tip(self) -> Tip | None:
        """Size and last leaf hash of the range in memory (None if not loaded, or loaded without
        its last leaf hash)."""
        if self._range is None or (self._range.size and self._last is None):
            return None
        return self._range.size, self._last

    def resume(self, size: int, border: Sequence[bytes], *, last_leaf: bytes | None = None) -> None:
        """Continue from the stored hashes of `protocol.merkle.border_nodes(size)`; `last_leaf`
        (the stored hash of leaf size - 1) lets `tip` be compared with the store."""
        self._range = CompactRange.from_border(size, border)
        self._last = last_leaf

    def append(self, leaf: bytes) -> tuple[int, list[tuple[NodeId, bytes]]]:
        """The index of `leaf` and the full nodes it completes (its own leaf hash first)."""
        if self._range is None:
            raise RuntimeError("the sequencer appends only after resume")
        index = self._range.size
        digest = leaf_hash(leaf)
        nodes = self._range.append(digest)
        self._last = digest
        return index, nodes

    def root(self) -> bytes:
        if self._range is None:
            raise RuntimeError("the sequencer has no range loaded")
        return self._range.root()

    def forget(self) -> None:
        """Drop the range (the next append reloads it from the store)."""
        self._range = None
        self._last = None

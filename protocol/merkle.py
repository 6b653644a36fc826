"""RFC 6962 / RFC 9162 Merkle trees over SHA-256, Sans-I/O.

Invariants:
- A leaf hashes as SHA-256(0x00 || entry), an inner node as SHA-256(0x01 || left || right), the
  empty tree as SHA-256(""). These are fixed by RFC 6962 and c2sp.org/tlog-tiles, so this module
  uses SHA-256 and not the BLAKE2b of `protocol.primitives`. It takes SHA-256 from `hashlib`
  (OpenSSL), not PyNaCl: PyNaCl has a one-shot SHA-256 too, but costs about three times as much
  per call (measured: ~1.2 us against ~0.4 us for a 65-byte node), and recomputing a tree of a
  million leaves is two million such calls. SHA-256 is a standard hash here, not a key or a
  signature, so nothing home-made is involved.
- Node (level L, index i) covers leaves [i * 2**L, (i + 1) * 2**L). Only full (perfect) subtrees
  are ever stored or read; a right-edge subtree of a tree whose size is not a power of two is
  recomputed from at most log2(size) stored full nodes.
- Proofs are planned in O(log size) node reads (`inclusion_plan`, `consistency_plan`): a store
  fetches the listed nodes in one query, then `ProofPlan.assemble` builds the proof. The
  `HashReader` functions do both steps for synchronous readers such as `MemoryTree`.
- Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2, checks every hash length and the
  exact proof length first, and raises `VerificationError` with a precise reason; it never
  returns a bool.
- Sizes and indices are at most 2**63 - 1. The tiles layout is in `protocol/tiles.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from protocol.errors import InvalidField, MalformedInput, VerificationError
from protocol.primitives import equal

HASH_SIZE = 32
MAX_SIZE = 2**63 - 1
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass(frozen=True, slots=True)
class NodeId:
    """A full subtree: `level` 0 is a leaf hash; it covers leaves [index << level, (index + 1) << level)."""

    level: int
    index: int


class HashReader(Protocol):
    """Reads stored full-subtree hashes, in the order asked; raises if one is not stored."""

    def hashes(self, nodes: Sequence[NodeId]) -> Sequence[bytes]: ...


def check_size(value: int, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIZE:
        raise InvalidField(field, f"an integer in 0..{MAX_SIZE}")


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """The root of adjacent full subtrees given left to right, each smaller than the one before."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def _range_nodes(start: int, end: int) -> list[NodeId]:
    """Full subtrees, largest first, covering [start, end) where start is aligned to end - start's top bit."""
    nodes: list[NodeId] = []
    length = end - start
    for level in range(length.bit_length() - 1, -1, -1):
        if length >> level & 1:
            nodes.append(NodeId(level, start >> level))
            start += 1 << level
    return nodes


def border_nodes(size: int) -> list[NodeId]:
    """The full subtrees, left to right, whose hashes fold into the root of a tree of `size` leaves."""
    check_size(size, "size")
    return _range_nodes(0, size)


class CompactRange:
    """The right border of a growing tree: O(log n) memory, any number of appended leaves.

    `append` returns the full nodes the new leaf completes (the leaf itself first), so a store can
    persist exactly the nodes `HashReader` later reads.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_border(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Resume from the hashes of `border_nodes(size)` (read from a store)."""
        expected = len(border_nodes(size))
        if len(hashes) != expected or any(len(h) != HASH_SIZE for h in hashes):
            raise MalformedInput(reason=f"a tree of size {size} needs {expected} border hashes of 32 bytes")
        compact = cls()
        compact._size = size
        compact._hashes = list(hashes)
        return compact

    @property
    def size(self) -> int:
        return self._size

    @property
    def border(self) -> tuple[bytes, ...]:
        """The hashes of `border_nodes(size)`, left to right: what `from_border` resumes from."""
        return tuple(self._hashes)

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append many leaf hashes without reporting the nodes they complete (the fast path)."""
        border, size = self._hashes, self._size
        sha256, pop = hashlib.sha256, border.pop
        try:
            for leaf in leaves:
                if len(leaf) != HASH_SIZE or size >= MAX_SIZE:
                    raise MalformedInput(reason=f"leaf {size}: not a 32-byte hash, or the tree is full")
                current, bits = leaf, size
                while bits & 1:
                    # node_hash, inlined: this loop runs once per inner node of the whole tree.
                    current = sha256(b"\x01" + pop() + current).digest()
                    bits >>= 1
                border.append(current)
                size += 1
        finally:
            self._size = size

    def append(self, leaf: bytes) -> list[tuple[NodeId, bytes]]:
        if len(leaf) != HASH_SIZE:
            raise MalformedInput(reason="a leaf hash is 32 bytes")
        if self._size >= MAX_SIZE:
            raise InvalidField("size", f"at most {MAX_SIZE} leaves")
        old = self._size
        created = [(NodeId(0, old), leaf)]
        current, level = leaf, 0
        while old >> level & 1:
            level += 1
            current = node_hash(self._hashes.pop(), current)
            created.append((NodeId(level, old >> level), current))
        self._hashes.append(current)
        self._size = old + 1
        return created

    def root(self) -> bytes:
        return _fold_right(self._hashes) if self._hashes else EMPTY_ROOT


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> bytes:
    """The RFC 6962 Merkle Tree Hash of a list of leaf hashes (or of any level's full-node hashes)."""
    compact = CompactRange()
    compact.extend(leaf_hashes)
    return compact.root()


# --- proof planning ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProofPlan:
    """The stored nodes a proof needs, and how many consecutive ones fold into each proof hash."""

    nodes: tuple[NodeId, ...]
    groups: tuple[int, ...]

    def assemble(self, hashes: Sequence[bytes]) -> list[bytes]:
        """Build the proof from the hashes of `nodes` (same order)."""
        if len(hashes) != len(self.nodes) or any(len(h) != HASH_SIZE for h in hashes):
            raise MalformedInput(reason=f"expected {len(self.nodes)} stored hashes of 32 bytes")
        proof: list[bytes] = []
        start = 0
        for count in self.groups:
            proof.append(_fold_right(hashes[start : start + count]))
            start += count
        return proof


def _path_plan(level: int, index: int, size: int) -> tuple[list[NodeId], list[int]]:
    """Audit path of node (level, index) in a tree of `size` leaves, bottom-up."""
    nodes: list[NodeId] = []
    groups: list[int] = []
    last = (size - 1) >> level
    inner = (index ^ last).bit_length()
    for j in range(inner):
        at = level + j
        sibling = (index >> j) ^ 1
        parts = _range_nodes(sibling << at, min((sibling + 1) << at, size))
        nodes.extend(parts)
        groups.append(len(parts))
    for j in range(inner, index.bit_length()):
        if index >> j & 1:
            nodes.append(NodeId(level + j, (index >> j) ^ 1))
            groups.append(1)
    return nodes, groups


def inclusion_plan(index: int, size: int) -> ProofPlan:
    """Nodes for the RFC 6962 audit path of leaf `index` in the tree of `size` leaves."""
    check_size(size, "size")
    check_size(index, "index")
    if index >= size:
        raise InvalidField("index", f"below the tree size {size}")
    nodes, groups = _path_plan(0, index, size)
    return ProofPlan(tuple(nodes), tuple(groups))


def consistency_plan(size1: int, size2: int) -> ProofPlan:
    """Nodes for the RFC 6962 consistency proof from `size1` to `size2` leaves (size1 > 0)."""
    check_size(size1, "size1")
    check_size(size2, "size2")
    if size1 > size2:
        raise InvalidField("size1", f"at most size2 ({size2})")
    if size1 == size2:
        return ProofPlan((), ())
    if size1 == 0:
        raise InvalidField("size1", "above 0: every tree extends the empty tree, with no proof")
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    nodes, groups = _path_plan(level, index, size2)
    if index:
        nodes.insert(0, NodeId(level, index))
        groups.insert(0, 1)
    return ProofPlan(tuple(nodes), tuple(groups))


def root_plan(size: int) -> ProofPlan:
    """Nodes whose fold is the root of the tree of `size` leaves (size > 0); one proof hash."""
    nodes = border_nodes(size)
    if not nodes:
        raise InvalidField("size", "above 0: the empty tree's root is EMPTY_ROOT")
    return ProofPlan(tuple(nodes), (len(nodes),))


def inclusion_proof(index: int, size: int, reader: HashReader) -> list[bytes]:
    plan = inclusion_plan(index, size)
    return plan.assemble(reader.hashes(plan.nodes))


def consistency_proof(size1: int, size2: int, reader: HashReader) -> list[bytes]:
    plan = consistency_plan(size1, size2)
    return plan.assemble(reader.hashes(plan.nodes))


def tree_root(size: int, reader: HashReader) -> bytes:
    if size == 0:
        return EMPTY_ROOT
    plan = root_plan(size)
    return plan.assemble(reader.hashes(plan.nodes))[0]


class MemoryTree:
    """An in-memory tree keeping every full-subtree hash (32 bytes each, about 2n in all)."""

    __slots__ = ("_levels", "_range")

    def __init__(self) -> None:
        self._levels: list[bytearray] = []
        self._range = CompactRange()

    @property
    def size(self) -> int:
        return self._range.size

    def append(self, leaf: bytes) -> int:
        """Append a leaf hash; return its index."""
        for node, digest in self._range.append(leaf):
            if node.level == len(self._levels):
                self._levels.append(bytearray())
            self._levels[node.level] += digest
        return self.size - 1

    def append_entry(self, entry: bytes) -> int:
        return self.append(leaf_hash(entry))

    def root(self, size: int | None = None) -> bytes:
        return self._range.root() if size is None or size == self.size else tree_root(size, self)

    def hashes(self, nodes: Sequence[NodeId]) -> list[bytes]:
        found: list[bytes] = []
        for node in nodes:
            level, index = node.level, node.index
            stored = self._levels[level] if 0 <= level < len(self._levels) else b""
            if not 0 <= index < len(stored) // HASH_SIZE:
                raise InvalidField("node", f"a stored full subtree, not ({level}, {index})")
            found.append(bytes(stored[index * HASH_SIZE : (index + 1) * HASH_SIZE]))
        return found


# --- verification (RFC 9162 section 2.1.3.2 and 2.1.4.2) -------------------------------------


def _fail(reason: str) -> VerificationError:
    return VerificationError(reason=reason)


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    for position, value in enumerate(hashes):
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise _fail(f"{what}: hash {position} is not {HASH_SIZE} bytes")


def _check_count(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIZE:
        raise _fail(f"{what} is not an integer in 0..{MAX_SIZE}")


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that `leaf` is at `index` in the tree of `size` leaves with `root`, or raise."""
    _check_count(index, "inclusion proof: index")
    _check_count(size, "inclusion proof: size")
    if index >= size:
        raise _fail(f"inclusion proof: index {index} is not below tree size {size}")
    _check_hashes("inclusion proof: leaf", [leaf])
    _check_hashes("inclusion proof: root", [root])
    _check_hashes("inclusion proof", proof)
    inner = (index ^ (size - 1)).bit_length()
    expected = inner + (index >> inner).bit_count()
    if len(proof) != expected:
        raise _fail(f"inclusion proof: {len(proof)} hashes, expected {expected} for {index} in {size}")
    fn, sn, result = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            raise _fail("inclusion proof: longer than the path to the root")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise _fail("inclusion proof: shorter than the path to the root")
    if not equal(result, root):
        raise _fail(f"inclusion proof: computed root differs from the root of size {size}")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree of `size2` leaves with `root2` extends the one of `size1` with `root1`."""
    _check_count(size1, "consistency proof: size1")
    _check_count(size2, "consistency proof: size2")
    if size1 > size2:
        raise _fail(f"consistency proof: size1 {size1} is above size2 {size2}")
    if size1 == size2:
        if proof:
            raise _fail("consistency proof: equal sizes need an empty proof")
        if size1 == 0 and not (equal(root1, EMPTY_ROOT) and equal(root2, EMPTY_ROOT)):
            raise _fail("consistency proof: the empty tree's root is SHA-256 of nothing")
        if not equal(root1, root2):
            raise _fail(f"consistency proof: two different roots for size {size1}")
        return
    if size1 == 0:
        raise _fail("consistency proof: from the empty tree it proves nothing; start from size 1")
    _check_hashes("consistency proof: root1", [root1])
    _check_hashes("consistency proof: root2", [root2])
    _check_hashes("consistency proof", proof)
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    inner = (index ^ ((size2 - 1) >> level)).bit_length()
    expected = (1 if index else 0) + inner + (index >> inner).bit_count()
    if len(proof) != expected:
        raise _fail(f"consistency proof: {len(proof)} hashes, expected {expected} for {size1} to {size2}")
    path = [root1, *proof] if index == 0 else list(proof)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    first = second = path[0]
    for step in path[1:]:
        if sn == 0:
            raise _fail("consistency proof: longer than the path to the root")
        if fn & 1 or fn == sn:
            first, second = node_hash(step, first), node_hash(step, second)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            second = node_hash(second, step)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise _fail("consistency proof: shorter than the path to the root")
    if not equal(first, root1):
        raise _fail(f"consistency proof: computed root differs from the root of size {size1}")
    if not equal(second, root2):
        raise _fail(f"consistency proof: computed root differs from the root of size {size2}")

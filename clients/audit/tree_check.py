"""Recompute a log's Merkle tree from its leaves, one leaf at a time, and say what is wrong.

Invariants:
- Memory is O(log n) plus the few leaves kept on purpose (certificates and revocation lists, for
  `trace`): the tree is a `protocol.merkle.CompactRange` and its right border, nothing more.
- Leaves are fed in index order from `start` (0, or the trusted size when resuming from the
  trusted state's border, which is authentic because it folds to the trusted root).
- When the source also gives the hash it logged for each leaf (a hash tile, or an export's
  `hashes` file), those hashes are folded into a second tree. If they, and not the leaves, fold to
  the checkpoint's root, they are authentic, and every leaf whose own hash differs is named: the
  precise place where a leaf was changed, removed, inserted or moved.
- Reaching the trusted size, the recomputed root must be the trusted root; if it is not, while
  all the entries do hash to the new checkpoint's root, the log was rewritten and re-signed (a
  fork). Entries that do not match their own checkpoint are reported as such instead.
- At most `MAX_REPORTED` problems of one kind are listed; the rest are counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from clients.audit.leaf_records import TRUST_KINDS, CheckedLeaf, LeafRecord, check_leaf, parse_leaf, peek_kind
from clients.audit.policy import Problem, ProblemKind
from clients.audit.sources import SourceEntry
from clients.audit.trusted_state import TrustedState
from protocol.errors import MalformedInput
from protocol.merkle import EMPTY_ROOT, CompactRange, leaf_hash
from protocol.note import Checkpoint
from protocol.primitives import equal

MAX_REPORTED = 20
# Leaves are stamped when the broker prepares a change and ordered when it commits, so under
# concurrency a leaf may be a little older than one before it (docs/audit-log.md). A step back of
# up to this many seconds from the latest time seen is that; a larger one is reported.
TIME_SKEW_SECONDS = 60
Observer = Callable[[LeafRecord], None]


def _short(root: bytes) -> str:
    return root.hex()[:16]


class _Tree:
    """A compact range (its right border is what the trusted state saves)."""

    __slots__ = ("range",)

    def __init__(self, resume_from: TrustedState | None) -> None:
        self.range = CompactRange() if resume_from is None else resume_from.compact_range()

    def add(self, digest: bytes) -> None:
        self.range.extend((digest,))

    def copy(self) -> _Tree:
        tree = _Tree(None)
        tree.range = CompactRange.from_border(self.range.size, self.range.border)
        return tree

    @property
    def size(self) -> int:
        return self.range.size

    def root(self) -> bytes:
        return self.range.root()


@dataclass
class _Counted:
    """Problems of one kind: the first `MAX_REPORTED` in full, then a count."""

    kind: ProblemKind
    listed: list[Problem] = field(default_factory=list)
    more: int = 0

    def add(self, message: str, index: int | None) -> None:
        if len(self.listed) < MAX_REPORTED:
            self.listed.append(Problem(self.kind, message, index))
        else:
            self.more += 1

    def problems(self, noun: str) -> list[Problem]:
        extra = [Problem(self.kind, f"and {self.more} more {noun} not listed")] if self.more else []
        return [*self.listed, *extra]


class TreeCheck:
    """Feed every leaf of `checkpoint`'s tree in order; `finish` lists what is wrong."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        trusted: TrustedState | None,
        resume: bool = False,
        observers: Sequence[Observer] = (),
    ) -> None:
        if resume and (trusted is None or trusted.size > checkpoint.size):
            raise ValueError("resume only from a trusted state no larger than the checkpoint")
        self.checkpoint = checkpoint
        self.trusted = trusted
        self.start = trusted.size if resume and trusted is not None else 0
        base = trusted if resume else None
        self._leaves = _Tree(base)
        self._logged_known = True
        """Whether the source gave the log's own hash for every entry so far."""
        self._logged: _Tree | None = None
        """The tree of those hashes, made at the first one that differs from its leaf's hash;
        until then it is the leaves' tree itself, so it is not folded twice."""
        self._observers = observers
        self._last_time = base.last_time if base is not None else None
        self._bad_leaves = _Counted(ProblemKind.LEAF)
        self._order = _Counted(ProblemKind.TIME_ORDER)
        self._lost = _Counted(ProblemKind.MISSING)
        self._mismatches: list[tuple[int, str]] = []
        self._mismatch_count = 0
        self._extra = 0
        self._gap: int | None = None
        self._fork: Problem | None = None
        self.trust_leaves: list[tuple[int, bytes]] = list(base.trust_leaves) if base is not None else []
        self.checked = 0
        if trusted is not None and trusted.size == 0 and not equal(trusted.root_hash, EMPTY_ROOT):
            self._fork = Problem(ProblemKind.FORK, "the trusted state records a non-empty root for size 0")

    @property
    def next_index(self) -> int:
        return self._leaves.size if self._gap is None else self._gap

    def add(self, leaf: bytes | None, logged_hash: bytes | None = None) -> None:
        """The next leaf (None if the source lost it) and the hash the log recorded for it, if known."""
        index = self._leaves.size
        if self._gap is not None:
            return
        if index >= self.checkpoint.size:
            self._extra += leaf is not None
            return
        if logged_hash is None or len(logged_hash) != 32:
            self._logged_known, self._logged = False, None
        digest = leaf_hash(leaf) if leaf is not None else logged_hash
        if digest is None:
            self._gap = index
            return
        if leaf is None:
            self._lost.add(f"entry {index} is missing from the source (its logged hash stands in)", index)
        if self._logged_known and logged_hash is not None:
            if self._logged is None and logged_hash != digest:
                self._logged = self._leaves.copy()
            if self._logged is not None:
                self._logged.add(logged_hash)
            if leaf is not None and logged_hash != digest:
                self._mismatch_count += 1
                if len(self._mismatches) < MAX_REPORTED:
                    self._mismatches.append((index, peek_kind(leaf) or "unreadable"))
        self._leaves.add(digest)
        if leaf is not None:
            self._parse(index, leaf, digest)
        self.checked += 1
        self._check_trusted_prefix()

    def add_block(self, entries: Sequence[SourceEntry]) -> None:
        """`add` each entry in order. The common entry (a leaf whose logged hash, when the source
        gives hashes, is its own hash, below the checkpoint's and the trusted size) takes a
        shorter path to the same result: its hash batched into the tree, and `_parse`."""
        at, count = 0, len(entries)
        while at < count:
            at = self._add_common(entries, at)
            if at < count:
                self.add(*entries[at])
                at += 1

    def _add_common(self, entries: Sequence[SourceEntry], at: int) -> int:
        """Take entries from `at` while they are common; returns where it stopped."""
        index = self._leaves.size
        limit = self.checkpoint.size
        trusted = self.trusted
        if trusted is not None and index < trusted.size and self.start != trusted.size:
            limit = min(limit, trusted.size)
        if self._gap is not None or self._logged is not None or index >= limit:
            return at
        stop = min(len(entries), at + limit - index)
        hashes_agree = self._logged_known
        sha256, parse, digests = hashlib.sha256, self._parse, []
        start = at
        while at < stop:
            leaf, logged = entries[at]
            if leaf is None:
                break
            digest = sha256(b"\x00" + leaf).digest()
            if hashes_agree and logged != digest:
                break
            digests.append(digest)
            parse(index + at - start, leaf, digest)
            at += 1
        self._leaves.range.extend(digests)
        self.checked += at - start
        self._check_trusted_prefix()
        return at

    def _parse(self, index: int, leaf: bytes, digest: bytes | None = None) -> None:
        try:
            record: LeafRecord | CheckedLeaf = (
                parse_leaf(index, leaf, digest) if self._observers else check_leaf(leaf)
            )
        except MalformedInput as e:
            kind = peek_kind(leaf)
            self._bad_leaves.add(
                f"leaf {index} ({kind or 'no readable kind'}) does not parse: {e.reason}", index
            )
            return
        if self._last_time is not None and record.time < self._last_time - TIME_SKEW_SECONDS:
            self._order.add(
                f"leaf {index} ({record.kind}) has time {record.time}, more than {TIME_SKEW_SECONDS} s "
                f"before an earlier leaf's {self._last_time}: leaves were reordered or the "
                "sequencer's clock went back",
                index,
            )
        self._last_time = max(record.time, self._last_time or 0)
        if record.kind in TRUST_KINDS:
            self.trust_leaves.append((index, leaf))
        if isinstance(record, LeafRecord):
            for observe in self._observers:
                observe(record)

    def _check_trusted_prefix(self) -> None:
        trusted = self.trusted
        if trusted is None or self._leaves.size != trusted.size or self.start == trusted.size:
            return
        root = self._leaves.root()
        if not equal(root, trusted.root_hash):
            self._fork = Problem(
                ProblemKind.FORK,
                f"the first {trusted.size} entries hash to {_short(root)}..., but the checkpoint this "
                f"officer trusted for size {trusted.size} has root {_short(trusted.root_hash)}...: "
                "the log was rewritten after it was verified",
                trusted.size,
            )

    def finish(self) -> list[Problem]:
        cp = self.checkpoint
        problems = [
            *self._bad_leaves.problems("leaves that do not parse"),
            *self._order.problems("out of order"),
            *self._lost.problems("missing entries"),
        ]
        if self._gap is not None:
            problems.append(
                Problem(
                    ProblemKind.MISSING,
                    f"entry {self._gap} is missing from the source, so the tree cannot be recomputed past it",
                    self._gap,
                )
            )
        elif self._leaves.size < cp.size:
            problems.append(
                Problem(
                    ProblemKind.MISSING,
                    f"the source holds {self._leaves.size} entries but the checkpoint "
                    f"covers {cp.size}: entries from {self._leaves.size} on are missing",
                    self._leaves.size,
                )
            )
        if self._extra:
            problems.append(
                Problem(ProblemKind.EXTRA, f"{self._extra} entries beyond the checkpoint's size {cp.size}")
            )
        complete = self._gap is None and self._leaves.size == cp.size
        if complete and not equal(self._leaves.root(), cp.root_hash):
            problems.extend(self._root_problems())
        elif self._fork is not None and complete:
            # Only when the entries are the ones the new checkpoint commits to does a different
            # prefix prove a signed rewrite; otherwise the entries are simply not the log's.
            problems.append(self._fork)
        return problems

    def _root_problems(self) -> list[Problem]:
        cp = self.checkpoint
        logged = self._logged or self._leaves
        if (
            self._logged_known
            and logged.size == cp.size
            and equal(logged.root(), cp.root_hash)
            and self._mismatches
        ):
            first, kind = self._mismatches[0]
            problems = [
                Problem(
                    ProblemKind.ALTERED,
                    f"leaf {index} ({found}) is not the entry the checkpoint commits to: "
                    "it was changed, or entries were removed, inserted or reordered",
                    index,
                )
                for index, found in self._mismatches
            ]
            if self._mismatch_count > len(self._mismatches):
                problems.append(
                    Problem(
                        ProblemKind.ALTERED,
                        f"and {self._mismatch_count - len(self._mismatches)} more "
                        f"entries differ after leaf {first} ({kind})",
                    )
                )
            return problems
        return [
            Problem(
                ProblemKind.ROOT,
                f"the {cp.size} entries hash to root {_short(self._leaves.root())}..., but the checkpoint "
                f"says {_short(cp.root_hash)}...: an entry was changed, removed, added or moved",
            )
        ]

    def state(self, note: bytes, now: int) -> TrustedState:
        """The trusted state to keep once `finish` found nothing wrong."""
        if self._leaves.size != self.checkpoint.size or self._gap is not None:
            raise ValueError("the tree is not complete")
        return TrustedState(
            origin=self.checkpoint.origin,
            size=self.checkpoint.size,
            root_hash=self.checkpoint.root_hash,
            checkpoint=note,
            border=self._leaves.range.border,
            last_time=self._last_time,
            verified_at=now,
            trust_leaves=tuple(self.trust_leaves),
        )

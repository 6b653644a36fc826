"""Verify a whole audit log from any source against the officer's policy and trusted state.

Order of checks, each failure one `Problem`:
1. the checkpoint: configured origin, signed by the configured log key (nothing else is checked
   without it), then enough cosignatures by configured witnesses;
2. against the trusted state: no smaller size (rollback), no other root at the same size (fork),
   and, from a live broker, the broker's own consistency proof from the trusted size;
3. every leaf, streamed: it parses, it is not older than the one before, and the tree recomputed
   from all of them has the checkpoint's root; on the way, the first `trusted size` leaves must
   have the trusted root (a log rewritten and re-signed with the same key is caught here).

Invariants: memory stays O(log n) (see `tree_check`); the trusted state is replaced only by the
caller, and only from a `Verification` with no problem (`new_state` is None otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clients.audit.policy import LogPolicy, Problem, ProblemKind
from clients.audit.sources import LogSource
from clients.audit.tree_check import Observer, TreeCheck
from clients.audit.trusted_state import TrustedState
from protocol.errors import CaseBridgeError, InvalidField, VerificationError
from protocol.merkle import verify_consistency
from protocol.note import Checkpoint
from protocol.primitives import equal

Sink = Callable[[bytes | None, bytes | None], None]


class Progress:
    """Told how far a verification got; the CLI draws a bar, tests count calls. Does nothing here."""

    def update(self, done: int, total: int) -> None:
        return None

    def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Verification:
    """What one verification found. `ok` only when every check passed."""

    source: str
    note: bytes
    checkpoint: Checkpoint | None
    cosigners: tuple[str, ...]
    problems: tuple[Problem, ...]
    start: int
    checked: int
    trusted: TrustedState | None
    new_state: TrustedState | None

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        cp = self.checkpoint
        lines = [f"source: {self.source}"]
        if cp is not None:
            lines.append(f"checkpoint: {cp.origin} size {cp.size} root {cp.root_hash.hex()}")
            lines.append(f"cosigned by: {', '.join(self.cosigners) or 'no configured witness'}")
            span = f"{self.start}..{self.start + self.checked - 1}" if self.checked else "none"
            lines.append(f"leaves recomputed: {self.checked} (indices {span})")
        if self.trusted is None:
            lines.append("trusted before: none (first verification of this log by this officer)")
        else:
            lines.append(f"trusted before: size {self.trusted.size} root {self.trusted.root_hash.hex()}")
        lines.extend(p.line() for p in self.problems)
        lines.append("result: VERIFIED" if self.ok else f"result: FAILED ({len(self.problems)} problem(s))")
        return lines

    def as_json(self) -> dict[str, object]:
        cp = self.checkpoint
        return {
            "source": self.source,
            "verified": self.ok,
            "checkpoint": None
            if cp is None
            else {"origin": cp.origin, "size": cp.size, "root_hash": cp.root_hash.hex()},
            "cosigners": list(self.cosigners),
            "leaves_checked": self.checked,
            "start": self.start,
            "trusted_before": None
            if self.trusted is None
            else {"size": self.trusted.size, "root_hash": self.trusted.root_hash.hex()},
            "problems": [p.as_json() for p in self.problems],
        }


def check_trusted_state(trusted: TrustedState, policy: LogPolicy) -> None:
    """Refuse a trusted state that belongs to another log or was not signed by the log key."""
    if trusted.origin != policy.origin:
        raise InvalidField(
            "--state", f"a state directory for {policy.origin}; this one holds {trusted.origin}"
        )
    try:
        signed = policy.open(trusted.checkpoint).checkpoint
    except VerificationError as e:
        raise VerificationError(
            "the trusted checkpoint in the state directory is not signed by the configured log key; "
            "check --log-key (a new log key needs a new origin and a new state directory).",
            reason=e.reason,
        ) from e
    if signed.size != trusted.size or not equal(signed.root_hash, trusted.root_hash):
        raise VerificationError(
            "the trusted state's size or root differs from its own checkpoint; restore it from a backup.",
            reason="trusted state disagrees with its checkpoint",
        )


async def _check_against_trusted(
    source: LogSource, cp: Checkpoint, trusted: TrustedState, problems: list[Problem]
) -> None:
    old = trusted.size
    if cp.size < old:
        problems.append(
            Problem(
                ProblemKind.ROLLBACK,
                f"checkpoint size {cp.size} is below the trusted size {old}: "
                "the broker shows an older or a forked log",
            )
        )
    elif cp.size == old and not equal(cp.root_hash, trusted.root_hash):
        problems.append(
            Problem(
                ProblemKind.FORK,
                f"checkpoint of size {old} has root {cp.root_hash.hex()[:16]}..., the "
                f"trusted one {trusted.root_hash.hex()[:16]}...: two signed views of the same log",
            )
        )
    elif 0 < old < cp.size:
        try:
            proof = await source.consistency_proof(old, cp.size)
            if proof is not None:
                verify_consistency(old, cp.size, proof, trusted.root_hash, cp.root_hash)
        except CaseBridgeError as e:
            problems.append(
                Problem(
                    ProblemKind.CONSISTENCY,
                    f"the log's consistency proof from the trusted size {old} "
                    f"to {cp.size} does not verify ({e.reason})",
                )
            )


async def verify_log(
    source: LogSource,
    policy: LogPolicy,
    *,
    trusted: TrustedState | None,
    now: int,
    resume: bool = False,
    checkpoint_note: bytes | None = None,
    observers: Sequence[Observer] = (),
    sink: Sink | None = None,
    progress: Progress | None = None,
) -> Verification:
    """Verify `source` (its latest checkpoint, or `checkpoint_note`); see the module docstring.

    `resume` starts from the trusted state's border instead of leaf 0 (the first trusted-size
    leaves were verified before); `observers` see every leaf that parses; `sink` every entry."""
    if trusted is not None:
        check_trusted_state(trusted, policy)
    note = checkpoint_note if checkpoint_note is not None else await source.checkpoint()
    problems: list[Problem] = []

    def result(cp: Checkpoint | None, cosigners: tuple[str, ...], tree: TreeCheck | None) -> Verification:
        state = tree.state(note, now) if tree is not None and not problems else None
        start, checked = (tree.start, tree.checked) if tree is not None else (0, 0)
        return Verification(
            source.description, note, cp, cosigners, tuple(problems), start, checked, trusted, state
        )

    try:
        signed = policy.open(note)
    except VerificationError as e:
        problems.append(Problem(ProblemKind.CHECKPOINT, f"checkpoint refused: {e.reason}"))
        return result(None, (), None)
    cp = signed.checkpoint
    cosigners = tuple(sorted({c.key.name for c in signed.cosignatures}))
    if (missing := policy.cosignature_problem(signed)) is not None:
        problems.append(missing)
    if trusted is not None:
        await _check_against_trusted(source, cp, trusted, problems)
    resumable = resume and trusted is not None and trusted.size <= cp.size and not problems
    tree = TreeCheck(cp, trusted=trusted, resume=resumable, observers=observers)
    progress = progress or Progress()
    try:
        async for block in source.entries(tree.start, cp.size, problems.append):
            if sink is not None:
                for leaf, logged in block:
                    sink(leaf, logged)
            tree.add_block(block)
            progress.update(tree.start + tree.checked, cp.size)
    finally:
        progress.close()
    problems.extend(tree.finish())
    return result(cp, cosigners, tree)

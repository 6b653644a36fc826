"""What a security officer trusts about one log, and the problems a verification can find.

Invariants:
- A checkpoint counts only if it names the configured origin and the configured log key signed
  it; cosignatures count only from configured witness keys, each key once; fewer than
  `min_cosignatures` is a problem, never a warning.
- A policy that could never be met (more cosignatures required than witness keys configured) is
  refused when it is made, so a typo cannot turn into "nothing ever verifies" or the reverse.
- Every problem is one line that names what is wrong and where (a leaf index when there is one).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import InvalidField, MalformedInput, VerificationError
from protocol.note import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    SignedCheckpoint,
    VerifierKey,
    open_checkpoint,
)


class ProblemKind(StrEnum):
    """What kind of thing went wrong; stable, so scripts can match on it."""

    CHECKPOINT = "checkpoint"  # not signed by the log key, wrong origin, or not a checkpoint
    COSIGNATURES = "cosignatures"  # fewer witness cosignatures than the policy requires
    LEAF = "leaf"  # a leaf that does not parse
    TIME_ORDER = "time_order"  # a leaf older than the one before it
    ALTERED = "altered"  # a leaf that is not the entry the checkpoint commits to
    MISSING = "missing"  # fewer entries than the checkpoint covers
    EXTRA = "extra"  # entries beyond the checkpoint
    ROOT = "root"  # the entries do not hash to the checkpoint's root
    FORK = "fork"  # the log does not extend the checkpoint this officer trusted
    ROLLBACK = "rollback"  # a checkpoint smaller than the one this officer trusted
    CONSISTENCY = "consistency"  # the broker's consistency proof does not verify
    INCLUSION = "inclusion"  # an inclusion proof does not verify, or entries disagree
    RECEIPT = "receipt"  # a receipt in the log that does not verify
    SOURCE = "source"  # an export file or a fetched tile that is damaged


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    message: str
    index: int | None = None

    def line(self) -> str:
        return f"{self.kind}: {self.message}"

    def as_json(self) -> dict[str, object]:
        return {"kind": str(self.kind), "message": self.message, "index": self.index}


@dataclass(frozen=True, slots=True)
class LogPolicy:
    """The log key (type 0x01) and origin, and the witnesses (type 0x04) whose cosignatures count."""

    log_key: VerifierKey
    witness_keys: tuple[VerifierKey, ...] = ()
    min_cosignatures: int = 0
    origin_override: str | None = None

    def __post_init__(self) -> None:
        if self.log_key.sig_type != SIG_ED25519:
            raise InvalidField("log key", "an Ed25519 (type 0x01) signed-note verifier key")
        if any(k.sig_type != SIG_COSIGNATURE_V1 for k in self.witness_keys):
            raise InvalidField("witness key", "a cosignature (type 0x04) verifier key")
        names = [(k.name, k.key_id) for k in self.witness_keys]
        if len(set(names)) != len(names):
            raise InvalidField("witness key", "each witness key once")
        if not 0 <= self.min_cosignatures <= len(self.witness_keys):
            raise InvalidField(
                "--min-cosignatures",
                f"0..{len(self.witness_keys)} (no more than the witness keys configured)",
            )

    @property
    def origin(self) -> str:
        """The checkpoint origin: by CaseBridge convention the log key's name."""
        return self.origin_override or self.log_key.name

    @classmethod
    def from_text(
        cls,
        log_key: str,
        witness_keys: Iterable[str] = (),
        *,
        min_cosignatures: int = 0,
        origin: str | None = None,
    ) -> LogPolicy:
        """A policy from vkey strings (`<name>+<hex key ID>+<base64>`), as an officer configures it."""
        try:
            log = VerifierKey.parse(log_key.strip())
        except MalformedInput as e:
            raise InvalidField(
                "log key", f"a vkey such as casebridge.th-casebridge/audit+1a2b3c4d+AQ... ({e.reason})"
            ) from e
        witnesses = []
        for text in witness_keys:
            try:
                witnesses.append(VerifierKey.parse(text.strip()))
            except MalformedInput as e:
                raise InvalidField(
                    "witness key", f"a witness vkey from `casebridge audit witness init` ({e.reason})"
                ) from e
        return cls(log, tuple(witnesses), min_cosignatures, origin)

    def open(self, note: bytes) -> SignedCheckpoint:
        """Verify a checkpoint note's origin and log signature, or raise `VerificationError`."""
        try:
            return open_checkpoint(
                note, origin=self.origin, log_key=self.log_key, cosigners=self.witness_keys
            )
        except MalformedInput as e:
            raise VerificationError(reason=f"not a checkpoint note ({e.reason})") from e

    def cosignature_problem(self, signed: SignedCheckpoint) -> Problem | None:
        count = len({(c.key.name, c.key.key_id) for c in signed.cosignatures})
        if count >= self.min_cosignatures:
            return None
        names = ", ".join(sorted(c.key.name for c in signed.cosignatures)) or "none"
        return Problem(
            ProblemKind.COSIGNATURES,
            f"{count} witness cosignature(s) verified ({names}); the policy requires {self.min_cosignatures}",
        )

"""c2sp.org/tlog-proof@v1: an offline-verifiable proof that one entry is in the audit log. Sans-I/O.

The text is `c2sp.org/tlog-proof@v1\\n`, an optional `extra <base64>\\n`, `index <decimal>\\n`, the
RFC 6962 inclusion proof one base64 hash per line (leaf's sibling first), an empty line, then the
cosigned checkpoint note verbatim.

Invariants:
- Parsing is strict: the one canonical spelling (decimal without leading zeros, canonical base64,
  32-byte hashes, at most 63 proof lines) and a checkpoint that parses as a signed note.
- The extra data is not authenticated; `verify_tlog_proof` never looks at it.
- Verification checks the checkpoint (origin, log signature, known cosignatures) before the
  inclusion proof, and raises `VerificationError`; which cosignatures suffice is the caller's
  policy, decided on the returned `SignedCheckpoint`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import InvalidField, MalformedInput
from protocol.merkle import HASH_SIZE, MAX_SIZE, verify_inclusion
from protocol.note import (
    MAX_NOTE_BYTES,
    SignedCheckpoint,
    VerifierKey,
    open_checkpoint,
    parse_note,
    strict_b64decode,
)

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 63
_INDEX = re.compile(r"index (0|[1-9][0-9]*)", re.ASCII)


@dataclass(frozen=True, slots=True)
class TlogProof:
    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or not 0 <= self.index <= MAX_SIZE:
            raise InvalidField("index", f"an integer in 0..{MAX_SIZE}")
        if len(self.proof) > MAX_PROOF_HASHES or any(len(h) != HASH_SIZE for h in self.proof):
            raise InvalidField("proof", f"at most {MAX_PROOF_HASHES} hashes of {HASH_SIZE} bytes")
        if self.extra is not None and not self.extra:
            raise InvalidField("extra", "absent, or at least one byte")

    def encode(self) -> bytes:
        lines = [HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode("ascii"))
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode("ascii") for h in self.proof)
        return ("\n".join(lines) + "\n\n").encode() + self.checkpoint

    @classmethod
    def parse(cls, data: bytes) -> TlogProof:
        if len(data) > MAX_NOTE_BYTES + 8192:
            raise MalformedInput(reason="tlog proof is too large")
        head, separator, checkpoint = bytes(data).partition(b"\n\n")
        if not separator:
            raise MalformedInput(reason="tlog proof has no empty line before the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError as e:
            raise MalformedInput(reason="tlog proof header is not ASCII") from e
        if lines[0] != HEADER:
            raise MalformedInput(reason=f"tlog proof does not start with {HEADER}")
        extra = None
        at = 1
        if at < len(lines) and lines[at].startswith("extra "):
            extra = strict_b64decode(lines[at][len("extra ") :], "tlog proof extra data")
            at += 1
        match = _INDEX.fullmatch(lines[at]) if at < len(lines) else None
        if match is None or int(match.group(1)) > MAX_SIZE:
            raise MalformedInput(reason="tlog proof has no 'index <decimal>' line")
        hashes = tuple(
            strict_b64decode(line, f"tlog proof line {n}") for n, line in enumerate(lines[at + 1 :])
        )
        parse_note(checkpoint)
        try:
            return cls(int(match.group(1)), hashes, checkpoint, extra)
        except InvalidField as e:
            raise MalformedInput(reason=f"tlog proof: {e.detail}") from e


def verify_tlog_proof(
    proof: TlogProof,
    leaf_hash: bytes,
    *,
    origin: str,
    log_key: VerifierKey,
    cosigners: Sequence[VerifierKey] = (),
) -> SignedCheckpoint:
    """Check the checkpoint, then that `leaf_hash` is at `proof.index` under its root; or raise."""
    signed = open_checkpoint(proof.checkpoint, origin=origin, log_key=log_key, cosigners=cosigners)
    head = signed.checkpoint
    verify_inclusion(leaf_hash, proof.index, head.size, proof.proof, head.root_hash)
    return signed

"""A tlog-witness (c2sp.org/tlog-witness v1): cosign a log's checkpoints only as the log grows.

Sans-I/O: `Witness.add_checkpoint` takes the request body's parts, what the witness recorded for
each log, and the time, and returns the answer, with the record to persist before answering.

Checks, in the specification's order, each with its status:
- a body that is not `old <N>` + at most 63 base64 hashes + an empty line + a note: 400;
- an origin this witness does not follow: 404; no signature by that log's key: 403;
- an old size above the checkpoint's: 400;
- an old size that is not the size this witness last cosigned (0 if never): 409 with
  `text/x.tlog.size` body `<recorded size>\\n`, so the log can resubmit with the right proof;
- the same size as recorded but another root (a fork): 409;
- a consistency proof from the recorded size and root to the checkpoint that does not verify
  (a fork or a rewritten log): 422;
- otherwise 200 with one cosignature line (type 0x04, timestamped).

Invariants: the witness never cosigns a smaller tree than it recorded, nor another root for the
same size; the proof is checked against the root it recorded, never one the client supplies. A
validly signed checkpoint it refuses as inconsistent is flagged as `evidence` (log misbehaviour).
"""

from __future__ import annotations

import re
from base64 import b64encode
from collections.abc import Mapping
from dataclasses import dataclass

from protocol.errors import MalformedInput, VerificationError
from protocol.merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from protocol.note import (
    MAX_NOTE_BYTES,
    SIG_COSIGNATURE_V1,
    Checkpoint,
    NoteSigner,
    VerifierKey,
    cosign_checkpoint,
    open_checkpoint,
    parse_note,
    strict_b64decode,
)
from protocol.primitives import equal

SIZE_CONTENT_TYPE = "text/x.tlog.size"
COSIGNATURE_CONTENT_TYPE = "text/plain; charset=utf-8"
MAX_PROOF_LINES = 63
MAX_BODY_BYTES = MAX_NOTE_BYTES + 64 * (MAX_PROOF_LINES + 1)
_OLD = re.compile(r"old (0|[1-9][0-9]{0,18})", re.ASCII)


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """A parsed add-checkpoint request body."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpoint:
        if len(body) > MAX_BODY_BYTES:
            raise MalformedInput(reason=f"request body above {MAX_BODY_BYTES} bytes")
        head, separator, note = bytes(body).partition(b"\n\n")
        if not separator:
            raise MalformedInput(reason="no empty line before the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError as e:
            raise MalformedInput(reason="the old size and proof lines are not ASCII") from e
        match = _OLD.fullmatch(lines[0])
        if match is None:
            raise MalformedInput(reason="the first line is not 'old <decimal>'")
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise MalformedInput(reason=f"more than {MAX_PROOF_LINES} consistency proof lines")
        proof = tuple(strict_b64decode(line, f"proof line {n}") for n, line in enumerate(lines[1:], 1))
        if any(len(h) != HASH_SIZE for h in proof):
            raise MalformedInput(reason=f"a proof line is not a {HASH_SIZE}-byte hash")
        return cls(int(match.group(1)), proof, note)

    def encode(self) -> bytes:
        lines = [f"old {self.old_size}", *(b64encode(h).decode("ascii") for h in self.proof)]
        return ("\n".join(lines) + "\n\n").encode("ascii") + self.note


@dataclass(frozen=True, slots=True)
class LogRecord:
    """The latest checkpoint this witness cosigned for one log."""

    size: int
    root_hash: bytes
    checkpoint: str
    cosigned_at: int


@dataclass(frozen=True, slots=True)
class WitnessAnswer:
    status: int
    body: bytes
    content_type: str
    reason: str
    origin: str | None = None
    record: LogRecord | None = None
    evidence: bool = False


def _refuse(status: int, reason: str, origin: str | None = None, *, evidence: bool = False) -> WitnessAnswer:
    return WitnessAnswer(
        status, (reason + "\n").encode(), "text/plain; charset=utf-8", reason, origin, None, evidence
    )


class Witness:
    """One witness key, and the logs (origin -> log key) it follows."""

    def __init__(self, signer: NoteSigner, logs: Mapping[str, VerifierKey]) -> None:
        if signer.vkey.sig_type != SIG_COSIGNATURE_V1:
            raise ValueError("a witness signs cosignatures (type 0x04)")
        self.signer = signer
        self.logs = dict(logs)

    @property
    def name(self) -> str:
        return self.signer.vkey.name

    def add_checkpoint(self, body: bytes, records: Mapping[str, LogRecord], now: int) -> WitnessAnswer:
        try:
            request = AddCheckpoint.parse(body)
            checkpoint = Checkpoint.parse(parse_note(request.note).text)
        except MalformedInput as e:
            return _refuse(400, f"malformed request: {e.reason}")
        origin = checkpoint.origin
        log_key = self.logs.get(origin)
        if log_key is None:
            return _refuse(404, f"unknown log origin {origin!r}")
        try:
            open_checkpoint(request.note, origin=origin, log_key=log_key)
        except (VerificationError, MalformedInput) as e:
            return _refuse(403, f"checkpoint not signed by the key of {origin}: {e.reason}", origin)
        if request.old_size > checkpoint.size:
            return _refuse(
                400, f"old size {request.old_size} is above the checkpoint size {checkpoint.size}", origin
            )
        recorded = records.get(origin)
        size = recorded.size if recorded is not None else 0
        if request.old_size != size:
            reason = f"old size {request.old_size} is not the size this witness last cosigned ({size})"
            return WitnessAnswer(409, f"{size}\n".encode("ascii"), SIZE_CONTENT_TYPE, reason, origin)
        root = recorded.root_hash if recorded is not None else EMPTY_ROOT
        if checkpoint.size == size and not equal(checkpoint.root_hash, root):
            return _refuse(409, f"a different root for size {size}: a fork", origin, evidence=True)
        if size == 0 and request.proof:
            return _refuse(422, "a consistency proof from size 0 must be empty", origin)
        if size > 0:
            try:
                verify_consistency(size, checkpoint.size, request.proof, root, checkpoint.root_hash)
            except VerificationError as e:
                return _refuse(
                    422, f"consistency proof from {size} does not verify: {e.reason}", origin, evidence=True
                )
        line = cosign_checkpoint(request.note, self.signer, now).line()
        record = LogRecord(checkpoint.size, checkpoint.root_hash, checkpoint.text(), now)
        reason = f"cosigned {origin} at size {checkpoint.size}"
        return WitnessAnswer(200, line.encode("utf-8"), COSIGNATURE_CONTENT_TYPE, reason, origin, record)

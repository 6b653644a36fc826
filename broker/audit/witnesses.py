"""Submitting checkpoints to witnesses (c2sp.org/tlog-witness v1) and keeping their cosignatures.

Invariants:
- Each request is `POST <url>/add-checkpoint` with `old <size>\\n`, the consistency proof from
  that size (read from stored nodes, at most 63 lines), an empty line and the checkpoint note as
  the broker signed it. `old` is the largest tree the witness cosigned (0 at first); on 409 with
  a `text/x.tlog.size` body the request is repeated once per answer from the size the witness
  reports, at most `MAX_RESUBMISSIONS` times.
- A cosignature is stored only if it verifies under the configured witness key (name, key ID,
  type 0x04) over this checkpoint's text; anything else from the witness is discarded.
- A witness that refuses, answers garbage, or does not answer within the timeout is logged and
  counted (`WitnessOutcome`); it never raises into the caller and never blocks the relay (it
  runs in the checkpointer's task, off every request path).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import aiohttp

from broker.audit.metrics import AuditMetrics
from broker.audit.records import StoredCheckpoint, StoredCosignature
from broker.audit.store import AuditStore
from broker.clock import Clock
from broker.settings import Witness
from protocol.errors import CaseBridgeError, VerificationError
from protocol.note import NoteSignature, parse_note

SIZE_TYPE = "text/x.tlog.size"
MAX_RESPONSE_BYTES = 64 << 10
MAX_PROOF_LINES = 63
MAX_RESUBMISSIONS = 2
_SIZE_BODY = re.compile(rb"(0|[1-9][0-9]{0,18})\n")

log = logging.getLogger("casebridge.broker.audit.witness")


class WitnessOutcome(StrEnum):
    COSIGNED = "cosigned"
    CONFLICT = "conflict"
    """The witness kept answering 409 (its size moved under us, or it holds a fork)."""
    AHEAD = "ahead"
    """The witness has cosigned a larger tree than this checkpoint's: a fork or a restored log."""
    REFUSED = "refused"
    BAD_COSIGNATURE = "bad_cosignature"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class WitnessResult:
    witness: str
    outcome: WitnessOutcome
    witness_size: int | None
    """The size the witness holds after this exchange, if known."""


def add_checkpoint_body(old: int, proof: Sequence[bytes], note: bytes) -> bytes:
    lines = [f"old {old}\n".encode()]
    lines.extend(base64.b64encode(h) + b"\n" for h in proof)
    return b"".join(lines) + b"\n" + note


def verified_cosignature(witness: Witness, checkpoint_text: str, body: bytes) -> tuple[str, int]:
    """The witness's cosignature line in a 200 answer and its timestamp; `VerificationError` if no
    line by the configured key verifies over `checkpoint_text`."""
    try:
        lines = body.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise VerificationError(reason="cosignature answer is not UTF-8") from e
    for line in lines[:16]:
        try:
            signature = NoteSignature.parse(line)
        except CaseBridgeError:
            continue
        if signature.name != witness.vkey.name or signature.key_id != witness.vkey.key_id:
            continue
        timestamp = witness.vkey.verify(checkpoint_text, signature)
        if timestamp is None:
            raise VerificationError(reason=f"{witness.name} is not configured with a cosignature key")
        return signature.line(), timestamp
    raise VerificationError(reason=f"no cosignature by {witness.name} in the answer")


class WitnessClient:
    """Submits checkpoints to the configured witnesses; remembers how far each one has cosigned."""

    def __init__(
        self,
        witnesses: Sequence[Witness],
        audit: AuditStore,
        clock: Clock,
        metrics: AuditMetrics,
        *,
        timeout_seconds: float,
    ) -> None:
        self.witnesses = tuple(witnesses)
        self._audit = audit
        self._clock = clock
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._sizes: dict[str, int] | None = None
        self.last_cosigned_at: dict[str, int] = {}

    async def sizes(self) -> dict[str, int]:
        """The largest tree each witness is known to hold (from stored cosignatures at first)."""
        if self._sizes is None:
            self._sizes = await self._audit.witness_sizes()
        return self._sizes

    async def submit(
        self, checkpoint: StoredCheckpoint, session: aiohttp.ClientSession
    ) -> list[WitnessResult]:
        """Submit one checkpoint to every witness at once; one result each, never an exception."""
        await self.sizes()
        return list(await asyncio.gather(*(self._submit(w, checkpoint, session) for w in self.witnesses)))

    async def _submit(
        self, witness: Witness, checkpoint: StoredCheckpoint, session: aiohttp.ClientSession
    ) -> WitnessResult:
        try:
            result = await self._exchange(witness, checkpoint, session)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("witness_unreachable", extra={"witness": witness.name, "error": type(e).__name__})
            result = WitnessResult(witness.name, WitnessOutcome.UNREACHABLE, None)
        except CaseBridgeError as e:
            log.error("witness_submission_failed", extra={"witness": witness.name, "reason": e.reason})
            result = WitnessResult(witness.name, WitnessOutcome.REFUSED, None)
        self._metrics.witness_submissions.labels(witness=witness.name, outcome=str(result.outcome)).inc()
        return result

    async def _exchange(
        self, witness: Witness, checkpoint: StoredCheckpoint, session: aiohttp.ClientSession
    ) -> WitnessResult:
        sizes = await self.sizes()
        old = sizes.get(witness.name, 0)
        text = parse_note(checkpoint.note).text
        for _ in range(1 + MAX_RESUBMISSIONS):
            if old > checkpoint.size:
                log.error("witness_ahead", extra={"witness": witness.name, "witness_size": old})
                return WitnessResult(witness.name, WitnessOutcome.AHEAD, old)
            proof = await self._audit.consistency_proof(old, checkpoint.size) if old else []
            if len(proof) > MAX_PROOF_LINES:
                raise VerificationError(reason=f"a consistency proof of {len(proof)} hashes")
            status, content_type, body = await self._post(
                witness, add_checkpoint_body(old, proof, checkpoint.note), session
            )
            if status == 200:
                return await self._cosigned(witness, checkpoint, text, body)
            if status == 409 and content_type == SIZE_TYPE and _SIZE_BODY.fullmatch(body):
                old = int(body[:-1])
                sizes[witness.name] = old
                log.info("witness_size_conflict", extra={"witness": witness.name, "witness_size": old})
                continue
            log.warning("witness_refused", extra={"witness": witness.name, "status": status})
            return WitnessResult(witness.name, WitnessOutcome.REFUSED, None)
        return WitnessResult(witness.name, WitnessOutcome.CONFLICT, old)

    async def _cosigned(
        self, witness: Witness, checkpoint: StoredCheckpoint, text: str, body: bytes
    ) -> WitnessResult:
        try:
            line, timestamp = verified_cosignature(witness, text, body)
        except VerificationError as e:
            log.error("witness_bad_cosignature", extra={"witness": witness.name, "reason": e.reason})
            return WitnessResult(witness.name, WitnessOutcome.BAD_COSIGNATURE, None)
        now = self._clock.now()
        await self._audit.add_cosignature(
            StoredCosignature(checkpoint.seq, witness.name, line.rstrip("\n"), timestamp, now)
        )
        (await self.sizes())[witness.name] = checkpoint.size
        self.last_cosigned_at[witness.name] = now
        return WitnessResult(witness.name, WitnessOutcome.COSIGNED, checkpoint.size)

    async def _post(
        self, witness: Witness, body: bytes, session: aiohttp.ClientSession
    ) -> tuple[int, str, bytes]:
        async with session.post(
            f"{witness.url}/add-checkpoint",
            data=body,
            timeout=self._timeout,
            allow_redirects=False,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        ) as response:
            answer = bytearray()
            while chunk := await response.content.read(MAX_RESPONSE_BYTES + 1 - len(answer)):
                answer += chunk
                if len(answer) > MAX_RESPONSE_BYTES:
                    raise VerificationError(reason="the witness's answer is too large")
            return response.status, response.content_type, bytes(answer)

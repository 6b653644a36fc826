"""The checkpointer: signs the audit log's tree head on a cadence and has witnesses cosign it.

Invariants:
- A checkpoint (c2sp.org/tlog-checkpoint, signed note, Ed25519 under the broker's checkpoint
  key, key name = origin) is signed when entries are pending and the last one is at least
  `checkpoint_interval_seconds` old, and when nothing is pending but the last one is at least
  `checkpoint_idle_seconds` old (the idle heartbeat, which witnesses cosign afresh). Time is the
  injected clock; `tick()` is one decision, so tests drive the cadence by moving the clock.
- The size and root signed are read from stored nodes in one read transaction, and the note is
  stored (append-only) before anyone sees it.
- Witness rounds run in their own task after each new checkpoint (and again, at most every
  `WITNESS_RETRY_SECONDS`, while a witness lags): a slow or failing witness delays neither the
  relay nor the next checkpoint.
- At stop, a last checkpoint covers every entry (the stop entry included), without witnesses.
- Among replicas sharing a database, only the one leading the `checkpointer` task
  (`broker.leadership`) signs and runs witness rounds, confirming its lead before each tick. A
  follower signs nothing; each poll it reads the stored latest checkpoint for its gauges (so
  every replica reports the same age and pending entries), and on taking the lead it re-reads
  what others signed before it decides. A replica that loses the lead cancels its witness round
  and drops its witness gauges (the new leader reports them). The last checkpoint at stop is
  still signed by any replica that leaves entries pending: at most one per stopping replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from broker.audit.metrics import AuditMetrics
from broker.audit.records import StoredCheckpoint
from broker.audit.store import AuditStore
from broker.audit.witnesses import WitnessClient, WitnessOutcome, WitnessResult
from broker.clock import Clock
from broker.leadership import CHECKPOINTER, TaskLeader
from protocol.errors import CaseBridgeError
from protocol.note import Checkpoint, NoteSigner, sign_checkpoint

WITNESS_RETRY_SECONDS = 30
MAX_POLL_SECONDS = 1.0

log = logging.getLogger("casebridge.broker.audit")


class Checkpointer:
    def __init__(
        self,
        audit: AuditStore,
        *,
        origin: str,
        signer: NoteSigner,
        clock: Clock,
        interval_seconds: int,
        idle_seconds: int,
        witnesses: WitnessClient,
        metrics: AuditMetrics,
    ) -> None:
        self._audit = audit
        self._origin = origin
        self._signer = signer
        self._clock = clock
        self._interval = interval_seconds
        self._idle = idle_seconds
        self._witnesses = witnesses
        self._metrics = metrics
        self._latest: StoredCheckpoint | None = None
        self._loaded = False
        self._seen_size: int | None = None
        self._last_round = 0
        self._lagging: set[str] = set()
        self._round: asyncio.Task[list[WitnessResult]] | None = None

    async def latest(self) -> StoredCheckpoint | None:
        if not self._loaded:
            self._latest = await self._audit.latest_checkpoint()
            self._loaded = True
        return self._latest

    def _due(self, latest: StoredCheckpoint | None, size: int, now: int) -> bool:
        if latest is None:
            return size > 0
        age = now - latest.signed_at
        return age >= self._idle or (size > latest.size and age >= self._interval)

    async def tick(self, *, force: bool = False) -> StoredCheckpoint | None:
        """Sign and store a checkpoint if one is due (or, with `force`, if entries are pending)."""
        now = self._clock.now()
        latest = await self.latest()
        size = await self._audit.size()
        if self._seen_size is not None and size > self._seen_size:
            self._metrics.appends.inc(size - self._seen_size)
        self._seen_size = size
        pending = size - (latest.size if latest else 0)
        due = pending > 0 if force else self._due(latest, size, now)
        if not due:
            self._observe(latest, pending, now)
            return None
        head = await self._audit.tree_head()
        note = sign_checkpoint(Checkpoint(self._origin, head.size, head.root_hash), self._signer)
        stored = await self._audit.add_checkpoint(head.size, head.root_hash, note, now)
        self._latest = stored
        self._metrics.checkpoints.inc()
        self._observe(stored, size - stored.size, now)
        log.info("audit_checkpoint_signed", extra={"size": stored.size, "seq": stored.seq})
        return stored

    async def observe(self) -> None:
        """A follower's look: the gauges from the stored latest checkpoint; nothing is signed."""
        now = self._clock.now()
        latest = await self._audit.latest_checkpoint()
        size = await self._audit.size()
        self._latest, self._loaded = latest, True
        self._observe(latest, size - (latest.size if latest else 0), now)

    def _take_lead(self) -> None:
        """Others may have signed while this replica followed: re-read before deciding."""
        self._loaded = False
        self._seen_size = None

    async def _step_down(self) -> None:
        """Stop what only the leader does: a witness round in flight, and its witness gauges."""
        if self._round is not None:
            self._round.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._round
            self._round = None
        self._lagging = set()
        self._metrics.witness_lag_entries.clear()
        self._metrics.witness_lag_seconds.clear()

    def _observe(self, latest: StoredCheckpoint | None, pending: int, now: int) -> None:
        self._metrics.pending.set(max(pending, 0))
        if latest is None:
            return
        self._metrics.checkpoint_size.set(latest.size)
        self._metrics.checkpoint_timestamp.set(latest.signed_at)
        self._metrics.checkpoint_age.set(now - latest.signed_at)

    async def witness_round(self, session: aiohttp.ClientSession) -> list[WitnessResult]:
        """Submit the latest checkpoint to every witness; returns each witness's result."""
        latest = await self.latest()
        if latest is None or not self._witnesses.witnesses:
            return []
        self._last_round = self._clock.now()
        results = await self._witnesses.submit(latest, session)
        sizes = await self._witnesses.sizes()
        now = self._clock.now()
        for result in results:
            self._metrics.witness_lag_entries.labels(witness=result.witness).set(
                latest.size - sizes.get(result.witness, 0)
            )
            cosigned_at = self._witnesses.last_cosigned_at.get(result.witness)
            if cosigned_at is not None:
                self._metrics.witness_lag_seconds.labels(witness=result.witness).set(now - cosigned_at)
        self._lagging = {r.witness for r in results if r.outcome is not WitnessOutcome.COSIGNED}
        return results

    def _start_round(self, session: aiohttp.ClientSession, signed: bool) -> None:
        if self._round is not None and not self._round.done():
            return
        retry = self._lagging and self._clock.now() - self._last_round >= WITNESS_RETRY_SECONDS
        if signed or retry:
            self._round = asyncio.create_task(self._logged_round(session), name="casebridge-witness-round")

    async def _logged_round(self, session: aiohttp.ClientSession) -> list[WitnessResult]:
        try:
            return await self.witness_round(session)
        except CaseBridgeError as e:
            log.error("audit_witness_round_failed", extra={"code": str(e.code), "reason": e.reason})
        except Exception:
            log.exception("audit_witness_round_failed")
        return []

    async def run(self, session: aiohttp.ClientSession, leader: TaskLeader | None = None) -> None:
        """Until cancelled: tick while `leader` leads (always when None), observe otherwise; a
        failed round is logged and retried at the next poll."""
        poll = min(MAX_POLL_SECONDS, self._interval / 2)
        leader = leader or TaskLeader(CHECKPOINTER, None)
        led = False
        while True:
            leads = await leader.leads()
            if leads and not led:
                self._take_lead()
            elif led and not leads:
                await self._step_down()
            led = leads
            signed = None
            try:
                if leads:
                    signed = await self.tick()
                else:
                    await self.observe()
            except CaseBridgeError as e:
                log.error("audit_checkpoint_failed", extra={"code": str(e.code), "reason": e.reason})
            except Exception:
                log.exception("audit_checkpoint_failed")
            if leads and self._witnesses.witnesses:
                self._start_round(session, signed is not None)
            await asyncio.sleep(poll)

    async def stop(self) -> None:
        """Cancel a witness round in flight and sign a last checkpoint over pending entries."""
        if self._round is not None:
            self._round.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._round
        try:
            await self.tick(force=True)
        except CaseBridgeError as e:
            log.error("audit_final_checkpoint_failed", extra={"reason": e.reason})

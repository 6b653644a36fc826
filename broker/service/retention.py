"""Retention: expire what was not verified in time, purge ciphertext nobody needs any more.

Invariants:
- An inbox entry still pending or delivered when its envelope's expiry time (the sender's
  expiry, capped at acceptance + `ttl_seconds`) has passed becomes `expired`, with a receipt
  signed by the broker, recorded in the audit log and queued to the sender, in one transaction.
- An envelope's header and ciphertext are purged once every recipient verified, rejected or
  expired; the purge is audited, and the facts (ids, hashes, receipts, the log) stay.
- The database is changed before files are deleted, so a crash leaves at worst unreferenced
  blob files, which `sweep_orphans` removes at the next start (before serving).
- Every sweep is bounded (`BATCH` entries per round, `MAX_ROUNDS` rounds) and uses the injected
  clock, so tests drive it by moving time and calling `sweep()`.
- The entries of one round are independent of each other (one inbox entry or one envelope each),
  so they are handed to the store `TOGETHER` at a time: each is still its own transaction with
  its own audit leaf, and an engine with group commit makes them durable with one sync instead of
  one each, while live requests wait behind at most that many.
- Among replicas sharing a database, only the one leading the `retention` task
  (`broker.leadership`) sweeps, confirming its lead before each sweep; the others refresh the
  gauges of what the database holds at the same interval and ask to lead every second. Sweeping
  twice stays harmless (a change already made is refused), which covers a sweep begun just
  before its replica lost the lead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from broker.leadership import RETENTION, leading
from broker.service.context import Services
from broker.service.receipts import announce, new_receipt
from broker.storage.records import EnvelopeRecord, InboxEntry
from protocol import auditlog
from protocol.errors import CaseBridgeError
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject

BATCH = 200
MAX_ROUNDS = 50
TOGETHER = 16

log = logging.getLogger("casebridge.broker.retention")


@dataclass(frozen=True, slots=True)
class SweepReport:
    expired: int
    purged: int
    nonces_forgotten: int


async def _count_done(steps: Sequence[Callable[[], Awaitable[bool]]]) -> int:
    """Run independent steps `TOGETHER` at a time; how many made their change. The first failure
    is raised once the steps running with it have finished, so none is left behind the sweep."""
    done = 0
    for start in range(0, len(steps), TOGETHER):
        chunk = steps[start : start + TOGETHER]
        results = await asyncio.gather(*(step() for step in chunk), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        done += sum(1 for result in results if result)
    return done


class Retention:
    def __init__(self, services: Services) -> None:
        self._s = services

    async def _expire_one(self, entry: InboxEntry, now: int) -> bool:
        s = self._s
        env = entry.envelope
        receipt = Receipt.issue(
            ReceiptKind.EXPIRED,
            signing_key=s.signer.signing_key,
            signer=s.signer.certificate,
            subject=ReceiptSubject(env.envelope_hash, env.envelope_id, env.sender_id, entry.recipient_id),
            time=now,
        )
        outcome = await s.store.delivery.record_receipt(new_receipt(receipt, now))
        announce(s, receipt, outcome)
        if outcome.recorded is None:
            return False
        s.metrics.expired.inc()
        return True

    async def _expire(self, now: int) -> int:
        count = 0
        for _ in range(MAX_ROUNDS):
            due = await self._s.store.delivery.expiring(now, BATCH)
            if not due:
                break
            count += await _count_done([functools.partial(self._expire_one, entry, now) for entry in due])
        return count

    async def _purge_one(self, env: EnvelopeRecord, now: int) -> bool:
        s = self._s
        size = env.header_length + sum(p.length for p in env.parts)
        leaf = auditlog.encode_leaf(now, auditlog.EnvelopePurged(env.envelope_id, env.envelope_hash, size))
        purged = await s.store.delivery.mark_purged(env.envelope_id, now, leaf)
        if purged:
            s.metrics.purged.inc()
        if any(not p.stored_inline for p in env.parts):
            await s.store.blobs.delete(env.envelope_hash)
        return purged

    async def _purge(self, now: int) -> int:
        count = 0
        for _ in range(MAX_ROUNDS):
            candidates = await self._s.store.delivery.purgeable(BATCH)
            if not candidates:
                break
            count += await _count_done([functools.partial(self._purge_one, env, now) for env in candidates])
        return count

    async def sweep(self) -> SweepReport:
        """One retention pass as of the clock's now."""
        now = self._s.clock.now()
        expired = await self._expire(now)
        purged = await self._purge(now)
        forgotten = await self._s.store.nonces.forget_expired(now)
        await self.observe()
        if expired or purged:
            log.info("retention_sweep", extra={"expired": expired, "purged": purged})
        return SweepReport(expired, purged, forgotten)

    async def observe(self) -> None:
        """Refresh the gauges of what the database holds (inbox depth, audit entries)."""
        counts = await self._s.store.delivery.counts()
        self._s.metrics.inbox_depth.set(counts.open_inbox_entries)
        self._s.metrics.audit_entries.set(counts.audit_entries)

    async def sweep_orphans(self) -> int:
        """Delete blob files no stored envelope refers to. Run only while nothing is submitted."""
        stored = await self._s.store.delivery.stored_hashes()
        orphans = await self._s.store.blobs.stored_hashes() - stored
        for envelope_hash in orphans:
            await self._s.store.blobs.delete(envelope_hash)
        if orphans:
            log.info("orphan_blobs_removed", extra={"count": len(orphans)})
        return len(orphans)

    async def run(self) -> None:
        """Until cancelled, every `retention_interval_seconds`: sweep while this replica leads
        the `retention` task, only `observe` while it follows (see module). A failed round is
        logged and retried at the next interval."""
        s = self._s
        interval = s.settings.retention_interval_seconds
        async with leading(RETENTION, s.store.shared, s.metrics.leader) as leader:
            while True:
                leads = await leader.leads()
                try:
                    await (self.sweep() if leads else self.observe())
                except CaseBridgeError as e:
                    log.error("retention_sweep_failed", extra={"code": str(e.code), "reason": e.reason})
                except Exception:
                    log.exception("retention_sweep_failed")
                if leads:
                    await asyncio.sleep(interval)
                else:
                    await leader.wait_to_lead(interval)

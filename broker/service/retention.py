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
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from broker.service.context import Services
from broker.service.receipts import announce, new_receipt
from protocol import auditlog
from protocol.errors import CaseBridgeError
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject

BATCH = 200
MAX_ROUNDS = 50

log = logging.getLogger("casebridge.broker.retention")


@dataclass(frozen=True, slots=True)
class SweepReport:
    expired: int
    purged: int
    nonces_forgotten: int


class Retention:
    def __init__(self, services: Services) -> None:
        self._s = services

    async def _expire(self, now: int) -> int:
        s = self._s
        count = 0
        for _ in range(MAX_ROUNDS):
            due = await s.store.delivery.expiring(now, BATCH)
            if not due:
                break
            for entry in due:
                env = entry.envelope
                receipt = Receipt.issue(
                    ReceiptKind.EXPIRED,
                    signing_key=s.signer.signing_key,
                    signer=s.signer.certificate,
                    subject=ReceiptSubject(
                        env.envelope_hash, env.envelope_id, env.sender_id, entry.recipient_id
                    ),
                    time=now,
                )
                outcome = await s.store.delivery.record_receipt(new_receipt(receipt, now))
                announce(s, receipt, outcome)
                if outcome.recorded is not None:
                    count += 1
                    s.metrics.expired.inc()
        return count

    async def _purge(self, now: int) -> int:
        s = self._s
        count = 0
        for _ in range(MAX_ROUNDS):
            candidates = await s.store.delivery.purgeable(BATCH)
            if not candidates:
                break
            for env in candidates:
                size = env.header_length + sum(p.length for p in env.parts)
                leaf = auditlog.encode_leaf(
                    now, auditlog.EnvelopePurged(env.envelope_id, env.envelope_hash, size)
                )
                if await s.store.delivery.mark_purged(env.envelope_id, now, leaf):
                    count += 1
                    s.metrics.purged.inc()
                if any(not p.stored_inline for p in env.parts):
                    await s.store.blobs.delete(env.envelope_hash)
        return count

    async def sweep(self) -> SweepReport:
        """One retention pass as of the clock's now."""
        now = self._s.clock.now()
        expired = await self._expire(now)
        purged = await self._purge(now)
        forgotten = await self._s.store.nonces.forget_expired(now)
        counts = await self._s.store.delivery.counts()
        self._s.metrics.inbox_depth.set(counts.open_inbox_entries)
        self._s.metrics.audit_entries.set(counts.audit_entries)
        if expired or purged:
            log.info("retention_sweep", extra={"expired": expired, "purged": purged})
        return SweepReport(expired, purged, forgotten)

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
        """Sweep every `retention_interval_seconds` until cancelled; a failed sweep is logged
        and retried at the next interval."""
        interval = self._s.settings.retention_interval_seconds
        while True:
            try:
                await self.sweep()
            except CaseBridgeError as e:
                log.error("retention_sweep_failed", extra={"code": str(e.code), "reason": e.reason})
            except Exception:
                log.exception("retention_sweep_failed")
            await asyncio.sleep(interval)

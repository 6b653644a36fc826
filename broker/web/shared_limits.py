"""Per-agency rate limits that hold across replicas: one shared token bucket per agency in the
database (`SharedState.exchange_tokens`), spent locally from small leases.

Invariants:
- Every replica together admits no more than one bucket of `burst`, refilled at `per_minute`,
  allows: tokens are taken from the shared bucket before they are spent, never after.
- The fast path is a dictionary lookup: a replica goes to the database once per `lease` tokens
  (about a tenth of the burst, at most `MAX_LEASE`), or when its lease went stale.
- A lease is used for at most `LEASE_SECONDS`; what is left then is put back into the bucket
  with the next exchange, so an idle replica holds back at most one lease per agency.
- A refused request costs nothing and is told when to retry (by the bucket's refill rate).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from broker.storage.interfaces import SharedState
from broker.web.limits import RateLimitExceeded

MAX_LEASE = 50
LEASE_SECONDS = 1.0
MAX_AGENCIES = 100_000


@dataclass(slots=True)
class _Lease:
    tokens: int
    taken_at: float


class SharedRateLimiter:
    def __init__(self, shared: SharedState, per_minute: int, burst: int) -> None:
        self._shared = shared
        self._per_minute = per_minute
        self._burst = burst
        self._lease_size = max(1, min(MAX_LEASE, burst // 10))
        self._leases: dict[str, _Lease] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _spend(self, agency_id: str, now: float) -> bool:
        lease = self._leases.get(agency_id)
        if lease is None or lease.tokens < 1 or now - lease.taken_at >= LEASE_SECONDS:
            return False
        lease.tokens -= 1
        return True

    async def admit(self, agency_id: str, now: float) -> None:
        """Spend one token of `agency_id` (monotonic time `now`), or raise `RateLimitExceeded`."""
        if self._spend(agency_id, now):
            return
        if len(self._locks) >= MAX_AGENCIES:
            self._forget_idle(now)
        lock = self._locks.setdefault(agency_id, asyncio.Lock())
        async with lock:
            if self._spend(agency_id, now):
                return
            stale = self._leases.pop(agency_id, None)
            returned = stale.tokens if stale is not None else 0
            lease = await self._shared.exchange_tokens(
                agency_id, returned, self._lease_size, self._per_minute, self._burst
            )
            if lease.granted < 1:
                raise RateLimitExceeded(lease.retry_after_seconds)
            self._leases[agency_id] = _Lease(lease.granted - 1, now)

    def _forget_idle(self, now: float) -> None:
        for agency_id, lock in list(self._locks.items()):
            lease = self._leases.get(agency_id)
            if not lock.locked() and (lease is None or now - lease.taken_at >= LEASE_SECONDS):
                del self._locks[agency_id]
                self._leases.pop(agency_id, None)

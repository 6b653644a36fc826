"""Per-agency rate limiting: a token bucket per agency, refilled continuously.

Invariants: an agency may make `burst` requests at once and `per_minute` per minute on
average; a refused request costs nothing and is told when to retry. Buckets use the event
loop's monotonic time (rate limits are about elapsed time, not the wall clock). Buckets of
idle agencies are dropped once full, so memory is bounded by the agencies active lately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from protocol.errors import RateLimited

MAX_BUCKETS = 100_000


class AgencyLimiter(Protocol):
    """What authentication asks before a request is served (in-process or shared by replicas)."""

    async def admit(self, agency_id: str, now: float) -> None:
        """Spend one token of `agency_id` at monotonic time `now`, or raise `RateLimitExceeded`."""
        ...


class RateLimitExceeded(RateLimited):
    def __init__(self, retry_after_seconds: int) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(reason=f"rate limit reached; retry in {retry_after_seconds} s")


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, per_minute: int, burst: int) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}

    def take(self, agency_id: str, now: float) -> None:
        """Spend one token of `agency_id` at monotonic time `now`, or raise `RateLimitExceeded`."""
        bucket = self._buckets.get(agency_id)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._drop_full(now)
            bucket = self._buckets[agency_id] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            raise RateLimitExceeded(max(1, math.ceil((1.0 - bucket.tokens) / self._rate)))
        bucket.tokens -= 1.0

    async def admit(self, agency_id: str, now: float) -> None:
        self.take(agency_id, now)

    def _drop_full(self, now: float) -> None:
        for agency_id, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * self._rate >= self._burst:
                del self._buckets[agency_id]

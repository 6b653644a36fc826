"""What replicas share besides the domain tables: the change feed, rate-limit buckets and the
leadership of periodic tasks.

Rate limits: each agency has one token bucket in `rate_buckets`, refilled by the database's
clock (so replicas' clocks do not matter). A replica takes tokens in small leases and spends
them in memory (`broker.web.shared_limits`), so the bucket's row is touched once per lease,
not once per request; the sum of what every replica spends never exceeds what the bucket gave.
A lease is taken and unused tokens are put back in one short transaction holding the row.

Leadership: one replica at a time runs each periodic task (the checkpointer, retention), by a
session-level advisory lock on a connection of its own (`broker.storage.postgresql.leadership`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

from broker.storage.postgresql.changes import ChangeListener
from broker.storage.postgresql.database import Database
from broker.storage.postgresql.leadership import LeaderSession, PostgresLeadership
from broker.storage.records import Change, TokenLease


class PostgresSharedState:
    """Implements `broker.storage.interfaces.SharedState`."""

    def __init__(self, db: Database, listener: ChangeListener) -> None:
        self._db = db
        self._listener = listener
        self._leaders = LeaderSession(db.dsn)

    def changes(self) -> AsyncIterator[Change]:
        return self._listener.changes()

    def leadership(self, task: str) -> AbstractAsyncContextManager[PostgresLeadership]:
        return self._leaders.claim(task)

    async def exchange_tokens(
        self, agency_id: str, returned: int, wanted: int, per_minute: int, burst: int
    ) -> TokenLease:
        rate = per_minute / 60.0
        async with self._db.transaction(relaxed=True) as conn:
            await conn.execute(
                "INSERT INTO rate_buckets (agency_id, tokens, updated_at) "
                "VALUES ($1, $2, extract(epoch FROM clock_timestamp())) ON CONFLICT (agency_id) DO NOTHING",
                agency_id,
                float(burst),
            )
            row = await conn.fetchrow(
                "SELECT tokens, updated_at, extract(epoch FROM clock_timestamp())::float8 "
                "FROM rate_buckets WHERE agency_id = $1 FOR UPDATE",
                agency_id,
            )
            if row is None:
                raise AssertionError("unreachable: the bucket row was just ensured")
            tokens, updated_at, now = float(row[0]), float(row[1]), float(row[2])
            tokens = min(float(burst), tokens + returned + max(0.0, now - updated_at) * rate)
            granted = max(0, min(wanted, math.floor(tokens)))
            await conn.execute(
                "UPDATE rate_buckets SET tokens = $2, updated_at = $3 WHERE agency_id = $1",
                agency_id,
                tokens - granted,
                max(now, updated_at),
            )
        retry = 0 if granted else max(1, math.ceil((1.0 - tokens) / rate))
        return TokenLease(granted, retry)

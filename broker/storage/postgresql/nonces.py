"""Request nonces in PostgreSQL, shared by every replica: a replay is refused whichever replica
saw the first use.

Every check goes to the database (another replica may have seen the nonce), so the fast path
is kept to one round trip for many requests: checks arriving while one is in flight are
gathered and sent together as one statement, on the relaxed pool (no wait for the disk: a crash
may forget the last moments' nonces, never a state change, and requests are idempotent).
Within one statement each (key, nonce) appears once, in a fixed order; a repeat inside the same
batch is a replay of the first.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from broker.storage.postgresql.database import Database
from protocol.errors import CaseBridgeError, StorageUnavailable

MAX_BATCH = 1000


@dataclass(slots=True)
class _Check:
    key: tuple[bytes, bytes]
    expires_at: int
    now: int
    answer: asyncio.Future[bool]


class PostgresNonceStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._waiting: list[_Check] = []
        self._sending: asyncio.Task[None] | None = None

    async def remember(self, key_id: bytes, nonce: bytes, expires_at: int, now: int) -> bool:
        check = _Check((key_id, nonce), expires_at, now, asyncio.get_running_loop().create_future())
        self._waiting.append(check)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send(), name="casebridge-nonce-checks")
        return await check.answer

    async def _send(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            first: dict[tuple[bytes, bytes], _Check] = {}
            for check in batch:
                first.setdefault(check.key, check)
            keys = sorted(first)
            try:
                fresh = await self._insert(
                    keys, [first[k].expires_at for k in keys], min(c.now for c in batch)
                )
            except CaseBridgeError as e:
                for check in batch:
                    if not check.answer.done():
                        check.answer.set_exception(StorageUnavailable(reason=e.reason))
                continue
            for check in batch:
                if not check.answer.done():
                    check.answer.set_result(first[check.key] is check and check.key in fresh)

    async def _insert(
        self, keys: list[tuple[bytes, bytes]], expiries: list[int], now: int
    ) -> set[tuple[bytes, bytes]]:
        async with self._db.connection(relaxed=True) as conn:
            rows = await conn.fetch(
                "INSERT INTO nonces AS n (key_id, nonce, expires_at) "
                "SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[]) "
                "ON CONFLICT (key_id, nonce) DO UPDATE SET expires_at = EXCLUDED.expires_at "
                "WHERE n.expires_at <= $4 RETURNING key_id, nonce",
                [k for k, _ in keys],
                [n for _, n in keys],
                expiries,
                now,
            )
        return {(bytes(r[0]), bytes(r[1])) for r in rows}

    async def forget_expired(self, now: int) -> int:
        async with self._db.connection(relaxed=True) as conn:
            count = await conn.fetchval(
                "WITH gone AS (DELETE FROM nonces WHERE expires_at <= $1 RETURNING 1) "
                "SELECT COUNT(*) FROM gone",
                now,
            )
        return int(count)

    async def close(self) -> None:
        if self._sending is not None and not self._sending.done():
            with contextlib.suppress(asyncio.CancelledError):
                await self._sending

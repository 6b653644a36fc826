"""Request nonces for the SQLite engine: checked in memory, written behind to the database.

One broker process owns a SQLite data directory, so the replay check is a dictionary lookup in
the event loop (atomic, no thread hop on the request path). Every new nonce is also queued and
written to the database in batches (`FLUSH_DELAY_SECONDS` after the first of a batch, with
non-durable commits), and the unexpired ones are loaded back at start, so a restart keeps the
window. A crash may forget the nonces of the last moments before it, never a state change:
requests are idempotent, so a replay after a crash can at worst repeat an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3

from broker.storage.sqlite.database import Database
from protocol.errors import CaseBridgeError

FLUSH_DELAY_SECONDS = 0.05
MAX_HELD = 1_000_000

log = logging.getLogger("casebridge.broker.storage")


class SqliteNonceStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._seen: dict[tuple[bytes, bytes], int] = {}
        self._pending: list[tuple[bytes, bytes, int]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def load(self, now: int) -> None:
        """Read the unexpired nonces (at open)."""

        def job(conn: sqlite3.Connection) -> list[tuple[bytes, bytes, int]]:
            rows = conn.execute("SELECT key_id, nonce, expires_at FROM nonces WHERE expires_at > ?", (now,))
            return [(bytes(r[0]), bytes(r[1]), int(r[2])) for r in rows]

        for key_id, nonce, expires_at in await self._db.scan(job):
            self._seen[(key_id, nonce)] = expires_at

    async def remember(self, key_id: bytes, nonce: bytes, expires_at: int, now: int) -> bool:
        held = self._seen.get((key_id, nonce))
        if held is not None and held > now:
            return False
        if len(self._seen) >= MAX_HELD:
            self._drop_expired(now)
        self._seen[(key_id, nonce)] = expires_at
        self._pending.append((key_id, nonce, expires_at))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_later(), name="casebridge-nonce-flush")
        return True

    async def _flush_later(self) -> None:
        await asyncio.sleep(FLUSH_DELAY_SECONDS)
        await self.flush()

    async def flush(self) -> None:
        """Write the nonces queued so far (a failure is logged: the memory check still holds)."""
        batch, self._pending = self._pending, []
        if not batch:
            return

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO nonces (key_id, nonce, expires_at) VALUES (?, ?, ?)", batch
            )

        try:
            await self._db.write(job, durable=False)
        except CaseBridgeError as e:
            log.error("nonces_not_written", extra={"count": len(batch), "reason": e.reason})

    def _drop_expired(self, now: int) -> None:
        for key, expires_at in list(self._seen.items()):
            if expires_at <= now:
                del self._seen[key]

    async def forget_expired(self, now: int) -> int:
        self._drop_expired(now)
        await self.flush()

        def job(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM nonces WHERE expires_at <= ?", (now,)).rowcount

        return await self._db.write(job, durable=False, bulk=True)

    async def close(self) -> None:
        if self._flushing is not None and not self._flushing.done():
            self._flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flushing
        await self.flush()

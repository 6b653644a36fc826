"""Which replica leads each periodic task: session-level advisory locks on one connection.

Invariants:
- Each task has a fixed lock key (`lock_key`, from its name, so the same in every replica). The
  process whose leadership connection holds `pg_try_advisory_lock(key)` leads the task. A
  session-level lock lives as long as its session: when the process dies or its connection
  drops, PostgreSQL releases it, and another replica's next try takes it.
- The connection is the store's own, not pooled (pooled connections carry no session state). It
  is opened at the first try, kept while a claim is open (a follower's try is one round trip, not
  a new session) and closed when the last claim closes; its application name is
  `casebridge-leader`, so `pg_stat_activity` and `pg_locks` show who leads.
- A leader confirms its lock (in `pg_locks`, for its own session) before every round. Any error
  (whatever its kind: `leads` never raises) or timeout terminates the connection, which ends
  every claim on it at once: each answers False at its next call and tries again only
  `retry_seconds` later.
- A follower asks the database at most every `retry_seconds` and answers False at once in
  between. In one process at most one claim on a task leads (lock ownership is per session, so
  a second claim on the same connection would otherwise lead beside the first).
- The connection asks the server for TCP keepalives every few seconds, so the lock of a leader
  whose host vanished (power, network) is released within about `KEEPALIVE_RELEASE_SECONDS`,
  not the system default of hours.
- One statement at a time on the connection (an asyncio lock), each within
  `STATEMENT_TIMEOUT_SECONDS`. A statement interrupted in any way (a cancelled task included)
  terminates the connection, so a lock is never left held by a claim that believes it follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from broker.storage.postgresql.database import CONNECT_TIMEOUT_SECONDS

RETRY_SECONDS = 5.0
STATEMENT_TIMEOUT_SECONDS = 5.0
APPLICATION_NAME = "casebridge-leader"
KEEPALIVE_SETTINGS = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}
KEEPALIVE_RELEASE_SECONDS = 10 + 5 * 3
"""How long the server waits for a silent client under `KEEPALIVE_SETTINGS` (idle + interval x count)."""
_KEY_BITS = (1 << 64) - 1
_HELD_KEYS = (
    "SELECT classid, objid FROM pg_locks "
    "WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND pid = pg_backend_pid()"
)

log = logging.getLogger("casebridge.broker.storage")


def lock_key(task: str) -> int:
    """The advisory lock key of `task`: the first 64 bits of SHA-256 over a label and the name."""
    digest = hashlib.sha256(b"casebridge leadership\x00" + task.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLeadership:
    """Implements `broker.storage.interfaces.Leadership` for one task on a `LeaderSession`."""

    def __init__(self, session: LeaderSession, task: str) -> None:
        self.task = task
        self.key = lock_key(task)
        self.leading = False
        self.next_try = 0.0
        self._session = session

    async def leads(self) -> bool:
        return await self._session.leads(self)


class LeaderSession:
    """The leadership connection of one store and the claims open on it."""

    def __init__(self, dsn: str, *, retry_seconds: float = RETRY_SECONDS) -> None:
        self._dsn = dsn
        self._retry = retry_seconds
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._claims: list[PostgresLeadership] = []
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def claim(self, task: str) -> AsyncIterator[PostgresLeadership]:
        claim = PostgresLeadership(self, task)
        self._claims.append(claim)
        try:
            yield claim
        finally:
            self._claims.remove(claim)
            await self._release(claim)

    async def leads(self, claim: PostgresLeadership) -> bool:
        async with self._lock:
            if claim.leading:
                return await self._confirm(claim)
            now = asyncio.get_running_loop().time()
            if now < claim.next_try or any(c.leading and c.key == claim.key for c in self._claims):
                return False
            claim.next_try = now + self._retry
            try:
                conn = await self._connected()
                async with asyncio.timeout(STATEMENT_TIMEOUT_SECONDS):
                    taken = await conn.fetchval("SELECT pg_try_advisory_lock($1)", claim.key)
            except Exception as e:
                self._drop("leadership_try_failed", e)
                return False
            except BaseException:
                self._drop("leadership_try_interrupted", None)
                raise
            claim.leading = bool(taken)
            return claim.leading

    async def _confirm(self, claim: PostgresLeadership) -> bool:
        """True if this session still holds the claim's lock; otherwise the claim ends."""
        conn = self._conn
        if conn is None or conn.is_closed():
            self._drop("leadership_connection_lost", None)
            return False
        try:
            async with asyncio.timeout(STATEMENT_TIMEOUT_SECONDS):
                rows = await conn.fetch(_HELD_KEYS)
        except Exception as e:
            self._drop("leadership_connection_lost", e)
            return False
        except BaseException:
            self._drop("leadership_check_interrupted", None)
            raise
        if (claim.key & _KEY_BITS) in {(int(r[0]) << 32) | int(r[1]) for r in rows}:
            return True
        log.warning("leadership_lock_missing", extra={"task": claim.task})
        self._end(claim)
        return False

    async def _connected(self) -> asyncpg.Connection[asyncpg.Record]:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=CONNECT_TIMEOUT_SECONDS,
                server_settings={"application_name": APPLICATION_NAME, **KEEPALIVE_SETTINGS},
            )
        return self._conn

    def _end(self, claim: PostgresLeadership) -> None:
        claim.leading = False
        claim.next_try = asyncio.get_running_loop().time() + self._retry

    def _drop(self, event: str, error: BaseException | None) -> None:
        """Terminate the connection (the server releases its locks) and end every claim on it."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        for claim in self._claims:
            if claim.leading:
                self._end(claim)
        log.warning(event, extra={"error": "" if error is None else type(error).__name__})

    async def _release(self, claim: PostgresLeadership) -> None:
        """Give up the claim's lock, and close the connection once no claim is left."""
        async with self._lock:
            conn = self._conn
            if conn is None:
                claim.leading = False
                return
            try:
                async with asyncio.timeout(STATEMENT_TIMEOUT_SECONDS):
                    if claim.leading and not conn.is_closed():
                        await conn.execute("SELECT pg_advisory_unlock($1)", claim.key)
                    if not self._claims:
                        await conn.close()
                        self._conn = None
            except Exception as e:
                self._drop("leadership_release_failed", e)
            except BaseException:
                self._drop("leadership_release_interrupted", None)
                raise
            finally:
                claim.leading = False

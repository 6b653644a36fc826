"""PostgreSQL engine core: connection pools, transactions, error translation, migrations.

Invariants:
- Two pools over one database. `durable` commits synchronously: a result reaches its caller only
  after its commit is on disk. `relaxed` runs with `synchronous_commit = off`, for what may lose
  its last moments in a crash (request nonces, rate-limit tokens, blob chunks not yet linked):
  the write-ahead log is one sequence, so any later durable commit makes those durable too.
- Every driver, network or server error becomes `StorageUnavailable` (503 with Retry-After);
  `CaseBridgeError`s raised inside a transaction roll it back and pass through unchanged. A
  broken connection is dropped by its pool and a new one is made on the next use, so when the
  database comes back the broker serves again by itself.
- Transactions run at READ COMMITTED: every statement sees what committed before it started,
  which the audit sequencer relies on (its lock is taken inside the transaction).
- Pooled connections carry no session state between uses: the broker never SETs, LISTENs,
  keeps a cursor open or takes a session-level lock on them, so a connection going back to its
  pool is only rolled back if a transaction is open (asyncpg does that), without the default
  reset query's extra round trip on every use.
- Migrations run at open under an advisory lock, so replicas starting together apply each once;
  a schema newer than this code is refused. A role that may not migrate (the broker's own,
  in production) starts only on a current schema; the owner applies migrations
  (`database_owner_url`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from broker.storage.schema import Migration, numbered_scripts, too_new
from protocol.errors import CaseBridgeError, StorageUnavailable

MIGRATIONS_PACKAGE = "broker.storage.postgresql.migrations"
MIGRATION_LOCK = 0x4342_6D69_6772_6174  # "CBmigrat": one key for every CaseBridge migration.
CONNECT_TIMEOUT_SECONDS = 10.0
ACQUIRE_TIMEOUT_SECONDS = 10.0
COMMAND_TIMEOUT_SECONDS = 120.0
RELAXED_POOL_SIZE = 4
APPLICATION_NAME = "casebridge-broker"

DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection left mid-protocol by a failure: drop it, retry
    OSError,
    TimeoutError,
)

Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record] | asyncpg.Connection[asyncpg.Record]"

log = logging.getLogger("casebridge.broker.storage")


def migrations() -> list[Migration]:
    return numbered_scripts(MIGRATIONS_PACKAGE)


def latest_version() -> int:
    return len(migrations())


def unavailable(action: str, e: BaseException) -> StorageUnavailable:
    """The storage error for a driver error (the class name and message go to the log only)."""
    converted = StorageUnavailable(reason=f"postgresql {action}: {type(e).__name__}: {e}")
    converted.__cause__ = e
    return converted


@contextlib.asynccontextmanager
async def translated(action: str) -> AsyncIterator[None]:
    try:
        yield
    except CaseBridgeError:
        raise
    except DRIVER_ERRORS as e:
        raise unavailable(action, e) from e


async def schema_version(conn: Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))


async def apply_migrations(conn: Connection, now: int) -> int:
    """Bring the schema to the latest version; refuse a newer one. Returns the version."""
    known = migrations()
    current = await schema_version(conn)
    if current > len(known):
        raise too_new(current, len(known), "this database")
    if current == len(known):
        return current
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version integer PRIMARY KEY, applied_at bigint NOT NULL)"
        )
        current = await schema_version(conn)
        if current > len(known):
            raise too_new(current, len(known), "this database")
        for migration in known[current:]:
            await conn.execute(migration.script)
            await conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)", migration.version, now
            )
            log.info("schema_migrated", extra={"schema_version": migration.version, "engine": "postgresql"})
    return len(known)


async def migrate(dsn: str, now: int) -> int:
    """Connect once to `dsn` and apply what is pending (see `apply_migrations`)."""
    async with translated("migration"):
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            return await apply_migrations(conn, now)
        except asyncpg.InsufficientPrivilegeError as e:
            raise StorageUnavailable(
                "the database schema needs migrating, and this role may not change it. Set "
                "database_owner_url to the schema owner's connection, or migrate as the owner first.",
                reason=f"migration refused: {e}",
            ) from e
        finally:
            await conn.close()


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """The pools' reset: nothing beyond asyncpg's own rollback (see the module invariants)."""


class Database:
    """The pools of one database. Open with `await Database.open(dsn, ...)`."""

    def __init__(
        self, dsn: str, durable: asyncpg.Pool[asyncpg.Record], relaxed: asyncpg.Pool[asyncpg.Record]
    ):
        self.dsn = dsn
        self._durable = durable
        self._relaxed = relaxed
        self._closed = False

    @classmethod
    async def open(cls, dsn: str, *, max_connections: int) -> Database:
        async with translated("connect"):
            durable = await cls._pool(dsn, max_connections, synchronous=True)
            try:
                relaxed = await cls._pool(dsn, RELAXED_POOL_SIZE, synchronous=False)
            except BaseException:
                await durable.close()
                raise
        return cls(dsn, durable, relaxed)

    @staticmethod
    async def _pool(dsn: str, size: int, *, synchronous: bool) -> asyncpg.Pool[asyncpg.Record]:
        return await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            timeout=CONNECT_TIMEOUT_SECONDS,
            command_timeout=COMMAND_TIMEOUT_SECONDS,
            reset=_keep_session,
            server_settings={
                "application_name": APPLICATION_NAME,
                "synchronous_commit": "on" if synchronous else "off",
                "default_transaction_isolation": "read committed",
            },
        )

    @contextlib.asynccontextmanager
    async def connection(self, *, relaxed: bool = False) -> AsyncIterator[Connection]:
        """A pooled connection (autocommit: each statement is its own transaction)."""
        if self._closed:
            raise StorageUnavailable(reason="database is closed")
        pool = self._relaxed if relaxed else self._durable
        async with translated("query"), pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def transaction(self, *, relaxed: bool = False) -> AsyncIterator[Connection]:
        """A pooled connection inside one transaction, committed when the block ends."""
        async with self.connection(relaxed=relaxed) as conn, conn.transaction():
            yield conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pool in (self._durable, self._relaxed):
            try:
                await pool.close()
            except DRIVER_ERRORS as e:
                log.warning("pool_close_failed", extra={"error": f"{type(e).__name__}: {e}"})
                pool.terminate()

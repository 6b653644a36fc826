"""The storage engines the contract suite runs on: SQLite, and PostgreSQL on the session's
throwaway server (`tests.postgres_server`; skipped where it cannot run, failed in CI)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from broker.storage.interfaces import Store
from broker.storage.postgresql import open_postgres_store
from broker.storage.postgresql.database import migrate
from broker.storage.sqlite import open_sqlite_store
from tests.postgres_server import PostgresServer, shared_server

START_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z
BROKER_LOGIN = "casebridge_test_broker"
"""The login role PostgreSQL tests serve as: a member of `casebridge_broker` (migration 0001),
so the tests run with exactly the privileges a production broker has."""


@asynccontextmanager
async def sqlite_store(directory: Path) -> AsyncIterator[Store]:
    store = await open_sqlite_store(directory / "broker.sqlite3", directory / "blobs", now=START_TIME)
    try:
        yield store
    finally:
        await store.close()


async def postgres_database() -> tuple[PostgresServer, str]:
    """A new database on the session's server, migrated by its owner, with the broker's login
    role granted; (server, database name). Drop it with `server.drop_database(name)`."""
    server = await asyncio.to_thread(shared_server)
    name = await server.create_database()
    await migrate(server.dsn(name), START_TIME)
    await server.execute(
        f"DO $$ BEGIN CREATE ROLE {BROKER_LOGIN} LOGIN; "
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; "
        f"GRANT casebridge_broker TO {BROKER_LOGIN};"
    )
    return server, name


@asynccontextmanager
async def postgresql_store(directory: Path) -> AsyncIterator[Store]:
    server, name = await postgres_database()
    store = await open_postgres_store(
        server.dsn(name, BROKER_LOGIN), owner_dsn=server.dsn(name), now=START_TIME, orphan_grace_seconds=0
    )
    try:
        yield store
    finally:
        await store.close()
        await server.drop_database(name)


ENGINES: dict[str, Callable[[Path], AbstractAsyncContextManager[Store]]] = {
    "sqlite": sqlite_store,
    "postgresql": postgresql_store,
}

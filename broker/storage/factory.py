"""Opening the storage engine the settings name: PostgreSQL when `database_url` is set (several
replicas may share it), else SQLite in `data_dir` (one broker process owns it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from broker.settings import Settings
from broker.storage.interfaces import Store
from broker.storage.postgresql import open_postgres_store
from broker.storage.sqlite import open_sqlite_store


def engine_name(settings: Settings) -> str:
    return "postgresql" if settings.database_url else "sqlite"


async def open_store(settings: Settings, *, now: int, owner: bool = True) -> Store:
    """Open (creating and migrating if needed) the configured store. `owner` False is for
    offline commands that may run beside serving brokers."""
    if settings.database_url:
        return await open_postgres_store(
            settings.database_url,
            now=now,
            owner_dsn=settings.database_owner_url,
            max_connections=settings.database_max_connections,
            owner=owner,
        )
    return await open_sqlite_store(settings.database_file, settings.blob_dir, now=now, owner=owner)


@asynccontextmanager
async def opened_store(settings: Settings, *, now: int, owner: bool = True) -> AsyncIterator[Store]:
    store = await open_store(settings, now=now, owner=owner)
    try:
        yield store
    finally:
        await store.close()

"""The storage engines the contract suite runs on. Adding PostgreSQL is one more entry here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from broker.storage.interfaces import Store
from broker.storage.sqlite import open_sqlite_store

START_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z


@asynccontextmanager
async def sqlite_store(directory: Path) -> AsyncIterator[Store]:
    store = await open_sqlite_store(directory / "broker.sqlite3", directory / "blobs", now=START_TIME)
    try:
        yield store
    finally:
        await store.close()


ENGINES: dict[str, Callable[[Path], AbstractAsyncContextManager[Store]]] = {"sqlite": sqlite_store}

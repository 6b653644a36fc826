"""The SQLite storage engine: one database file in the data directory, blobs beside it."""

from broker.storage.sqlite.store import SqliteStore, open_sqlite_store

__all__ = ["SqliteStore", "open_sqlite_store"]

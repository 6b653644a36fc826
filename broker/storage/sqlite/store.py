"""The SQLite engine assembled: every domain store over one `Database` and one blob directory."""

from __future__ import annotations

from pathlib import Path

from broker.storage.blobs import FileBlobStore
from broker.storage.sqlite.audit import SqliteAuditLog
from broker.storage.sqlite.database import Database, latest_version, schema_version
from broker.storage.sqlite.delivery import SqliteDeliveryStore
from broker.storage.sqlite.directory import SqliteDirectoryStore
from broker.storage.sqlite.nonces import SqliteNonceStore
from protocol.errors import StorageUnavailable


class SqliteStore:
    """Implements `broker.storage.interfaces.Store`."""

    def __init__(self, db: Database, blobs: FileBlobStore) -> None:
        self.db = db
        self._audit = SqliteAuditLog(db)
        self._directory = SqliteDirectoryStore(db, self._audit)
        self._delivery = SqliteDeliveryStore(db, self._audit)
        self._nonces = SqliteNonceStore(db)
        self._blobs = blobs

    @property
    def directory(self) -> SqliteDirectoryStore:
        return self._directory

    @property
    def delivery(self) -> SqliteDeliveryStore:
        return self._delivery

    @property
    def nonces(self) -> SqliteNonceStore:
        return self._nonces

    @property
    def blobs(self) -> FileBlobStore:
        return self._blobs

    @property
    def audit(self) -> SqliteAuditLog:
        return self._audit

    @property
    def shared(self) -> None:
        """One broker process owns a SQLite data directory: nothing is shared."""
        return None

    async def check_ready(self) -> None:
        version = await self.db.read(schema_version)
        if version != latest_version():
            raise StorageUnavailable(reason=f"schema version {version}, expected {latest_version()}")

    async def close(self) -> None:
        await self._nonces.close()
        await self.db.close()


async def open_sqlite_store(
    database_file: Path, blob_dir: Path, *, now: int, readers: int = 4, owner: bool = True
) -> SqliteStore:
    """Open (creating and migrating if needed) the database and the blob directory. `owner`
    False is for offline commands that may run beside a serving broker."""
    database_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    blobs = await FileBlobStore.open(blob_dir, owner=owner)
    db = await Database.open(database_file, now=now, readers=readers)
    store = SqliteStore(db, blobs)
    await store.nonces.load(now)
    return store

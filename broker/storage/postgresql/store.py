"""The PostgreSQL engine assembled: every domain store over one database shared by replicas.

Opening migrates (as the schema owner when `owner_dsn` is given), refuses a newer schema,
makes the pools and the store's one writer of audited changes (`SequencedWriter`), and (for a
serving broker) starts listening for other replicas' changes and removes uploads abandoned long
ago. Each opened store has its own `origin`, which its change announcements carry so that it
can ignore its own.
"""

from __future__ import annotations

from broker.storage.postgresql.audit import PostgresAuditLog
from broker.storage.postgresql.blobs import ORPHAN_GRACE_SECONDS, PostgresBlobStore
from broker.storage.postgresql.changes import ChangeListener, new_origin
from broker.storage.postgresql.database import Database, latest_version, migrate, schema_version
from broker.storage.postgresql.delivery import PostgresDeliveryStore
from broker.storage.postgresql.directory import PostgresDirectoryStore
from broker.storage.postgresql.nonces import PostgresNonceStore
from broker.storage.postgresql.sequencing import SequencedWriter
from broker.storage.postgresql.shared import PostgresSharedState
from protocol.errors import StorageUnavailable


class PostgresStore:
    """Implements `broker.storage.interfaces.Store`."""

    def __init__(
        self, db: Database, listener: ChangeListener | None, origin: str, *, orphan_grace_seconds: int
    ) -> None:
        self.db = db
        self.origin = origin
        self._listener = listener
        self._writer = SequencedWriter(db, origin)
        self._audit = PostgresAuditLog(db, self._writer)
        self._directory = PostgresDirectoryStore(db, self._writer)
        self._delivery = PostgresDeliveryStore(db, self._writer)
        self._nonces = PostgresNonceStore(db)
        self._blobs = PostgresBlobStore(db, orphan_grace_seconds=orphan_grace_seconds)
        self._shared = None if listener is None else PostgresSharedState(db, listener)

    @property
    def directory(self) -> PostgresDirectoryStore:
        return self._directory

    @property
    def delivery(self) -> PostgresDeliveryStore:
        return self._delivery

    @property
    def nonces(self) -> PostgresNonceStore:
        return self._nonces

    @property
    def blobs(self) -> PostgresBlobStore:
        return self._blobs

    @property
    def audit(self) -> PostgresAuditLog:
        return self._audit

    @property
    def shared(self) -> PostgresSharedState | None:
        """None for an offline command's store (it serves nobody, so it listens to nobody)."""
        return self._shared

    async def check_ready(self) -> None:
        async with self.db.connection() as conn:
            version = await schema_version(conn)
        if version != latest_version():
            raise StorageUnavailable(reason=f"schema version {version}, expected {latest_version()}")

    async def close(self) -> None:
        await self._writer.close()
        await self._nonces.close()
        if self._listener is not None:
            await self._listener.close()
        await self.db.close()


async def open_postgres_store(
    dsn: str,
    *,
    now: int,
    owner_dsn: str = "",
    max_connections: int = 10,
    owner: bool = True,
    orphan_grace_seconds: int = ORPHAN_GRACE_SECONDS,
) -> PostgresStore:
    """Open the database at `dsn` (migrating it first, over `owner_dsn` if given). `owner` False
    is for offline commands that run beside serving brokers: no listening, no clean-up."""
    await migrate(owner_dsn or dsn, now)
    db = await Database.open(dsn, max_connections=max_connections)
    origin = new_origin()
    listener: ChangeListener | None = None
    try:
        async with db.connection() as conn:
            version = await schema_version(conn)
        if version != latest_version():
            raise StorageUnavailable(
                reason=f"schema version {version} after migrating, expected {latest_version()}"
            )
        if owner:
            listener = ChangeListener(dsn, origin)
            await listener.start()
        store = PostgresStore(db, listener, origin, orphan_grace_seconds=orphan_grace_seconds)
        if owner:
            await store.blobs.remove_abandoned_uploads()
    except BaseException:
        if listener is not None:
            await listener.close()
        await db.close()
        raise
    return store

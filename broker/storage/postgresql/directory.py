"""The directory in PostgreSQL: roots, agency certificates, encryption keys, revocation lists.

Each registration runs as a job of the replica's `SequencedWriter`, under the audit sequencer,
so two replicas registering the same thing are serialised and the second sees the first; it
announces a `DIRECTORY` change in the same transaction, so every other replica re-reads its
in-memory directory once it committed.
"""

from __future__ import annotations

from broker.storage.postgresql.audit_appender import AuditAppender
from broker.storage.postgresql.database import Connection, Database
from broker.storage.postgresql.sequencing import SequencedWriter
from broker.storage.records import (
    Change,
    ChangeKind,
    StoredCertificate,
    StoredEncryptionKey,
    StoredRevocationList,
    StoredRoot,
)
from protocol.errors import Conflict

_DIRECTORY_CHANGED = (Change(ChangeKind.DIRECTORY),)


class PostgresDirectoryStore:
    def __init__(self, db: Database, writer: SequencedWriter) -> None:
        self._db = db
        self._writer = writer

    async def roots(self) -> list[StoredRoot]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT key_id, country, raw, added_at FROM roots ORDER BY country, key_id"
            )
        return [StoredRoot(bytes(r[0]), r[1], bytes(r[2]), r[3]) for r in rows]

    async def add_root(self, root: StoredRoot, leaf: bytes) -> bool:
        async with self._db.connection() as conn:
            held = await conn.fetchval("SELECT raw FROM roots WHERE key_id = $1", root.key_id)
        if held is not None and bytes(held) == root.raw:
            return False

        async def add(conn: Connection, appender: AuditAppender) -> bool:
            held = await conn.fetchval("SELECT raw FROM roots WHERE key_id = $1", root.key_id)
            if held is not None:
                if bytes(held) != root.raw:
                    raise Conflict(reason=f"root key {root.key_id.hex()} is recorded with other bytes")
                return False
            appender.append(leaf, root.added_at)
            await conn.execute(
                "INSERT INTO roots (key_id, country, raw, added_at) VALUES ($1, $2, $3, $4)",
                root.key_id,
                root.country,
                root.raw,
                root.added_at,
            )
            return True

        return await self._writer.run(add)

    async def certificates(self) -> list[StoredCertificate]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT key_id, agency_id, raw, registered_at FROM certificates "
                "ORDER BY agency_id, registered_at"
            )
        return [StoredCertificate(bytes(r[0]), r[1], bytes(r[2]), r[3]) for r in rows]

    async def add_certificate(self, cert: StoredCertificate, leaf: bytes) -> bool:
        async def add(conn: Connection, appender: AuditAppender) -> bool:
            held = await conn.fetchval("SELECT raw FROM certificates WHERE key_id = $1", cert.key_id)
            if held is not None:
                if bytes(held) != cert.raw:
                    raise Conflict(reason=f"key {cert.key_id.hex()} is registered with another certificate")
                return False
            appender.append(leaf, cert.registered_at)
            await conn.execute(
                "INSERT INTO certificates (key_id, agency_id, raw, registered_at) VALUES ($1, $2, $3, $4)",
                cert.key_id,
                cert.agency_id,
                cert.raw,
                cert.registered_at,
            )
            appender.announce(_DIRECTORY_CHANGED)
            return True

        return await self._writer.run(add)

    async def encryption_keys(self) -> list[StoredEncryptionKey]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT key_id, agency_id, raw, registered_at FROM encryption_keys "
                "ORDER BY agency_id, registered_at"
            )
        return [StoredEncryptionKey(bytes(r[0]), r[1], bytes(r[2]), r[3]) for r in rows]

    async def add_encryption_key(self, key: StoredEncryptionKey, leaf: bytes) -> bool:
        async def add(conn: Connection, appender: AuditAppender) -> bool:
            held = await conn.fetchval("SELECT raw FROM encryption_keys WHERE key_id = $1", key.key_id)
            if held is not None:
                if bytes(held) != key.raw:
                    raise Conflict(
                        reason=f"encryption key {key.key_id.hex()} is registered with another statement"
                    )
                return False
            appender.append(leaf, key.registered_at)
            await conn.execute(
                "INSERT INTO encryption_keys (key_id, agency_id, raw, registered_at) VALUES ($1, $2, $3, $4)",
                key.key_id,
                key.agency_id,
                key.raw,
                key.registered_at,
            )
            appender.announce(_DIRECTORY_CHANGED)
            return True

        return await self._writer.run(add)

    async def revocation_lists(self) -> list[StoredRevocationList]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT ON (country) country, number, raw, registered_at FROM revocation_lists "
                "ORDER BY country, number DESC"
            )
        return [StoredRevocationList(r[0], r[1], bytes(r[2]), r[3]) for r in rows]

    async def add_revocation_list(self, crl: StoredRevocationList, leaf: bytes) -> bool:
        async def add(conn: Connection, appender: AuditAppender) -> bool:
            held = await conn.fetchrow(
                "SELECT number, raw FROM revocation_lists WHERE country = $1 ORDER BY number DESC LIMIT 1",
                crl.country,
            )
            if held is not None:
                if held[0] == crl.number and bytes(held[1]) == crl.raw:
                    return False
                if crl.number <= held[0]:
                    raise Conflict(
                        reason=f"revocation list {crl.number} of {crl.country} is not newer than the "
                        f"one held ({held[0]})"
                    )
            appender.append(leaf, crl.registered_at)
            await conn.execute(
                "INSERT INTO revocation_lists (country, number, raw, registered_at) VALUES ($1, $2, $3, $4)",
                crl.country,
                crl.number,
                crl.raw,
                crl.registered_at,
            )
            appender.announce(_DIRECTORY_CHANGED)
            return True

        return await self._writer.run(add)

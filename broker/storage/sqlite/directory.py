"""The directory in SQLite: roots, agency certificates, encryption keys, revocation lists."""

from __future__ import annotations

import sqlite3

from broker.storage.records import StoredCertificate, StoredEncryptionKey, StoredRevocationList, StoredRoot
from broker.storage.sqlite.audit import SqliteAuditLog
from broker.storage.sqlite.database import Database
from protocol.errors import Conflict


class SqliteDirectoryStore:
    def __init__(self, db: Database, audit: SqliteAuditLog) -> None:
        self._db = db
        self._audit = audit

    async def roots(self) -> list[StoredRoot]:
        def job(conn: sqlite3.Connection) -> list[StoredRoot]:
            rows = conn.execute("SELECT key_id, country, raw, added_at FROM roots ORDER BY country, key_id")
            return [StoredRoot(bytes(r[0]), r[1], bytes(r[2]), r[3]) for r in rows]

        return await self._db.scan(job)

    async def add_root(self, root: StoredRoot, leaf: bytes) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            held = conn.execute("SELECT raw FROM roots WHERE key_id = ?", (root.key_id,)).fetchone()
            if held is not None:
                if bytes(held[0]) != root.raw:
                    raise Conflict(reason=f"root key {root.key_id.hex()} is recorded with other bytes")
                return False
            self._audit.append(conn, leaf, root.added_at)
            conn.execute(
                "INSERT INTO roots (key_id, country, raw, added_at) VALUES (?, ?, ?, ?)",
                (root.key_id, root.country, root.raw, root.added_at),
            )
            return True

        return await self._db.write(job)

    async def certificates(self) -> list[StoredCertificate]:
        def job(conn: sqlite3.Connection) -> list[StoredCertificate]:
            rows = conn.execute(
                "SELECT key_id, agency_id, raw, registered_at FROM certificates "
                "ORDER BY agency_id, registered_at"
            )
            return [StoredCertificate(bytes(r[0]), r[1], bytes(r[2]), r[3]) for r in rows]

        return await self._db.scan(job)

    async def add_certificate(self, cert: StoredCertificate, leaf: bytes) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            held = conn.execute("SELECT raw FROM certificates WHERE key_id = ?", (cert.key_id,)).fetchone()
            if held is not None:
                if bytes(held[0]) != cert.raw:
                    raise Conflict(reason=f"key {cert.key_id.hex()} is registered with another certificate")
                return False
            self._audit.append(conn, leaf, cert.registered_at)
            conn.execute(
                "INSERT INTO certificates (key_id, agency_id, raw, registered_at) VALUES (?, ?, ?, ?)",
                (cert.key_id, cert.agency_id, cert.raw, cert.registered_at),
            )
            return True

        return await self._db.write(job)

    async def encryption_keys(self) -> list[StoredEncryptionKey]:
        def job(conn: sqlite3.Connection) -> list[StoredEncryptionKey]:
            rows = conn.execute(
                "SELECT key_id, agency_id, raw, registered_at FROM encryption_keys "
                "ORDER BY agency_id, registered_at"
            )
            return [StoredEncryptionKey(bytes(r[0]), r[1], bytes(r[2]), r[3]) for r in rows]

        return await self._db.scan(job)

    async def add_encryption_key(self, key: StoredEncryptionKey, leaf: bytes) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            held = conn.execute("SELECT raw FROM encryption_keys WHERE key_id = ?", (key.key_id,)).fetchone()
            if held is not None:
                if bytes(held[0]) != key.raw:
                    raise Conflict(
                        reason=f"encryption key {key.key_id.hex()} is registered with another statement"
                    )
                return False
            self._audit.append(conn, leaf, key.registered_at)
            conn.execute(
                "INSERT INTO encryption_keys (key_id, agency_id, raw, registered_at) VALUES (?, ?, ?, ?)",
                (key.key_id, key.agency_id, key.raw, key.registered_at),
            )
            return True

        return await self._db.write(job)

    async def revocation_lists(self) -> list[StoredRevocationList]:
        def job(conn: sqlite3.Connection) -> list[StoredRevocationList]:
            rows = conn.execute(
                "SELECT r.country, r.number, r.raw, r.registered_at FROM revocation_lists r "
                "WHERE r.number = (SELECT MAX(number) FROM revocation_lists WHERE country = r.country) "
                "ORDER BY r.country"
            )
            return [StoredRevocationList(r[0], r[1], bytes(r[2]), r[3]) for r in rows]

        return await self._db.scan(job)

    async def add_revocation_list(self, crl: StoredRevocationList, leaf: bytes) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            held = conn.execute(
                "SELECT number, raw FROM revocation_lists WHERE country = ? ORDER BY number DESC LIMIT 1",
                (crl.country,),
            ).fetchone()
            if held is not None:
                if held[0] == crl.number and bytes(held[1]) == crl.raw:
                    return False
                if crl.number <= held[0]:
                    raise Conflict(
                        reason=f"revocation list {crl.number} of {crl.country} is not newer than the "
                        f"one held ({held[0]})"
                    )
            self._audit.append(conn, leaf, crl.registered_at)
            conn.execute(
                "INSERT INTO revocation_lists (country, number, raw, registered_at) VALUES (?, ?, ?, ?)",
                (crl.country, crl.number, crl.raw, crl.registered_at),
            )
            return True

        return await self._db.write(job)

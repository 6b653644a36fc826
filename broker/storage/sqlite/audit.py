"""The audit log table in SQLite: append inside the caller's transaction, read committed leaves.

Invariants: indexes run 0, 1, 2, ... without gaps (a trigger refuses anything else); a leaf is
stored verbatim and never changed or deleted (triggers refuse UPDATE and DELETE); an append
that fails raises, which rolls back the transaction holding the change it records.
"""

from __future__ import annotations

import sqlite3

from broker.storage.sqlite.database import Database


class SqliteAuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    def append(conn: sqlite3.Connection, leaf: bytes, now: int) -> int:
        """Append `leaf` in the transaction open on `conn`; returns its index."""
        index = int(conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log").fetchone()[0])
        conn.execute("INSERT INTO audit_log (idx, leaf, recorded_at) VALUES (?, ?, ?)", (index, leaf, now))
        return index

    async def record(self, leaf: bytes, now: int) -> int:
        return await self._db.write(lambda conn: self.append(conn, leaf, now))

    async def size(self) -> int:
        return await self._db.read(
            lambda conn: int(conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log").fetchone()[0])
        )

    async def leaves(self, start: int, end: int) -> list[bytes]:
        def job(conn: sqlite3.Connection) -> list[bytes]:
            rows = conn.execute(
                "SELECT leaf FROM audit_log WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
            ).fetchall()
            return [bytes(r[0]) for r in rows]

        return await self._db.read(job)

"""Opening the SQLite database file: connections and the numbered migrations.

Invariants: every connection is in autocommit mode (transactions are explicit) with foreign keys
on and the busy timeout set; migrations run in order, each in its own transaction with its
version row, and the schema version only moves forward (a database newer than this code is
refused).
"""

from __future__ import annotations

import importlib.resources
import logging
import re
import sqlite3
from pathlib import Path

from broker.storage.schema import too_new
from protocol.errors import StorageUnavailable

BUSY_TIMEOUT_MS = 5000
MIGRATIONS_PACKAGE = "broker.storage.sqlite.migrations"
_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")

log = logging.getLogger("casebridge.broker.storage")


def migrations() -> list[tuple[int, str]]:
    """The numbered migration scripts shipped with the code, in order (1, 2, 3, ...)."""
    found: list[tuple[int, str]] = []
    for entry in importlib.resources.files(MIGRATIONS_PACKAGE).iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("SQLite migrations must be numbered 0001, 0002, ... without gaps")
    return found


def latest_version() -> int:
    return len(migrations())


def connect(path: Path, *, query_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), foreign keys on."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    if query_only:
        conn.execute("PRAGMA query_only = ON")
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(row[0])


def apply_migrations(conn: sqlite3.Connection, now: int) -> int:
    """Bring the schema to the latest version; refuse a newer one. Returns the version."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageUnavailable(reason=f"SQLite refused WAL mode (got {mode})")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    current = schema_version(conn)
    known = migrations()
    if current > len(known):
        raise too_new(current, len(known), "this data directory")
    for version, script in known[current:]:
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\n"
                f"INSERT INTO schema_version (version, applied_at) VALUES ({version:d}, {now:d});\nCOMMIT;"
            )
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StorageUnavailable(reason=f"migration {version} failed: {e}") from e
        log.info("schema_migrated", extra={"schema_version": version})
    return len(known)

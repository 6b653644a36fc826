"""The client's local state: one SQLite database in the agency's state directory.

It holds the outbox (sealed envelopes not yet accepted), the verified directory cache, the
receipts about what this agency sent, the envelopes it received but the application has not yet
acknowledged, the receipts it signed as a recipient, and the processed-ids set.

Invariants:
- WAL journal with `synchronous=FULL`: a commit that returned survives a crash or power cut.
- An outbox entry is recorded only after its sealed files were fsynced, so a recorded entry can
  always be sent again with the same bytes; it leaves `pending` only for `accepted` (with the
  broker's verified receipts) or `failed` (with the broker's problem detail).
- The receipts cursor advances in the same transaction that stores the receipts it covers, so
  a crash never skips one.
- A received envelope is recorded (with the receipts this agency signed for it) before its
  `verified` receipt is posted, so the broker forgets it only after it is safe here; it moves to
  `processed` exactly once, in a transaction the application may share (`transaction()`).
- Nothing decrypted is stored in clear: a `received` row's content is sealed under the agency's
  received key (`clients.received_rows`), its attachments are sealed files
  (`clients.received_files`). Opened without that key, the state serves everything but the
  `received` table; a state file from schema 1 (rows in clear) is migrated when first opened
  with it.
- The directory and state files are private to the owner (0700 directory, 0600 database).
- Paths inside the state directory are stored relative to it, so the directory can be moved or
  restored from a backup as a whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clients.local_records import (
    CachedDirectory,
    OutboxEntry,
    OutboxState,
    ReceivedEntry,
    StoredReceipt,
)
from clients.local_sqlite import transaction
from clients.received_files import ReceivedFile
from clients.received_rows import (
    INSERT_ROW,
    SELECT_ROW,
    SELECT_ROWS,
    delete_clear_files,
    migrate_clear_rows,
    open_row,
    seal_row,
    table_sql,
)
from protocol.errors import CaseBridgeError, InvalidField, StorageUnavailable
from protocol.primitives import Random, system_random

SCHEMA_VERSION = 2
CLEAR_RECEIVED_SCHEMA = 1
"""Schema 1 kept received bodies in clear; it is migrated when opened with the received key."""
DATABASE_NAME = "state.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS certificates (
    key_id BLOB PRIMARY KEY, agency_id TEXT NOT NULL, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS encryption_keys (
    key_id BLOB PRIMARY KEY, agency_id TEXT NOT NULL, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS revocation_lists (country TEXT PRIMARY KEY, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    envelope_id TEXT PRIMARY KEY, envelope_hash TEXT NOT NULL, recipients TEXT NOT NULL,
    directory TEXT NOT NULL, content_digest TEXT NOT NULL, total_length INTEGER NOT NULL,
    created_at INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, problem TEXT, accepted_at INTEGER);
CREATE TABLE IF NOT EXISTS receipts (
    envelope_id TEXT NOT NULL, recipient_id TEXT NOT NULL, kind TEXT NOT NULL,
    time INTEGER NOT NULL, raw BLOB NOT NULL, PRIMARY KEY (envelope_id, recipient_id, kind));
CREATE TABLE IF NOT EXISTS signed_receipts (
    envelope_id TEXT NOT NULL, kind TEXT NOT NULL, raw BLOB NOT NULL, posted INTEGER NOT NULL,
    PRIMARY KEY (envelope_id, kind));
CREATE TABLE IF NOT EXISTS processed (envelope_id TEXT PRIMARY KEY, processed_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (
    envelope_id TEXT PRIMARY KEY, sender_id TEXT NOT NULL, reason TEXT NOT NULL,
    detail TEXT NOT NULL, rejected_at INTEGER NOT NULL);
"""


def _storage_error(e: sqlite3.Error, path: Path) -> CaseBridgeError:
    return StorageUnavailable(
        f"the local state database {path} cannot be used ({e}). Check the disk and its permissions.",
        reason=f"sqlite: {e}",
    )


class LocalState:
    """The state database. Thread-safe: every use holds one lock (the sync facade calls it
    from its own thread while the application may call `transaction()` from another).

    `received_key` (`clients.received_rows.received_key` of the agency's signing seed) seals
    and opens the `received` table; without it, that table cannot be used."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        received_key: bytes | None = None,
        rng: Random = system_random,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.path = self.directory / DATABASE_NAME
        self._lock = threading.RLock()
        self._received_key = received_key
        self._rng = rng
        migrated: list[Path] | None = None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fresh = not self.path.exists()
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if fresh:
                os.chmod(self.path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # Overwrite freed pages: an acknowledged row (sealed, with its files' keys) and the
            # clear rows a migration replaced leave no trace in the file.
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
            with self.transaction() as db:
                row = db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
                if row is None:
                    db.execute(table_sql())
                    db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                elif row[0] == CLEAR_RECEIVED_SCHEMA and received_key is not None:
                    migrated = migrate_clear_rows(db, self.directory, received_key, rng)
                    self.set_counter(db, "schema", SCHEMA_VERSION)
                elif row[0] not in (SCHEMA_VERSION, CLEAR_RECEIVED_SCHEMA):
                    raise StorageUnavailable(
                        f"{self.path} was written by another CaseBridge version (schema {row[0]}); "
                        "upgrade CaseBridge.",
                    )
            if migrated is not None:
                delete_clear_files(migrated)
                # Rebuild the file without its free pages (older versions did not overwrite
                # them) and empty the write-ahead log. Skipped when another process holds the
                # database: the migration has committed, and `secure_delete` already zeroed
                # the pages the clear rows used.
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("VACUUM")
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as e:
            raise _storage_error(e, self.path) from e
        except OSError as e:
            raise StorageUnavailable(
                f"cannot use the state directory {self.directory}: {e.strerror}. Check its permissions.",
            ) from e

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.directory)) if path.is_relative_to(self.directory) else str(path)

    def _absolute(self, text: str) -> Path:
        return self.directory / text

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One durable transaction on the state database (BEGIN IMMEDIATE ... COMMIT).

        An application may write its own tables here in the same transaction that marks an
        envelope processed (`AgencyClient.processing`)."""
        return transaction(self._db, self._lock, lambda e: _storage_error(e, self.path))

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as e:
                raise _storage_error(e, self.path) from e

    # --- counters --------------------------------------------------------------------------

    def counter(self, name: str) -> int:
        rows = self._query("SELECT value FROM meta WHERE name=?", (name,))
        return int(rows[0][0]) if rows else 0

    @staticmethod
    def set_counter(db: sqlite3.Connection, name: str, value: int) -> None:
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    # --- directory cache -------------------------------------------------------------------

    def save_directory(
        self,
        certificates: Iterable[tuple[bytes, str, bytes]],
        encryption_keys: Iterable[tuple[bytes, str, bytes]],
        revocation_lists: Iterable[tuple[str, bytes]],
    ) -> None:
        """Add verified documents (key id, agency id, raw bytes) to the cache. Old certificates
        stay, so receipts signed by a key since rotated still verify."""
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO certificates VALUES (?, ?, ?)", certificates)
            db.executemany("INSERT OR REPLACE INTO encryption_keys VALUES (?, ?, ?)", encryption_keys)
            db.executemany("INSERT OR REPLACE INTO revocation_lists VALUES (?, ?)", revocation_lists)

    def load_directory(self) -> CachedDirectory:
        return CachedDirectory(
            certificates=tuple(r[0] for r in self._query("SELECT raw FROM certificates")),
            encryption_keys=tuple(r[0] for r in self._query("SELECT raw FROM encryption_keys")),
            revocation_lists=tuple(r[0] for r in self._query("SELECT raw FROM revocation_lists")),
        )

    # --- outbox ----------------------------------------------------------------------------

    def add_outbox(self, entry: OutboxEntry) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO outbox (envelope_id, envelope_hash, recipients, directory, content_digest,"
                " total_length, created_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.envelope_id,
                    entry.envelope_hash,
                    json.dumps(list(entry.recipients)),
                    self._relative(entry.directory),
                    entry.content_digest,
                    entry.total_length,
                    entry.created_at,
                    str(OutboxState.PENDING),
                ),
            )

    def _outbox_row(self, row: Any) -> OutboxEntry:
        return OutboxEntry(
            envelope_id=row[0],
            envelope_hash=row[1],
            recipients=tuple(json.loads(row[2])),
            directory=self._absolute(row[3]),
            content_digest=row[4],
            total_length=row[5],
            created_at=row[6],
            state=OutboxState(row[7]),
            attempts=row[8],
            last_error=row[9],
            problem=None if row[10] is None else json.loads(row[10]),
            accepted_at=row[11],
        )

    def outbox_entry(self, envelope_id: str) -> OutboxEntry | None:
        rows = self._query("SELECT * FROM outbox WHERE envelope_id=?", (envelope_id,))
        return self._outbox_row(rows[0]) if rows else None

    def outbox_entries(self, state: OutboxState | None = None) -> list[OutboxEntry]:
        if state is None:
            rows = self._query("SELECT * FROM outbox ORDER BY created_at, envelope_id")
        else:
            rows = self._query(
                "SELECT * FROM outbox WHERE state=? ORDER BY created_at, envelope_id", (str(state),)
            )
        return [self._outbox_row(r) for r in rows]

    def note_attempt(self, envelope_id: str, error: str | None) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error=? WHERE envelope_id=?",
                (error, envelope_id),
            )

    def mark_accepted(self, envelope_id: str, accepted_at: int, receipts: Iterable[StoredReceipt]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET state=?, accepted_at=?, last_error=NULL WHERE envelope_id=?",
                (str(OutboxState.ACCEPTED), accepted_at, envelope_id),
            )
            self._insert_receipts(db, receipts)

    def mark_failed(self, envelope_id: str, problem: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET state=?, problem=?, last_error=? WHERE envelope_id=?",
                (str(OutboxState.FAILED), json.dumps(problem), problem.get("detail"), envelope_id),
            )

    # --- receipts about what this agency sent ----------------------------------------------

    @staticmethod
    def _insert_receipts(db: sqlite3.Connection, receipts: Iterable[StoredReceipt]) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO receipts VALUES (?, ?, ?, ?, ?)",
            [(r.envelope_id, r.recipient_id, r.kind, r.time, r.raw) for r in receipts],
        )

    def store_receipts(self, receipts: Iterable[StoredReceipt], *, cursor: tuple[str, int] | None) -> None:
        """Store verified receipts, and advance the named cursor in the same transaction."""
        with self.transaction() as db:
            self._insert_receipts(db, receipts)
            if cursor is not None:
                self.set_counter(db, *cursor)

    def receipts_for(self, envelope_id: str) -> list[StoredReceipt]:
        rows = self._query(
            "SELECT envelope_id, recipient_id, kind, time, raw FROM receipts WHERE envelope_id=?"
            " ORDER BY recipient_id, time, kind",
            (envelope_id,),
        )
        return [StoredReceipt(*r) for r in rows]

    # --- received envelopes and the receipts signed for them ------------------------------

    def _key(self) -> bytes:
        if self._received_key is None:
            raise InvalidField(
                "received_key",
                "the agency's received key: received envelopes are sealed at rest; open the state "
                "through AgencyClient (or give LocalState the key)",
            )
        return self._received_key

    def add_received(self, entry: ReceivedEntry, verified_receipt: bytes) -> None:
        row = seal_row(self._key(), self._rng, entry, self._relative(entry.directory))
        with self.transaction() as db:
            db.execute(INSERT_ROW, row)
            db.execute(
                "INSERT OR IGNORE INTO signed_receipts VALUES (?, 'verified', ?, 0)",
                (entry.envelope_id, verified_receipt),
            )

    def _received_row(self, row: Any) -> ReceivedEntry:
        return open_row(self._key(), row, self._absolute(row[3]), self.path)

    def has_received(self, envelope_id: str) -> bool:
        """Whether `envelope_id` waits in the `received` table (nothing is decrypted)."""
        return bool(self._query("SELECT 1 FROM received WHERE envelope_id=?", (envelope_id,)))

    def received_entry(self, envelope_id: str) -> ReceivedEntry | None:
        """The entry for `envelope_id`; `DecryptionFailed` if its row was altered or moved."""
        rows = self._query(SELECT_ROW, (envelope_id,))
        return self._received_row(rows[0]) if rows else None

    def received_entries(self) -> list[ReceivedEntry]:
        """Every entry, oldest first; `DecryptionFailed` if any row was altered or moved."""
        rows = self._query(SELECT_ROWS)
        return [self._received_row(r) for r in rows]

    def signed_receipt(self, envelope_id: str, kind: str) -> bytes | None:
        rows = self._query(
            "SELECT raw FROM signed_receipts WHERE envelope_id=? AND kind=?", (envelope_id, kind)
        )
        return bytes(rows[0][0]) if rows else None

    def save_signed_receipt(self, envelope_id: str, kind: str, raw: bytes) -> bytes:
        """Keep a receipt this agency signed; returns the one kept (the first), so a repeated
        post sends the same bytes."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO signed_receipts VALUES (?, ?, ?, 0)", (envelope_id, kind, raw))
            row = db.execute(
                "SELECT raw FROM signed_receipts WHERE envelope_id=? AND kind=?", (envelope_id, kind)
            ).fetchone()
        return bytes(row[0])

    def unposted_receipts(self) -> list[tuple[str, str, bytes]]:
        rows = self._query(
            "SELECT envelope_id, kind, raw FROM signed_receipts WHERE posted=0 ORDER BY envelope_id, kind"
        )
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    def mark_receipt_posted(self, envelope_id: str, kind: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE signed_receipts SET posted=1 WHERE envelope_id=? AND kind=?", (envelope_id, kind)
            )

    # --- processed and rejected ------------------------------------------------------------

    def is_processed(self, envelope_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM processed WHERE envelope_id=?", (envelope_id,)))

    @staticmethod
    def mark_processed(db: sqlite3.Connection, envelope_id: str, now: int) -> bool:
        """Inside a transaction: record `envelope_id` as handled and drop its received copy.
        Returns False when it was already processed."""
        cursor = db.execute("INSERT OR IGNORE INTO processed VALUES (?, ?)", (envelope_id, now))
        db.execute("DELETE FROM received WHERE envelope_id=?", (envelope_id,))
        return cursor.rowcount == 1

    def record_rejection(self, envelope_id: str, sender_id: str, reason: str, detail: str, now: int) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO rejected VALUES (?, ?, ?, ?, ?)",
                (envelope_id, sender_id, reason, detail, now),
            )

    def rejection(self, envelope_id: str) -> tuple[str, str, str] | None:
        rows = self._query(
            "SELECT sender_id, reason, detail FROM rejected WHERE envelope_id=?", (envelope_id,)
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None


class ProcessedIds:
    """The processed-ids set as a `Container[bytes]` for `EnvelopeOpener(processed=...)`."""

    def __init__(self, state: LocalState) -> None:
        self._state = state

    def __contains__(self, envelope_id: object) -> bool:
        return isinstance(envelope_id, bytes) and self._state.is_processed(envelope_id.hex())


__all__ = [
    "CachedDirectory",
    "LocalState",
    "OutboxEntry",
    "OutboxState",
    "ProcessedIds",
    "ReceivedEntry",
    "ReceivedFile",
    "StoredReceipt",
]

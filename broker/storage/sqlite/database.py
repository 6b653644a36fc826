"""SQLite engine core: one writer thread with group commit, a few reader threads, migrations.

Invariants:
- Every write runs on one thread, in submission order; the event loop never waits on SQLite.
  Jobs queued while a transaction is being committed run together in the next one, each inside
  its own savepoint (a failing job rolls back alone), and one commit makes them all durable:
  concurrent writers share one disk sync, and no job ever waits for a batch to fill.
- A job's result reaches its caller only after its transaction committed. A failed commit
  fails every job of the batch with `StorageUnavailable`; engine errors never leak as such.
- A batch holding any durable job commits with synchronous=FULL. A batch of only non-durable
  jobs (request nonces) commits with NORMAL: WAL keeps the database consistent, and the next
  FULL commit makes those entries durable too.
- Readers use their own query-only connections; each read job is one transaction, so it sees
  one consistent snapshot of committed data.
- Commits never wait for a WAL checkpoint: automatic checkpoints are off on the writer, and a
  checkpointer thread runs passive checkpoints (which never block the writer) every
  `CHECKPOINT_INTERVAL_SECONDS`, and a full one at close.
- The schema version only moves forward: a database newer than this code is refused at open.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import queue
import re
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from broker.storage.schema import SchemaTooNew as SchemaTooNew  # re-exported for callers
from broker.storage.schema import too_new
from protocol.errors import CaseBridgeError, StorageUnavailable

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

MAX_BATCH = 512
BUSY_TIMEOUT_MS = 5000
CHECKPOINT_INTERVAL_SECONDS = 1.0
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


@dataclass(slots=True)
class _Pending:
    job: Callable[[sqlite3.Connection], Any]
    durable: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _storage_error(e: BaseException) -> BaseException:
    if isinstance(e, sqlite3.Error):
        converted = StorageUnavailable(reason=f"sqlite: {type(e).__name__}: {e}")
        converted.__cause__ = e
        return converted
    return e


class Database:
    """One SQLite database file. Open with `await Database.open(path, now=...)`."""

    def __init__(self, path: Path, *, readers: int = 4) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="casebridge-sqlite-reader")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._closed = False
        self._synchronous = ""

    @classmethod
    async def open(cls, path: Path, *, now: int, readers: int = 4) -> Database:
        db = cls(path, readers=readers)
        loop = asyncio.get_running_loop()
        started: asyncio.Future[int] = loop.create_future()
        db._thread = threading.Thread(
            target=db._writer_main, args=(loop, started, now), name="casebridge-sqlite-writer", daemon=True
        )
        db._thread.start()
        try:
            await started
        except BaseException:
            db._closed = True
            await asyncio.to_thread(db._thread.join)
            db._readers.shutdown(wait=False)
            raise
        db._checkpointer = threading.Thread(
            target=db._checkpoint_main, name="casebridge-sqlite-checkpoint", daemon=True
        )
        db._checkpointer.start()
        return db

    def _checkpoint_main(self) -> None:
        conn = connect(self.path)
        try:
            while not self._stop_checkpoints.wait(CHECKPOINT_INTERVAL_SECONDS):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as e:
                    log.warning("wal_checkpoint_failed", extra={"error": f"{type(e).__name__}: {e}"})
        finally:
            conn.close()

    # --- writer --------------------------------------------------------------------------------

    def _writer_main(self, loop: asyncio.AbstractEventLoop, started: asyncio.Future[int], now: int) -> None:
        try:
            conn = connect(self.path)
            try:
                version = apply_migrations(conn, now)
            except BaseException:
                conn.close()
                raise
        except BaseException as e:
            loop.call_soon_threadsafe(_settle, started, False, _storage_error(e))
            return
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        loop.call_soon_threadsafe(_settle, started, True, version)
        try:
            self._serve(conn)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as e:
                log.warning("wal_checkpoint_failed", extra={"error": f"{type(e).__name__}: {e}"})
        finally:
            conn.close()

    def _serve(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._run_batch(conn, batch)

    def _set_synchronous(self, conn: sqlite3.Connection, durable: bool) -> None:
        wanted = "FULL" if durable else "NORMAL"
        if wanted != self._synchronous:
            conn.execute(f"PRAGMA synchronous = {wanted}")
            self._synchronous = wanted

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            self._set_synchronous(conn, any(p.durable for p in batch))
            conn.execute("BEGIN IMMEDIATE")
            for pending in batch:
                conn.execute("SAVEPOINT job")
                try:
                    value = pending.job(conn)
                except Exception as e:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((False, _storage_error(e)))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((True, value))
            conn.execute("COMMIT")
        except Exception as e:
            log.error("storage_batch_failed", extra={"error": f"{type(e).__name__}: {e}", "jobs": len(batch)})
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("storage_rollback_failed")
            failure = StorageUnavailable(reason=f"commit failed: {type(e).__name__}")
            outcomes = [(False, failure)] * len(batch)
        for pending, (ok, value) in zip(batch, outcomes, strict=True):
            try:
                pending.loop.call_soon_threadsafe(_settle, pending.future, ok, value)
            except RuntimeError:
                log.warning("storage_result_dropped", extra={"reason": "event loop closed"})

    async def write(self, job: Job[T], *, durable: bool = True) -> T:
        """Run `job` on the writer thread inside a transaction; its result once committed."""
        if self._closed:
            raise StorageUnavailable(reason="database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Pending(job, durable, loop, future))
        return await future

    # --- readers -------------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, query_only=True)
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    def _run_read(self, job: Job[T]) -> T:
        try:
            conn = self._reader()
            conn.execute("BEGIN")
            try:
                return job(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except CaseBridgeError:
            raise
        except sqlite3.Error as e:
            raise StorageUnavailable(reason=f"sqlite read: {type(e).__name__}: {e}") from e

    async def read(self, job: Job[T]) -> T:
        """Run `job` on a reader thread in one read transaction."""
        if self._closed:
            raise StorageUnavailable(reason="database is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, job)

    # --- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Finish every queued write, then close all connections."""
        if self._closed:
            return
        self._closed = True
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)
        self._queue.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(self._readers.shutdown, wait=True)
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

"""SQLite engine core: one writer connection with group commit, and readers.

Invariants:
- Writes run one batch at a time, in submission order. Jobs queued while a batch is being
  committed run together in the next one, each inside its own savepoint (a failing job rolls
  back alone), and one commit makes them all durable: concurrent writers share one disk sync,
  and no job ever waits for a batch to fill.
- A batch's jobs run on the event loop thread (they are a few indexed statements on a
  connection that holds the write lock, so nothing in them waits), and the commit, which syncs
  to disk, runs on the writer thread, so the loop never waits on the disk. A job that may touch
  many rows (`bulk`), the migrations, and a BEGIN that finds the database locked by another
  process run on the writer thread. The writer connection is used by one thread at a time.
- A job's result reaches its caller only after its transaction committed. A failed commit
  fails every job of the batch with `StorageUnavailable`; engine errors never leak as such.
- A batch holding any durable job commits with synchronous=FULL. A batch of only non-durable
  jobs (request nonces) commits with NORMAL: WAL keeps the database consistent, and the next
  FULL commit makes those entries durable too.
- Reads use query-only connections; each read job is one transaction (or one statement), so it
  sees one consistent snapshot of committed data. `read` runs on the event loop thread (point
  lookups and bounded pages: no thread hand-off, no wait on the global interpreter lock), and
  falls back to a reader thread if the database is momentarily locked; `scan`, for reads that
  may touch many rows, runs on a reader thread.
- Commits never wait for a WAL checkpoint: automatic checkpoints are off on the writer, and a
  checkpointer thread runs passive checkpoints (which never block the writer) every
  `CHECKPOINT_INTERVAL_SECONDS`, and a full one at close.
- The schema is brought up to date at open (`broker.storage.sqlite.connection`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from broker.storage.schema import SchemaTooNew as SchemaTooNew  # re-exported for callers
from broker.storage.sqlite.connection import BUSY_TIMEOUT_MS, apply_migrations
from broker.storage.sqlite.connection import MIGRATIONS_PACKAGE as MIGRATIONS_PACKAGE  # re-exported
from broker.storage.sqlite.connection import connect as connect  # re-exported
from broker.storage.sqlite.connection import latest_version as latest_version  # re-exported
from broker.storage.sqlite.connection import migrations as migrations  # re-exported
from broker.storage.sqlite.connection import schema_version as schema_version  # re-exported
from protocol.errors import CaseBridgeError, StorageUnavailable

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

MAX_BATCH = 128
"""Jobs in one transaction at most; they hold the event loop while they run (a few ms for 128)."""
BUSY_RETRY_SECONDS = 0.002
CHECKPOINT_INTERVAL_SECONDS = 1.0

log = logging.getLogger("casebridge.broker.storage")


@dataclass(slots=True)
class _Pending:
    job: Callable[[sqlite3.Connection], Any]
    durable: bool
    bulk: bool
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


def _locked(e: sqlite3.Error) -> bool:
    """Whether `e` says another connection holds a lock (SQLITE_BUSY or SQLITE_LOCKED)."""
    return isinstance(e, sqlite3.OperationalError) and (
        getattr(e, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
        or "locked" in str(e)
    )


def _run_jobs(conn: sqlite3.Connection, batch: list[_Pending]) -> list[tuple[bool, Any]]:
    """Run each job in its own savepoint of the open transaction; a failing job rolls back alone."""
    outcomes: list[tuple[bool, Any]] = []
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
    return outcomes


def _begin_waiting(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting at most `BUSY_TIMEOUT_MS` for another process's write lock
    (writer thread only: the writer connection itself never waits, so the loop cannot)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.Error as e:
            if not _locked(e) or time.monotonic() >= deadline:
                raise
        time.sleep(BUSY_RETRY_SECONDS)


def _roll_back(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("storage_rollback_failed")


def _run_bulk(conn: sqlite3.Connection, batch: list[_Pending]) -> list[tuple[bool, Any]]:
    """A whole batch on the writer thread: begin, the jobs, commit."""
    _begin_waiting(conn)
    outcomes = _run_jobs(conn, batch)
    conn.execute("COMMIT")
    return outcomes


class Database:
    """One SQLite database file. Open with `await Database.open(path, now=...)`; use it from
    the event loop it was opened on."""

    def __init__(self, path: Path, *, readers: int = 4) -> None:
        self.path = path
        self._pending: collections.deque[_Pending] = collections.deque()
        self._writing: asyncio.Task[None] | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="casebridge-sqlite-writer")
        self._writer_conn: sqlite3.Connection | None = None
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="casebridge-sqlite-reader")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._loop_reader: sqlite3.Connection | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._closed = False
        self._synchronous = ""

    @classmethod
    async def open(cls, path: Path, *, now: int, readers: int = 4) -> Database:
        db = cls(path, readers=readers)
        loop = asyncio.get_running_loop()
        try:
            db._writer_conn = await loop.run_in_executor(db._writer, _open_writer, path, now)
            db._loop_reader = connect(path, query_only=True)
            # The loop never waits on a lock: a busy database sends the read to a reader thread.
            db._loop_reader.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            db._closed = True
            if db._writer_conn is not None:
                db._writer_conn.close()
            db._writer.shutdown(wait=False)
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

    # --- writes ----------------------------------------------------------------------------------

    async def write(self, job: Job[T], *, durable: bool = True, bulk: bool = False) -> T:
        """Run `job` inside a write transaction; its result once committed. `bulk` for a job
        that may touch many rows: it runs on the writer thread instead of the event loop."""
        if self._closed:
            raise StorageUnavailable(reason="database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Pending(job, durable, bulk, future))
        if self._writing is None:
            self._writing = loop.create_task(self._write_batches(), name="casebridge-sqlite-commits")
        return await future

    async def _write_batches(self) -> None:
        """Run the queued jobs batch after batch until none is left (the single write path)."""
        try:
            while self._pending:
                batch: list[_Pending] = []
                bulk = self._pending[0].bulk
                while self._pending and len(batch) < MAX_BATCH and self._pending[0].bulk == bulk:
                    batch.append(self._pending.popleft())
                await self._run_batch(batch, bulk)
        except BaseException:
            # Cancelled with the event loop: nothing queued will run, so no caller may wait.
            while self._pending:
                self._pending.popleft().future.cancel()
            raise
        finally:
            self._writing = None

    def _set_synchronous(self, conn: sqlite3.Connection, durable: bool) -> None:
        wanted = "FULL" if durable else "NORMAL"
        if wanted != self._synchronous:
            conn.execute(f"PRAGMA synchronous = {wanted}")
            self._synchronous = wanted

    async def _on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the writer thread; if the caller is cancelled meanwhile, the connection
        is still left alone until `fn` returns."""
        done = asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await done
            raise

    async def _run_batch(self, batch: list[_Pending], bulk: bool) -> None:
        conn = self._writer_conn
        assert conn is not None
        outcomes: list[tuple[bool, Any]] = []
        try:
            self._set_synchronous(conn, any(p.durable for p in batch))
            if bulk:
                outcomes = await self._on_writer(_run_bulk, conn, batch)
            else:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as e:
                    if not _locked(e):
                        raise
                    await self._on_writer(_begin_waiting, conn)
                outcomes = _run_jobs(conn, batch)
                if self._synchronous == "FULL":
                    await self._on_writer(conn.execute, "COMMIT")
                else:
                    conn.execute("COMMIT")
        except Exception as e:
            log.error("storage_batch_failed", extra={"error": f"{type(e).__name__}: {e}", "jobs": len(batch)})
            _roll_back(conn)
            failure = StorageUnavailable(reason=f"commit failed: {type(e).__name__}")
            outcomes = [(False, failure)] * len(batch)
        except BaseException:
            _roll_back(conn)
            for pending in batch:
                pending.future.cancel()
            raise
        for pending, (ok, value) in zip(batch, outcomes, strict=True):
            _settle(pending.future, ok, value)

    # --- reads -----------------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, query_only=True)
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    def _run_read(
        self, job: Job[T], conn: sqlite3.Connection | None = None, one_statement: bool = False
    ) -> T:
        try:
            conn = self._reader() if conn is None else conn
            if one_statement:
                return job(conn)
            conn.execute("BEGIN")
            try:
                return job(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except CaseBridgeError:
            raise
        except sqlite3.Error as e:
            if conn is self._loop_reader and _locked(e):
                raise
            raise StorageUnavailable(reason=f"sqlite read: {type(e).__name__}: {e}") from e

    async def read(self, job: Job[T], *, one_statement: bool = False) -> T:
        """Run `job` in one read transaction on the event loop thread: for point lookups and
        bounded pages. A job that runs `one_statement` needs no transaction around it: a
        statement reads one snapshot. A database locked at that moment sends it to a reader
        thread instead."""
        if self._closed or self._loop_reader is None:
            raise StorageUnavailable(reason="database is closed")
        try:
            return self._run_read(job, self._loop_reader, one_statement)
        except sqlite3.Error:
            return await self.scan(job)

    async def scan(self, job: Job[T]) -> T:
        """Run `job` on a reader thread in one read transaction: for reads of many rows."""
        if self._closed:
            raise StorageUnavailable(reason="database is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, job)

    # --- lifecycle -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Finish every queued write, then close all connections."""
        if self._closed:
            return
        self._closed = True
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)
        while self._writing is not None:
            await asyncio.shield(self._writing)
        conn = self._writer_conn
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, _close_writer, conn)
        self._writer.shutdown(wait=True)
        await asyncio.to_thread(self._readers.shutdown, wait=True)
        if self._loop_reader is not None:
            self._loop_reader.close()
        with self._reader_lock:
            for reader in self._reader_conns:
                reader.close()
            self._reader_conns.clear()


def _open_writer(path: Path, now: int) -> sqlite3.Connection:
    """The writer connection, with the schema brought up to date (writer thread)."""
    try:
        conn = connect(path)
    except sqlite3.Error as e:
        raise _storage_error(e) from e
    try:
        apply_migrations(conn, now)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        # The writer never waits on a lock where the loop could be holding it: `_begin_waiting`
        # waits on the writer thread instead.
        conn.execute("PRAGMA busy_timeout = 0")
    except sqlite3.Error as e:
        conn.close()
        raise _storage_error(e) from e
    except BaseException:
        conn.close()
        raise
    return conn


def _close_writer(conn: sqlite3.Connection) -> None:
    """A full checkpoint (waiting for readers as long as the busy timeout allows), then close."""
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as e:
        log.warning("wal_checkpoint_failed", extra={"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()

"""What only the SQLite engine has to prove: durable settings, append-only audit triggers,
forward-only migrations, and group commit that never lets one job's failure touch another."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.storage.sqlite import open_sqlite_store
from broker.storage.sqlite.database import Database, SchemaTooNew, latest_version
from protocol.errors import StorageUnavailable
from tests.integration.storage_engines import START_TIME


async def test_the_database_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    store = await open_sqlite_store(tmp_path / "b.sqlite3", tmp_path / "blobs", now=START_TIME)
    try:
        mode, fks = await store.db.read(
            lambda c: (
                c.execute("PRAGMA journal_mode").fetchone()[0],
                c.execute("PRAGMA foreign_keys").fetchone()[0],
            )
        )
        assert (mode, fks) == ("wal", 1)
        await store.audit.record(b"durable", START_TIME)
        level = await store.db.write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert level == 2  # FULL
    finally:
        await store.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET leaf = x'00' WHERE idx = 0",
        "DELETE FROM audit_log WHERE idx = 0",
        "DELETE FROM audit_log",
        "INSERT INTO audit_log (idx, leaf, recorded_at) VALUES (5, x'00', 0)",
        "INSERT INTO audit_log (idx, leaf, recorded_at) VALUES (0, x'00', 0)",
    ],
)
async def test_the_audit_log_refuses_rewriting_deleting_and_gaps(tmp_path: Path, statement: str) -> None:
    store = await open_sqlite_store(tmp_path / "b.sqlite3", tmp_path / "blobs", now=START_TIME)
    try:
        await store.audit.record(b"first", START_TIME)
        await store.audit.record(b"second", START_TIME)
        with pytest.raises(StorageUnavailable):
            await store.db.write(lambda c: c.execute(statement))
        assert await store.audit.leaves(0, 10) == [b"first", b"second"]
    finally:
        await store.close()
    # Also straight through a connection of its own, outside the broker's code.
    raw = sqlite3.connect(tmp_path / "b.sqlite3")
    try:
        with pytest.raises(sqlite3.DatabaseError, match="audit log"):
            raw.execute(statement)
        assert [r[0] for r in raw.execute("SELECT leaf FROM audit_log ORDER BY idx")] == [b"first", b"second"]
    finally:
        raw.close()


async def test_a_database_with_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    store = await open_sqlite_store(path, tmp_path / "blobs", now=START_TIME)
    await store.close()
    raw = sqlite3.connect(path)
    raw.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (latest_version() + 1,))
    raw.commit()
    raw.close()
    with pytest.raises(SchemaTooNew, match="Upgrade CaseBridge"):
        await open_sqlite_store(path, tmp_path / "blobs", now=START_TIME)


async def test_reopening_keeps_data_and_applies_no_migration_twice(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite3"
    store = await open_sqlite_store(path, tmp_path / "blobs", now=START_TIME)
    await store.audit.record(b"kept", START_TIME)
    await store.close()
    store = await open_sqlite_store(path, tmp_path / "blobs", now=START_TIME + 5)
    try:
        await store.check_ready()
        assert await store.audit.leaves(0, 5) == [b"kept"]
        versions = await store.db.read(lambda c: c.execute("SELECT version FROM schema_version").fetchall())
        assert [v[0] for v in versions] == list(range(1, latest_version() + 1))
    finally:
        await store.close()


async def test_one_failing_job_in_a_batch_leaves_the_others_committed(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "b.sqlite3", now=START_TIME)
    try:

        def good(i: int) -> Callable[[sqlite3.Connection], int]:
            return lambda c: (
                c.execute(
                    "INSERT INTO nonces (key_id, nonce, expires_at) VALUES (?, ?, 0)",
                    (b"k", i.to_bytes(2, "big")),
                ).rowcount
            )

        def bad(c: sqlite3.Connection) -> int:
            c.execute("INSERT INTO nonces (key_id, nonce, expires_at) VALUES (?, ?, 0)", (b"k", b"bad"))
            raise ValueError("this job fails after writing")

        jobs = [db.write(good(i)) for i in range(200)]
        jobs.insert(100, db.write(bad))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert len(failures) == 1
        assert isinstance(failures[0], ValueError)
        rows = await db.read(lambda c: [bytes(r[0]) for r in c.execute("SELECT nonce FROM nonces")])
        assert len(rows) == 200
        assert b"bad" not in rows
    finally:
        await db.close()


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "b.sqlite3", now=START_TIME)
    await db.close()
    with pytest.raises(StorageUnavailable):
        await db.write(lambda c: 1)


async def test_nonces_survive_a_restart(tmp_path: Path) -> None:
    store = await open_sqlite_store(tmp_path / "b.sqlite3", tmp_path / "blobs", now=START_TIME)
    assert await store.nonces.remember(b"k" * 16, b"n" * 16, START_TIME + 300, START_TIME)
    await store.close()
    store = await open_sqlite_store(tmp_path / "b.sqlite3", tmp_path / "blobs", now=START_TIME + 1)
    try:
        assert not await store.nonces.remember(b"k" * 16, b"n" * 16, START_TIME + 301, START_TIME + 1)
        assert await store.nonces.remember(b"k" * 16, b"m" * 16, START_TIME + 301, START_TIME + 1)
    finally:
        await store.close()


async def _until_done_or_waiting(task: asyncio.Task[object], rounds: int = 50) -> None:
    """Let the event loop turn a bounded number of times (the task may be waiting on a lock)."""
    for _ in range(rounds):
        if task.done():
            return
        await asyncio.sleep(0)


async def test_a_write_waits_for_another_process_s_write_lock_without_holding_the_loop(
    tmp_path: Path,
) -> None:
    db = await Database.open(tmp_path / "b.sqlite3", now=START_TIME)
    other = sqlite3.connect(tmp_path / "b.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # An offline command holding the write lock.
        write = asyncio.create_task(
            db.write(lambda c: c.execute("INSERT INTO nonces VALUES (x'01', x'02', 0)").rowcount)
        )
        await _until_done_or_waiting(write)
        assert not write.done()
        # The loop is free meanwhile: reads go on.
        assert await db.read(lambda c: c.execute("SELECT count(*) FROM nonces").fetchone()[0]) == 0
        other.execute("COMMIT")
        assert await write == 1
        assert await db.read(lambda c: c.execute("SELECT count(*) FROM nonces").fetchone()[0]) == 1
    finally:
        other.close()
        await db.close()


async def test_a_read_the_database_refuses_for_a_moment_is_served_by_a_reader_thread(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "b.sqlite3", now=START_TIME)
    await db.write(lambda c: c.execute("INSERT INTO nonces VALUES (x'01', x'02', 0)").rowcount)
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def count(c: sqlite3.Connection) -> int:
        # SQLITE_BUSY on the event loop's reader (a WAL reader meets it only rarely, during
        # recovery of the WAL index, say): what SQLite raises then, and only on that thread.
        threads.append(threading.get_ident())
        if threading.get_ident() == loop_thread:
            raise sqlite3.OperationalError("database is locked")
        return int(c.execute("SELECT count(*) FROM nonces").fetchone()[0])

    try:
        assert await db.read(count) == 1
        assert threads[0] == loop_thread
        assert len(threads) == 2
        assert threads[1] != loop_thread
    finally:
        await db.close()


async def test_bulk_and_loop_side_jobs_run_in_submission_order(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "b.sqlite3", now=START_TIME)
    try:

        def insert(i: int) -> Callable[[sqlite3.Connection], int]:
            def job(c: sqlite3.Connection) -> int:
                seen = int(c.execute("SELECT count(*) FROM nonces").fetchone()[0])
                c.execute("INSERT INTO nonces VALUES (x'00', ?, ?)", (i.to_bytes(2, "big"), i))
                return seen

            return job

        jobs = [db.write(insert(i), bulk=i % 3 == 0, durable=i % 2 == 0) for i in range(30)]
        # Each job saw exactly the rows of the jobs submitted before it.
        assert await asyncio.gather(*jobs) == list(range(30))
        assert await db.read(lambda c: c.execute("SELECT count(*) FROM nonces").fetchone()[0]) == 30
    finally:
        await db.close()

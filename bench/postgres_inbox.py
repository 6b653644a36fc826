"""Inbox scale on both engines: the broker's inbox listing and delivery lookups with 10 thousand
and then 1 million pending envelopes spread over 1,000 recipient agencies.

    .venv/bin/python -m bench.postgres_bench inbox [--sizes 10000,1000000]

Invariants:
- Rows are written straight into the broker's own schema (migrated by opening the store): for
  PostgreSQL with COPY (asyncpg `copy_records_to_table`), for SQLite with `executemany` in
  transactions of `BATCH` rows. Envelope number n goes to agency n % 1000 at inbox cursor
  n // 1000 + 1, with a 64-byte fake header and one 32-byte inline part; nothing is opened.
- Each size adds rows to the previous one, so the same agencies are measured with 10 and with
  1,000 pending entries each; the pages timed return the same number of rows at every size
  (the first `FIRST_PAGE`, then `AFTER_PAGE` after the middle cursor), so only the table grows.
- Timed calls are the broker's store methods (`delivery.inbox`, `inbox_entry`, `header`,
  `inline_part`), `CALLS` of each, round-robin over `PROBED` agencies; p50 / p99 nearest-rank.
- PostgreSQL is vacuumed, analysed and checkpointed after loading (as autovacuum and the
  checkpointer do in production, so the timing does not overlap the flush of the load);
  SQLite is left as the broker leaves it (it never runs ANALYZE).
- Each size is measured `ROUNDS` times in a row (the first round reads cold pages); the ratios
  use the last round.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from bench.relay_phases import percentile
from broker.storage.postgresql import open_postgres_store
from broker.storage.rows import ENVELOPE_COLUMNS as _ENVELOPE_COLUMNS
from broker.storage.rows import OPEN_STATES as _OPEN
from broker.storage.sqlite import open_sqlite_store
from tests.postgres_server import PostgresServer

AGENCIES = 1000
BATCH = 100_000
CALLS = 200
PROBED = 20
ROUNDS = 2
FIRST_PAGE = 10
AFTER_PAGE = 5
DATABASE = "casebridge_inbox_bench"
LISTING = (
    f"SELECT i.recipient_id, i.cursor, i.state, {_ENVELOPE_COLUMNS} FROM inbox i "  # noqa: S608 - constants
    f"JOIN envelopes e ON e.envelope_id = i.envelope_id "
    f"WHERE i.recipient_id = $1 AND i.cursor > $2 AND i.state IN {_OPEN} ORDER BY i.cursor LIMIT $3"
)


def agency(n: int) -> str:
    return f"LA-A{n % AGENCIES:04d}"


def envelope_id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def rows(start: int, stop: int, now: int) -> Iterator[tuple[list[tuple[object, ...]], ...]]:
    """Envelope, part and inbox rows for envelopes start..stop-1, in batches."""
    for first in range(start, stop, BATCH):
        numbers = range(first, min(first + BATCH, stop))
        envelopes: list[tuple[object, ...]] = [
            (envelope_id(n), n.to_bytes(32, "big"), "TH-ATPD", b"k" * 32, b"h" * 64, 64, now,
             now + 30 * 86400, n, 1, None)
            for n in numbers
        ]  # fmt: skip
        parts: list[tuple[object, ...]] = [
            (envelope_id(n), 0, 32, b"d" * 32, True, b"p" * 32) for n in numbers
        ]
        inbox: list[tuple[object, ...]] = [
            (agency(n), n // AGENCIES + 1, envelope_id(n), "pending", now) for n in numbers
        ]
        yield envelopes, parts, inbox


async def timed(call: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    values = []
    for i in range(CALLS):
        started = time.perf_counter()
        await call(i)
        values.append(1000 * (time.perf_counter() - started))
    return {"p50_ms": percentile(values, 0.5), "p99_ms": percentile(values, 0.99)}


async def measure(store: object, size: int) -> list[dict[str, dict[str, float]]]:
    """`ROUNDS` rounds of `measure_once`, each printed."""
    rounds = []
    for number in range(ROUNDS):
        rounds.append(await measure_once(store, size))
        print(f"  round {number + 1}:")
        print_figures(rounds[-1])
    return rounds


async def measure_once(store: object, size: int) -> dict[str, dict[str, float]]:
    """Time the listing pages and the delivery lookups at `size` rows."""
    delivery = store.delivery  # type: ignore[attr-defined]
    per_agency = size // AGENCIES
    middle = per_agency // 2
    probed = [(i * AGENCIES) // PROBED + 7 for i in range(PROBED)]

    async def first_page(i: int) -> None:
        found = await delivery.inbox(agency(probed[i % PROBED]), 0, FIRST_PAGE)
        assert len(found) == min(FIRST_PAGE, per_agency), len(found)

    async def after_cursor(i: int) -> None:
        found = await delivery.inbox(agency(probed[i % PROBED]), middle, AFTER_PAGE)
        assert len(found) == min(AFTER_PAGE, per_agency - middle), len(found)

    async def lookup(i: int) -> None:
        n = min(middle + i % 3, per_agency - 1) * AGENCIES + probed[i % PROBED]
        entry = await delivery.inbox_entry(envelope_id(n), agency(n))
        assert entry is not None
        assert await delivery.header(envelope_id(n)) == b"h" * 64
        assert await delivery.inline_part(envelope_id(n), 0) == b"p" * 32

    return {
        "first_page": await timed(first_page),
        "after_cursor": await timed(after_cursor),
        "delivery_lookup": await timed(lookup),
    }


async def postgres(sizes: list[int], directory: Path, now: int) -> dict[str, object]:
    server = PostgresServer.start(durable=True)
    figures: dict[str, object] = {}
    try:
        await server.execute(f'CREATE DATABASE "{DATABASE}" TEMPLATE template0 ENCODING UTF8')
        store = await open_postgres_store(server.dsn(DATABASE), now=now, owner=False)
        try:
            loaded = 0
            for size in sizes:
                started = time.monotonic()
                async with store.db.connection() as conn:
                    for envelopes, parts, inbox in rows(loaded, size, now):
                        await conn.copy_records_to_table("envelopes", records=envelopes)
                        await conn.copy_records_to_table("parts", records=parts)
                        await conn.copy_records_to_table(
                            "inbox",
                            records=inbox,
                            columns=["recipient_id", "cursor", "envelope_id", "state", "updated_at"],
                        )
                    await conn.execute("VACUUM (ANALYZE) envelopes, parts, inbox")
                    await conn.execute("CHECKPOINT")
                loaded = size
                print(f"PostgreSQL: {size} pending rows (loaded in {time.monotonic() - started:.0f} s)")
                figures[str(size)] = await measure(store, size)
            for name, after, limit in (
                ("first page", 0, FIRST_PAGE),
                ("after the middle cursor", loaded // AGENCIES // 2, AFTER_PAGE),
            ):
                async with store.db.connection() as conn:
                    plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {LISTING}", agency(7), after, limit)
                figures[f"plan {name}"] = [r[0] for r in plan]
                print(f"EXPLAIN (ANALYZE, BUFFERS) of the listing, {name}:")
                print("\n".join(f"  {r[0]}" for r in plan))
        finally:
            await store.close()
    finally:
        server.stop()
    return figures


async def sqlite(sizes: list[int], directory: Path, now: int) -> dict[str, object]:
    database = directory / "broker.sqlite3"
    store = await open_sqlite_store(database, directory / "blobs", now=now)
    await store.close()
    figures: dict[str, object] = {}
    loaded = 0
    for size in sizes:
        started = time.monotonic()
        conn = sqlite3.connect(database, isolation_level=None)
        try:
            for envelopes, parts, inbox in rows(loaded, size, now):
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO envelopes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", envelopes)
                conn.executemany("INSERT INTO parts VALUES (?, ?, ?, ?, ?, ?)", parts)
                conn.executemany("INSERT INTO inbox VALUES (?, ?, ?, ?, ?)", inbox)
                conn.execute("COMMIT")
        finally:
            conn.close()
        loaded = size
        print(f"SQLite: {size} pending rows (loaded in {time.monotonic() - started:.0f} s)")
        store = await open_sqlite_store(database, directory / "blobs", now=now)
        try:
            figures[str(size)] = await measure(store, size)
        finally:
            await store.close()
    conn = sqlite3.connect(database)
    try:
        query = LISTING.replace("$1", "?").replace("$2", "?").replace("$3", "?")
        plan = conn.execute(f"EXPLAIN QUERY PLAN {query}", (agency(7), loaded // AGENCIES // 2, AFTER_PAGE))
        figures["plan"] = [str(r[3]) for r in plan.fetchall()]
    finally:
        conn.close()
    print("EXPLAIN QUERY PLAN of the listing:")
    print("\n".join(f"  {line}" for line in figures["plan"]))  # type: ignore[arg-type]
    return figures


def print_figures(figures: dict[str, dict[str, float]]) -> None:
    for name, value in figures.items():
        print(f"  {name:<16} p50 {value['p50_ms']:7.3f} ms  p99 {value['p99_ms']:7.3f} ms")


def print_ratios(engine: str, figures: dict[str, object], sizes: list[int]) -> None:
    small, large = (figures[str(s)][-1] for s in (sizes[0], sizes[-1]))  # type: ignore[index]
    print(f"{engine}: {sizes[-1]} / {sizes[0]} rows, last round, ratio of p50 (p99):")
    for name in small:  # type: ignore[attr-defined]
        a, b = small[name], large[name]  # type: ignore[index]
        print(f"  {name:<16} {b['p50_ms'] / a['p50_ms']:5.2f} ({b['p99_ms'] / a['p99_ms']:5.2f})")


def run(sizes: list[int], directory: Path) -> dict[str, object]:
    from bench.relay_world import load_average

    now = int(time.time())
    print(f"load average before: {load_average()}")
    figures: dict[str, object] = {"load_average_before": load_average(), "sizes": sizes}
    figures["sqlite"] = asyncio.run(sqlite(sizes, directory, now))
    figures["postgresql"] = asyncio.run(postgres(sizes, directory, now))
    for engine in ("sqlite", "postgresql"):
        print_ratios(engine, figures[engine], sizes)  # type: ignore[arg-type]
    figures["load_average_after"] = load_average()
    print(f"load average after: {load_average()}")
    return figures

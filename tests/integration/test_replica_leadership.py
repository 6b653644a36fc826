"""One replica at a time runs the periodic tasks (checkpointer, retention) on a shared PostgreSQL:
exactly one of two leads each task, a leader whose connection is killed stops at once and the
other takes over, a replica that does not lead signs and sweeps nothing, checkpoints over a
window are all signed by the leader (two `casebridge broker serve` processes), and the survivor
of a SIGKILLed leader takes over. A SQLite broker always leads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.clock import SystemClock
from broker.leadership import CHECKPOINTER, RETENTION, TASKS
from broker.storage.interfaces import SharedState
from broker.storage.postgresql import PostgresStore, open_postgres_store
from broker.storage.postgresql.leadership import lock_key
from broker.storage.records import InboxState
from tests.integration.broker_harness import BrokerProcess, ManualClock, RunningBroker, start_broker
from tests.integration.pki import Pki
from tests.integration.storage_engines import BROKER_LOGIN, START_TIME, postgres_database
from tests.postgres_server import PostgresServer

AGENCIES = ("TH-ATPD", "TH-DSDW", "LA-MOLSW", "LA-LWU")
MAX_ATTEMPTS = 600
PAUSE_SECONDS = 0.05
CHECKPOINTS = ("casebridge_audit_checkpoints_total", "")
LOCK_HOLDER = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND classid = $1 "
    "AND objid = $2 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait, bounded, until `check` holds."""
    for _ in range(MAX_ATTEMPTS):
        if await check():
            return
        await asyncio.sleep(PAUSE_SECONDS)
    raise AssertionError(f"never: {what}")


@pytest.fixture
async def pg() -> AsyncIterator[tuple[PostgresServer, str]]:
    server, name = await postgres_database()
    try:
        yield server, name
    finally:
        await server.drop_database(name)


@pytest.fixture
async def two_stores(pg: tuple[PostgresServer, str]) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two serving stores on one database, as two replicas hold them."""
    server, name = pg
    a = await open_postgres_store(server.dsn(name, BROKER_LOGIN), now=START_TIME)
    b = await open_postgres_store(server.dsn(name, BROKER_LOGIN), now=START_TIME)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


@pytest.fixture
async def superuser(pg: tuple[PostgresServer, str]) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """A connection of the database's superuser: to kill sessions and to hold a task's lock."""
    server, name = pg
    conn = await asyncpg.connect(server.dsn(name))
    try:
        yield conn
    finally:
        await conn.close()


def shared(store: PostgresStore) -> SharedState:
    assert store.shared is not None
    return store.shared


async def holder_pid(conn: asyncpg.Connection[asyncpg.Record], task: str) -> int | None:
    key = lock_key(task) & ((1 << 64) - 1)
    pid = await conn.fetchval(LOCK_HOLDER, key >> 32, key & 0xFFFFFFFF)
    return None if pid is None else int(pid)


async def test_exactly_one_of_two_replicas_leads_each_task(
    two_stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two_stores
    async with (
        shared(a).leadership(CHECKPOINTER) as a_checkpointer,
        shared(b).leadership(CHECKPOINTER) as b_checkpointer,
        shared(b).leadership(RETENTION) as b_retention,
        shared(a).leadership(RETENTION) as a_retention,
    ):
        first = [await a_checkpointer.leads(), await b_checkpointer.leads()]
        second = [await b_retention.leads(), await a_retention.leads()]
        again = [await a_checkpointer.leads(), await b_checkpointer.leads()]
    assert first == [True, False]
    assert second == [True, False]
    assert again == [True, False]


async def test_a_leader_whose_connection_is_killed_stops_at_once_and_the_other_takes_over(
    two_stores: tuple[PostgresStore, PostgresStore], superuser: asyncpg.Connection[asyncpg.Record]
) -> None:
    a, b = two_stores
    async with (
        shared(a).leadership(CHECKPOINTER) as a_checkpointer,
        shared(a).leadership(RETENTION) as a_retention,
        shared(b).leadership(CHECKPOINTER) as b_checkpointer,
    ):
        assert await a_checkpointer.leads()
        assert await a_retention.leads()
        assert not await b_checkpointer.leads()
        pid = await holder_pid(superuser, CHECKPOINTER)
        assert pid is not None
        assert await superuser.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
        assert not await a_checkpointer.leads()
        assert not await a_retention.leads()
        await until(b_checkpointer.leads, "the other replica took over")
        assert not await a_checkpointer.leads()
        assert await holder_pid(superuser, CHECKPOINTER) not in (None, pid)


async def test_a_task_a_leader_stops_passes_to_the_other_replica_while_its_other_task_stays(
    two_stores: tuple[PostgresStore, PostgresStore], superuser: asyncpg.Connection[asyncpg.Record]
) -> None:
    a, b = two_stores
    async with (
        shared(a).leadership(CHECKPOINTER) as a_checkpointer,
        shared(b).leadership(RETENTION) as b_retention,
    ):
        assert await a_checkpointer.leads()
        async with shared(a).leadership(RETENTION) as a_retention:
            assert await a_retention.leads()
            assert not await b_retention.leads()
        assert await holder_pid(superuser, RETENTION) is None
        await until(b_retention.leads, "the other replica took over")
        assert await a_checkpointer.leads()


async def test_one_process_never_leads_a_task_twice(two_stores: tuple[PostgresStore, PostgresStore]) -> None:
    a, _ = two_stores
    async with shared(a).leadership(CHECKPOINTER) as first, shared(a).leadership(CHECKPOINTER) as second:
        assert [await first.leads(), await second.leads()] == [True, False]
        assert [await second.leads(), await first.leads()] == [False, True]


def gauge(broker: RunningBroker, name: str, **labels: str) -> float:
    """A sample of the broker's registry; -1 where it has none."""
    value = broker.registry.get_sample_value(name, labels)
    return -1.0 if value is None else value


def leaders(brokers: tuple[RunningBroker, ...], task: str) -> list[float]:
    return [gauge(b, "casebridge_leader", task=task) for b in brokers]


async def test_a_sqlite_broker_leads_every_task(broker: RunningBroker) -> None:
    assert broker.store.shared is None

    async def leads_every_task() -> bool:
        return all(leaders((broker,), task) == [1] for task in TASKS)

    await until(leads_every_task, "the broker leads every task")


@asynccontextmanager
async def two_brokers(
    stores: tuple[PostgresStore, PostgresStore], pki: Pki, clock: ManualClock, directory: Path
) -> AsyncIterator[tuple[RunningBroker, RunningBroker]]:
    """Two brokers served in this process, one on each store, with one-second rounds."""
    async with (
        start_broker(
            directory / "a",
            pki,
            clock,
            store=stores[0],
            retention_interval_seconds=1,
            checkpoint_interval_seconds=1,
        ) as a,
        start_broker(
            directory / "b",
            pki,
            clock,
            store=stores[1],
            retention_interval_seconds=1,
            checkpoint_interval_seconds=1,
        ) as b,
    ):
        yield a, b


async def test_no_replica_signs_a_checkpoint_while_it_does_not_lead(
    superuser: asyncpg.Connection[asyncpg.Record],
    two_stores: tuple[PostgresStore, PostgresStore],
    pki: Pki,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    await superuser.execute("SELECT pg_advisory_lock($1)", lock_key(CHECKPOINTER))
    async with two_brokers(two_stores, pki, clock, tmp_path) as (a, b):
        await a.enroll(*AGENCIES)

        async def both_see_entries_pending() -> bool:
            return all(gauge(x, "casebridge_audit_pending_entries") > 0 for x in (a, b))

        await until(both_see_entries_pending, "both replicas looked at the log")
        assert await two_stores[0].audit.latest_checkpoint() is None
        assert leaders((a, b), CHECKPOINTER) == [0, 0]

        await superuser.execute("SELECT pg_advisory_unlock($1)", lock_key(CHECKPOINTER))

        async def one_signed() -> bool:
            return await two_stores[0].audit.latest_checkpoint() is not None

        await until(one_signed, "a replica took the lead and signed")
        signed = [gauge(x, "casebridge_audit_checkpoints_total") for x in (a, b)]
        assert sorted(signed) == [0, 1]
        assert leaders((a, b), CHECKPOINTER) == signed


async def test_no_replica_sweeps_while_it_does_not_lead(
    superuser: asyncpg.Connection[asyncpg.Record],
    two_stores: tuple[PostgresStore, PostgresStore],
    pki: Pki,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    store = two_stores[0]
    await superuser.execute("SELECT pg_advisory_lock($1)", lock_key(RETENTION))
    async with two_brokers(two_stores, pki, clock, tmp_path) as (a, b):
        await a.enroll(*AGENCIES)
        expiring = a.seal("TH-ATPD", ["LA-MOLSW"], ttl_seconds=3600)
        assert (await a.submit("TH-ATPD", expiring)).status == 201
        clock.advance(7200)
        assert (await a.submit("TH-ATPD", a.seal("TH-ATPD", ["LA-LWU"]))).status == 201
        size = await store.audit.size()

        async def both_looked_since() -> bool:
            return all(gauge(x, "casebridge_audit_log_entries") == size for x in (a, b))

        await until(both_looked_since, "both replicas ran a retention round after the expiry")
        entry = await store.delivery.inbox_entry(expiring.envelope_id, "LA-MOLSW")
        assert entry is not None
        assert entry.state is InboxState.PENDING
        assert leaders((a, b), RETENTION) == [0, 0]

        await superuser.execute("SELECT pg_advisory_unlock($1)", lock_key(RETENTION))

        async def expired() -> bool:
            entry = await store.delivery.inbox_entry(expiring.envelope_id, "LA-MOLSW")
            return entry is not None and entry.state is InboxState.EXPIRED

        await until(expired, "a replica took the lead and swept")
        assert sorted(leaders((a, b), RETENTION)) == [0, 1]
        assert sum(gauge(x, "casebridge_inbox_entries_expired_total") for x in (a, b)) == 1


async def scrape(replica: BrokerProcess, session: aiohttp.ClientSession) -> dict[tuple[str, str], float]:
    """A replica's metrics, by (sample name, its `task` label or "")."""
    async with session.get(f"{replica.url}/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    return {
        (sample.name, sample.labels.get("task", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def sole_leader(
    replicas: list[BrokerProcess], task: str, session: aiohttp.ClientSession
) -> tuple[BrokerProcess, list[BrokerProcess]]:
    """Wait (bounded) until exactly one of `replicas` leads `task` and every other one says it
    does not; (that one, the others)."""
    for _ in range(MAX_ATTEMPTS):
        seen = [(await scrape(r, session)).get(("casebridge_leader", task), -1.0) for r in replicas]
        if sorted(seen) == [0.0] * (len(replicas) - 1) + [1.0]:
            leader = replicas[seen.index(1.0)]
            return leader, [r for r in replicas if r is not leader]
        await asyncio.sleep(PAUSE_SECONDS)
    raise AssertionError(f"no sole leader of {task}")


async def all_covered(store: PostgresStore) -> bool:
    latest = await store.audit.latest_checkpoint()
    return latest is not None and latest.size == await store.audit.size()


@pytest.mark.slow
async def test_one_broker_process_signs_every_checkpoint_and_the_other_takes_over_when_it_is_killed(
    pg: tuple[PostgresServer, str],
    broker_process: Callable[..., Awaitable[BrokerProcess]],
    live_pki: Pki,
) -> None:
    server, name = pg
    replicas = [
        await broker_process(
            database_url=server.dsn(name, BROKER_LOGIN),
            checkpoint_interval_seconds=1,
            retention_interval_seconds=1,
        )
        for _ in range(2)
    ]
    store = await open_postgres_store(server.dsn(name, BROKER_LOGIN), now=SystemClock().now(), owner=False)
    async with aiohttp.ClientSession() as session:
        try:
            leader, (follower,) = await sole_leader(replicas, CHECKPOINTER, session)
            await sole_leader(replicas, RETENTION, session)
            await leader.enroll(live_pki, session, *AGENCIES[:2])
            await follower.enroll(live_pki, session, AGENCIES[2])
            await until(lambda: all_covered(store), "every entry checkpointed")
            signed = {r.url: (await scrape(r, session))[CHECKPOINTS] for r in replicas}
            stored = await store.audit.latest_checkpoint()
            assert stored is not None
            assert signed[follower.url] == 0
            assert signed[leader.url] == stored.seq + 1

            await leader.kill()
            for task in TASKS:
                await sole_leader([follower], task, session)
            await follower.enroll(live_pki, session, AGENCIES[3])
            await until(lambda: all_covered(store), "the survivor checkpointed the new entries")
            taken_over = (await scrape(follower, session))[CHECKPOINTS]
            stored = await store.audit.latest_checkpoint()
            assert stored is not None
            assert taken_over >= 1
            assert signed[leader.url] + taken_over == stored.seq + 1
        finally:
            await store.close()

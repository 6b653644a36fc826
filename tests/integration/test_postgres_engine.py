"""What only the PostgreSQL engine has to prove: an audit log nobody can rewrite (triggers, and a
broker role without the privilege), forward-only migrations shared by every replica, one audit
sequencer and one set of cursors across stores sharing a database, shared nonces and rate
limits, changes reaching the other stores, and chunked blobs read by range."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from broker.storage.postgresql import PostgresStore, open_postgres_store
from broker.storage.postgresql.blobs import CHUNK_BYTES
from broker.storage.postgresql.database import latest_version
from broker.storage.postgresql.database import migrations as postgres_migrations
from broker.storage.records import Change, ChangeKind, StoredCertificate
from broker.storage.schema import SchemaTooNew
from broker.storage.sqlite.database import migrations as sqlite_migrations
from protocol.errors import StorageUnavailable
from tests.integration.storage_engines import BROKER_LOGIN, START_TIME, postgres_database
from tests.integration.test_storage_contract import LAO, LAO_2, envelope, issuer
from tests.postgres_server import PostgresServer, shared_server

T0 = START_TIME


@dataclass
class Database:
    server: PostgresServer
    name: str

    @property
    def owner_dsn(self) -> str:
        return self.server.dsn(self.name)

    @property
    def broker_dsn(self) -> str:
        return self.server.dsn(self.name, BROKER_LOGIN)

    async def open(self, *, owner_dsn: str = "") -> PostgresStore:
        return await open_postgres_store(self.broker_dsn, now=T0, owner_dsn=owner_dsn, orphan_grace_seconds=0)


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    server, name = await postgres_database()
    try:
        yield Database(server, name)
    finally:
        await server.drop_database(name)


@pytest.fixture
async def two_stores(database: Database) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two broker replicas hold them."""
    a = await database.open()
    b = await database.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def test_both_engines_ship_the_same_numbered_migrations() -> None:
    assert [(m.version, m.name) for m in postgres_migrations()] == [
        (version, name) for version, name in _sqlite_names()
    ]


def _sqlite_names() -> list[tuple[int, str]]:
    from broker.storage.schema import numbered_scripts
    from broker.storage.sqlite.database import MIGRATIONS_PACKAGE

    assert len(sqlite_migrations()) == len(numbered_scripts(MIGRATIONS_PACKAGE))
    return [(m.version, m.name) for m in numbered_scripts(MIGRATIONS_PACKAGE)]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET leaf = '\\x00' WHERE idx = 0",
        "DELETE FROM audit_log WHERE idx = 0",
        "TRUNCATE audit_log CASCADE",
        "UPDATE audit_nodes SET hash = sha256('\\x00') WHERE level = 0 AND idx = 0",
        "DELETE FROM audit_nodes",
        "DELETE FROM audit_envelope_leaves",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_cosignatures SET line = ''",
    ],
)
async def test_the_brokers_role_may_not_rewrite_the_audit_log(database: Database, statement: str) -> None:
    store = await database.open()
    try:
        await store.audit.record(b"first", T0)
        await store.audit.record(b"second", T0)
    finally:
        await store.close()
    conn = await asyncpg.connect(database.broker_dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    finally:
        await conn.close()
    store = await database.open()
    try:
        assert await store.audit.leaves(0, 10) == [b"first", b"second"]
    finally:
        await store.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET leaf = '\\x00' WHERE idx = 0",
        "DELETE FROM audit_log WHERE idx = 0",
        "TRUNCATE audit_log CASCADE",
        "UPDATE audit_nodes SET hash = sha256('\\x00') WHERE level = 0 AND idx = 0",
        "DELETE FROM audit_nodes WHERE level = 0",
        "TRUNCATE audit_nodes",
        "INSERT INTO audit_log (idx, leaf, recorded_at) VALUES (5, '\\x00', 0)",
        "INSERT INTO audit_log (idx, leaf, recorded_at) VALUES (0, '\\x00', 0)",
    ],
)
async def test_even_the_schema_owner_meets_the_append_only_triggers(
    database: Database, statement: str
) -> None:
    store = await database.open()
    try:
        await store.audit.record(b"first", T0)
        await store.audit.record(b"second", T0)
    finally:
        await store.close()
    conn = await asyncpg.connect(database.owner_dsn)
    try:
        with pytest.raises(asyncpg.PostgresError, match="audit log entries"):
            await conn.execute(statement)
        assert [bytes(r[0]) for r in await conn.fetch("SELECT leaf FROM audit_log ORDER BY idx")] == [
            b"first",
            b"second",
        ]
    finally:
        await conn.close()


async def test_the_brokers_role_cannot_migrate_and_says_who_can(database: Database) -> None:
    conn = await asyncpg.connect(database.owner_dsn)
    try:
        await conn.execute("DELETE FROM schema_version WHERE version = $1", latest_version())
    finally:
        await conn.close()
    with pytest.raises(StorageUnavailable, match="database_owner_url"):
        await database.open()


async def test_a_database_with_a_newer_schema_is_refused(database: Database) -> None:
    conn = await asyncpg.connect(database.owner_dsn)
    try:
        await conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, 0)", latest_version() + 1
        )
    finally:
        await conn.close()
    with pytest.raises(SchemaTooNew, match="Upgrade CaseBridge"):
        await database.open()
    with pytest.raises(SchemaTooNew):
        await database.open(owner_dsn=database.owner_dsn)


async def test_replicas_starting_together_migrate_once() -> None:
    server = await asyncio.to_thread(shared_server)
    name = await server.create_database()
    try:
        stores = await asyncio.gather(*(open_postgres_store(server.dsn(name), now=T0 + i) for i in range(4)))
        for store in stores:
            await store.check_ready()
            await store.close()
        conn = await asyncpg.connect(server.dsn(name))
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY version")]
        finally:
            await conn.close()
        assert versions == list(range(1, latest_version() + 1))
    finally:
        await server.drop_database(name)


async def test_concurrent_acceptances_on_two_replicas_share_one_gapless_log_and_cursors(
    two_stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two_stores
    news = [envelope(100 + i, recipients=(LAO, LAO_2)) for i in range(40)]
    accepted = await asyncio.gather(
        *((a if i % 2 else b).delivery.accept_envelope(new, issuer(new, [])) for i, new in enumerate(news))
    )
    size = await a.audit.size()
    assert size == 40 * 3
    leaves = await b.audit.leaves(0, size)
    assert len(leaves) == size
    for result, new in zip(accepted, news, strict=True):
        assert leaves[result.envelope.accepted_index] == new.leaf
        for receipt in result.receipts:
            assert receipt.raw.endswith(f":{result.envelope.accepted_index}".encode())
            assert leaves[receipt.log_index] == f"leaf:{receipt.recipient_id}".encode()
    for recipient in (LAO, LAO_2):
        assert [e.cursor for e in await a.delivery.inbox(recipient, 0, 100)] == list(range(1, 41))
    assert [r.seq for r in await b.delivery.sender_feed("TH-ATPD", 0, 200)] == list(range(1, 81))


async def test_the_same_envelope_on_two_replicas_at_once_is_accepted_once(
    two_stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two_stores
    new = envelope(7)
    first, second = await asyncio.gather(
        a.delivery.accept_envelope(new, issuer(new, [])), b.delivery.accept_envelope(new, issuer(new, []))
    )
    assert sorted([first.created, second.created]) == [False, True]
    assert first.receipts == second.receipts
    assert await a.audit.size() == 2
    assert len(await b.delivery.inbox(LAO, 0, 10)) == 1


async def test_a_nonce_used_on_one_replica_is_refused_on_another(
    two_stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two_stores
    key = b"k" * 16
    assert await a.nonces.remember(key, b"n" * 16, T0 + 300, T0)
    assert not await b.nonces.remember(key, b"n" * 16, T0 + 300, T0 + 1)
    answers = await asyncio.gather(*(s.nonces.remember(key, b"m" * 16, T0 + 300, T0) for s in (a, b, a, b)))
    assert sorted(answers) == [False, False, False, True]
    assert await b.nonces.remember(key, b"n" * 16, T0 + 900, T0 + 300)


async def test_rate_limit_tokens_are_shared_between_replicas(
    two_stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two_stores
    assert a.shared is not None
    assert b.shared is not None
    granted = 0
    for shared in (a.shared, b.shared, a.shared, b.shared):
        lease = await shared.exchange_tokens("TH-ATPD", 0, 4, 1, 10)
        granted += lease.granted
    assert granted == 10
    refused = await a.shared.exchange_tokens("TH-ATPD", 0, 1, 1, 10)
    assert refused.granted == 0
    assert refused.retry_after_seconds >= 1
    returned = await b.shared.exchange_tokens("TH-ATPD", 3, 2, 1, 10)
    assert returned.granted == 2


async def _next_change(changes: AsyncIterator[Change]) -> Change:
    async with asyncio.timeout(30):
        return await anext(changes)


async def test_changes_reach_the_other_replicas_and_not_their_maker(
    two_stores: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two_stores
    assert a.shared is not None
    assert b.shared is not None
    at_a, at_b = a.shared.changes(), b.shared.changes()
    new = envelope(9)
    accepted = await a.delivery.accept_envelope(new, issuer(new, []))
    assert await _next_change(at_b) == Change(ChangeKind.INBOX, LAO, new.envelope_id, 1)
    assert await _next_change(at_b) == Change(
        ChangeKind.RECEIPT, "TH-ATPD", new.envelope_id, accepted.receipts[0].seq
    )
    await b.directory.add_certificate(StoredCertificate(b"1" * 16, "TH-ATPD", b"cert", T0), b"leaf")
    assert await _next_change(at_a) == Change(ChangeKind.DIRECTORY)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await anext(at_b)


async def test_blobs_are_chunked_and_a_range_reads_only_its_chunks(database: Database) -> None:
    store = await database.open()
    try:
        data = bytes(range(256)) * (CHUNK_BYTES // 256 * 5 // 2)
        writer = store.blobs.writer(b"a" * 32, 1)
        for at in range(0, len(data), 64 << 10):
            await writer.write(data[at : at + (64 << 10)])
        await writer.commit()
        async with store.db.connection() as conn:
            chunks = await conn.fetch("SELECT chunk_no, length(data) FROM blob_chunks ORDER BY chunk_no")
        assert [(r[0], r[1]) for r in chunks] == [(0, CHUNK_BYTES), (1, CHUNK_BYTES), (2, CHUNK_BYTES // 2)]
        start, end = CHUNK_BYTES - 10, 2 * CHUNK_BYTES + 7
        pieces = [p async for p in store.blobs.read(b"a" * 32, 1, start, end)]
        assert [len(p) for p in pieces] == [10, CHUNK_BYTES, 7]
        assert b"".join(pieces) == data[start:end]
        again = store.blobs.writer(b"a" * 32, 1)
        await again.write(data)
        await again.commit()
        async with store.db.connection() as conn:
            assert await conn.fetchval("SELECT COUNT(*) FROM blob_uploads") == 1
    finally:
        await store.close()


async def test_fresh_blobs_are_not_offered_to_the_orphan_sweep(database: Database) -> None:
    store = await open_postgres_store(database.broker_dsn, now=T0)
    try:
        writer = store.blobs.writer(b"f" * 32, 1)
        await writer.write(b"ciphertext")
        await writer.commit()
        assert await store.blobs.size(b"f" * 32, 1) == 10
        assert await store.blobs.stored_hashes() == set()
    finally:
        await store.close()


async def test_after_a_database_restart_a_replica_resyncs_and_hears_changes_again(
    database: Database, two_stores: tuple[PostgresStore, PostgresStore]
) -> None:
    a, b = two_stores
    assert b.shared is not None
    at_b = b.shared.changes()
    await asyncio.to_thread(database.server.restart)
    assert await _next_change(at_b) == Change(ChangeKind.RESYNC)
    new = envelope(11)
    for _ in range(200):
        try:
            await a.delivery.accept_envelope(new, issuer(new, []))
            break
        except StorageUnavailable:
            await asyncio.sleep(0.05)
    assert await _next_change(at_b) == Change(ChangeKind.INBOX, LAO, new.envelope_id, 1)

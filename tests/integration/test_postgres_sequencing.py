"""The PostgreSQL engine's group commit of audited changes (`broker.storage.postgresql.sequencing`):
replicas appending at once still build one gap-free tree equal to the one a verifier computes,
changes handed in together commit together, and a change refused inside a batch fails alone and
leaves no trace in the log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from broker.audit.records import AuditLogDamaged
from broker.storage.postgresql import PostgresStore, open_postgres_store
from broker.storage.records import InboxState, IssuedReceipt, ReceiptOutcome, StoredCertificate
from protocol import auditlog
from protocol.errors import Conflict
from protocol.merkle import MemoryTree, leaf_hash, verify_inclusion
from tests.integration.storage_engines import BROKER_LOGIN, START_TIME, postgres_database
from tests.integration.test_storage_contract import LAO, LAO_2, SENDER, envelope, issuer, receipt
from tests.postgres_server import PostgresServer

T0 = START_TIME


def entry(n: int) -> bytes:
    return auditlog.encode_leaf(T0 + n, auditlog.OperatorAction("TH-OPERATOR", "test_entry", (f"entry-{n}",)))


class Shared:
    def __init__(self, server: PostgresServer, name: str) -> None:
        self.server = server
        self.name = name

    async def open(self) -> PostgresStore:
        return await open_postgres_store(
            self.server.dsn(self.name, BROKER_LOGIN), now=T0, owner_dsn=self.server.dsn(self.name)
        )

    async def as_superuser(self, statements: str) -> None:
        await self.server.execute(statements, self.name)

    async def transactions(self, indexes: list[int]) -> int:
        """How many transactions wrote the given leaves (rows a transaction inserts share its xmin)."""
        conn = await asyncpg.connect(self.server.dsn(self.name))
        try:
            found = await conn.fetchval(
                "SELECT COUNT(DISTINCT xmin::text) FROM audit_log WHERE idx = ANY($1::bigint[])", indexes
            )
        finally:
            await conn.close()
        return int(found)


@pytest.fixture
async def shared() -> AsyncIterator[Shared]:
    server, name = await postgres_database()
    try:
        yield Shared(server, name)
    finally:
        await server.drop_database(name)


async def check_tree(store: PostgresStore) -> list[bytes]:
    """Every leaf, checked against its stored hash, with indexes 0 .. size - 1; the stored root
    is the root a verifier computes from the leaves, and inclusion proofs verify against it."""
    size = await store.audit.size()
    leaves = await store.audit.checked_leaves(0, size)
    assert len(leaves) == size
    memory = MemoryTree()
    for leaf in leaves:
        memory.append_entry(leaf)
    head = await store.audit.tree_head()
    assert (head.size, head.root_hash) == (size, memory.root())
    for index in {0, size // 3, size // 2, size - 1}:
        proof = await store.audit.inclusion_proof(index, size)
        verify_inclusion(leaf_hash(leaves[index]), index, size, proof, head.root_hash)
    return leaves


async def test_two_replicas_appending_at_once_build_one_gapless_tree_in_grouped_commits(
    shared: Shared,
) -> None:
    a, b = await shared.open(), await shared.open()
    try:
        news = [envelope(200 + i, recipients=(LAO, LAO_2), salt=b"two") for i in range(12)]
        accepted = await asyncio.gather(
            *(
                (a if i % 2 else b).delivery.accept_envelope(new, issuer(new, []))
                for i, new in enumerate(news)
            )
        )
        records = [entry(n) for n in range(40)]
        delivered = [receipt(new, LAO, "delivered", InboxState.DELIVERED) for new in news]
        results = await asyncio.gather(
            *((a if n % 2 else b).audit.record(leaf, T0) for n, leaf in enumerate(records)),
            *((b if i % 2 else a).delivery.record_receipt(r) for i, r in enumerate(delivered)),
        )
        indexes = [int(i) for i in results[:40] if isinstance(i, int)]
        outcomes = [o for o in results[40:] if isinstance(o, ReceiptOutcome)]
        leaves = await check_tree(b)
        assert len(leaves) == 12 * 3 + 40 + 12
        appended = list(indexes)
        for result, new in zip(accepted, news, strict=True):
            assert leaves[result.envelope.accepted_index] == new.leaf
            appended.append(result.envelope.accepted_index)
            for issued in result.receipts:
                assert leaves[issued.log_index] == f"leaf:{issued.recipient_id}".encode()
                assert issued.raw.endswith(f":{result.envelope.accepted_index}".encode())
                appended.append(issued.log_index)
        for leaf, index in zip(records, indexes, strict=True):
            assert leaves[index] == leaf
        for outcome, sent in zip(outcomes, delivered, strict=True):
            assert outcome.recorded is not None
            assert leaves[outcome.recorded.log_index] == sent.leaf
            appended.append(outcome.recorded.log_index)
        assert sorted(appended) == list(range(len(leaves)))
        feed = await a.delivery.sender_feed(SENDER, 0, 100)
        assert [r.seq for r in feed] == list(range(1, 12 * 2 + 12 + 1))
        second_round = indexes + [o.recorded.log_index for o in outcomes if o.recorded is not None]
        assert await shared.transactions(second_round) <= 4
    finally:
        await a.close()
        await b.close()


async def test_a_change_refused_inside_a_batch_fails_alone_and_leaves_no_trace(shared: Shared) -> None:
    store = await shared.open()
    try:
        first = envelope(300)
        await store.delivery.accept_envelope(first, issuer(first, []))
        verified = receipt(first, LAO, "verified", InboxState.VERIFIED)
        await store.delivery.record_receipt(verified)
        cert = StoredCertificate(b"c" * 16, "LA-MOLSW", b"certificate", T0)
        assert await store.directory.add_certificate(cert, entry(100))
        base = await store.audit.size()
        other_cert = StoredCertificate(b"c" * 16, "LA-MOLSW", b"other certificate", T0)
        results = await asyncio.gather(
            store.audit.record(entry(1), T0),
            store.delivery.record_receipt(receipt(first, LAO, "delivered", InboxState.DELIVERED)),
            store.delivery.record_receipt(receipt(envelope(301), LAO, "delivered", InboxState.DELIVERED)),
            store.delivery.record_receipt(verified),
            store.directory.add_certificate(other_cert, entry(101)),
            store.audit.record(entry(2), T0),
            return_exceptions=True,
        )
        assert results[0] == base
        assert results[1] == ReceiptOutcome(None, False, InboxState.VERIFIED, InboxState.VERIFIED)
        assert results[2] == ReceiptOutcome(None, False, None, None)
        again = results[3]
        assert isinstance(again, ReceiptOutcome)
        assert again.duplicate
        assert again.recorded is not None
        assert again.recorded.raw == verified.raw
        assert isinstance(results[4], Conflict)
        assert results[5] == base + 1
        assert await shared.transactions([base, base + 1]) == 1
        leaves = await check_tree(store)
        assert leaves[base:] == [entry(1), entry(2)]
    finally:
        await store.close()


async def test_an_acceptance_whose_signing_fails_takes_nothing_with_it(shared: Shared) -> None:
    store = await shared.open()
    try:
        fresh = envelope(400)

        def broken(index: int) -> list[IssuedReceipt]:
            raise RuntimeError("signing failed")

        results = await asyncio.gather(
            store.delivery.accept_envelope(envelope(401), broken),
            store.delivery.accept_envelope(fresh, issuer(fresh, [])),
            store.audit.record(entry(3), T0),
            return_exceptions=True,
        )
        assert isinstance(results[0], RuntimeError)
        assert await store.delivery.envelope(envelope(401).envelope_id) is None
        leaves = await check_tree(store)
        assert sorted(leaves) == sorted([fresh.leaf, f"leaf:{LAO}".encode(), entry(3)])
        assert [e.envelope.envelope_id for e in await store.delivery.inbox(LAO, 0, 10)] == [fresh.envelope_id]
    finally:
        await store.close()


async def test_a_missing_border_node_stops_every_append_of_the_batch(shared: Shared) -> None:
    store = await shared.open()
    try:
        for n in range(6):
            await store.audit.record(entry(n), T0)
        await shared.as_superuser(
            "ALTER TABLE audit_nodes DISABLE TRIGGER audit_nodes_no_rewrite; "
            "DELETE FROM audit_nodes WHERE level = 1 AND idx = 2; "
            "ALTER TABLE audit_nodes ENABLE TRIGGER audit_nodes_no_rewrite;"
        )
        results = await asyncio.gather(
            store.audit.record(entry(6), T0), store.audit.record(entry(7), T0), return_exceptions=True
        )
        for result in results:
            assert isinstance(result, AuditLogDamaged)
            assert "(1, 2)" in (result.reason or "")
        assert await store.audit.size() == 6
    finally:
        await store.close()


async def test_receipts_sent_together_apply_in_order_and_a_refused_one_leaves_no_gap(shared: Shared) -> None:
    store = await shared.open()
    try:
        one, two = envelope(500), envelope(501)
        for new in (one, two):
            await store.delivery.accept_envelope(new, issuer(new, []))
        closed = envelope(502)
        await store.delivery.accept_envelope(closed, issuer(closed, []))
        await store.delivery.record_receipt(receipt(closed, LAO, "rejected", InboxState.REJECTED))
        base = await store.audit.size()
        sent = [
            receipt(one, LAO, "delivered", InboxState.DELIVERED),
            receipt(one, LAO, "verified", InboxState.VERIFIED, at=T0 + 20),
            receipt(closed, LAO, "delivered", InboxState.DELIVERED),
            receipt(two, LAO, "verified", InboxState.VERIFIED),
        ]
        outcomes = await asyncio.gather(*(store.delivery.record_receipt(r) for r in sent))
        assert [o.state for o in outcomes] == [
            InboxState.DELIVERED,
            InboxState.VERIFIED,
            InboxState.REJECTED,
            InboxState.VERIFIED,
        ]
        assert outcomes[2].recorded is None
        recorded = [o.recorded for o in outcomes if o.recorded is not None]
        assert [r.log_index for r in recorded] == [base, base + 1, base + 2]
        leaves = await check_tree(store)
        assert leaves[base:] == [sent[0].leaf, sent[1].leaf, sent[3].leaf]
        assert [e.envelope.envelope_id for e in await store.delivery.inbox(LAO, 0, 10)] == []
        assert [r.seq for r in await store.delivery.sender_feed(SENDER, 0, 10)] == list(range(1, 8))
    finally:
        await store.close()

"""A broker on PostgreSQL over real HTTP: the whole referral flow with blobs in the database, and
what happens when the database restarts under load (503 with Retry-After, nothing acknowledged
lost, recovery without help)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from broker.storage.postgresql import PostgresStore, open_postgres_store
from broker.web.problems import STORAGE_RETRY_AFTER_SECONDS
from protocol.receipt import ReceiptKind
from tests.integration.broker_harness import ManualClock, RunningBroker, start_broker
from tests.integration.conftest import AGENCIES
from tests.integration.pki import Pki, Sealed, recipient_receipt
from tests.integration.signed_http import Reply
from tests.integration.storage_engines import BROKER_LOGIN, postgres_database
from tests.postgres_server import PostgresServer

RECEIPT_TYPE = "application/vnd.casebridge.receipt"
LAO_DOCUMENT = ("ເອກະສານ.pdf", bytes(range(256)) * 1200)  # 300 KiB: a blob in chunks
THAI_NOTE = ("เอกสารประกอบ.pdf", "บันทึก สมชาย ใจดี".encode() * 10)  # small: inline
MAX_ATTEMPTS = 400
PAUSE_SECONDS = 0.05


@pytest.fixture
async def pg() -> AsyncIterator[tuple[PostgresServer, str]]:
    server, name = await postgres_database()
    try:
        yield server, name
    finally:
        await server.drop_database(name)


@contextlib.asynccontextmanager
async def broker_on(
    pg: tuple[PostgresServer, str], directory: Path, pki: Pki, clock: ManualClock
) -> AsyncIterator[tuple[RunningBroker, PostgresStore]]:
    server, name = pg
    store = await open_postgres_store(server.dsn(name, BROKER_LOGIN), now=clock.now())
    try:
        async with start_broker(directory, pki, clock, store=store) as broker:
            await broker.enroll(*AGENCIES)
            yield broker, store
    finally:
        await store.close()


async def test_a_referral_travels_through_a_broker_on_postgresql(
    pg: tuple[PostgresServer, str], tmp_path: Path, pki: Pki, clock: ManualClock
) -> None:
    async with broker_on(pg, tmp_path, pki, clock) as (broker, store):
        sealed = broker.seal("TH-ATPD", ["LA-MOLSW"], attachments=[LAO_DOCUMENT, THAI_NOTE])
        first = await broker.submit("TH-ATPD", sealed)
        again = await broker.submit("TH-ATPD", sealed)
        assert (first.status, again.status) == (201, 200)
        assert again.json() == first.json()
        lao = broker.client("LA-MOLSW")
        (item,) = (await lao.get("/v1/inbox")).json()["items"]
        path = f"/v1/inbox/{sealed.envelope_id.hex()}"
        assert (await lao.get(f"{path}/header")).body == sealed.header
        blob = sealed.parts[1]
        assert (await lao.get(f"{path}/parts/1")).body == blob
        ranged = await lao.get(f"{path}/parts/1", headers={"Range": "bytes=1000-250000"})
        assert ranged.status == 206
        assert ranged.body == blob[1000:250001]
        verified = recipient_receipt(pki["LA-MOLSW"], sealed, ReceiptKind.VERIFIED, clock.now())
        assert (await lao.post("/v1/receipts", verified, RECEIPT_TYPE)).status == 201
        feed = (await broker.client("TH-ATPD").get("/v1/receipts")).json()["items"]
        assert [r["kind"] for r in feed] == ["accepted", "verified"]
        envelope_hash = sealed.parsed.envelope_hash
        assert await store.blobs.size(envelope_hash, 1) == len(blob)
        report = await broker.sweep()
        assert report.purged == 1
        assert await store.blobs.size(envelope_hash, 1) is None
        assert (await lao.get(f"{path}/parts/1")).status == 404
        assert item["cursor"] == 1


async def _submit_until_acknowledged(broker: RunningBroker, sealed: Sealed, refusals: list[Reply]) -> Reply:
    """Submit the same bytes until the broker acknowledges them (bounded)."""
    for _ in range(MAX_ATTEMPTS):
        try:
            reply = await broker.submit("TH-ATPD", sealed)
        except aiohttp.ClientError:
            await asyncio.sleep(PAUSE_SECONDS)
            continue
        if reply.status in (200, 201):
            return reply
        refusals.append(reply)
        await asyncio.sleep(PAUSE_SECONDS)
    raise AssertionError(f"not acknowledged after {MAX_ATTEMPTS} attempts: {refusals[-1].body!r}")


async def test_a_database_restart_is_answered_503_and_loses_nothing_acknowledged(
    pg: tuple[PostgresServer, str], tmp_path: Path, pki: Pki, clock: ManualClock
) -> None:
    server, _ = pg
    async with broker_on(pg, tmp_path, pki, clock) as (broker, store):
        envelopes = [broker.seal("TH-ATPD", ["LA-MOLSW", "LA-LWU"]) for _ in range(30)]
        refusals: list[Reply] = []
        acknowledged: dict[bytes, Reply] = {}
        halfway = asyncio.Event()

        async def load() -> None:
            for i, sealed in enumerate(envelopes):
                acknowledged[sealed.envelope_id] = await _submit_until_acknowledged(broker, sealed, refusals)
                if i == 10:
                    halfway.set()

        loader = asyncio.create_task(load())
        await halfway.wait()
        await asyncio.to_thread(server.stop_for_a_while)
        while_down = await broker.submit("TH-ATPD", broker.seal("TH-ATPD", ["LA-MOLSW"]))
        await asyncio.to_thread(server.start_again)
        await loader
        await asyncio.to_thread(server.restart)
        after_restart = [await _submit_until_acknowledged(broker, broker.seal("TH-ATPD", ["LA-LWU"]), [])]

        assert while_down.status == 503
        assert while_down.problem["code"] == "storage_unavailable"
        assert while_down.headers["Retry-After"] == str(STORAGE_RETRY_AFTER_SECONDS)
        assert all(r.status == 503 and "Retry-After" in r.headers for r in refusals)
        assert after_restart[0].status == 201
        for recipient in ("LA-MOLSW", "LA-LWU"):
            listed = (await broker.client(recipient).get("/v1/inbox", query={"limit": 500})).json()["items"]
            ids = [bytes.fromhex(i["envelope_id"]) for i in listed]
            assert len(ids) == len(set(ids))
            assert set(acknowledged) <= set(ids)
        size = await store.audit.size()
        leaves = await store.audit.leaves(0, size)
        assert len(leaves) == size
        for envelope_id, reply in acknowledged.items():
            record = await store.delivery.envelope(envelope_id)
            assert record is not None
            assert envelope_id in leaves[record.accepted_index]
            receipts = await store.delivery.receipts_for(envelope_id)
            assert sorted(r.recipient_id for r in receipts) == ["LA-LWU", "LA-MOLSW"]
            assert reply.json()["envelope_id"] == envelope_id.hex()

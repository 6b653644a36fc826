"""Several `casebridge broker serve` processes on one PostgreSQL, as a load balancer spreads
agencies over them: one public authority, one directory, one audit log, push across replicas,
replay and rate limits held across replicas, and a replica killed mid-load losing nothing."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from broker.clock import SystemClock
from broker.storage.postgresql import PostgresStore, open_postgres_store
from protocol.merkle import leaf_hash, root_from_leaf_hashes
from protocol.receipt import ReceiptKind
from tests.integration.broker_harness import ENVELOPE_TYPE, BrokerProcess, enroll
from tests.integration.pki import Pki, Sealed, recipient_receipt, seal
from tests.integration.signed_http import Reply, SignedClient
from tests.integration.storage_engines import BROKER_LOGIN, postgres_database
from tests.postgres_server import PostgresServer

AUTHORITY = "casebridge.test"
RECEIPT_TYPE = "application/vnd.casebridge.receipt"
REVOCATION_LIST_TYPE = "application/vnd.casebridge.revocation-list"
AGENCIES = ("TH-ATPD", "TH-DSDW", "LA-MOLSW", "LA-LWU")
WAIT_SECONDS = 30
MAX_ATTEMPTS = 300
PAUSE_SECONDS = 0.05


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


@pytest.fixture
async def pg() -> AsyncIterator[tuple[PostgresServer, str]]:
    server, name = await postgres_database()
    try:
        yield server, name
    finally:
        await server.drop_database(name)


StartReplicas = Callable[..., Awaitable[list[BrokerProcess]]]


@pytest.fixture
async def replicas(
    pg: tuple[PostgresServer, str], broker_process: Callable[..., Awaitable[BrokerProcess]]
) -> StartReplicas:
    server, name = pg

    async def start(count: int, **overrides: object) -> list[BrokerProcess]:
        return [
            await broker_process(
                database_url=server.dsn(name, BROKER_LOGIN),
                public_authority=AUTHORITY,
                **overrides,
            )
            for _ in range(count)
        ]

    return start


@pytest.fixture
async def store(pg: tuple[PostgresServer, str]) -> AsyncIterator[PostgresStore]:
    """The shared database as an offline command sees it (for checking what was stored)."""
    server, name = pg
    opened = await open_postgres_store(server.dsn(name, BROKER_LOGIN), now=SystemClock().now(), owner=False)
    try:
        yield opened
    finally:
        await opened.close()


def client(replica: BrokerProcess, pki: Pki, agency: str, session: aiohttp.ClientSession) -> SignedClient:
    """Requests signed for the public authority every replica shares, sent to `replica`."""
    return SignedClient(session, replica.url, AUTHORITY, pki[agency].signing_key, SystemClock().now)


async def until_known(replica: BrokerProcess, pki: Pki, agency: str, session: aiohttp.ClientSession) -> None:
    """Wait (bounded) until `replica` authenticates `agency`, registered through another one."""
    for _ in range(MAX_ATTEMPTS):
        if (await client(replica, pki, agency, session).get("/v1/directory")).status == 200:
            return
        await asyncio.sleep(PAUSE_SECONDS)
    raise AssertionError(f"{agency} never became known at {replica.url}")


def sealed_for(pki: Pki, recipients: list[str]) -> Sealed:
    return seal(pki["TH-ATPD"], [pki[r] for r in recipients], SystemClock().now())


@pytest.mark.slow
async def test_a_referral_crosses_three_replicas_with_push_and_receipts(
    replicas: StartReplicas, live_pki: Pki, session: aiohttp.ClientSession, store: PostgresStore
) -> None:
    a, b, c = await replicas(3)
    await enroll(lambda agency: client(a, live_pki, agency, session), live_pki, AGENCIES)
    for replica in (b, c):
        for agency in AGENCIES:
            await until_known(replica, live_pki, agency, session)
    recipient_ws = await client(b, live_pki, "LA-MOLSW", session).websocket()
    sender_ws = await client(c, live_pki, "TH-ATPD", session).websocket()
    long_poll = asyncio.create_task(
        client(b, live_pki, "LA-LWU", session).get("/v1/inbox", query={"wait": WAIT_SECONDS * 2})
    )
    try:
        sealed = sealed_for(live_pki, ["LA-MOLSW", "LA-LWU"])
        reply = await client(a, live_pki, "TH-ATPD", session).post(
            "/v1/envelopes", sealed.body, ENVELOPE_TYPE
        )
        assert reply.status == 201
        hint = await recipient_ws.receive_json(timeout=WAIT_SECONDS)
        assert hint == {"type": "inbox", "envelope_id": sealed.envelope_id.hex(), "cursor": 1}
        async with asyncio.timeout(WAIT_SECONDS):
            polled = (await long_poll).json()["items"]
        assert [i["envelope_id"] for i in polled] == [sealed.envelope_id.hex()]
        assert (await sender_ws.receive_json(timeout=WAIT_SECONDS))["type"] == "receipt"
        lao = client(b, live_pki, "LA-MOLSW", session)
        header = await lao.get(f"/v1/inbox/{sealed.envelope_id.hex()}/header")
        assert header.body == sealed.header
        verified = recipient_receipt(live_pki["LA-MOLSW"], sealed, ReceiptKind.VERIFIED, SystemClock().now())
        posted = await client(c, live_pki, "LA-MOLSW", session).post("/v1/receipts", verified, RECEIPT_TYPE)
        assert posted.status == 201
        hints = [await sender_ws.receive_json(timeout=WAIT_SECONDS) for _ in range(1)]
        assert hints[-1]["type"] == "receipt"
        feed = (await client(a, live_pki, "TH-ATPD", session).get("/v1/receipts")).json()["items"]
        assert sorted(r["kind"] for r in feed) == ["accepted", "accepted", "verified"]
        assert base64.b64decode(feed[-1]["receipt"]) == verified
    finally:
        long_poll.cancel()
        await recipient_ws.close()
        await sender_ws.close()
    assert len(await store.delivery.receipts_for(sealed.envelope_id)) == 3


async def test_a_request_replayed_to_another_replica_is_refused(
    replicas: StartReplicas, live_pki: Pki, session: aiohttp.ClientSession
) -> None:
    a, b = await replicas(2)
    await enroll(lambda agency: client(a, live_pki, agency, session), live_pki, ["TH-ATPD"])
    await until_known(b, live_pki, "TH-ATPD", session)
    signer = client(a, live_pki, "TH-ATPD", session)
    url, headers = signer.prepare("GET", "/v1/directory")
    first = await signer.raw_request("GET", url, headers)
    replayed = await signer.raw_request("GET", url.replace(a.url, b.url), headers)
    assert first.status == 200
    assert replayed.status == 401
    assert replayed.problem["code"] == "unauthenticated"


async def test_a_revocation_registered_on_one_replica_is_enforced_by_the_others(
    replicas: StartReplicas, live_pki: Pki, session: aiohttp.ClientSession
) -> None:
    a, b = await replicas(2)
    await enroll(lambda agency: client(a, live_pki, agency, session), live_pki, ["LA-MOLSW"])
    await until_known(b, live_pki, "LA-MOLSW", session)
    crl = live_pki.revoke("LA-MOLSW", SystemClock().now() - 1)
    operator = client(a, live_pki, "TH-OPERATOR", session)
    assert (await operator.post("/v1/directory/revocations", crl.raw, REVOCATION_LIST_TYPE)).status == 201
    for _ in range(MAX_ATTEMPTS):
        refused = await client(b, live_pki, "LA-MOLSW", session).get("/v1/directory")
        if refused.status == 401:
            break
        await asyncio.sleep(PAUSE_SECONDS)
    assert refused.status == 401
    assert refused.problem["code"] == "unauthenticated"


@pytest.mark.slow
async def test_one_rate_limit_holds_across_replicas(
    replicas: StartReplicas, live_pki: Pki, session: aiohttp.ClientSession
) -> None:
    burst = 12
    a, b, c = await replicas(3, rate_limit_burst=burst, rate_limit_per_minute=1)
    await enroll(lambda agency: client(a, live_pki, agency, session), live_pki, ["TH-ATPD"])
    for replica in (b, c):
        await until_known(replica, live_pki, "TH-ATPD", session)
    replies: list[Reply] = []
    for i in range(3 * burst):
        replica = (a, b, c)[i % 3]
        replies.append(await client(replica, live_pki, "TH-ATPD", session).get("/v1/directory"))
    served = [r for r in replies if r.status == 200]
    refused = [r for r in replies if r.status == 429]
    assert len(served) + len(refused) == len(replies)
    assert 1 <= len(served) <= burst
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)


async def _submit_somewhere(
    targets: list[BrokerProcess], pki: Pki, session: aiohttp.ClientSession, sealed: Sealed
) -> Reply:
    """Submit through the first replica that answers; move to the next when one is gone."""
    for attempt in range(MAX_ATTEMPTS):
        replica = targets[min(attempt // 3, len(targets) - 1)]
        try:
            reply = await client(replica, pki, "TH-ATPD", session).post(
                "/v1/envelopes", sealed.body, ENVELOPE_TYPE
            )
        except aiohttp.ClientError:
            await asyncio.sleep(PAUSE_SECONDS)
            continue
        if reply.status in (200, 201):
            return reply
        await asyncio.sleep(PAUSE_SECONDS)
    raise AssertionError("no replica acknowledged the envelope")


@pytest.mark.slow
async def test_a_replica_killed_mid_load_loses_nothing_and_the_log_stays_whole(
    replicas: StartReplicas, live_pki: Pki, session: aiohttp.ClientSession, store: PostgresStore
) -> None:
    a, b, c = await replicas(3)
    await enroll(lambda agency: client(a, live_pki, agency, session), live_pki, AGENCIES)
    for replica in (b, c):
        await until_known(replica, live_pki, "TH-ATPD", session)
    envelopes = [sealed_for(live_pki, ["LA-MOLSW", "LA-LWU"]) for _ in range(45)]
    routes = {0: [a, c], 1: [b, a, c], 2: [c, a]}
    acknowledged: dict[bytes, Reply] = {}
    started = asyncio.Event()

    async def sender(lane: int) -> None:
        for sealed in envelopes[lane::3]:
            acknowledged[sealed.envelope_id] = await _submit_somewhere(
                routes[lane], live_pki, session, sealed
            )
            if len(acknowledged) >= 9:
                started.set()

    lanes = [asyncio.create_task(sender(lane)) for lane in range(3)]
    await started.wait()
    assert await b.kill() != 0
    await asyncio.gather(*lanes)

    assert set(acknowledged) == {s.envelope_id for s in envelopes}
    for recipient in ("LA-MOLSW", "LA-LWU"):
        entries = await store.delivery.inbox(recipient, 0, 500)
        ids = [e.envelope.envelope_id for e in entries]
        assert sorted(ids) == sorted(acknowledged)
        assert [e.cursor for e in entries] == list(range(1, len(envelopes) + 1))
    size = await store.audit.size()
    leaves = await store.audit.checked_leaves(0, size)
    head = await store.audit.tree_head(size)
    assert head.root_hash == root_from_leaf_hashes(leaf_hash(leaf) for leaf in leaves)
    accepted_at = set()
    for envelope_id, reply in acknowledged.items():
        record = await store.delivery.envelope(envelope_id)
        assert record is not None
        assert envelope_id in leaves[record.accepted_index]
        accepted_at.add(record.accepted_index)
        trace = await store.audit.envelope_leaves(envelope_id)
        assert record.accepted_index in [index for index, _ in trace]
        assert reply.json()["envelope_id"] == envelope_id.hex()
    assert len(accepted_at) == len(envelopes)

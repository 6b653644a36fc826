"""The recipient's receipts on the wire: a small referral's `delivered` and `verified` receipts
go in one batch request, a large one's `delivered` goes as soon as it is downloaded, receipts
left unposted go together at the next flush, and a broker without batches gets each receipt on
its own."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from clients.inbox import PROMPT_DELIVERED_BYTES
from tests.integration.broker_harness import BrokerFactory, RunningBroker
from tests.integration.client_harness import LAO_FILENAME, THAI_REFERRAL, document, make_client

FORWARDED_REQUEST_HEADERS = ("content-type", "content-digest", "signature", "signature-input", "range")
FORWARDED_ANSWER_HEADERS = (
    "content-type",
    "casebridge-accepted-receipt",
    "etag",
    "content-range",
    "retry-after",
)


def posts(broker: RunningBroker, route: str) -> int:
    """How many requests the broker answered on `route` (from its own request metrics)."""
    value = broker.registry.get_sample_value(
        "casebridge_request_duration_seconds_count", {"route": route, "method": "POST"}
    )
    return int(value or 0)


async def send(
    broker: RunningBroker, tmp_path: Path, attachment_bytes: int = 0, url: str | None = None
) -> str:
    attachments = []
    if attachment_bytes:
        attachments.append(tmp_path / LAO_FILENAME)
        attachments[0].write_bytes(document(attachment_bytes, seed=3))
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd", broker_url=url) as atpd:
        await atpd.refresh_directory()
        return (await atpd.send(["LA-MOLSW"], THAI_REFERRAL, attachments=attachments)).envelope_id


async def receipt_kinds(
    broker: RunningBroker, tmp_path: Path, envelope_id: str, url: str | None = None
) -> list[str]:
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd", broker_url=url) as atpd:
        status = await atpd.status(envelope_id)
    return [str(r.kind) for r in status.recipients["LA-MOLSW"].receipts]


async def test_a_small_referral_s_delivered_and_verified_receipts_go_in_one_request(
    broker: RunningBroker, tmp_path: Path
) -> None:
    envelope_id = await send(broker, tmp_path)
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        (delivery,) = await molsw.fetch_deliveries()
        assert delivery.body == THAI_REFERRAL
    assert (posts(broker, "post_receipts"), posts(broker, "post_receipt")) == (1, 0)
    assert await receipt_kinds(broker, tmp_path, envelope_id) == ["accepted", "delivered", "verified"]


async def test_a_large_referral_s_delivered_receipt_goes_as_soon_as_it_is_downloaded(
    broker: RunningBroker, tmp_path: Path
) -> None:
    envelope_id = await send(broker, tmp_path, attachment_bytes=PROMPT_DELIVERED_BYTES + 1)
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        (delivery,) = await molsw.fetch_deliveries()
        assert b"".join(delivery.attachments[0].open()) == document(PROMPT_DELIVERED_BYTES + 1, seed=3)
    # Each on its own: `delivered` before opening, `verified` after.
    assert (posts(broker, "post_receipts"), posts(broker, "post_receipt")) == (0, 2)
    assert await receipt_kinds(broker, tmp_path, envelope_id) == ["accepted", "delivered", "verified"]


async def test_receipts_left_unposted_go_together_at_the_next_flush(
    broker: RunningBroker, tmp_path: Path
) -> None:
    envelope_id = await send(broker, tmp_path)
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        (delivery,) = await molsw.fetch_deliveries()
        await molsw.ack(delivery)
        # Forget that the broker has both receipts, as if their post had been lost.
        with molsw.state.transaction() as db:
            db.execute("UPDATE signed_receipts SET posted=0")
        before = posts(broker, "post_receipts")
        assert await molsw.flush_receipts() == 0
        assert posts(broker, "post_receipts") == before + 1
        assert await molsw.flush_receipts() == 0
        assert posts(broker, "post_receipts") == before + 1
    assert await receipt_kinds(broker, tmp_path, envelope_id) == ["accepted", "delivered", "verified"]


@pytest.fixture
def proxy_socket() -> socket.socket:
    """A listening socket for a proxy, bound before the broker starts (its address is the
    authority the broker checks signatures against)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


async def serve_without_batches(broker: RunningBroker, sock: socket.socket, seen: list[str]) -> web.AppRunner:
    """A reverse proxy to `broker` that answers the batch route as a broker from before it did
    (404, no such path); everything else is forwarded as it came, signatures included."""
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path}")
        if request.path == "/v1/receipts/batch":
            problem = {
                "type": "urn:casebridge:problem:not_found",
                "title": "Not found",
                "status": 404,
                "detail": "no such path",
                "code": "not_found",
                "request_id": "old-broker-0001",
            }
            return web.json_response(problem, status=404, content_type="application/problem+json")
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_REQUEST_HEADERS}
        body = await request.read() if request.body_exists else None
        async with session.request(
            request.method, broker.url + request.raw_path, headers=headers, data=body, allow_redirects=False
        ) as answer:
            data = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() in FORWARDED_ANSWER_HEADERS}
            return web.Response(status=answer.status, body=data, headers=kept)

    async def close_session(app: web.Application) -> None:
        await session.close()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_cleanup.append(close_session)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


@pytest.fixture
async def old_broker(
    broker_factory: BrokerFactory, proxy_socket: socket.socket
) -> AsyncIterator[tuple[RunningBroker, str, list[str]]]:
    host, port = proxy_socket.getsockname()
    async with broker_factory(public_authority=f"{host}:{port}") as running:
        seen: list[str] = []
        runner = await serve_without_batches(running, proxy_socket, seen)
        try:
            yield running, f"http://{host}:{port}", seen
        finally:
            await runner.cleanup()


async def test_a_broker_without_batches_gets_each_receipt_on_its_own(
    old_broker: tuple[RunningBroker, str, list[str]], tmp_path: Path
) -> None:
    broker, proxy_url, seen = old_broker
    envelope_id = await send(broker, tmp_path, url=proxy_url)
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw", broker_url=proxy_url) as molsw:
        (delivery,) = await molsw.fetch_deliveries()
        assert delivery.envelope_id == envelope_id
        receipt_posts = [line for line in seen if "/v1/receipts" in line]
        assert receipt_posts == ["POST /v1/receipts/batch", "POST /v1/receipts", "POST /v1/receipts"]
        # The client remembers: later receipts go one by one at once.
        with molsw.state.transaction() as db:
            db.execute("UPDATE signed_receipts SET posted=0")
        assert await molsw.flush_receipts() == 0
        assert [line for line in seen if "/v1/receipts" in line][3:] == ["POST /v1/receipts"] * 2
    assert (posts(broker, "post_receipts"), posts(broker, "post_receipt")) == (0, 4)
    assert await receipt_kinds(broker, tmp_path, envelope_id, url=proxy_url) == [
        "accepted",
        "delivered",
        "verified",
    ]

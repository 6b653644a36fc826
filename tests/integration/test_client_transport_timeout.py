"""A request the broker timed out (408, problem code `timeout`) is a transient failure: the client
library names it and sends the request again, signed afresh.

The broker answers 408 when a request stalls on the way (an upload that stops sending); a
scripted HTTP server on 127.0.0.1 plays that answer once, so the retry is observed exactly.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import nacl.signing
import pytest
from aiohttp import web

from clients.transport import BrokerTransport, RetryPolicy, problem_error, transient
from protocol.errors import ErrorCode, RequestTimeout

PROBLEM = {"type": "about:blank", "status": 408, "code": "timeout", "title": "Request timeout",
           "detail": "Check the connection and send the request again."}  # fmt: skip


def test_a_408_timeout_problem_is_a_request_timeout_and_transient() -> None:
    error = problem_error(408, json.dumps(PROBLEM).encode())
    assert isinstance(error, RequestTimeout)
    assert (error.status, error.code) == (408, ErrorCode.TIMEOUT)
    assert transient(error)
    bare = problem_error(408, b"")
    assert isinstance(bare, RequestTimeout)
    assert transient(bare)


@pytest.fixture
async def stalls_once() -> AsyncIterator[tuple[str, list[str]]]:
    """A server that answers the first request 408 and the next ones 200; it records each
    request's signature so the test can see the retry was signed again."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Signature", ""))
        if len(seen) == 1:
            return web.json_response(PROBLEM, status=408, content_type="application/problem+json")
        return web.json_response({"roots": [], "certificates": [], "encryption_keys": []})

    app = web.Application()
    app.router.add_get("/v1/directory", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_the_client_retries_a_request_the_broker_timed_out(stalls_once: tuple[str, list[str]]) -> None:
    url, seen = stalls_once
    pauses: list[float] = []

    async def no_wait(seconds: float) -> None:
        pauses.append(seconds)

    transport = BrokerTransport(
        url,
        nacl.signing.SigningKey.generate(),
        clock=lambda: 1_767_225_600,
        retry=RetryPolicy(max_attempts=3),
        sleep=no_wait,
    )
    try:
        answer = await transport.request("GET", "/v1/directory")
    finally:
        await transport.close()
    assert answer.status == 200
    assert len(seen) == 2
    assert len(pauses) == 1
    assert seen[0] != seen[1]  # a fresh nonce, never a replay

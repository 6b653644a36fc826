"""The baseline of the relay benchmark: a bare aiohttp relay on 127.0.0.1 with the broker's
request pattern and nothing else (no signatures, no crypto, no storage: dictionaries in memory).

    python -m bench.relay_baseline --header-bytes 560     # prints its URL, serves until SIGTERM

Routes, answering with the same sizes as the broker:
- `POST /v1/envelopes`: body = 16-byte id, 16-byte recipient id (space padded), filler; kept
  in memory; answers 201 with a JSON acceptance; hints the recipient ("inbox") and the sender
  ("receipt") over their WebSockets and appends to the sender's feed.
- `GET /v1/inbox/{id}/header` and `/parts/0`: the body split at the header length.
- `POST /v1/receipts`: body = 16-byte id, 16-byte kind (space padded), filler; appended to the
  sender's feed, which is hinted.
- `POST /v1/receipts/batch`: such receipts as a batch (`u16be(len) || receipt` each, as the
  broker takes them); each appended to its sender's feed, one hint per envelope.
- `GET /v1/receipts?after=&limit=`: the sender's feed.
- `GET /v1/events`: a WebSocket of hints for the agency named in `X-Agency`.
- `GET /healthz`.
The caller names itself with `X-Agency` (what the signature does at the broker). Memory grows
with the envelopes relayed: the benchmark's runs are bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ACCEPTED_RECEIPT_BYTES = 300


@dataclass
class Relay:
    header_bytes: int
    envelopes: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)
    feeds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sockets: dict[str, set[web.WebSocketResponse]] = field(default_factory=dict)
    cursors: dict[str, int] = field(default_factory=dict)
    receipt = base64.b64encode(bytes(ACCEPTED_RECEIPT_BYTES)).decode()

    async def hint(self, agency_id: str, message: dict[str, Any]) -> None:
        for ws in list(self.sockets.get(agency_id, ())):
            if not ws.closed:
                await ws.send_json(message)

    async def record(
        self, sender: str, envelope_id: str, recipient: str, kind: str, *, hint: bool = True
    ) -> int:
        feed = self.feeds.setdefault(sender, [])
        item = {
            "seq": len(feed) + 1,
            "envelope_id": envelope_id,
            "recipient_id": recipient,
            "kind": kind,
            "receipt": self.receipt,
        }
        feed.append(item)
        if hint:
            await self.hint(sender, {"type": "receipt", "seq": item["seq"], "envelope_id": envelope_id})
        return len(feed)


RELAY = web.AppKey("relay", Relay)


async def submit(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    sender = request.headers["X-Agency"]
    body = await request.read()
    envelope_id = body[:16].hex()
    recipient = body[16:32].decode().strip()
    relay.envelopes[envelope_id] = (sender, recipient, body)
    cursor = relay.cursors[recipient] = relay.cursors.get(recipient, 0) + 1
    response = web.json_response(
        {"envelope_id": envelope_id, "envelope_hash": "00" * 32, "accepted": [relay.receipt]}, status=201
    )
    await relay.hint(recipient, {"type": "inbox", "envelope_id": envelope_id, "cursor": cursor})
    await relay.record(sender, envelope_id, recipient, "accepted")
    return response


async def header(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    _, _, body = relay.envelopes[request.match_info["envelope_id"]]
    return web.Response(
        body=body[: 4 + relay.header_bytes],
        content_type="application/vnd.casebridge.envelope-header",
        headers={"CaseBridge-Accepted-Receipt": relay.receipt},
    )


async def part(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    _, _, body = relay.envelopes[request.match_info["envelope_id"]]
    return web.Response(body=body[4 + relay.header_bytes :], content_type="application/octet-stream")


async def post_receipt(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    body = await request.read()
    envelope_id = body[:16].hex()
    kind = body[16:32].decode().strip()
    sender, recipient, _ = relay.envelopes[envelope_id]
    await relay.record(sender, envelope_id, recipient, kind)
    return web.json_response({"envelope_id": envelope_id, "kind": kind, "recorded": True}, status=201)


async def post_receipts(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    body = await request.read()
    results = []
    latest: dict[tuple[str, str], int] = {}
    at = 0
    while at < len(body):
        length = int.from_bytes(body[at : at + 2], "big")
        receipt = body[at + 2 : at + 2 + length]
        at += 2 + length
        envelope_id = receipt[:16].hex()
        kind = receipt[16:32].decode().strip()
        sender, recipient, _ = relay.envelopes[envelope_id]
        latest[(sender, envelope_id)] = await relay.record(sender, envelope_id, recipient, kind, hint=False)
        results.append({"envelope_id": envelope_id, "kind": kind, "recorded": True, "status": 201})
    for (sender, envelope_id), seq in latest.items():
        await relay.hint(sender, {"type": "receipt", "seq": seq, "envelope_id": envelope_id})
    return web.json_response({"results": results})


async def feed(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    after = int(request.query.get("after", "0"))
    limit = int(request.query.get("limit", "100"))
    items = relay.feeds.get(request.headers["X-Agency"], [])[after : after + limit]
    return web.json_response({"items": items, "next": items[-1]["seq"] if items else after})


async def events(request: web.Request) -> web.WebSocketResponse:
    relay = request.app[RELAY]
    agency_id = request.headers["X-Agency"]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    relay.sockets.setdefault(agency_id, set()).add(ws)
    try:
        async for _ in ws:
            pass
    finally:
        relay.sockets[agency_id].discard(ws)
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(header_bytes: int) -> web.Application:
    app = web.Application()
    app[RELAY] = Relay(header_bytes)
    app.router.add_post("/v1/envelopes", submit)
    app.router.add_get("/v1/inbox/{envelope_id}/header", header)
    app.router.add_get("/v1/inbox/{envelope_id}/parts/0", part)
    app.router.add_post("/v1/receipts", post_receipt)
    app.router.add_post("/v1/receipts/batch", post_receipts)
    app.router.add_get("/v1/receipts", feed)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(header_bytes: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    runner = web.AppRunner(create_app(header_bytes), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await stop.wait()
    for ws_set in runner.app[RELAY].sockets.values():
        for ws in list(ws_set):
            await ws.close()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--header-bytes", type=int, required=True)
    asyncio.run(serve(parser.parse_args().header_bytes))


if __name__ == "__main__":
    main()

"""`GET /v1/events`: a WebSocket, opened by a signed request, pushing JSON hints.

Hints are `{"type": "inbox", "envelope_id", "cursor"}` and `{"type": "receipt", "seq",
"envelope_id"}`. They only say where to look: clients fetch through the other endpoints, so a
dropped hint only delays. The broker pings every `PING_SECONDS`; incoming messages are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import WSMsgType, web

from broker.web.state import STREAM_STARTED, WEBSOCKETS, caller, handlers

PING_SECONDS = 20.0
MAX_INCOMING_BYTES = 4096
_CLOSED: dict[str, Any] = {"type": "closed"}


async def _watch_incoming(ws: web.WebSocketResponse, queue: asyncio.Queue[Any]) -> None:
    """Read (and ignore) what the client sends until the socket closes, then wake the sender."""
    async for message in ws:
        if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            break
    while True:
        try:
            queue.put_nowait(_CLOSED)
            return
        except asyncio.QueueFull:
            queue.get_nowait()


async def events(request: web.Request) -> web.WebSocketResponse:
    agency_id = caller(request).agency_id
    notifier = handlers(request).services.notifier
    ws = web.WebSocketResponse(heartbeat=PING_SECONDS, max_msg_size=MAX_INCOMING_BYTES)
    async with notifier.subscribe(agency_id) as queue:
        await ws.prepare(request)
        request[STREAM_STARTED] = True
        request.app[WEBSOCKETS].add(ws)
        watcher = asyncio.create_task(_watch_incoming(ws, queue))
        try:
            while not ws.closed:
                hint = await queue.get()
                if hint is _CLOSED or ws.closed:
                    break
                await ws.send_json(dict(hint))
        except ConnectionResetError:
            pass
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await ws.close()
    return ws


async def close_websockets(app: web.Application) -> None:
    """`on_shutdown`: close every open WebSocket so a graceful stop does not wait for them."""
    for ws in app[WEBSOCKETS].all():
        await ws.close(code=1001, message=b"broker shutting down")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/events", events, name="events", allow_head=False)

"""`GET /events`: the desk's status pushed to its own page as Server-Sent Events.

Invariants:
- It answers through the gate like every page (the session cookie is required), and it is not a
  person's activity: it reads the workspace directly and never postpones the idle lock.
- Each event is one `data:` line of JSON: `{"locked": false, "online", "push", "pending",
  "changes"}` (`changes` grows whenever the case index changes), sent at once and then whenever
  it differs from the last one sent; a comment line every `KEEPALIVE_SECONDS` in between.
- The stream ends when the desk locks, after `{"locked": true}`, and when the desk shuts down
  (`on_shutdown` wakes every stream, so a stop never waits on an open page).
- It reveals no more than `/status.json`: no case content, no names.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from clients.desk.app import DESK
from clients.desk.security import CSP
from clients.desk.workspace import Workspace
from clients.outbox import OutboxState

KEEPALIVE_SECONDS = 15.0
RETRY_MILLISECONDS = 5000
LOCKED: dict[str, Any] = {"locked": True}


class LiveStreams:
    """Whether the desk is shutting down, which ends every stream."""

    def __init__(self) -> None:
        self.closing = False


LIVE = web.AppKey("live", LiveStreams)


def live_status(workspace: Workspace) -> dict[str, Any]:
    """What the page shows of an unlocked desk (the same facts as `/status.json`)."""
    return {
        "locked": False,
        "online": workspace.status.online,
        "push": workspace.status.push,
        "pending": len(workspace.client.outbox(OutboxState.PENDING)),
        "changes": workspace.changes,
    }


def _event(value: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(value, separators=(',', ':'))}\n\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    desk = request.app[DESK]
    live = request.app[LIVE]
    workspace = desk.workspace
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)
    try:
        await response.write(f"retry: {RETRY_MILLISECONDS}\n\n".encode())
        sent: dict[str, Any] | None = None
        while not live.closing:
            if workspace is None or workspace.closed or desk.workspace is not workspace:
                await response.write(_event(LOCKED))
                break
            seen = workspace.version
            current = live_status(workspace)
            if current != sent:
                await response.write(_event(current))
                sent = current
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    await workspace.next_update(seen)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
    except ConnectionResetError:
        # The page went away; nothing more to send.
        pass
    return response


async def _end_streams(app: web.Application) -> None:
    app[LIVE].closing = True
    workspace = app[DESK].workspace
    if workspace is not None:
        workspace.notify()


def add_routes(app: web.Application) -> None:
    app[LIVE] = LiveStreams()
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/events", events, allow_head=False)

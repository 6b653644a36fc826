"""The inbox, one case with its messages and receipts, attachment downloads and the PDF."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from clients.case_threads import CaseThread, Direction, StoredMessage, region_today
from clients.case_view import local_time, short_id
from clients.desk.app import CLOCK, render
from clients.desk.message_view import shown_fields
from clients.desk.routes_agency import workspace_of
from clients.desk.workspace import Workspace
from clients.outbox import OutboxState
from clients.pdf_export import render_pdf
from protocol.errors import CaseBridgeError
from protocol.referral import MessageType, allowed_messages

_CASE = re.compile(r"[0-9a-f]{32}")
MT = MessageType
ANSWERS = (
    MT.ACKNOWLEDGEMENT,
    MT.ACCEPTANCE,
    MT.DECLINE,
    MT.INFO_REQUEST,
    MT.INFO_RESPONSE,
    MT.CASE_UPDATE,
    MT.HANDOVER_RECORD,
)
PERSON_EVENTS = {
    MT.ACKNOWLEDGEMENT: "acknowledged",
    MT.ACCEPTANCE: "case_accepted",
    MT.DECLINE: "case_declined",
}


async def inbox(request: web.Request) -> web.Response:
    return render("inbox.html", request, await _inbox(request))


async def _inbox(request: web.Request) -> dict[str, Any]:
    workspace = await workspace_of(request)
    query = request.query.get("q", "")[:200]
    try:
        number = int(request.query.get("page", "1"))
    except ValueError:
        number = 1
    today = region_today(request.app[CLOCK]())
    page = workspace.index.page(today, query=query, number=number)
    return {"page": page, "query": query, "quoted": quote(query), "today": today, "local_time": local_time}


def thread_of(workspace: Workspace, case_hex: str) -> CaseThread:
    if not _CASE.fullmatch(case_hex):
        raise web.HTTPNotFound(text="No such case.")
    thread = workspace.thread(bytes.fromhex(case_hex))
    if thread is None:
        raise web.HTTPNotFound(text="No such case.")
    return thread


@dataclass(frozen=True, slots=True)
class Event:
    time: int
    recipient: str
    kind: str


def timeline(workspace: Workspace, thread: CaseThread, stored: StoredMessage) -> list[Event]:
    """What became of a sent message, per recipient: the broker's and the recipient's signed
    receipts, and the other side's person-level answers (acknowledged, accepted, declined)."""
    if stored.direction is not Direction.SENT:
        return []
    events: list[Event] = []
    to = stored.message.header.receiver_agency_id
    if stored.envelope_id is not None:
        entry = workspace.client.state.outbox_entry(stored.envelope_id)
        if entry is not None and entry.state is OutboxState.PENDING:
            events.append(Event(entry.created_at, to, "queued"))
        if entry is not None and entry.state is OutboxState.FAILED:
            events.append(Event(entry.created_at, to, "failed"))
        for r in workspace.client.receipts(stored.envelope_id):
            events.append(Event(r.time, r.recipient_id, str(r.kind)))
    for other in thread.messages:
        kind = PERSON_EVENTS.get(other.message.TYPE)
        if (
            kind
            and other.direction is Direction.RECEIVED
            and other.message.header.in_reply_to == stored.message.message_id
        ):
            events.append(Event(other.message.header.created_at, to, kind))
    return sorted(events, key=lambda e: e.time)


async def case(request: web.Request) -> web.Response:
    return render("case.html", request, await _case(request))


async def _case(request: web.Request) -> dict[str, Any]:
    workspace = await workspace_of(request)
    thread = thread_of(workspace, request.match_info["case"])
    state = thread.state
    today = region_today(request.app[CLOCK]())
    allowed = allowed_messages(state, state.local_side)
    messages = [
        {
            "stored": m,
            "fields": shown_fields(m.message),
            "timeline": timeline(workspace, thread, m),
            "files": [
                (i, name, m.envelope_id is not None and workspace.vault.has(m.envelope_id, i))
                for i, name in enumerate(m.attachments)
            ],
        }
        for m in reversed(thread.messages)
    ]
    return {
        "thread": thread,
        "state": state,
        "case_hex": state.case_link_id.hex(),
        "items": thread.open_items(today),
        "messages": messages,
        "answers": [t for t in ANSWERS if t in allowed],
        "other_types": sorted((t for t in allowed if t not in ANSWERS), key=lambda t: t.value),
        "local_time": local_time,
        "short_id": short_id,
    }


def _content_disposition(filename: str) -> str:
    ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "attachment"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def download(request: web.Request) -> web.StreamResponse:
    """A received attachment, decrypted from the vault as it streams out, only on a POST the
    person made with the page's button (never a GET a link could trigger)."""
    workspace = await workspace_of(request)
    thread = thread_of(workspace, request.match_info["case"])
    envelope_id = request.match_info["envelope"]
    try:
        index = int(request.match_info["index"])
    except ValueError:
        raise web.HTTPNotFound() from None
    stored = next((m for m in thread.messages if m.envelope_id == envelope_id), None)
    if (
        stored is None
        or stored.direction is not Direction.RECEIVED
        or not 0 <= index < len(stored.attachments)
    ):
        raise web.HTTPNotFound(text="No such attachment.")
    chunks = workspace.vault.open_stream(envelope_id, index)
    first = await asyncio.to_thread(next, chunks, b"")
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": _content_disposition(stored.attachments[index]),
        }
    )
    await response.prepare(request)
    await response.write(first)
    while True:
        chunk = await asyncio.to_thread(next, chunks, None)
        if chunk is None:
            break
        await response.write(chunk)
    await response.write_eof()
    return response


async def pdf(request: web.Request) -> web.StreamResponse:
    workspace = await workspace_of(request)
    thread = thread_of(workspace, request.match_info["case"])
    try:
        data = await asyncio.to_thread(
            render_pdf, thread, exported_by=workspace.agency_id, generated_at=request.app[CLOCK]()
        )
    except CaseBridgeError as e:
        raise web.HTTPServiceUnavailable(text=f"{e.title}: {e.detail}") from None
    name = f"case-{thread.case_link_id.hex()[:12]}.pdf"
    return web.Response(
        body=data,
        headers={"Content-Type": "application/pdf", "Content-Disposition": _content_disposition(name)},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/inbox", inbox)
    app.router.add_get("/cases/{case}", case)
    app.router.add_post("/cases/{case}/files/{envelope}/{index}", download)
    app.router.add_post("/cases/{case}/pdf", pdf)

"""Composing: the form of any referral message type, its validation as the person types, the
preview with attachments streamed to disk, and sending."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from multidict import MultiDict

from clients.desk.app import CLOCK, GATE, SETTINGS, render, session_of, translator
from clients.desk.form_problems import Problem, problem_of
from clients.desk.forms import OVERRIDE_CHOICES, build_from_form, layout, rows_to_show, widgets_for
from clients.desk.message_view import shown_fields
from clients.desk.routes_agency import workspace_of
from clients.desk.routes_cases import thread_of
from clients.desk.workspace import Draft, Workspace
from clients.envelope_files import AttachmentFile
from protocol import codec
from protocol.errors import CaseBridgeError
from protocol.primitives import system_random
from protocol.referral import CaseState, Message, MessageType

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 600
OFFICER_FIELDS = frozenset(
    {"read_by", "accepted_by", "declined_by", "verified_by", "assessed_by", "consent.officer"}
)


def _type(value: str | None, *, in_case: bool) -> MessageType:
    try:
        mtype = MessageType(value or ("acknowledgement" if in_case else "referral"))
    except ValueError:
        raise web.HTTPNotFound(text="No such message type.") from None
    if (mtype is MessageType.REFERRAL) == in_case:
        raise web.HTTPNotFound(text="A referral opens a new case; other messages belong to a case.")
    return mtype


def _form_context(
    request: web.Request,
    workspace: Workspace,
    mtype: MessageType,
    state: CaseState | None,
    values: MultiDict[str],
    problem: Problem | None = None,
) -> dict[str, Any]:
    now = request.app[CLOCK]()
    partners = [
        c.agency_id for c in workspace.client.directory.agencies(now) if c.agency_id != workspace.agency_id
    ]
    return {
        "mtype": mtype,
        "items": layout(mtype, rows_to_show(mtype, _form(values))),
        "override_choices": OVERRIDE_CHOICES,
        "override_open": any(values.get(k, "").strip() for k in ("override.reason", "override.legal_basis")),
        "state": state,
        "case_hex": "" if state is None else state.case_link_id.hex(),
        "granted": set() if state is None else {s.value for s in state.consent.scopes},
        "partners": partners,
        "values": values,
        "problem": problem,
        "needs_case_ref": mtype in (MessageType.REFERRAL, MessageType.ACCEPTANCE),
    }


def _defaults(request: web.Request, mtype: MessageType) -> MultiDict[str]:
    officer = session_of(request).officer
    values: MultiDict[str] = MultiDict()
    for widget in widgets_for(mtype):
        if widget.path in OFFICER_FIELDS and officer:
            values[widget.path] = officer
    return values


async def compose_new(request: web.Request) -> web.StreamResponse:
    workspace = await workspace_of(request)
    mtype = _type(request.query.get("type"), in_case=False)
    context = _form_context(request, workspace, mtype, None, _defaults(request, mtype))
    return render("compose.html", request, context)


async def compose_in_case(request: web.Request) -> web.StreamResponse:
    workspace = await workspace_of(request)
    state = thread_of(workspace, request.match_info["case"]).state
    mtype = _type(request.query.get("type"), in_case=True)
    context = _form_context(request, workspace, mtype, state, _defaults(request, mtype))
    return render("compose.html", request, context)


def _form(values: MultiDict[str]) -> dict[str, list[str]]:
    return {key: values.getall(key) for key in values}


def _problem(mtype: MessageType, values: MultiDict[str], error: CaseBridgeError) -> Problem:
    form = _form(values)
    return problem_of(error, widgets_for(mtype, rows_to_show(mtype, form)), form)


def _state_for(workspace: Workspace, case_hex: str) -> CaseState | None:
    return thread_of(workspace, case_hex).state if case_hex else None


def _build(
    request: web.Request, workspace: Workspace, values: MultiDict[str]
) -> tuple[Message, CaseState | None]:
    case_hex = values.get("case", "")
    mtype = _type(values.get("type"), in_case=bool(case_hex))
    state = _state_for(workspace, case_hex)
    message = build_from_form(
        mtype,
        _form(values),
        builder=workspace.client.messages,
        state=state,
        case_ref=values.get("case_ref"),
        to=values.get("to"),
        officer=session_of(request).officer or None,
        rng=system_random,
        now=request.app[CLOCK](),
    )
    return message, state


async def validate(request: web.Request) -> web.Response:
    """Called by the form's script as the person types: the first problem, naming its field."""
    workspace = await workspace_of(request)
    form = await request.post()
    values: MultiDict[str] = MultiDict((k, v) for k, v in form.items() if isinstance(v, str))
    try:
        _build(request, workspace, values)
    except CaseBridgeError as e:
        mtype = _type(values.get("type"), in_case=bool(values.get("case", "")))
        problem = _problem(mtype, values, e)
        answer = {"field": problem.field, "kind": problem.kind.value, "expected": problem.expected}
        return web.json_response(
            {"ok": False, **answer, "message": problem.message(translator(request).gettext)}
        )
    return web.json_response({"ok": True})


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while True:
        chunk = await part.read_chunk(64 * 1024)
        if not chunk:
            return
        yield chunk


async def preview(request: web.Request) -> web.StreamResponse:
    """Read the compose form as a stream: the CSRF token first, texts into memory (bounded),
    files straight to the upload spool; then build and show the message before it is sent."""
    session = session_of(request)
    reader = await request.multipart()
    first = await reader.next()
    if not isinstance(first, BodyPartReader) or first.name != "csrf":
        return web.Response(status=403, text="Refused: the form's security token is missing.\n")
    token = (await first.read(decode=False))[:200].decode("ascii", "replace")
    if not request.app[GATE].check_csrf(session, token):
        return web.Response(status=403, text="Refused: the form's security token is wrong.\n")
    workspace = await workspace_of(request)
    values: MultiDict[str] = MultiDict()
    files: list[tuple[Path, str]] = []
    try:
        for _ in range(MAX_PARTS):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue
            if part.filename is not None:
                if part.filename:
                    path = await workspace.spool.receive(
                        _chunks(part), max_bytes=request.app[SETTINGS].max_upload_bytes
                    )
                    files.append((path, codec.nfc(Path(part.filename).name)))
                continue
            raw = await part.read(decode=False)
            if len(raw) > MAX_FIELD_BYTES:
                raise web.HTTPRequestEntityTooLarge(max_size=MAX_FIELD_BYTES, actual_size=len(raw))
            values.add(part.name or "", raw.decode("utf-8", "replace"))
        message, state = _build(request, workspace, values)
    except CaseBridgeError as e:
        workspace.spool.discard([p for p, _ in files])
        case_hex = values.get("case", "")
        mtype = _type(values.get("type"), in_case=bool(case_hex))
        state = _state_for(workspace, case_hex)
        context = _form_context(request, workspace, mtype, state, values, _problem(mtype, values, e))
        return render("compose.html", request, context, status=422)
    except BaseException:
        workspace.spool.discard([p for p, _ in files])
        raise
    draft_id = secrets.token_urlsafe(16)
    to = message.header.receiver_agency_id
    session.drafts[draft_id] = Draft(message, files, to)
    context = {
        "draft_id": draft_id,
        "message": message,
        "fields": shown_fields(message),
        "files": [(name, path.stat().st_size) for path, name in files],
        "to": to,
        "state": state,
    }
    return render("preview.html", request, context)


async def send(request: web.Request) -> web.StreamResponse:
    workspace = await workspace_of(request)
    form = await request.post()
    draft = session_of(request).drafts.pop(str(form.get("draft", "")), None)
    if not isinstance(draft, Draft):
        raise web.HTTPSeeOther("/inbox")
    try:
        attachments = [AttachmentFile(path, filename=name) for path, name in draft.files]
        await workspace.client.send_message(draft.message, attachments=attachments)
    except CaseBridgeError as e:
        context = {"title": e.title, "detail": e.detail}
        return render("error.html", request, context, status=409)
    finally:
        workspace.spool.discard([p for p, _ in draft.files])
    case_link_id = draft.message.header.case_link_id
    workspace.refresh_case(case_link_id)
    workspace.wake()
    raise web.HTTPSeeOther(f"/cases/{case_link_id.hex()}")


async def discard(request: web.Request) -> web.StreamResponse:
    workspace = await workspace_of(request)
    form = await request.post()
    draft = session_of(request).drafts.pop(str(form.get("draft", "")), None)
    if isinstance(draft, Draft):
        workspace.spool.discard([p for p, _ in draft.files])
    raise web.HTTPSeeOther("/inbox")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/compose", compose_new)
    app.router.add_get("/cases/{case}/compose", compose_in_case)
    app.router.add_post("/compose/validate", validate)
    app.router.add_post("/compose/preview", preview)
    app.router.add_post("/compose/send", send)
    app.router.add_post("/compose/discard", discard)
    app[GATE].multipart_routes.add("/compose/preview")

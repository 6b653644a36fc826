"""The desk's own pages: start, unlock and lock, language, the outbox and sync status, partner
agencies with their certificate chain and fingerprints, and the fonts it serves."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from clients.agency import AgencyClient, load_pinned_roots
from clients.case_view import local_time
from clients.desk.app import (
    CLOCK,
    DESK,
    DESK_RETRY,
    FONTS,
    GATE,
    MONOTONIC,
    SETTINGS,
    lock,
    render,
    session_of,
    translator,
)
from clients.desk.i18n import pick_language
from clients.desk.security import set_session_cookie
from clients.desk.workspace import Workspace
from clients.outbox import OutboxState
from keys.fingerprint import fingerprint, key_id_hex
from keys.keystore import load_agency
from protocol.certificate import AgencyCertificate, EncryptionKey
from protocol.errors import CaseBridgeError

OFFICER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


def safe_next(value: Any) -> str:
    """A local path to go back to after a form (never another site)."""
    text = value if isinstance(value, str) else ""
    return text if text.startswith("/") and not text.startswith("//") and "\\" not in text else "/inbox"


async def workspace_of(request: web.Request) -> Workspace:
    """The unlocked workspace, noting the person's activity; else off to the unlock page."""
    desk = request.app[DESK]
    settings = request.app[SETTINGS]
    if desk.workspace is not None and desk.idle_for() > settings.idle_lock_seconds:
        await lock(request.app)
    if desk.workspace is None:
        raise web.HTTPSeeOther("/unlock")
    desk.touch()
    return desk.workspace


async def start(request: web.Request) -> web.StreamResponse:
    session = request.app[GATE].exchange(request.query.get("token", ""), request.app[MONOTONIC]())
    if session is None:
        return web.Response(status=403, text="Refused: this start address is not valid.\n")
    response = web.HTTPSeeOther("/inbox" if request.app[DESK].workspace else "/unlock")
    set_session_cookie(response, session)
    return response


async def unlock_page(request: web.Request) -> web.Response:
    return render("unlock.html", request, await _unlock_page(request))


async def _unlock_page(request: web.Request) -> dict[str, Any]:
    return {"error": None, "officer": session_of(request).officer}


async def unlock(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    passphrase = str(form.get("passphrase", ""))
    officer = str(form.get("officer", "")).strip()
    session = session_of(request)
    settings = request.app[SETTINGS]
    _ = translator(request).gettext
    if not officer or not set(officer) <= OFFICER_CHARS or len(officer) > 64:
        error = _("Your officer id: letters, digits and . _ : - only.")
        return render("unlock.html", request, {"error": error, "officer": officer})
    try:
        unlocked = await asyncio.to_thread(load_agency, settings.keystore, passphrase)
        client = AgencyClient(
            unlocked.identity,
            roots=load_pinned_roots(settings.trust),
            broker_url=settings.broker_url,
            state_dir=settings.state_dir,
            clock=request.app[CLOCK],
            retry=DESK_RETRY,
        )
    except CaseBridgeError as e:
        error = _("The keystore did not open.") + " " + e.title
        return render("unlock.html", request, {"error": error, "officer": officer})
    desk = request.app[DESK]
    if desk.workspace is not None:
        await client.close()
    else:
        workspace = Workspace(
            client,
            state_dir=settings.state_dir,
            clock=request.app[CLOCK],
            sync_interval_seconds=settings.sync_interval_seconds,
        )
        await workspace.start()
        desk.workspace = workspace
    desk.touch()
    session.officer = officer
    raise web.HTTPSeeOther("/inbox")


async def lock_now(request: web.Request) -> web.StreamResponse:
    await lock(request.app)
    raise web.HTTPSeeOther("/unlock")


async def language(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    session = session_of(request)
    session.language = pick_language(str(form.get("language", "")), session.language)
    raise web.HTTPSeeOther(safe_next(form.get("next")))


async def status(request: web.Request) -> web.Response:
    workspace = request.app[DESK].workspace
    if workspace is None:
        return web.json_response({"locked": True})
    return web.json_response(
        {
            "locked": False,
            "online": workspace.status.online,
            "pending": len(workspace.client.outbox(OutboxState.PENDING)),
            "last_ok": workspace.status.last_ok,
        }
    )


async def sync_now(request: web.Request) -> web.StreamResponse:
    workspace = await workspace_of(request)
    await workspace.sync_once()
    form = await request.post()
    raise web.HTTPSeeOther(safe_next(form.get("next")))


async def outbox(request: web.Request) -> web.Response:
    return render("outbox.html", request, await _outbox(request))


async def _outbox(request: web.Request) -> dict[str, Any]:
    workspace = await workspace_of(request)
    entries = sorted(workspace.client.outbox(), key=lambda e: -e.created_at)[:200]
    return {"entries": entries, "status": workspace.status, "local_time": local_time}


@dataclass(frozen=True, slots=True)
class KeyLine:
    what: str
    fingerprint: str
    key_id: str
    valid: str
    state: str


def _certificates(workspace: Workspace, agency_id: str) -> list[AgencyCertificate]:
    out = []
    for raw in workspace.client.state.load_directory().certificates:
        try:
            cert = AgencyCertificate.parse(raw)
        except CaseBridgeError:
            continue
        if cert.agency_id == agency_id:
            out.append(cert)
    return sorted(out, key=lambda c: -c.not_before)


def _encryption_keys(workspace: Workspace, agency_id: str) -> list[EncryptionKey]:
    out = []
    for raw in workspace.client.state.load_directory().encryption_keys:
        try:
            key = EncryptionKey.parse(raw)
        except CaseBridgeError:
            continue
        if key.agency_id == agency_id:
            out.append(key)
    return sorted(out, key=lambda k: -k.not_before)


def _span(a: int, b: int) -> str:
    return f"{local_time(a)[:10]} – {local_time(b)[:10]}"


async def partners(request: web.Request) -> web.Response:
    return render("partners.html", request, await _partners(request))


async def _partners(request: web.Request) -> dict[str, Any]:
    workspace = await workspace_of(request)
    now = request.app[CLOCK]()
    return {"agencies": workspace.client.directory.agencies(now), "me": workspace.agency_id}


async def partner(request: web.Request) -> web.Response:
    return render("partner.html", request, await _partner(request))


async def _partner(request: web.Request) -> dict[str, Any]:
    workspace = await workspace_of(request)
    now = request.app[CLOCK]()
    agency_id = request.match_info["agency"]
    trust = workspace.client.directory.trust
    certs = _certificates(workspace, agency_id)
    if not certs:
        raise web.HTTPNotFound(text="No such agency in the verified directory.")
    current = None
    history = []
    for cert in certs:
        try:
            trust.verify_agency(cert, now)
            state = "Valid"
            current = current or cert
        except CaseBridgeError:
            state = "Not valid now"
        history.append(
            KeyLine(
                f"#{cert.serial}", fingerprint(cert.signing_key), key_id_hex(cert.signing_key),
                _span(cert.not_before, cert.not_after), state,
            )
        )  # fmt: skip
    root = None
    for pinned in load_pinned_roots(request.app[SETTINGS].trust):
        if pinned.country == certs[0].country:
            root = KeyLine(
                pinned.name, fingerprint(pinned.public_key), key_id_hex(pinned.public_key),
                _span(pinned.not_before, pinned.not_after), "Pinned",
            )  # fmt: skip
    keys = []
    for key in _encryption_keys(workspace, agency_id):
        signer = next((c for c in certs if c.key_id == key.signer_key_id), None)
        try:
            if signer is None:
                raise LookupError
            trust.verify_encryption_key(key, trust.verify_agency(signer, now), now)
            state = "Valid"
        except (CaseBridgeError, LookupError):
            state = "Not valid now"
        keys.append(
            KeyLine("X25519", fingerprint(key.public_key), key_id_hex(key.public_key),
                    _span(key.not_before, key.not_after), state)
        )  # fmt: skip
    return {"agency_id": agency_id, "current": current, "root": root, "history": history, "keys": keys}


async def font(request: web.Request) -> web.StreamResponse:
    path = request.app[FONTS].get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Content-Type": "font/ttf", "Cache-Control": "max-age=86400"})


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/inbox")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_get("/start", start)
    app.router.add_get("/unlock", unlock_page)
    app.router.add_post("/unlock", unlock)
    app.router.add_post("/lock", lock_now)
    app.router.add_post("/language", language)
    app.router.add_get("/status.json", status)
    app.router.add_post("/sync", sync_now)
    app.router.add_get("/outbox", outbox)
    app.router.add_get("/partners", partners)
    app.router.add_get("/partners/{agency}", partner)
    app.router.add_get("/fonts/{name}", font)

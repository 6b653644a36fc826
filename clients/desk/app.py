"""`casebridge desk`: the focal point's local web app (see docs/desk.md).

Invariants:
- It holds the agency's keystore and talks to the broker only through `clients.agency`; the
  broker never serves the page that holds the keys. It listens on 127.0.0.1 only
  (`clients.desk.security` says who may talk to it).
- Locked at start and after `idle_lock_seconds` without a person's request: locking closes the
  client and drops every decrypted case from memory.
- The app is made by `create_app(settings, clock=...)`; its state lives in typed `web.AppKey`s;
  the idle watcher and the workspace's sync task live in `cleanup_ctx` and the workspace.
"""

from __future__ import annotations

import asyncio
import contextlib
import gettext
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from clients.desk import labels
from clients.desk.i18n import LANGUAGE_NAMES, LANGUAGES, load_translations
from clients.desk.security import DeskSession, Gate, Handler, gate_middleware, headers_middleware
from clients.desk.workspace import Workspace
from clients.transport import RetryPolicy

HERE = Path(__file__).parent
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
FONT_FILES = {
    "thai-regular.ttf": ("Loma.ttf", "Garuda.ttf", "Waree.ttf"),
    "thai-bold.ttf": ("Loma-Bold.ttf", "Garuda-Bold.ttf", "Waree-Bold.ttf"),
    "lao-regular.ttf": ("Phetsarath_OT.ttf",),
}
DESK_RETRY = RetryPolicy(max_attempts=2, base_delay_seconds=0.2, max_delay_seconds=1.0)


@dataclass(frozen=True, slots=True)
class DeskSettings:
    keystore: Path
    trust: tuple[Path, ...]
    broker_url: str
    state_dir: Path
    language: str = "th"
    idle_lock_seconds: int = 900
    sync_interval_seconds: float = 60.0
    max_upload_bytes: int = 256 << 20


GATE = web.AppKey("gate", Gate)
SETTINGS = web.AppKey("settings", DeskSettings)
CLOCK: web.AppKey[Callable[[], int]] = web.AppKey("clock")
MONOTONIC: web.AppKey[Callable[[], float]] = web.AppKey("monotonic")
TRANSLATIONS = web.AppKey("translations", dict)
FONTS = web.AppKey("fonts", dict)
SESSION = web.RequestKey("session", DeskSession)


class DeskState:
    """The one workspace of this desk, or None while locked, and when a person last acted."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self.workspace: Workspace | None = None
        self.monotonic = monotonic
        self.last_activity = monotonic()

    def touch(self) -> None:
        self.last_activity = self.monotonic()

    def idle_for(self) -> float:
        return self.monotonic() - self.last_activity


DESK = web.AppKey("desk", DeskState)


def find_fonts(font_dirs: Sequence[Path] = FONT_DIRS) -> dict[str, Path]:
    """The font files the desk serves, found by name under the system font folders."""
    found: dict[str, Path] = {}
    for base in font_dirs:
        if base.is_dir():
            for root, _dirs, files in os.walk(base):
                for name in files:
                    found.setdefault(name, Path(root) / name)
    out = {}
    for served, candidates in FONT_FILES.items():
        for name in candidates:
            if name in found:
                out[served] = found[name]
                break
    return out


def session_of(request: web.Request) -> DeskSession:
    return request[SESSION]


def translator(request: web.Request) -> gettext.NullTranslations:
    translations: dict[str, gettext.NullTranslations] = request.app[TRANSLATIONS]
    return translations[session_of(request).language]


def _context(request: web.Request) -> dict[str, Any]:
    session = request.get(SESSION)
    language = session.language if session else request.app[GATE].default_language
    t: gettext.NullTranslations = request.app[TRANSLATIONS][language]
    desk = request.app[DESK]
    return {
        "_": t.gettext,
        "lang": language,
        "languages": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        "csrf": session.csrf if session else "",
        "labels": labels,
        "workspace": desk.workspace,
        "path": request.path_qs,
    }


def render(
    template: str, request: web.Request, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """A page from `template`, with the request's language, CSRF token and desk state."""
    return aiohttp_jinja2.render_template(template, request, {**_context(request), **context}, status=status)


@web.middleware
async def missing_page_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A page that does not exist (an old link, a case not in this store) is said in the
    person's language; files and fonts keep their bare 404."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        if request.method != "GET" or request.path.startswith(("/static/", "/fonts/")):
            raise
        return render("missing.html", request, {}, status=404)


async def lock(app: web.Application) -> None:
    desk = app[DESK]
    workspace, desk.workspace = desk.workspace, None
    for session in app[GATE].sessions.values():
        session.drafts.clear()
    if workspace is not None:
        await workspace.close()


async def _idle_watcher(app: web.Application) -> AsyncIterator[None]:
    async def watch() -> None:
        settings = app[SETTINGS]
        while True:
            await asyncio.sleep(min(5.0, settings.idle_lock_seconds / 4))
            desk = app[DESK]
            if desk.workspace is not None and desk.idle_for() > settings.idle_lock_seconds:
                await lock(app)

    task = asyncio.create_task(watch())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await lock(app)


def create_app(
    settings: DeskSettings,
    *,
    clock: Callable[[], int] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The desk app. `clock` gives Unix seconds (certificates, receipts, due dates);
    `monotonic` measures idle time and start-token age (both injectable for tests)."""
    from clients.desk import routes_agency, routes_cases, routes_compose, routes_live

    gate = Gate(settings.language)
    app = web.Application(
        middlewares=[headers_middleware, gate_middleware(gate, SESSION), missing_page_middleware],
        client_max_size=1 << 20,
    )
    app[GATE] = gate
    app[SETTINGS] = settings
    app[CLOCK] = clock or (lambda: int(time.time()))
    app[TRANSLATIONS] = load_translations()
    app[FONTS] = find_fonts()
    app[MONOTONIC] = monotonic
    app[DESK] = DeskState(monotonic)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app.router.add_static("/static/", HERE / "static", follow_symlinks=False)
    routes_agency.add_routes(app)
    routes_cases.add_routes(app)
    routes_compose.add_routes(app)
    routes_live.add_routes(app)
    app.cleanup_ctx.append(_idle_watcher)
    return app


async def serve(settings: DeskSettings, *, port: int = 0, announce: Callable[[str], None] = print) -> None:
    """Serve the desk on 127.0.0.1 until cancelled; `announce` gets the first URL."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        bound = runner.addresses[0][1]
        announce(f"http://127.0.0.1:{bound}/start?token={app[GATE].start_token}")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()

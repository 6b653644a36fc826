"""The desk's gate: who may talk to it and how.

Invariants:
- The desk listens on 127.0.0.1 only, and answers only requests whose Host is exactly that
  address and port (a rebound DNS name is refused).
- The first URL carries a random per-start token; `/start?token=...` exchanges it (compared in
  constant time) for a session cookie that is HttpOnly and SameSite=Strict. Every other page
  needs that session; static files and fonts hold nothing secret and need none.
- Every POST carries the session's CSRF token (a form field `csrf`, or the `X-CSRF-Token` header
  from the desk's own script) and an Origin equal to the desk's own; any request that a browser
  marks as coming from another site (`Sec-Fetch-Site` other than same-origin or none) is refused.
  Multipart posts are allowed only on routes that check the token as the first part themselves.
- Every answer has a strict Content-Security-Policy (only the desk's own script, styles, fonts
  and images; no inline script, no eval, no framing) and is never cached.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from protocol.primitives import equal

COOKIE = "cb_desk_session"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
PUBLIC_PREFIXES = ("/static/", "/fonts/")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class DeskSession:
    """One browser's session: its CSRF token, language and the officer it works as."""

    session_id: str
    csrf: str
    language: str
    last_active: float
    officer: str = ""
    drafts: dict[str, object] = field(default_factory=dict)


class Gate:
    """The start token and the sessions it was exchanged for."""

    def __init__(self, default_language: str) -> None:
        self.start_token = secrets.token_urlsafe(32)
        self.default_language = default_language
        self.sessions: dict[str, DeskSession] = {}
        self.multipart_routes: set[str] = set()

    def exchange(self, token: str, now: float) -> DeskSession | None:
        if not equal(token.encode(), self.start_token.encode()):
            return None
        session = DeskSession(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.default_language, now
        )
        self.sessions[session.session_id] = session
        return session

    def session_of(self, request: web.Request) -> DeskSession | None:
        sid = request.cookies.get(COOKIE, "")
        for known, session in self.sessions.items():
            if equal(sid.encode(), known.encode()):
                return session
        return None

    def check_csrf(self, session: DeskSession, token: str) -> bool:
        return bool(token) and equal(token.encode(), session.csrf.encode())


def own_origin(request: web.Request) -> str | None:
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if not sock:
        return None
    return f"127.0.0.1:{sock[1]}"


def refuse(reason: str) -> web.Response:
    return web.Response(status=403, text=f"Refused: {reason}.\n", content_type="text/plain")


def set_session_cookie(response: web.StreamResponse, session: DeskSession) -> None:
    response.set_cookie(COOKIE, session.session_id, httponly=True, samesite="Strict", path="/")


def gate_middleware(
    gate: Gate, session_key: web.RequestKey[DeskSession]
) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = own_origin(request)
        if host is None or request.host != host:
            return refuse("this desk answers only at its own address (127.0.0.1)")
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            return refuse("a request from another site")
        if request.method not in ("GET", "HEAD") and request.headers.get("Origin") != f"http://{host}":
            return refuse("a form from another origin")
        if request.path.startswith(PUBLIC_PREFIXES) or request.path == "/start":
            return await handler(request)
        session = gate.session_of(request)
        if session is None:
            return refuse("open the desk with the address it printed when it started")
        request[session_key] = session
        if request.method not in ("GET", "HEAD"):
            if request.content_type.startswith("multipart/"):
                if request.path not in gate.multipart_routes:
                    return refuse("an unexpected upload")
            else:
                token = request.headers.get("X-CSRF-Token", "")
                if not token:
                    form = await request.post()
                    value = form.get("csrf", "")
                    token = value if isinstance(value, str) else ""
                if not gate.check_csrf(session, token):
                    return refuse("the form's security token is missing or wrong")
        return await handler(request)

    return middleware


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as e:
        response = e
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if not request.path.startswith(PUBLIC_PREFIXES):
        response.headers["Cache-Control"] = "no-store"
    if isinstance(response, web.HTTPException):
        raise response
    return response

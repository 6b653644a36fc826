"""Typed keys for what the app and each request carry."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from aiohttp import web

from broker.service.context import Services
from broker.service.inbox import Inbox
from broker.service.receipts import ReceiptDesk
from broker.service.retention import Retention
from broker.service.submission import Submission
from broker.web.drain import Drain
from broker.web.limits import AgencyLimiter, RateLimiter
from broker.web.shared_limits import SharedRateLimiter
from protocol.certificate import AgencyCertificate


@dataclass(frozen=True, slots=True)
class Handlers:
    """The services the handlers call, built once per app."""

    services: Services
    submission: Submission
    inbox: Inbox
    receipts: ReceiptDesk
    retention: Retention
    rate_limiter: AgencyLimiter

    @classmethod
    def build(cls, services: Services) -> Handlers:
        settings = services.settings
        shared = services.store.shared
        limiter: AgencyLimiter = (
            RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
            if shared is None
            else SharedRateLimiter(shared, settings.rate_limit_per_minute, settings.rate_limit_burst)
        )
        return cls(
            services=services,
            submission=Submission(services),
            inbox=Inbox(services),
            receipts=ReceiptDesk(services),
            retention=Retention(services),
            rate_limiter=limiter,
        )


class OpenSockets:
    """The app's open WebSockets (weakly held), closed at shutdown."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    def add(self, ws: web.WebSocketResponse) -> None:
        self._sockets.add(ws)

    def all(self) -> list[web.WebSocketResponse]:
        return list(self._sockets)


HANDLERS = web.AppKey("casebridge_handlers", Handlers)
DRAIN = web.AppKey("casebridge_drain", Drain)
WEBSOCKETS = web.AppKey("casebridge_websockets", OpenSockets)

REQUEST_ID = web.RequestKey("casebridge_request_id", str)
CALLER = web.RequestKey("casebridge_caller", AgencyCertificate)
BODY = web.RequestKey("casebridge_body", bytes)
STREAM_STARTED = web.RequestKey("casebridge_stream_started", bool)
CONTENT_DIGEST = web.RequestKey("casebridge_content_digest", str)
"""Request keys: the request id, the authenticated certificate, a small body already read and
checked against its Content-Digest, whether a handler began streaming its response (an error
after that closes the connection instead), and the signed Content-Digest of a streamed body."""


def caller(request: web.Request) -> AgencyCertificate:
    found: AgencyCertificate | None = request.get(CALLER)
    if found is None:
        raise AssertionError("unreachable: every /v1 handler runs after authentication")
    return found


def body(request: web.Request) -> bytes:
    found: bytes | None = request.get(BODY)
    if found is None:
        raise AssertionError("unreachable: small bodies are read and checked by the middleware")
    return found


def handlers(request: web.Request) -> Handlers:
    return request.app[HANDLERS]

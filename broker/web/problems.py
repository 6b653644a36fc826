"""The outermost middleware: request id, logging, latency, and RFC 9457 problem details.

Invariants:
- Every response carries `X-Request-Id`: the caller's if well-formed, else a new one (set in
  `on_response_prepare`, so streamed and WebSocket responses carry it too).
- Every `CaseBridgeError` becomes `application/problem+json` with its stable code, status,
  title and detail (crypto and authentication errors keep their reason out of the detail).
- Anything else becomes a generic 500 `internal`; its details go to the log only.
- Every request ends with one `request` log line: route, method, status, duration.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from broker.logs import AGENCY_ID
from broker.logs import REQUEST_ID as REQUEST_ID_VAR
from broker.web.limits import RateLimitExceeded
from broker.web.state import DRAIN, HANDLERS, REQUEST_ID, STREAM_STARTED
from protocol.errors import (
    CaseBridgeError,
    ErrorCode,
    InputError,
    InvalidField,
    MalformedInput,
    NotFound,
    StorageUnavailable,
    TooLarge,
)

PROBLEM_TYPE = "application/problem+json"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
STORAGE_RETRY_AFTER_SECONDS = 1

log = logging.getLogger("casebridge.broker.http")


class MethodNotAllowed(InputError):
    code = ErrorCode.MALFORMED_INPUT
    status = 405
    title = "Method not allowed"
    remedy = "Use the method docs/http-api.md gives for this path."


class RangeNotSatisfiable(InputError):
    status = 416
    title = "Range not satisfiable"
    remedy = "Ask for a byte range within the part's length."

    def __init__(self, length: int) -> None:
        self.length = length
        super().__init__(reason=f"the part has {length} bytes")


def _from_http(e: web.HTTPException) -> CaseBridgeError:
    if isinstance(e, web.HTTPNotFound):
        return NotFound(reason="no such path")
    if isinstance(e, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(reason=f"{e.method} is not allowed here")
    if isinstance(e, web.HTTPRequestEntityTooLarge):
        return TooLarge(reason="request body too large")
    return MalformedInput(reason=f"HTTP {e.status}: {e.reason}")


def problem_details(error: CaseBridgeError) -> dict[str, Any]:
    """The RFC 9457 members of a refusal (without the request id)."""
    body: dict[str, Any] = {
        "type": f"urn:casebridge:problem:{error.code}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": str(error.code),
    }
    if isinstance(error, InvalidField):
        body["field"] = error.field
    return body


def problem_response(error: CaseBridgeError, request_id: str) -> web.Response:
    body = problem_details(error)
    body["request_id"] = request_id
    headers: dict[str, str] = {}
    if isinstance(error, RateLimitExceeded):
        headers["Retry-After"] = str(error.retry_after_seconds)
    elif isinstance(error, StorageUnavailable):
        headers["Retry-After"] = str(STORAGE_RETRY_AFTER_SECONDS)
    elif isinstance(error, RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{error.length}"
    return web.json_response(body, status=error.status, content_type=PROBLEM_TYPE, headers=headers)


def _route_name(request: web.Request) -> str:
    route = request.match_info.route
    return route.name or "unmatched"


def _refusal(request: web.Request, e: Exception, request_id: str) -> web.Response:
    metrics = request.app[HANDLERS].services.metrics
    if isinstance(e, CaseBridgeError):
        metrics.refusals.labels(code=str(e.code)).inc()
        level = logging.ERROR if e.status >= 500 else logging.INFO
        log.log(level, "request_refused", extra={"code": str(e.code), "status": e.status, "reason": e.reason})
        return problem_response(e, request_id)
    log.error("unhandled_error", exc_info=e, extra={"route": _route_name(request)})
    metrics.refusals.labels(code=str(ErrorCode.INTERNAL)).inc()
    return problem_response(CaseBridgeError(), request_id)


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    offered = request.headers.get("X-Request-Id", "")
    request_id = offered if _REQUEST_ID.fullmatch(offered) else secrets.token_hex(12)
    request[REQUEST_ID] = request_id
    REQUEST_ID_VAR.set(request_id)
    AGENCY_ID.set(None)
    metrics = request.app[HANDLERS].services.metrics
    loop = asyncio.get_running_loop()
    started = loop.time()
    response: web.StreamResponse
    drain = request.app[DRAIN]
    entered = False
    try:
        try:
            drain.enter()
            entered = True
            response = await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            raise _from_http(e) from e
    except Exception as e:
        if request.get(STREAM_STARTED):
            log.warning("stream_aborted", extra={"error": type(e).__name__})
            raise
        response = _refusal(request, e, request_id)
    finally:
        if entered:
            drain.leave()
    elapsed = loop.time() - started
    route = _route_name(request)
    metrics.request_latency.labels(route=route, method=request.method).observe(elapsed)
    log.info(
        "request",
        extra={
            "method": request.method,
            "route": route,
            "status": response.status,
            "duration_ms": round(elapsed * 1000, 3),
        },
    )
    return response


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: stamp every response, streamed ones included."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers["X-Request-Id"] = request_id

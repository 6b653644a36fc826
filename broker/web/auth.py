"""Authentication, authorisation, limits and timeouts for every `/v1` request.

Invariants (docs/http-api.md, Authentication):
- No `/v1` request reaches a handler without a valid RFC 9421 signature by a registered
  certificate that verifies now against the configured roots, `created` within the allowed
  skew, and a nonce not seen within the window; each refusal is 401 `unauthenticated`,
  counted, and logged with its reason.
- The `@authority` checked is the configured public authority, never the Host header.
- Roles come from the certificate; a route without a role entry is refused (fail closed).
- Rate limits apply after the signature is verified (the agency is known) and before the
  nonce is stored, so a flood of refused requests writes nothing.
- A small body is read (bounded by the app's client_max_size) and checked against its signed
  Content-Digest before the handler runs; the envelope route streams and checks it as it goes.
- Handlers run under a time limit, lengthened by a long poll's wait; streaming routes (upload,
  download, WebSocket) are bounded by idle timeouts instead.
"""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import web
from aiohttp.typedefs import Handler

from broker.logs import AGENCY_ID
from broker.service.inbox import MAX_WAIT_SECONDS
from broker.web.audit_routes import ROUTE_ROLES as AUDIT_ROUTE_ROLES
from broker.web.state import BODY, CALLER, CONTENT_DIGEST, HANDLERS
from protocol import httpsig
from protocol.certificate import AgencyCertificate, Role
from protocol.errors import AuthError, Forbidden, StorageUnavailable

ANY_ROLE = frozenset(Role)
AGENCY = frozenset({Role.AGENCY})
OPERATOR = frozenset({Role.OPERATOR})
ROUTE_ROLES: dict[str, frozenset[Role]] = {
    "directory": ANY_ROLE,
    "directory_agency": ANY_ROLE,
    "register_certificate": OPERATOR,
    "register_revocations": OPERATOR,
    "register_encryption_key": AGENCY,
    "submit_envelope": AGENCY,
    "envelope_status": AGENCY,
    "inbox": AGENCY,
    "inbox_header": AGENCY,
    "inbox_part": AGENCY,
    "post_receipt": AGENCY,
    "post_receipts": AGENCY,
    "receipt_feed": AGENCY,
    "events": AGENCY,
    **AUDIT_ROUTE_ROLES,
}
STREAMING_ROUTES = frozenset({"submit_envelope", "inbox_part", "events"})
LONG_POLL_ROUTES = frozenset({"inbox", "receipt_feed"})


def _split_target(raw: str) -> tuple[str, str]:
    path, _, query = raw.partition("?")
    return path, query


async def _authenticate(request: web.Request) -> tuple[AgencyCertificate, httpsig.VerifiedRequest]:
    services = request.app[HANDLERS].services
    now = services.clock.now()
    skew = services.settings.clock_skew_seconds
    path, query = _split_target(request.raw_path)
    parsed = httpsig.parse_signature(request.headers)
    cert = services.directory.authenticate(parsed.key_id, now)
    verified = httpsig.verify_request(
        parsed,
        method=request.method,
        authority=services.settings.authority,
        path=path,
        query=query,
        headers=request.headers,
        has_body=request.body_exists,
        public_key=cert.signing_key,
        now=now,
        scheme=services.settings.scheme,
        max_skew_seconds=skew,
        max_age_seconds=skew,
    )
    return cert, verified


def _time_limit(request: web.Request, route: str) -> float | None:
    settings = request.app[HANDLERS].services.settings
    if route in STREAMING_ROUTES:
        return None
    extra = 0
    if route in LONG_POLL_ROUTES:
        wait = request.query.get("wait", "0")
        # ASCII digits only, as `query_int` takes them: `str.isdigit` also accepts "²", which `int`
        # refuses, and `int` refuses over 4300 digits; the handler answers those with a 400.
        if wait.isascii() and wait.isdigit() and len(wait) <= 19:
            extra = min(int(wait), MAX_WAIT_SECONDS)
    return float(settings.request_timeout_seconds + extra)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not (request.path == "/v1" or request.path.startswith("/v1/")):
        return await handler(request)
    h = request.app[HANDLERS]
    services = h.services
    try:
        cert, verified = await _authenticate(request)
        AGENCY_ID.set(cert.agency_id)
        await h.rate_limiter.admit(cert.agency_id, asyncio.get_running_loop().time())
        fresh = await services.store.nonces.remember(
            verified.key_id, verified.nonce, verified.replay_window_end + 1, services.clock.now()
        )
        if not fresh:
            raise AuthError(reason="nonce already used within the replay window")
    except AuthError:
        services.metrics.authentication_failures.inc()
        raise
    match = request.match_info
    if match.http_exception is not None:
        raise match.http_exception
    route = match.route.name or ""
    roles = ROUTE_ROLES.get(route, frozenset())
    if not any(cert.has_role(role) for role in roles):
        raise Forbidden(
            reason=f"{route or 'this route'} needs one of the roles {sorted(str(r) for r in roles)}"
        )
    request[CALLER] = cert
    if route == "submit_envelope":
        if verified.content_digest is not None:
            request[CONTENT_DIGEST] = verified.content_digest
    elif request.body_exists:
        body = await request.read()
        httpsig.verify_content_digest(verified.content_digest, hashlib.sha256(body).digest())
        request[BODY] = body
    else:
        request[BODY] = b""
    limit = _time_limit(request, route)
    if limit is None:
        return await handler(request)
    try:
        async with asyncio.timeout(limit):
            return await handler(request)
    except TimeoutError as e:
        raise StorageUnavailable(reason=f"{route} took longer than {limit:.0f} s") from e

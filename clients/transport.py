"""Signed HTTP to the broker: every request signed, every refusal a typed error, retries bounded.

Invariants:
- Every `/v1` request carries an RFC 9421 signature by the agency's certified signing key
  (`protocol.httpsig`), with `created` from the injected clock and a fresh 16-byte nonce from
  the injected random source; a retry is signed again (new nonce), never replayed.
- Every request with a body carries its Content-Digest, computed before the first byte is sent
  (bodies from files are digested by streaming over them, never loaded whole).
- A broker refusal (RFC 9457 problem details) becomes the `CaseBridgeError` subclass named by its
  `code`, carrying the problem as `.problem` and the HTTP status; connection failures become
  `UpstreamUnavailable`. `transient(e)` says whether trying again may help (5xx, 408, 429, no
  connection); everything else is final.
- Retries back off exponentially with jitter, honour Retry-After, and stop after
  `RetryPolicy.max_attempts`: every loop is bounded.
- Response bodies read into memory are bounded (`MAX_RESPONSE_BYTES`); downloads stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import nacl.signing
from multidict import CIMultiDictProxy
from yarl import URL

from protocol import httpsig
from protocol.errors import (
    AuthError,
    CaseBridgeError,
    CertificateExpired,
    CertificateNotYetValid,
    Conflict,
    DecryptionFailed,
    EnvelopeExpired,
    ErrorCode,
    Forbidden,
    InputError,
    InvalidField,
    KeyRevoked,
    MalformedInput,
    NotARecipient,
    NotFound,
    RateLimited,
    Replayed,
    RequestTimeout,
    StorageUnavailable,
    TooLarge,
    UnsupportedVersion,
    UntrustedCertificate,
    UpstreamUnavailable,
    VerificationError,
)
from protocol.primitives import Random, system_random

log = logging.getLogger("casebridge.client.transport")
WEBSOCKET_HEARTBEAT_SECONDS = 30.0

MAX_RESPONSE_BYTES = 32 << 20
MAX_TIMEOUTS_HELD = 16
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 90.0
Clock = Callable[[], int]
Sleep = Callable[[float], Awaitable[None]]

_ERRORS: dict[ErrorCode, type[CaseBridgeError]] = {
    ErrorCode.MALFORMED_INPUT: MalformedInput,
    ErrorCode.INVALID_FIELD: InvalidField,
    ErrorCode.TOO_LARGE: TooLarge,
    ErrorCode.CONFLICT: Conflict,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.RATE_LIMITED: RateLimited,
    ErrorCode.TIMEOUT: RequestTimeout,
    ErrorCode.UNAUTHENTICATED: AuthError,
    ErrorCode.FORBIDDEN: Forbidden,
    ErrorCode.STORAGE_UNAVAILABLE: StorageUnavailable,
    ErrorCode.UPSTREAM_UNAVAILABLE: UpstreamUnavailable,
    ErrorCode.BAD_SIGNATURE: VerificationError,
    ErrorCode.DECRYPTION_FAILED: DecryptionFailed,
    ErrorCode.UNTRUSTED_CERTIFICATE: UntrustedCertificate,
    ErrorCode.CERTIFICATE_EXPIRED: CertificateExpired,
    ErrorCode.CERTIFICATE_NOT_YET_VALID: CertificateNotYetValid,
    ErrorCode.KEY_REVOKED: KeyRevoked,
    ErrorCode.NOT_A_RECIPIENT: NotARecipient,
    ErrorCode.ENVELOPE_EXPIRED: EnvelopeExpired,
    ErrorCode.REPLAYED: Replayed,
    ErrorCode.UNSUPPORTED_VERSION: UnsupportedVersion,
}


_BY_STATUS: dict[int, type[CaseBridgeError]] = {
    401: AuthError,
    403: Forbidden,
    404: NotFound,
    408: RequestTimeout,
    409: Conflict,
    413: TooLarge,
    422: VerificationError,
    429: RateLimited,
    503: StorageUnavailable,
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a request that may succeed later."""

    max_attempts: int = 6
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0

    def delay(self, attempt: int, rng: Random, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1`: exponential, with "equal jitter"
        (half fixed, half random), or the broker's Retry-After when it gave one."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay_seconds)
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * float(1 << min(attempt, 30)))
        fraction = int.from_bytes(rng(4), "big") / 2**32
        return ceiling / 2 + fraction * ceiling / 2


def transient(error: CaseBridgeError) -> bool:
    """Whether the same request may succeed later (the broker unreachable, busy or failing, or
    a request that stalled on the way and timed out there, 408)."""
    return error.status >= 500 or error.status in (408, 429)


def problem_error(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> CaseBridgeError:
    """The typed error for a refused request, from its problem details (RFC 9457)."""
    problem: dict[str, Any] = {}
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        parsed = json.loads(body.decode("utf-8")) if body else {}
        if isinstance(parsed, dict):
            problem = parsed
    return problem_details_error(status, problem, (headers or {}).get("Retry-After"))


def problem_details_error(
    status: int, problem: Mapping[str, Any], retry_after: str | None = None
) -> CaseBridgeError:
    """The typed error for problem details already decoded (a refused request, or one refused
    item of a batch answer), with the status it came with."""
    code_text = problem.get("code")
    try:
        code = ErrorCode(str(code_text))
    except ValueError:
        # No problem code (a proxy's bare answer, say): the status alone names the error.
        by_status = _BY_STATUS.get(status)
        fallback = ErrorCode.INTERNAL if status >= 500 else ErrorCode.INVALID_FIELD
        code = by_status.code if by_status is not None else fallback
    cls = _ERRORS.get(code) or _BY_STATUS.get(status) or (CaseBridgeError if status >= 500 else InputError)
    detail = problem.get("detail")
    if not isinstance(detail, str) or not detail:
        detail = cls.remedy if cls is not CaseBridgeError else f"the broker answered HTTP {status}."
    error = cls.__new__(cls)
    CaseBridgeError.__init__(error, detail, reason=f"broker {status} {code}")
    error.status = status
    error.code = code
    if isinstance(problem.get("title"), str):
        error.title = problem["title"]
    if isinstance(error, InvalidField):
        error.field = str(problem.get("field", ""))
    # The problem and the Retry-After travel with the error (CaseBridgeError has no slots).
    vars(error)["problem"] = {**problem, "status": status, "code": str(code), "detail": detail}
    vars(error)["retry_after"] = _retry_after(retry_after)
    return error


def problem_of(error: CaseBridgeError) -> dict[str, Any]:
    """The problem details a broker error carries, or one made from a local error."""
    problem = vars(error).get("problem")
    if isinstance(problem, dict):
        return problem
    return {"status": error.status, "code": str(error.code), "title": error.title, "detail": error.detail}


def retry_after_of(error: CaseBridgeError) -> float | None:
    """The seconds the broker asked to wait (Retry-After) before trying again, if it did."""
    value = vars(error).get("retry_after")
    return value if isinstance(value, float) else None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(int(value.strip()))
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass(frozen=True, slots=True)
class BrokerResponse:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise MalformedInput(reason="broker answer is not JSON") from e


@dataclass(frozen=True, slots=True)
class Body:
    """A request body: its length, Content-Type, Content-Digest value, and a factory for its
    bytes (called once per attempt, so a retry streams the same bytes again). A body held in
    memory (`of`) also keeps its bytes, which are sent as they are."""

    length: int
    content_type: str
    digest: str
    chunks: Callable[[], AsyncIterator[bytes]]
    data: bytes | None = None

    @classmethod
    def of(cls, data: bytes, content_type: str) -> Body:
        async def once() -> AsyncIterator[bytes]:
            yield data

        return cls(len(data), content_type, httpsig.content_digest(data), once, data)


class BrokerTransport:
    """One broker, one agency signing key, one aiohttp session."""

    def __init__(
        self,
        broker_url: str,
        signing_key: nacl.signing.SigningKey,
        *,
        clock: Clock,
        rng: Random = system_random,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        url = URL(broker_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidField("broker", "an http:// or https:// URL such as https://broker.example")
        self.base = url.with_query(None).with_fragment(None)
        self._prefix = self.base.raw_path.rstrip("/")
        self._origin = str(self.base.origin())
        self._authority_text = self._authority()
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._signing_key = signing_key
        self._clock = clock
        self._rng = rng
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=READ_TIMEOUT_SECONDS
            )
            self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def pause(self, attempt: int, retry_after: float | None = None) -> None:
        await self._sleep(self.retry.delay(attempt, self._rng, retry_after))

    # --- building signed requests ------------------------------------------------------------

    def _target(self, path: str, query: Mapping[str, str | int] | None) -> tuple[URL, str, str]:
        raw_path = self._prefix + quote(path, safe="/")
        raw_query = urlencode(sorted((k, str(v)) for k, v in query.items()), quote_via=quote) if query else ""
        url = URL(self._origin + raw_path + (f"?{raw_query}" if raw_query else ""), encoded=True)
        return url, raw_path, raw_query

    def _authority(self) -> str:
        host = self.base.raw_host or ""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        port = self.base.explicit_port
        return host if port is None else f"{host}:{port}"

    def _sign(
        self, method: str, raw_path: str, raw_query: str, body: Body | None, extra: Mapping[str, str]
    ) -> dict[str, str]:
        # Bytes as stored: no content coding, so Range offsets and digests mean what they say.
        headers = {"Accept-Encoding": "identity", **extra}
        if body is not None:
            headers["Content-Type"] = body.content_type
            headers["Content-Digest"] = body.digest
            headers["Content-Length"] = str(body.length)
        signed = httpsig.sign_request(
            self._signing_key,
            method=method,
            authority=self._authority_text,
            path=raw_path,
            query=raw_query,
            headers={k: v for k, v in headers.items() if k.lower() in ("content-type", "content-digest")},
            has_body=body is not None,
            created=self._clock(),
            nonce=self._rng(httpsig.NONCE_BYTES),
            scheme=self.base.scheme,
        )
        headers.update(signed.as_dict())
        return headers

    # --- requests ----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        body: Body | None = None,
        headers: Mapping[str, str] | None = None,
        attempts: int | None = None,
        read_timeout_seconds: float | None = None,
    ) -> BrokerResponse:
        """Send a signed request, retrying transient failures; returns a 2xx answer or raises
        the typed error (after the last attempt, for transient ones)."""
        limit = attempts if attempts is not None else self.retry.max_attempts
        last: CaseBridgeError | None = None
        for attempt in range(max(limit, 1)):
            if attempt:
                await self.pause(attempt - 1, None if last is None else retry_after_of(last))
            try:
                return await self._once(method, path, query, body, headers or {}, read_timeout_seconds)
            except CaseBridgeError as e:
                if not transient(e):
                    raise
                log.info("broker_request_retry", extra={"path": path, "attempt": attempt, "reason": e.reason})
                last = e
        assert last is not None
        raise last

    async def _once(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None,
        body: Body | None,
        extra: Mapping[str, str],
        read_timeout_seconds: float | None,
    ) -> BrokerResponse:
        url, raw_path, raw_query = self._target(path, query)
        headers = self._sign(method, raw_path, raw_query, body, extra)
        timeout = self._timeout(read_timeout_seconds or READ_TIMEOUT_SECONDS)
        data = None if body is None else body.data if body.data is not None else body.chunks()
        try:
            async with self.session.request(
                method, url, headers=headers, data=data, timeout=timeout, allow_redirects=False
            ) as resp:
                data = await _read_bounded(resp)
                if resp.status >= 300:
                    raise problem_error(resp.status, data, resp.headers)
                return BrokerResponse(resp.status, resp.headers, data)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise UpstreamUnavailable(
                f"cannot reach the broker at {self.base} ({type(e).__name__}). Check the network; "
                "outgoing referrals stay in the outbox.",
                reason=f"{method} {path}: {type(e).__name__}: {e}",
            ) from e

    def _timeout(self, read_seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(read_seconds)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=read_seconds
            )
            if len(self._timeouts) < MAX_TIMEOUTS_HELD:
                self._timeouts[read_seconds] = timeout
        return timeout

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, *, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A signed GET whose answer is read as it arrives (one attempt: the caller resumes)."""
        url, raw_path, raw_query = self._target(path, None)
        signed = self._sign("GET", raw_path, raw_query, None, headers or {})
        try:
            async with self.session.get(url, headers=signed, allow_redirects=False) as resp:
                if resp.status >= 300:
                    raise problem_error(resp.status, await _read_bounded(resp), resp.headers)
                yield resp
        # Not OSError at large: the caller's own file errors (a full disk) are no network failure.
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
            raise UpstreamUnavailable(
                f"the connection to the broker at {self.base} broke ({type(e).__name__}); it resumes "
                "where it stopped.",
                reason=f"GET {path}: {type(e).__name__}: {e}",
            ) from e

    async def websocket(self, path: str) -> aiohttp.ClientWebSocketResponse:
        """Open a WebSocket with a signed upgrade request. The client pings every
        `WEBSOCKET_HEARTBEAT_SECONDS` and closes the socket when no answer comes within half
        that, so a connection that died without a close does not look open for ever."""
        url, raw_path, raw_query = self._target(path, None)
        signed = self._sign("GET", raw_path, raw_query, None, {})
        ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
        try:
            return await self.session.ws_connect(
                ws_url, headers=signed, autoping=True, heartbeat=WEBSOCKET_HEARTBEAT_SECONDS
            )
        except aiohttp.WSServerHandshakeError as e:
            raise problem_error(e.status, b"", None) from e
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise UpstreamUnavailable(reason=f"events: {type(e).__name__}: {e}") from e


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    length = resp.content_length
    if length is not None and length <= MAX_RESPONSE_BYTES:
        # A declared length within the bound: aiohttp reads no more than it.
        return await resp.read()
    data = bytearray()
    async for chunk in resp.content.iter_chunked(64 << 10):
        data += chunk
        if len(data) > MAX_RESPONSE_BYTES:
            raise TooLarge(reason=f"broker answer larger than {MAX_RESPONSE_BYTES} bytes")
    return bytes(data)

"""A minimal signed-request helper for broker tests (not a client library).

Signs each request with `protocol.httpsig` exactly as the contract says: the agency's signing
key, `created` from the clock the test gives, a fresh nonce, Content-Digest on every body.
`raw_request` lets attack tests send what an honest client never would.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import nacl.signing
from multidict import CIMultiDictProxy

from protocol import httpsig


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def problem(self) -> dict[str, Any]:
        """The problem details of a refusal (asserting the media type)."""
        assert self.headers.get("Content-Type", "").startswith("application/problem+json"), self.headers
        found: dict[str, Any] = self.json()
        return found


class SignedClient:
    """Signed requests to one broker as one agency key (`signing_key` may be None: unsigned)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        authority: str,
        signing_key: nacl.signing.SigningKey | None,
        clock: Callable[[], int],
        *,
        scheme: str = "http",
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.authority = authority
        self.signing_key = signing_key
        self.clock = clock
        self.scheme = scheme

    def sign(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        has_body: bool,
        *,
        nonce: bytes | None = None,
    ) -> dict[str, str]:
        if self.signing_key is None:
            return {}
        signed = httpsig.sign_request(
            self.signing_key,
            method=method,
            authority=self.authority,
            path=path,
            query=query,
            headers=headers,
            has_body=has_body,
            created=self.clock(),
            nonce=nonce if nonce is not None else secrets.token_bytes(httpsig.NONCE_BYTES),
            scheme=self.scheme,
        )
        return signed.as_dict()

    def prepare(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        nonce: bytes | None = None,
    ) -> tuple[str, dict[str, str]]:
        """The URL and headers (signature included) of a request."""
        query_text = urlencode({k: str(v) for k, v in (query or {}).items()})
        headers: dict[str, str] = {}
        if body is not None:
            headers["Content-Digest"] = httpsig.content_digest(body)
            if content_type is not None:
                headers["Content-Type"] = content_type
        headers.update(self.sign(method, path, query_text, headers, body is not None, nonce=nonce))
        url = self.base_url + path + (f"?{query_text}" if query_text else "")
        return url, headers

    async def raw_request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Reply:
        async with self.session.request(
            method, url, headers=dict(headers), data=body, skip_auto_headers=("Content-Type",)
        ) as response:
            return Reply(response.status, response.headers, await response.read())

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        url, signed = self.prepare(method, path, query=query, body=body, content_type=content_type)
        return await self.raw_request(method, url, {**signed, **(headers or {})}, body)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, body: bytes, content_type: str, **kwargs: Any) -> Reply:
        return await self.request("POST", path, body=body, content_type=content_type, **kwargs)

    async def websocket(self, path: str = "/v1/events") -> aiohttp.ClientWebSocketResponse:
        url, headers = self.prepare("GET", path)
        return await self.session.ws_connect(url, headers=headers, autoping=True)

"""A streamed request body for the envelope route: bounded reads, an idle timeout, and the
Content-Digest checked over exactly the bytes the service consumed."""

from __future__ import annotations

import asyncio

from aiohttp import StreamReader

from protocol import httpsig
from protocol.errors import MalformedInput, RequestTimeout


class StreamedBody:
    """Implements `broker.service.submission.BodySource` over an aiohttp request stream."""

    def __init__(
        self, content: StreamReader, content_digest: str | None, idle_timeout_seconds: float
    ) -> None:
        self._content = content
        self._expected = content_digest
        self._idle = idle_timeout_seconds
        self._digest = httpsig.ContentDigest()
        self.received = 0

    def _account(self, data: bytes) -> bytes:
        self._digest.update(data)
        self.received += len(data)
        return data

    async def read_exactly(self, n: int) -> bytes:
        try:
            async with asyncio.timeout(self._idle):
                return self._account(await self._content.readexactly(n))
        except asyncio.IncompleteReadError as e:
            raise MalformedInput(reason="the body ended before the envelope did") from e
        except TimeoutError as e:
            raise RequestTimeout(reason=f"no data for {self._idle:.0f} s") from e

    async def read_some(self, max_bytes: int) -> bytes:
        try:
            async with asyncio.timeout(self._idle):
                data = await self._content.read(max_bytes)
        except TimeoutError as e:
            raise RequestTimeout(reason=f"no data for {self._idle:.0f} s") from e
        if not data:
            raise MalformedInput(reason="the body ended before the envelope did")
        return self._account(data)

    async def finish(self) -> None:
        try:
            async with asyncio.timeout(self._idle):
                extra = await self._content.read(1)
        except TimeoutError as e:
            raise RequestTimeout(reason=f"no data for {self._idle:.0f} s") from e
        if extra:
            raise MalformedInput(reason="bytes after the envelope's last part")
        httpsig.verify_content_digest(self._expected, self._digest.finish())

"""Graceful stop: finish what is in flight, refuse what is new.

aiohttp's own shutdown stops reading from connections at once, which would cut off an upload in
progress; so the broker drains first. `Drain.start` makes every new request a 503 (with
`Retry-After`) while requests already running go on, bodies included; `wait_idle` returns when
none is left (or at the timeout). Long polls are woken and WebSockets closed by the app's
shutdown hooks, which the serve loop calls before waiting.
"""

from __future__ import annotations

import asyncio
import contextlib

from protocol.errors import StorageUnavailable


class ShuttingDown(StorageUnavailable):
    title = "Shutting down"
    remedy = "The broker is restarting; retry after the time given in Retry-After."


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def enter(self) -> None:
        if self.draining:
            raise ShuttingDown(reason="the broker is draining before it stops")
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    def start(self) -> None:
        self.draining = True

    async def wait_idle(self, timeout_seconds: float) -> bool:
        """True if every request in flight finished within the timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_seconds):
                await self._idle.wait()
        return self._idle.is_set()

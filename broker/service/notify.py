"""Wake-ups for long polls and hints for WebSocket subscribers, per agency and topic.

Invariants:
- A hint is published only after the change it announces committed, so whoever wakes and
  reads finds it.
- `generation` is read before a poll's query and `wait` returns at once if it moved since:
  a change committed between the query and the wait is never missed.
- Hints are best effort: a subscriber's queue is bounded, and when it is full the hint is
  dropped (the client catches up through the endpoints); nothing here is a record.
- One channel per (agency, topic) that some caller polled or subscribed to; publishing to an
  agency nobody listens for costs a dictionary lookup.
- `close` (at shutdown) wakes every long poll, so a graceful stop never waits for one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SUBSCRIBER_QUEUE_SIZE = 256


class Topic(StrEnum):
    INBOX = "inbox"
    RECEIPTS = "receipt"


Hint = Mapping[str, Any]


@dataclass(slots=True)
class _Channel:
    generation: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Notifier:
    def __init__(self) -> None:
        self._channels: dict[tuple[str, Topic], _Channel] = {}
        self._subscribers: dict[str, set[asyncio.Queue[Hint]]] = {}
        self._closed = False

    def _channel(self, agency_id: str, topic: Topic) -> _Channel:
        key = (agency_id, topic)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _Channel()
        return channel

    def generation(self, agency_id: str, topic: Topic) -> int:
        return self._channel(agency_id, topic).generation

    async def wait(self, agency_id: str, topic: Topic, seen: int, timeout_seconds: float) -> None:
        """Return when the channel moved past generation `seen`, or after the timeout."""
        channel = self._channel(agency_id, topic)
        if self._closed or channel.generation != seen or timeout_seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_seconds):
                await channel.changed.wait()

    def publish(self, agency_id: str, topic: Topic, hint: Hint) -> None:
        channel = self._channels.get((agency_id, topic))
        if channel is not None:
            channel.generation += 1
            channel.changed.set()
            channel.changed = asyncio.Event()
        for queue in self._subscribers.get(agency_id, ()):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(hint)

    @contextlib.asynccontextmanager
    async def subscribe(self, agency_id: str) -> AsyncIterator[asyncio.Queue[Hint]]:
        """A queue of every hint for `agency_id` while the context is open."""
        queue: asyncio.Queue[Hint] = asyncio.Queue(SUBSCRIBER_QUEUE_SIZE)
        self._subscribers.setdefault(agency_id, set()).add(queue)
        try:
            yield queue
        finally:
            subscribers = self._subscribers.get(agency_id)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del self._subscribers[agency_id]

    def wake_all(self) -> None:
        """Wake every waiting long poll to query again (hints may have been missed)."""
        for channel in self._channels.values():
            channel.generation += 1
            channel.changed.set()
            channel.changed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake every waiting long poll and make later waits return at once (shutting down)."""
        self._closed = True
        for channel in self._channels.values():
            channel.changed.set()

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

"""Changes between replicas: NOTIFY inside the committing transaction, LISTEN on one connection.

Invariants:
- A change is announced with `pg_notify` inside the transaction that makes it (by the writer
  of audited changes, `broker.storage.postgresql.sequencing`), so it is delivered if and only if
  that transaction commits, after it committed: whoever wakes on it and reads finds it.
- Each announcement names the process that made it (`origin`); a process ignores its own (its
  services already told their local listeners), every other one turns it into a `Change`.
- Notifications are hints: a subscriber's queue is bounded, and a full queue or a lost listening
  connection shows as one `RESYNC`, after which the consumer re-reads what it caches.
- The listening connection is its own (not pooled); when it breaks it is made again, with a
  growing pause (at most `MAX_RECONNECT_PAUSE_SECONDS`), until the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from broker.storage.postgresql.database import CONNECT_TIMEOUT_SECONDS, DRIVER_ERRORS, translated
from broker.storage.records import Change, ChangeKind

CHANNEL = "casebridge_changes"
QUEUE_SIZE = 4096
HEALTH_CHECK_SECONDS = 10.0
FIRST_RECONNECT_PAUSE_SECONDS = 0.1
MAX_RECONNECT_PAUSE_SECONDS = 2.0

log = logging.getLogger("casebridge.broker.storage")


def new_origin() -> str:
    return secrets.token_hex(8)


def encode(origin: str, change: Change) -> str:
    return json.dumps(
        {
            "o": origin,
            "k": str(change.kind),
            "a": change.agency_id,
            "e": change.envelope_id.hex(),
            "n": change.position,
        },
        separators=(",", ":"),
    )


def decode(payload: str) -> tuple[str, Change] | None:
    """The origin and change of a notification; None for anything malformed."""
    try:
        item: Any = json.loads(payload)
        change = Change(ChangeKind(item["k"]), str(item["a"]), bytes.fromhex(item["e"]), int(item["n"]))
        return str(item["o"]), change
    except (ValueError, KeyError, TypeError):
        return None


class _Subscription:
    """One consumer's queue of changes, registered when made, dropped when its consumer stops
    (an exception or cancellation while waiting)."""

    def __init__(self, queues: set[asyncio.Queue[Change]]) -> None:
        self._queues = queues
        self._queue: asyncio.Queue[Change] = asyncio.Queue(QUEUE_SIZE)
        queues.add(self._queue)

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Change:
        try:
            return await self._queue.get()
        except BaseException:
            self._queues.discard(self._queue)
            raise


class ChangeListener:
    """LISTENs on its own connection and hands other processes' changes to subscribers."""

    def __init__(self, dsn: str, origin: str) -> None:
        self._dsn = dsn
        self._origin = origin
        self._queues: set[asyncio.Queue[Change]] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start listening; returns once the first connection listens (or raises)."""
        async with translated("listen"):
            conn = await self._connect()
        self._task = asyncio.create_task(self._run(conn), name="casebridge-change-listener")

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        conn = await asyncpg.connect(
            self._dsn,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={"application_name": "casebridge-listen"},
        )
        try:
            await conn.add_listener(CHANNEL, self._on_notification)
        except BaseException:
            await conn.close()
            raise
        return conn

    def _on_notification(self, conn: object, pid: int, channel: str, payload: object) -> None:
        decoded = decode(str(payload))
        if decoded is None:
            log.warning("change_notification_malformed", extra={"bytes": len(str(payload))})
            return
        origin, change = decoded
        if origin != self._origin:
            self._deliver(change)

    def _deliver(self, change: Change) -> None:
        for queue in self._queues:
            try:
                queue.put_nowait(change)
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(Change(ChangeKind.RESYNC))

    async def _watch(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        """Return when `conn` is lost (closed, or not answering a health check)."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        while not conn.is_closed():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEALTH_CHECK_SECONDS):
                    await lost.wait()
                return
            try:
                async with asyncio.timeout(HEALTH_CHECK_SECONDS):
                    await conn.execute("SELECT 1")
            except DRIVER_ERRORS:
                return

    async def _run(self, conn: asyncpg.Connection[asyncpg.Record] | None) -> None:
        pause = FIRST_RECONNECT_PAUSE_SECONDS
        while True:
            if conn is not None:
                try:
                    await self._watch(conn)
                finally:
                    conn.terminate()
                log.warning("change_listener_lost")
                conn = None
            await asyncio.sleep(pause)
            try:
                conn = await self._connect()
            except DRIVER_ERRORS as e:
                pause = min(pause * 2, MAX_RECONNECT_PAUSE_SECONDS)
                log.warning("change_listener_reconnect_failed", extra={"error": type(e).__name__})
                continue
            pause = FIRST_RECONNECT_PAUSE_SECONDS
            log.info("change_listener_reconnected")
            self._deliver(Change(ChangeKind.RESYNC))

    def changes(self) -> AsyncIterator[Change]:
        """A subscription: it receives every change from this call on."""
        return _Subscription(self._queues)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

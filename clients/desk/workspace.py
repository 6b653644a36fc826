"""An unlocked desk: the agency's client, its case index, its attachment vault and the
background work that keeps them current.

Invariants:
- A workspace exists only between unlock and lock; locking cancels the background task, closes
  the client (which closes the databases) and drops the case index, so no decrypted case stays
  in memory.
- The background task, every `sync_interval_seconds` or when woken: refreshes the verified
  directory now and then, sends what waits in the outbox, receives and verifies deliveries
  (a typed referral message's attachments go into the encrypted vault, then the delivery is
  acknowledged, which deletes the client's sealed copy), and pulls receipts. An unreachable
  broker is shown as offline and tried again on the next round; nothing is lost.
- Deliveries that are not typed referral messages are left unacknowledged for
  `casebridge inbox watch`; the desk only counts them.
- A second task, the push listener, holds the broker's push WebSocket open and wakes the sync
  on every hint and once after each (re)connect, so what came while it was down is fetched at
  once. It reconnects with bounded exponential backoff and never ends by itself: a failure is
  logged and tried again. Push only hastens; the periodic sync stays the fallback, so a dropped
  socket or hint loses nothing.
- Watchers (the page's event stream) wait on `next_update`: it returns after any change of the
  sync status, of the case index (`changes` counts those) or when the workspace closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clients.agency import AgencyClient
from clients.case_threads import CaseThread
from clients.desk.attachment_vault import AttachmentVault, UploadSpool, vault_key
from clients.desk.case_index import CaseIndex
from clients.inbox import Delivery
from clients.outbox import OutboxState
from clients.transport import transient
from protocol.errors import CaseBridgeError
from protocol.referral import Message

log = logging.getLogger("casebridge.desk")
DIRECTORY_EVERY_ROUNDS = 20
PUSH_RETRY_FIRST_SECONDS = 1.0
PUSH_RETRY_MAX_SECONDS = 30.0
PUSH_STABLE_SECONDS = 10.0
"""A push connection that lasted this long was a success: the next retry starts from the first delay."""
CLOSE_GRACE_SECONDS = 2.0


@dataclass
class SyncStatus:
    online: bool | None = None
    last_ok: int | None = None
    last_error: str | None = None
    plain_waiting: set[str] = field(default_factory=set)
    rounds: int = 0
    push: bool = False
    """Whether the broker's push WebSocket is open (hints then wake the sync at once)."""


@dataclass
class Draft:
    """A message built and checked, waiting for the person to confirm it."""

    message: Message
    files: list[tuple[Path, str]]
    to: str


class Workspace:
    def __init__(
        self,
        client: AgencyClient,
        *,
        state_dir: Path,
        clock: Callable[[], int],
        sync_interval_seconds: float,
    ) -> None:
        self.client = client
        self.clock = clock
        self.index = CaseIndex()
        self.vault = AttachmentVault(state_dir, vault_key(client.identity.signing_seed))
        self.spool = UploadSpool(state_dir)
        self.status = SyncStatus()
        self._interval = sync_interval_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self.changes = 0
        """How many times the case index changed since unlock (a case received or updated)."""
        self.version = 0
        self._updated = asyncio.Event()
        self.closed = False

    @property
    def agency_id(self) -> str:
        return self.client.agency_id

    async def start(self) -> None:
        # One sealed summary per case, decrypted off the event loop; no thread is replayed.
        summaries = await asyncio.to_thread(self.client.cases.summaries, now=self.clock())
        await asyncio.to_thread(self.index.put_all, summaries)
        self._task = asyncio.create_task(self._run())
        self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        self.closed = True
        self.notify()
        listener = self._listener
        if listener is not None:
            listener.cancel()
            # Closing the socket may wait on a broker that stopped answering; closing the client
            # below aborts it, so the lock never waits long for the listener.
            await asyncio.wait([listener], timeout=CLOSE_GRACE_SECONDS)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.index.clear()
        self.spool.clear()
        await self.client.close()
        if listener is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    def wake(self) -> None:
        self._wake.set()

    def notify(self) -> None:
        """Tell watchers that the status or the case index may have changed."""
        self.version += 1
        self._updated.set()
        self._updated = asyncio.Event()

    async def next_update(self, seen: int) -> int:
        """Wait until `version` is no longer `seen` (or the workspace closed); the new version."""
        while self.version == seen and not self.closed:
            await self._updated.wait()
        return self.version

    def thread(self, case_link_id: bytes) -> CaseThread | None:
        return self.client.cases.thread(case_link_id, now=self.clock())

    def refresh_case(self, case_link_id: bytes) -> None:
        summary = self.client.cases.summary(case_link_id, now=self.clock())
        if summary is not None:
            self.index.put(summary)
            self.changes += 1
            self.notify()

    async def _run(self) -> None:
        while True:
            await self.sync_once()
            # Not `asyncio.wait_for`: on Python 3.11 it swallows a cancel that comes as the wake
            # is set (a push hint just before the lock), and the task would outlive its client.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()

    async def sync_once(self) -> None:
        """One round of talking to the broker; failures are recorded, never raised."""
        status = self.status
        try:
            if status.rounds % DIRECTORY_EVERY_ROUNDS == 0 or not status.online:
                await self.client.refresh_directory()
            if self.client.outbox(OutboxState.PENDING):
                await self.client.resume_outbox()
            for delivery in await self.client.fetch_deliveries():
                await self._take(delivery)
            await self.client.sync_receipts()
        except CaseBridgeError as e:
            status.online = False if transient(e) else status.online
            status.last_error = e.title
            log.info("desk_sync_failed", extra={"reason": e.reason})
        except Exception:
            # A bug must not stop the desk's sync for good: it is logged and tried next round.
            status.last_error = "internal error"
            log.exception("desk_sync_crashed")
        else:
            status.online, status.last_ok, status.last_error = True, self.clock(), None
        finally:
            status.rounds += 1
            self.notify()

    async def _listen(self) -> None:
        """Hold the broker's push socket open, waking the sync on every hint; never ends by itself."""
        loop = asyncio.get_running_loop()
        delay = PUSH_RETRY_FIRST_SECONDS
        while True:
            connected_at: float | None = None
            try:
                async with self.client.events() as hints:
                    connected_at = loop.time()
                    self._set_push(True)
                    self.wake()
                    async for _hint in hints:
                        self.wake()
                log.info("desk_push_closed")
            except CaseBridgeError as e:
                level = logging.INFO if transient(e) else logging.WARNING
                log.log(level, "desk_push_failed", extra={"reason": e.reason})
            except Exception:
                # A bug must not end push for good: it is logged and the socket opened again.
                log.exception("desk_push_crashed")
            finally:
                self._set_push(False)
            if connected_at is not None and loop.time() - connected_at >= PUSH_STABLE_SECONDS:
                delay = PUSH_RETRY_FIRST_SECONDS
            await asyncio.sleep(delay)
            delay = min(delay * 2, PUSH_RETRY_MAX_SECONDS)

    def _set_push(self, connected: bool) -> None:
        if self.status.push is not connected:
            self.status.push = connected
            self.notify()

    async def _take(self, delivery: Delivery) -> None:
        message = delivery.message
        if message is None:
            self.status.plain_waiting.add(delivery.envelope_id)
            return
        for index, received in enumerate(delivery.attachments):
            if not self.vault.has(delivery.envelope_id, index):
                # Streamed from the client's sealed copy into the vault: no plaintext file.
                await asyncio.to_thread(self.vault.store, delivery.envelope_id, index, received.open())
        await self.client.ack(delivery)
        self.refresh_case(message.header.case_link_id)

"""An unlocked desk: the agency's client, its case index, its attachment vault and the
background work that keeps them current.

Invariants:
- A workspace exists only between unlock and lock; locking cancels the background task, closes
  the client (which closes the databases) and drops the case index, so no decrypted case stays
  in memory.
- The background task, every `sync_interval_seconds` or when woken: refreshes the verified
  directory now and then, sends what waits in the outbox, receives and verifies deliveries
  (a typed referral message's attachments go into the encrypted vault, then the delivery is
  acknowledged, which deletes the client's plaintext copy), and pulls receipts. An unreachable
  broker is shown as offline and tried again on the next round; nothing is lost.
- Deliveries that are not typed referral messages are left unacknowledged for
  `casebridge inbox watch`; the desk only counts them.
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
from clients.desk.case_index import CaseIndex, summarise
from clients.inbox import Delivery
from clients.outbox import OutboxState
from clients.transport import transient
from protocol.errors import CaseBridgeError
from protocol.referral import Message

log = logging.getLogger("casebridge.desk")
DIRECTORY_EVERY_ROUNDS = 20


@dataclass
class SyncStatus:
    online: bool | None = None
    last_ok: int | None = None
    last_error: str | None = None
    plain_waiting: set[str] = field(default_factory=set)
    rounds: int = 0


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

    @property
    def agency_id(self) -> str:
        return self.client.agency_id

    async def start(self) -> None:
        threads = await asyncio.to_thread(self.client.cases.threads, now=self.clock())
        for thread in threads:
            self.index.put(summarise(thread))
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.index.clear()
        self.spool.clear()
        await self.client.close()

    def wake(self) -> None:
        self._wake.set()

    def thread(self, case_link_id: bytes) -> CaseThread | None:
        return self.client.cases.thread(case_link_id, now=self.clock())

    def refresh_case(self, case_link_id: bytes) -> None:
        thread = self.thread(case_link_id)
        if thread is not None:
            self.index.put(summarise(thread))

    async def _run(self) -> None:
        while True:
            await self.sync_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
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

    async def _take(self, delivery: Delivery) -> None:
        message = delivery.message
        if message is None:
            self.status.plain_waiting.add(delivery.envelope_id)
            return
        for index, received in enumerate(delivery.attachments):
            if not self.vault.has(delivery.envelope_id, index):
                await asyncio.to_thread(self.vault.store, delivery.envelope_id, index, received.path)
        await self.client.ack(delivery)
        self.refresh_case(message.header.case_link_id)

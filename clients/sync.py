"""`SyncAgencyClient`: the client library for agency systems without an event loop.

It runs one `AgencyClient` on a private event loop in a background thread and waits for each
call. Every method mirrors the async one of the same name (see `clients.agency`); deliveries
come as a list (`fetch_deliveries`), each still to be acknowledged with `ack` or `processing`.

Invariants:
- One loop, one thread, one client per instance; every call runs on that loop, so the client is
  never used from two threads at once (the local state database has its own lock for
  `processing`, which runs in the caller's thread).
- `close` (or leaving the `with` block) closes the client, stops the loop and joins the thread;
  a closed instance refuses further calls.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeVar

from clients.agency import DEFAULT_CONTENT_TYPE, AgencyClient
from clients.directory import DirectoryReport
from clients.download import DownloadProgress, InboxItem
from clients.envelope_files import DEFAULT_TTL_SECONDS, AttachmentFile
from clients.inbox import Delivery
from clients.outbox import OutboxEntry, OutboxState
from clients.receipts import EnvelopeStatus, ReceiptRecord
from clients.sending import SendResult
from keys.identity import AgencyIdentity
from protocol.certificate import RootCertificate
from protocol.errors import InvalidField

T = TypeVar("T")


class SyncAgencyClient:
    """Blocking facade over `AgencyClient`. Construct with the same arguments as
    `AgencyClient`, or unlock a keystore with `SyncAgencyClient.open(...)`."""

    def __init__(
        self,
        identity: AgencyIdentity,
        *,
        roots: Sequence[RootCertificate],
        broker_url: str,
        state_dir: str | os.PathLike[str],
        **options: Any,
    ) -> None:
        self._start(
            lambda: AgencyClient(identity, roots=roots, broker_url=broker_url, state_dir=state_dir, **options)
        )

    @classmethod
    def open(
        cls,
        keystore: str | os.PathLike[str],
        passphrase: str,
        *,
        trust: Sequence[str | os.PathLike[str]],
        broker_url: str,
        state_dir: str | os.PathLike[str],
        **options: Any,
    ) -> SyncAgencyClient:
        """Unlock an agency keystore and pin the root certificates in the `trust` files."""
        instance = cls.__new__(cls)
        instance._start(
            lambda: AgencyClient.open(
                keystore, passphrase, trust=trust, broker_url=broker_url, state_dir=state_dir, **options
            )
        )
        return instance

    def _start(self, build: Callable[[], AgencyClient]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="casebridge-client", daemon=True)
        self._thread.start()
        self._closed = False

        async def construct() -> AgencyClient:
            return build()

        try:
            self._client = self._run(construct())
        except BaseException:
            self._closed = True
            self._stop()
            raise

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise InvalidField("client", "an open client; this one was closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def client(self) -> AgencyClient:
        """The async client underneath (use it only from inside its own loop)."""
        return self._client

    @property
    def agency_id(self) -> str:
        return self._client.agency_id

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._client.close())
        finally:
            self._closed = True
            self._stop()

    def __enter__(self) -> SyncAgencyClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the async client's API, blocking ----------------------------------------------------

    def refresh_directory(self) -> DirectoryReport:
        return self._run(self._client.refresh_directory())

    def publish_encryption_keys(self) -> int:
        return self._run(self._client.publish_encryption_keys())

    def send(
        self,
        to: Sequence[str],
        body: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        attachments: Sequence[str | os.PathLike[str] | AttachmentFile] = (),
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> SendResult:
        return self._run(
            self._client.send(
                to, body, content_type=content_type, attachments=attachments, ttl_seconds=ttl_seconds
            )
        )

    def enqueue(
        self,
        to: Sequence[str],
        body: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        attachments: Sequence[str | os.PathLike[str] | AttachmentFile] = (),
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> OutboxEntry:
        return self._run(
            self._client.enqueue(
                to, body, content_type=content_type, attachments=attachments, ttl_seconds=ttl_seconds
            )
        )

    def resume_outbox(self) -> list[SendResult]:
        return self._run(self._client.resume_outbox())

    def outbox(self, state: OutboxState | None = None) -> list[OutboxEntry]:
        return self._client.outbox(state)

    def list_inbox(self, *, limit: int = 50) -> list[InboxItem]:
        return self._run(self._client.list_inbox(limit=limit))

    def download(self, envelope_id: str, *, max_bytes: int | None = None) -> DownloadProgress:
        return self._run(self._client.download(envelope_id, max_bytes=max_bytes))

    def fetch_deliveries(self) -> list[Delivery]:
        """Everything deliverable now (received before and not acknowledged, then the inbox)."""
        return self._run(self._client.fetch_deliveries())

    def pending_deliveries(self) -> list[Delivery]:
        return self._client.pending_deliveries()

    @contextmanager
    def processing(self, delivery: Delivery) -> Iterator[sqlite3.Connection]:
        with self._client.processing(delivery) as db:
            yield db

    def ack(self, delivery: Delivery) -> None:
        self._run(self._client.ack(delivery))

    def is_processed(self, envelope_id: str) -> bool:
        return self._client.is_processed(envelope_id)

    def sync_receipts(self, *, wait_seconds: int = 0) -> list[ReceiptRecord]:
        return self._run(self._client.sync_receipts(wait_seconds=wait_seconds))

    def receipts(self, envelope_id: str) -> list[ReceiptRecord]:
        return self._client.receipts(envelope_id)

    def status(self, envelope_id: str) -> EnvelopeStatus:
        return self._run(self._client.status(envelope_id))

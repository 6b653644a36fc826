"""`AgencyClient`: what an agency's own case system uses to send and receive referrals.

    async with AgencyClient.open("atpd.cbks", passphrase, trust=["th-root.cert", "la-root.cert"],
                                 broker_url="https://broker.example", state_dir="state") as client:
        await client.refresh_directory()
        result = await client.send(["LA-NSATIP"], body, attachments=[Path("ເອກະສານ.pdf")])
        async for delivery in client.deliveries():
            with client.processing(delivery) as db:      # one local transaction:
                db.execute("INSERT INTO my_cases ...")   # the application's own bookkeeping
            # ... and the envelope is marked processed in that same commit.

Invariants:
- Trust comes only from the pinned national roots given here; the broker's directory is
  verified against them (`clients.directory`), and so is every receipt.
- Offline first: `send` seals into the local outbox and records it before any network use; an
  unreachable broker leaves it `pending`, and `resume_outbox` (or `run_outbox_flusher`) sends it
  later with the same bytes.
- Exactly-once handling: a delivery is handed over until the application acknowledges it
  (`ack` or `processing`), never after; see `clients.inbox`.
- Nothing received is kept in clear: until acknowledged, a delivery's body is sealed in the
  state database under a subkey of the agency's signing seed and its attachments are sealed
  files (`clients.received_rows`, `clients.received_files`).
- Typed referral messages (`send_message`, `messages`, `cases`, `Delivery.message`) pass the case
  workflow before sealing and on receipt; see `clients.referrals`.
- Own keys: the first `refresh_directory` of a session publishes this agency's encryption keys
  valid now that the broker's directory lacks; `publish_encryption_keys` posts them all.
- The clock is injected (`clock`, Unix seconds); every request is signed with the agency's key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from clients.case_store import CaseStore
from clients.directory import DirectoryReport, VerifiedDirectory, b64encode
from clients.envelope_files import DEFAULT_TTL_SECONDS, AttachmentFile
from clients.inbox import Delivery, DownloadProgress, InboxItem, Receiver, delivery_of
from clients.outbox import LocalState, OutboxEntry, OutboxState
from clients.receipts import EnvelopeStatus, ReceiptBook, ReceiptRecord
from clients.received_rows import received_key
from clients.referrals import MessageBuilder, ReferralMessaging, SentMessage
from clients.sending import Sender, SendResult
from clients.transport import Body, BrokerTransport, Clock, RetryPolicy, Sleep, transient
from keys.files import read_bytes
from keys.identity import AgencyIdentity
from keys.keystore import load_agency
from protocol.certificate import EncryptionKey, RootCertificate, TrustStore
from protocol.errors import CaseBridgeError, InvalidField, MalformedInput
from protocol.primitives import Random, system_random
from protocol.referral import CONTENT_TYPE, Message

log = logging.getLogger("casebridge.client")

DEFAULT_CONTENT_TYPE = "text/plain; charset=utf-8"
ENCRYPTION_KEY_MEDIA_TYPE = "application/vnd.casebridge.encryption-key"


def system_clock() -> int:
    return int(time.time())


def load_pinned_roots(paths: Sequence[str | os.PathLike[str]]) -> list[RootCertificate]:
    """Read the national root certificates to pin (the trust bundle). Their fingerprints must
    have been compared out of band (`casebridge keys fingerprint`)."""
    if not paths:
        raise InvalidField("trust", "at least one pinned national root certificate (--trust FILE)")
    roots = []
    for path in paths:
        try:
            roots.append(RootCertificate.parse(read_bytes(path)))
        except MalformedInput as e:
            raise InvalidField(
                "trust", f"a national root certificate file; {os.fspath(path)} is not one"
            ) from e
    return roots


class AgencyClient:
    """One agency, one broker, one local state directory. See the module docstring."""

    def __init__(
        self,
        identity: AgencyIdentity,
        *,
        roots: Sequence[RootCertificate],
        broker_url: str,
        state_dir: str | os.PathLike[str],
        clock: Clock = system_clock,
        rng: Random = system_random,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if identity.certificate is None:
            raise InvalidField(
                "keystore", "a certified agency: import its certificate first (keys agency import-cert)"
            )
        if not roots:
            raise InvalidField("trust", "at least one pinned national root certificate")
        # Our own certificate must chain to a pinned root: a misconfigured trust bundle fails here.
        TrustStore(roots).verify_agency(identity.certificate, clock())
        self.identity = identity
        self._clock = clock
        self._keys_published = False
        self._transport = BrokerTransport(
            broker_url, identity.signing_key, clock=clock, rng=rng, retry=retry, sleep=sleep
        )
        self.state = LocalState(state_dir, received_key=received_key(identity.signing_seed), rng=rng)
        self.directory = VerifiedDirectory(roots, self.state)
        try:
            self.directory.load_cached(clock())
            self.cases = CaseStore(state_dir, identity, rng=rng)
        except BaseException:
            self.state.close()
            raise
        self.messages = MessageBuilder(identity.agency_id, self.cases, clock=clock, rng=rng)
        self._referrals = ReferralMessaging(identity.agency_id, self.cases, clock=clock)
        self._sender = Sender(
            identity=identity,
            transport=self._transport,
            state=self.state,
            directory=self.directory,
            clock=clock,
            rng=rng,
            refresh_directory=self.refresh_directory,
        )
        self._sender.discard_leftovers()
        self._receiver = Receiver(
            identity=identity,
            transport=self._transport,
            state=self.state,
            directory=self.directory,
            clock=clock,
            refresh_directory=self.refresh_directory,
            admit=self._referrals.admit,
            rng=rng,
        )
        self._receiver.discard_leftovers()
        self._receipts = ReceiptBook(
            agency_id=identity.agency_id,
            transport=self._transport,
            state=self.state,
            directory=self.directory,
            refresh_directory=self.refresh_directory,
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
    ) -> AgencyClient:
        """Unlock an agency keystore and pin the root certificates in the `trust` files."""
        identity = load_agency(keystore, passphrase).identity
        return cls(
            identity, roots=load_pinned_roots(trust), broker_url=broker_url, state_dir=state_dir, **options
        )

    @property
    def agency_id(self) -> str:
        return self.identity.agency_id

    async def close(self) -> None:
        await self._transport.close()
        self.cases.close()
        self.state.close()

    async def __aenter__(self) -> AgencyClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- directory ---------------------------------------------------------------------------

    async def refresh_directory(self) -> DirectoryReport:
        """Fetch the broker's directory and keep what verifies against the pinned roots.

        The first refresh of a session also publishes this agency's current encryption keys
        that the broker's directory lacks (a new agency, or a key added by `keys rotate`), so
        others can seal for it; see `_publish_missing`."""
        answer = (await self._transport.request("GET", "/v1/directory")).json()
        report = self.directory.absorb(answer, self._clock())
        if not self._keys_published:
            await self._publish_missing(answer)
        return report

    def current_encryption_keys(self) -> list[EncryptionKey]:
        """This agency's encryption key statements valid now (others may seal for these)."""
        now = self._clock()
        return [held.statement for held in self.identity.encryption_keys if held.valid_at(now)]

    async def publish_encryption_keys(self) -> int:
        """Register this agency's encryption keys valid now; returns how many were posted."""
        posted = 0
        for statement in self.current_encryption_keys():
            await self._post_encryption_key(statement)
            posted += 1
        return posted

    async def _post_encryption_key(self, statement: EncryptionKey) -> None:
        body = Body.of(statement.raw, ENCRYPTION_KEY_MEDIA_TYPE)
        await self._transport.request("POST", "/v1/directory/encryption-keys", body=body)

    async def _publish_missing(self, answer: Any) -> None:
        """Post the current statements absent from a directory answer, once per session.

        A refusal the broker will repeat (our certificate not registered there yet, say) is
        logged, not raised, so it never stops the command that refreshed; an unreachable broker
        leaves it for the next refresh."""
        listed = answer.get("encryption_keys") if isinstance(answer, dict) else None
        held = set(listed) if isinstance(listed, list) else set()
        try:
            for statement in self.current_encryption_keys():
                if b64encode(statement.raw) not in held:
                    await self._post_encryption_key(statement)
                    log.info("encryption_key_published", extra={"key_id": statement.key_id.hex()})
        except CaseBridgeError as e:
            if transient(e):
                return
            log.warning("encryption_key_not_published", extra={"reason": e.reason})
        self._keys_published = True

    # --- sending -----------------------------------------------------------------------------

    async def enqueue(
        self,
        to: Sequence[str],
        body: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        attachments: Sequence[str | os.PathLike[str] | AttachmentFile] = (),
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> OutboxEntry:
        """Seal a referral into the outbox and record it, without sending (works offline when
        the recipients' keys are in the verified directory cache)."""
        files = [a if isinstance(a, AttachmentFile) else Path(a) for a in attachments]
        for f in files:
            path = f.path if isinstance(f, AttachmentFile) else f
            if not path.is_file():
                raise InvalidField("attachments", f"readable regular files; {path} is not one")
        return await self._sender.seal(
            to, body, content_type=content_type, attachments=files, ttl_seconds=ttl_seconds
        )

    async def send(
        self,
        to: Sequence[str],
        body: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        attachments: Sequence[str | os.PathLike[str] | AttachmentFile] = (),
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> SendResult:
        """Seal, record, upload. Returns `accepted` with the verified receipts, or `pending`
        when the broker could not be reached (the referral stays sealed in the outbox). A final
        refusal raises the broker's error (the entry is kept as `failed`)."""
        entry = await self.enqueue(
            to, body, content_type=content_type, attachments=attachments, ttl_seconds=ttl_seconds
        )
        return await self._sender.upload(entry)

    async def send_message(
        self,
        message: Message,
        *,
        attachments: Sequence[str | os.PathLike[str] | AttachmentFile] = (),
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> SentMessage:
        """Send a typed referral message to the agency its header names. It is applied to the
        case in the local case store first: a refusal (`InvalidTransition`, `ConsentError`,
        `InvalidField`) raises before anything is sealed. Build it with `messages`."""
        files = [a if isinstance(a, AttachmentFile) else AttachmentFile(Path(a)) for a in attachments]
        for f in files:
            if not f.path.is_file():
                raise InvalidField("attachments", f"readable regular files; {f.path} is not one")

        async def seal(body: bytes) -> OutboxEntry:
            to = [message.header.receiver_agency_id]
            return await self.enqueue(
                to, body, content_type=CONTENT_TYPE, attachments=files, ttl_seconds=ttl_seconds
            )

        names = [f.filename or f.path.name for f in files]
        return await self._referrals.send(message, filenames=names, seal=seal, upload=self._sender.upload)

    async def resume_outbox(self) -> list[SendResult]:
        """Send every pending outbox entry again (same bytes). Final refusals are returned as
        `failed` results rather than raised, so one bad entry does not block the others."""
        results = []
        for entry in self.state.outbox_entries(OutboxState.PENDING):
            try:
                results.append(await self._sender.upload(entry))
            except CaseBridgeError as e:
                if transient(e):
                    raise
                current = self.state.outbox_entry(entry.envelope_id) or entry
                results.append(
                    SendResult(
                        current.envelope_id,
                        current.envelope_hash,
                        current.recipients,
                        current.state,
                        problem=current.problem,
                    )
                )
        return results

    def outbox(self, state: OutboxState | None = None) -> list[OutboxEntry]:
        return self.state.outbox_entries(state)

    async def run_outbox_flusher(self, interval_seconds: float = 30.0) -> None:
        """Resend pending entries every `interval_seconds` until cancelled (run it as a task)."""
        while True:
            try:
                await self.resume_outbox()
            except CaseBridgeError as e:
                log.info("outbox_flush_failed", extra={"reason": e.reason})
            await asyncio.sleep(interval_seconds)

    # --- receiving ---------------------------------------------------------------------------

    async def list_inbox(self, *, limit: int = 50) -> list[InboxItem]:
        """What waits in the broker's inbox (claims, not yet verified)."""
        items, _ = await self._receiver.downloader.list_inbox(limit=limit)
        return items

    async def download(self, envelope_id: str, *, max_bytes: int | None = None) -> DownloadProgress:
        """Fetch an envelope's ciphertext into the state directory without opening it (resumable)."""
        return await self._receiver.downloader.download(envelope_id, max_bytes=max_bytes)

    def deliveries(self, *, follow: bool = True, wait_seconds: int = 30) -> AsyncIterator[Delivery]:
        """Verified deliveries, each handed over until acknowledged: first those received
        before but not acknowledged, then the broker's inbox. With `follow=False` it ends when
        the inbox is empty; else it long-polls for more until the caller stops."""
        return self._receiver.deliveries(follow=follow, wait_seconds=wait_seconds)

    async def fetch_deliveries(self) -> list[Delivery]:
        """Everything deliverable now, as a list (each still to be acknowledged)."""
        return [d async for d in self.deliveries(follow=False)]

    def pending_deliveries(self) -> list[Delivery]:
        """Deliveries received and verified here but not yet acknowledged (no network)."""
        return [delivery_of(e, e.sender_name) for e in self.state.received_entries()]

    @contextlib.contextmanager
    def processing(self, delivery: Delivery) -> Iterator[sqlite3.Connection]:
        """A transaction on the local state database in which the application records what it
        did with `delivery`; the envelope is marked processed in the same commit. An exception
        rolls both back, and the delivery is handed over again later. The database is held for
        the block's duration: do its work synchronously, without awaiting inside."""
        with self.state.transaction() as db:
            yield db
            LocalState.mark_processed(db, delivery.envelope_id, self._clock())
        self._receiver.forget(delivery.envelope_id)

    async def ack(self, delivery: Delivery) -> None:
        """Mark `delivery` processed: it is never handed over again. Its sealed attachments in
        the state directory are deleted, so take them first (`ReceivedFile.open`, `save_to`,
        `save_into`, or `clients.inbox.save_attachments`)."""
        with self.processing(delivery):
            pass

    def is_processed(self, envelope_id: str) -> bool:
        return self.state.is_processed(envelope_id)

    async def flush_receipts(self) -> int:
        """Post receipts this agency signed that the broker may not have; returns how many wait."""
        return await self._receiver.flush_receipts()

    # --- receipts and status -----------------------------------------------------------------

    async def sync_receipts(self, *, wait_seconds: int = 0) -> list[ReceiptRecord]:
        """Pull the receipts about this agency's envelopes recorded since the last sync."""
        return await self._receipts.sync(wait_seconds=wait_seconds)

    def receipts(self, envelope_id: str) -> list[ReceiptRecord]:
        """The verified receipts stored here about one envelope this agency sent."""
        return self._receipts.stored(envelope_id)

    async def status(self, envelope_id: str) -> EnvelopeStatus:
        return await self._receipts.status(envelope_id)

    # --- push --------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def events(self) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """The broker's push hints over a signed WebSocket, connected on entry:

            async with client.events() as hints:
                async for hint in hints:   # {"type": "inbox" | "receipt", "envelope_id", ...}
                    ...

        Hints only say where to look: fetch through `deliveries` and `sync_receipts`, so a
        missed hint only delays. The iterator ends when the broker closes the socket."""
        ws = await self._transport.websocket("/v1/events")
        try:
            yield _hints(ws)
        finally:
            await ws.close()


async def _hints(ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[dict[str, Any]]:
    async for message in ws:
        if message.type is not aiohttp.WSMsgType.TEXT:
            break
        try:
            value = message.json()
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


__all__ = [
    "AgencyClient",
    "Delivery",
    "DownloadProgress",
    "EnvelopeStatus",
    "OutboxEntry",
    "OutboxState",
    "ReceiptRecord",
    "SendResult",
    "SentMessage",
    "load_pinned_roots",
]

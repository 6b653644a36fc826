"""The receiving half of the client: confirm, open, record, hand over exactly once.

For each envelope in the broker's inbox: the header and the `accepted` receipt (verified against
a broker certificate chained to a pinned root), then every part (`clients.download`, resumable),
checked against the signed header, then a `delivered` receipt; then the envelope is opened with
`clients.envelope_files` as of the acceptance time, recorded here, and only then is the
`verified` receipt posted (or `rejected`, with a reason, when a check failed).

Invariants:
- Transport is at least once, handling exactly once: an envelope is recorded locally before its
  `verified` receipt reaches the broker, so a crash at any point leaves it either in the broker's
  inbox or in the local `received` table; it is handed to the application until the application
  acknowledges it (`AgencyClient.ack` / `processing`), and never again after that.
- Every receipt this agency signs is stored before it is posted, and posted with the same bytes
  until the broker has it, so a repeated post is idempotent. The `delivered` receipt of a small
  envelope (at most `PROMPT_DELIVERED_BYTES` of ciphertext) waits, stored, for the final one
  (`verified` or `rejected`, a few milliseconds later) and goes with it in one batch request
  (`clients.receipts.ReceiptPoster`); a larger envelope's goes at once, as opening it takes time.
- An envelope this client cannot judge now (the broker's own receipt does not verify, the
  broker unreachable) is neither verified nor rejected: it stays in the broker's inbox.
- A damaged download is fetched again once before the envelope is rejected.
- An `admit` hook (the referral workflow, `clients.referrals`) judges each opened envelope
  before its `verified` receipt is signed; a `Refusal` rejects it with the refusal's reason.
- Nothing decrypted reaches the disk in clear: each attachment is sealed chunk by chunk as it
  is decrypted (`clients.received_files`, under a fresh key per file), and the body, names and
  file keys go into the sealed `received` row (`clients.received_rows`). Until that row is
  committed, the sealed files' keys exist only in memory, so an interrupted opening leaves
  nothing readable; the application takes plaintext only by an explicit call (`ReceivedFile`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from clients.directory import VerifiedDirectory
from clients.download import DownloadProgress, EnvelopeDownloader, InboxItem, check_part, part_path
from clients.envelope_files import open_into_sinks
from clients.inbox_files import delete_tree
from clients.outbox import LocalState, ProcessedIds, ReceivedEntry
from clients.receipts import ReceiptPoster
from clients.received_files import (
    FILE_KEY_BYTES,
    ReceivedFile,
    SealedFileWriter,
    discard_sealed_files,
    sealed_file_path,
)
from clients.received_rows import LEGACY_FILES_FOLDER
from clients.transport import BrokerTransport, retry_after_of, transient
from keys.identity import AgencyIdentity
from protocol import codec
from protocol.envelope import AttachmentInfo, EnvelopeHeader, Manifest
from protocol.errors import (
    CaseBridgeError,
    Conflict,
    DecryptionFailed,
    EnvelopeExpired,
    InputError,
    MalformedInput,
    NotARecipient,
    Replayed,
    UnsupportedVersion,
    UntrustedCertificate,
    VerificationError,
)
from protocol.primitives import Random, system_random
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject, RejectReason
from protocol.referral import CONTENT_TYPE, Message, decode_message

log = logging.getLogger("casebridge.client.inbox")

INBOX_DIR = "inbox"
PROMPT_DELIVERED_BYTES = 1 << 20
SignedReceipt: TypeAlias = tuple[str, str, bytes]
"""A receipt this agency signed, as stored: (envelope id, kind, bytes)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A referral that passed every check, waiting for the application to acknowledge it.

    `attachments` stay sealed in the client's state directory: take each one's plaintext with
    `ReceivedFile.open()` (chunks), `save_to(path)` or `save_into(folder)` (all of them:
    `save_attachments`) before acknowledging, which deletes them."""

    envelope_id: str
    envelope_hash: str
    sender_id: str
    sender_name: str
    content_type: str
    body: bytes
    attachments: tuple[ReceivedFile, ...]
    accepted_at: int
    received_at: int

    @property
    def text(self) -> str:
        """The body as NFC text (for text/* and JSON bodies)."""
        return codec.nfc(self.body.decode("utf-8", errors="replace"))

    @property
    def message(self) -> Message | None:
        """The typed referral message, when the body is one (content type
        `protocol.referral.CONTENT_TYPE`; it was checked against the case on receipt)."""
        if self.content_type != CONTENT_TYPE:
            return None
        return decode_message(self.body)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an opened envelope is rejected: `reason` goes into the `rejected` receipt, `summary`
    into the log and the local record (it must hold no personal data)."""

    reason: RejectReason
    summary: str


Admission: TypeAlias = Callable[[str, str, Manifest], Refusal | None]
"""`admit(envelope_id, sender_id, manifest)`: None accepts an opened envelope."""


def delivery_of(entry: ReceivedEntry, sender_name: str) -> Delivery:
    return Delivery(
        envelope_id=entry.envelope_id,
        envelope_hash=entry.envelope_hash,
        sender_id=entry.sender_id,
        sender_name=sender_name,
        content_type=entry.content_type,
        body=entry.body,
        attachments=entry.attachments,
        accepted_at=entry.accepted_at,
        received_at=entry.received_at,
    )


def reject_reason(error: CaseBridgeError) -> RejectReason:
    """The reason a recipient gives the sender for an envelope that failed a check."""
    if isinstance(error, UntrustedCertificate):
        return RejectReason.UNTRUSTED_SENDER
    if isinstance(error, NotARecipient):
        return RejectReason.NOT_A_RECIPIENT
    if isinstance(error, DecryptionFailed):
        return RejectReason.DECRYPTION_FAILED
    if isinstance(error, EnvelopeExpired):
        return RejectReason.EXPIRED
    if isinstance(error, Replayed):
        return RejectReason.REPLAYED
    if isinstance(error, MalformedInput | UnsupportedVersion):
        return RejectReason.MALFORMED
    if isinstance(error, VerificationError):
        return RejectReason.BAD_SIGNATURE
    return RejectReason.MALFORMED


class _Held(Exception):
    """An envelope this client cannot judge now (e.g. the broker's receipt did not verify):
    neither verified nor rejected; it stays in the broker's inbox."""


class Receiver:
    """Receives envelopes for one agency."""

    def __init__(
        self,
        *,
        identity: AgencyIdentity,
        transport: BrokerTransport,
        state: LocalState,
        directory: VerifiedDirectory,
        clock: Callable[[], int],
        refresh_directory: Callable[[], Awaitable[object]],
        admit: Admission | None = None,
        rng: Random = system_random,
    ) -> None:
        self._identity = identity
        self._rng = rng
        self._transport = transport
        self._state = state
        self._directory = directory
        self._clock = clock
        self._refresh = refresh_directory
        self._admit = admit
        self.downloader = EnvelopeDownloader(transport, state.directory / INBOX_DIR)
        self._poster = ReceiptPoster(transport)
        # A receipt post failed transiently since the last flush (it waits in the local state).
        self._unposted = False

    @property
    def me(self) -> str:
        return self._identity.agency_id

    def _dir(self, envelope_id: str) -> Path:
        return self.downloader.directory(envelope_id)

    # --- receiving one envelope --------------------------------------------------------------

    def _subject(self, header: EnvelopeHeader) -> ReceiptSubject:
        return ReceiptSubject(header.envelope_hash, header.envelope_id, header.sender_id, self.me)

    def _sign(self, kind: ReceiptKind, subject: ReceiptSubject, reason: RejectReason | None = None) -> bytes:
        cert = self._identity.certificate
        assert cert is not None  # AgencyClient refuses an uncertified identity.
        return Receipt.issue(
            kind,
            signing_key=self._identity.signing_key,
            signer=cert,
            subject=subject,
            time=self._clock(),
            reason=reason,
        ).raw

    async def post_receipts(self, receipts: list[SignedReceipt]) -> int:
        """Post receipts this agency signed, in order (a `delivered` before the final receipt of
        the same envelope); each is marked posted once the broker has it (or refused it for good,
        which is logged). Returns how many wait to be posted again later."""
        waiting = 0
        errors = await self._poster.post([raw for _, _, raw in receipts])
        for (envelope_id, kind, _), error in zip(receipts, errors, strict=True):
            if error is not None and transient(error):
                self._unposted = True
                waiting += 1
                continue
            if error is not None:
                log.warning(
                    "receipt_refused",
                    extra={"envelope_id": envelope_id, "kind": kind, "reason": error.reason},
                )
            self._state.mark_receipt_posted(envelope_id, kind)
        return waiting

    async def post_receipt(self, envelope_id: str, kind: str, raw: bytes) -> bool:
        """Post one receipt this agency signed; True once the broker has it (or refused it for
        good), False when it should be posted again later."""
        return await self.post_receipts([(envelope_id, kind, raw)]) == 0

    async def flush_receipts(self) -> int:
        """Post every stored receipt the broker may not have yet; returns how many still wait."""
        return await self.post_receipts(self._state.unposted_receipts())

    async def _settle(self, envelope_id: str) -> bool:
        """For an envelope already judged here, post its final receipt again; True if judged."""
        for kind in (ReceiptKind.VERIFIED, ReceiptKind.REJECTED):
            raw = self._state.signed_receipt(envelope_id, str(kind))
            if raw is not None:
                await self.post_receipt(envelope_id, str(kind), raw)
                return True
        return False

    async def _verified_acceptance(self, header: EnvelopeHeader, raw: bytes) -> Receipt:
        subject = self._subject(header)
        try:
            return self._directory.verify_receipt(raw, subject=subject, kinds=[ReceiptKind.ACCEPTED])
        except CaseBridgeError:
            await self._refresh()
        try:
            return self._directory.verify_receipt(raw, subject=subject, kinds=[ReceiptKind.ACCEPTED])
        except CaseBridgeError as e:
            # Fetch the header and receipt afresh next time: the broker may have been at fault.
            delete_tree(self._dir(header.envelope_id.hex()))
            raise _Held(f"accepted receipt does not verify: {e.reason}") from e

    async def receive(self, item: InboxItem) -> Delivery | None:
        """Receive one inbox item; None when it was judged before, rejected now, or held."""
        envelope_id = item.envelope_id
        if self._state.is_processed(envelope_id) or self._state.has_received(envelope_id):
            await self._settle(envelope_id)
            return None
        if await self._settle(envelope_id):
            return None
        try:
            return await self._receive(item)
        except _Held as e:
            log.warning("envelope_held", extra={"envelope_id": envelope_id, "reason": str(e)})
        except CaseBridgeError as e:
            if transient(e):
                raise
            log.warning("envelope_held", extra={"envelope_id": envelope_id, "reason": e.reason})
        return None

    async def _receive(self, item: InboxItem) -> Delivery | None:
        envelope_id = item.envelope_id
        header_bytes, accepted_raw = await self.downloader.header(envelope_id)
        try:
            header = EnvelopeHeader.parse(header_bytes)
        except CaseBridgeError as e:
            raise _Held(f"header does not parse: {e.reason}") from e
        if accepted_raw is None:
            raise _Held("the broker sent no accepted receipt")
        if header.envelope_id.hex() != envelope_id:
            delete_tree(self._dir(envelope_id))
            raise _Held("the broker served another envelope's header")
        accepted = await self._verified_acceptance(header, accepted_raw)
        subject = self._subject(header)
        for attempt in range(2):
            progress = await self.downloader.download(envelope_id)
            if not progress.complete:
                raise _Held("download incomplete")
            damaged = [
                p.part_no
                for p in header.parts
                if not await asyncio.to_thread(
                    check_part, part_path(self._dir(envelope_id), p.part_no), header, p.part_no
                )
            ]
            if not damaged:
                break
            for n in damaged:
                part_path(self._dir(envelope_id), n).unlink()
            if attempt:
                await self._reject(envelope_id, header, MalformedInput(reason="part digest mismatch"))
                return None
        delivered = self._state.save_signed_receipt(
            envelope_id, str(ReceiptKind.DELIVERED), self._sign(ReceiptKind.DELIVERED, subject)
        )
        waiting: list[SignedReceipt] = [(envelope_id, str(ReceiptKind.DELIVERED), delivered)]
        if header.total_ciphertext_length > PROMPT_DELIVERED_BYTES:
            await self.post_receipts(waiting)
            waiting = []
        try:
            return await self._judge(item, header, header_bytes, accepted, waiting)
        except BaseException:
            # The stored `delivered` receipt goes with the next flush instead.
            self._unposted = self._unposted or bool(waiting)
            raise

    async def _judge(
        self,
        item: InboxItem,
        header: EnvelopeHeader,
        header_bytes: bytes,
        accepted: Receipt,
        waiting: list[SignedReceipt],
    ) -> Delivery | None:
        """Open a downloaded envelope and verify or reject it; `waiting` receipts are posted
        with the final one."""
        envelope_id = item.envelope_id
        subject = self._subject(header)
        sender = self._directory.certificate_by_key_id(header.sender_key_id)
        if sender is None:
            await self._refresh()
            sender = self._directory.certificate_by_key_id(header.sender_key_id)
        if sender is None:
            await self._reject(
                envelope_id, header, UntrustedCertificate(reason="sender key unknown"), waiting=waiting
            )
            return None
        folder = self._dir(envelope_id)
        # No row holds the keys of files left by an interrupted opening: they go.
        discard_sealed_files(folder)
        sealed: list[ReceivedFile] = []

        def seal_into(index: int, info: AttachmentInfo) -> SealedFileWriter:
            key = self._rng(FILE_KEY_BYTES)
            target = ReceivedFile(
                info.filename,
                info.media_type,
                info.length,
                sealed_file_path(folder, index),
                key,
                envelope_id,
                index,
            )
            sealed.append(target)
            return SealedFileWriter(target)

        try:
            opened = await asyncio.to_thread(
                open_into_sinks,
                header_bytes,
                [part_path(folder, p.part_no) for p in header.parts],
                seal_into,
                trust=self._directory.trust,
                sender_certificate=sender,
                recipient_id=self.me,
                keys=self._identity.recipient_keys(),
                now=self._clock(),
                at=accepted.time,
                processed=ProcessedIds(self._state),
            )
        except CaseBridgeError as e:
            await self._reject(envelope_id, header, e, waiting=waiting)
            return None
        refusal = None if self._admit is None else self._admit(envelope_id, header.sender_id, opened.manifest)
        if refusal is not None:
            await self._reject(
                envelope_id, header, InputError(reason=refusal.summary), refusal.reason, waiting=waiting
            )
            return None
        entry = ReceivedEntry(
            envelope_id=envelope_id,
            envelope_hash=header.envelope_hash.hex(),
            sender_id=header.sender_id,
            sender_name=opened.sender.name,
            content_type=opened.manifest.content_type,
            body=opened.manifest.body,
            attachments=tuple(sealed),
            directory=folder,
            accepted_at=accepted.time,
            received_at=self._clock(),
        )
        verified = self._sign(ReceiptKind.VERIFIED, subject)
        self._state.add_received(entry, verified)
        for p in header.parts:
            part_path(self._dir(envelope_id), p.part_no).unlink(missing_ok=True)
        await self.post_receipts([*waiting, (envelope_id, str(ReceiptKind.VERIFIED), verified)])
        return delivery_of(entry, entry.sender_name)

    async def _reject(
        self,
        envelope_id: str,
        header: EnvelopeHeader,
        error: CaseBridgeError,
        reason: RejectReason | None = None,
        *,
        waiting: list[SignedReceipt] | None = None,
    ) -> None:
        reason = reject_reason(error) if reason is None else reason
        log.warning(
            "envelope_rejected",
            extra={"envelope_id": envelope_id, "reject_reason": str(reason), "reason": error.reason},
        )
        raw = self._sign(ReceiptKind.REJECTED, self._subject(header), reason)
        self._state.record_rejection(envelope_id, header.sender_id, str(reason), error.reason, self._clock())
        raw = self._state.save_signed_receipt(envelope_id, str(ReceiptKind.REJECTED), raw)
        delete_tree(self._dir(envelope_id))
        await self.post_receipts([*(waiting or []), (envelope_id, str(ReceiptKind.REJECTED), raw)])

    # --- the stream of deliveries ------------------------------------------------------------

    @contextlib.contextmanager
    def _receiving_lock(self) -> Iterator[None]:
        """One receiver per state directory at a time, across processes (an advisory lock)."""
        self.downloader.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.downloader.root / ".receiving.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise Conflict(
                    "another process is already receiving for this state directory; stop it or use "
                    "its deliveries.",
                    reason="receiving lock held",
                ) from e
            yield
        finally:
            os.close(fd)

    async def deliveries(self, *, follow: bool, wait_seconds: int) -> AsyncIterator[Delivery]:
        with self._receiving_lock():
            async for delivery in self._deliveries(follow=follow, wait_seconds=wait_seconds):
                yield delivery

    async def _deliveries(self, *, follow: bool, wait_seconds: int) -> AsyncIterator[Delivery]:
        try:
            await self.flush_receipts()
        except CaseBridgeError as e:
            log.info("receipts_not_flushed", extra={"reason": e.reason})
        handed: set[str] = set()
        for entry in self._state.received_entries():
            handed.add(entry.envelope_id)
            if not self._state.is_processed(entry.envelope_id):
                yield delivery_of(entry, entry.sender_name)
        cursor, failures = 0, 0
        while True:
            try:
                items, next_cursor = await self.downloader.list_inbox(
                    after=cursor, wait=wait_seconds if follow else 0
                )
                for item in items:
                    if item.envelope_id not in handed:
                        delivery = await self.receive(item)
                        if delivery is not None:
                            handed.add(delivery.envelope_id)
                            yield delivery
                    cursor = max(cursor, item.cursor)
                failures = 0
                if self._unposted:
                    # A receipt could not be posted while the broker was unreachable: post it
                    # now that the broker answers, not only when the stream is next opened.
                    self._unposted = False
                    await self.flush_receipts()
            except CaseBridgeError as e:
                if not follow or not transient(e):
                    raise
                failures += 1
                log.info("inbox_retry", extra={"reason": e.reason, "attempt": failures})
                await self._transport.pause(min(failures, 8), retry_after_of(e))
                continue
            cursor = max(cursor, next_cursor)
            if not items and not follow:
                return

    def forget(self, envelope_id: str) -> None:
        """Remove an acknowledged envelope's files from the state directory."""
        delete_tree(self._dir(envelope_id))

    def discard_leftovers(self) -> None:
        """Remove attachments an earlier version released in clear (`<envelope>/files/`) that
        an interrupted migration left behind; their sealed copies are already recorded."""
        root = self.downloader.root
        if root.is_dir():
            for folder in root.iterdir():
                if folder.is_dir():
                    delete_tree(folder / LEGACY_FILES_FOLDER)


def save_attachments(delivery: Delivery, destination: Path) -> list[Path]:
    """Decrypt a delivery's attachments into `destination` under their names (never replacing
    a file: a taken name becomes "name (2).ext"), each whole or not at all; returns where they
    went. The sealed originals stay until the delivery is acknowledged, so a crash before that
    loses nothing."""
    destination.mkdir(parents=True, exist_ok=True)
    return [f.save_into(destination) for f in delivery.attachments]


__all__ = [
    "Admission",
    "Delivery",
    "DownloadProgress",
    "InboxItem",
    "ReceivedFile",
    "Receiver",
    "Refusal",
    "save_attachments",
]

"""The sending half of the client: seal into the outbox, record durably, upload, verify.

Invariants:
- Seal first, record second, upload third. The sealed files are fsynced and moved into
  `outbox/<envelope id>/` before the outbox entry is committed, so a recorded entry can always
  be sent again with exactly the same bytes (the broker answers 200 with its first answer).
- The upload streams `u32be(len(header)) || header || parts` from the files; the Content-Digest
  is computed by streaming over the same files before the first byte goes out. Memory holds one
  read buffer whatever the attachments' size.
- An entry is `accepted` only with one verified `accepted` receipt per recipient (signed by a
  broker certificate chained to a pinned root, bound to this envelope's hash and id); `failed`
  only on a final refusal (4xx other than 429), keeping the problem detail; else it stays
  `pending` and `resume` sends it again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.directory import VerifiedDirectory, b64decode
from clients.envelope_files import AttachmentFile, seal_to_directory
from clients.outbox import LocalState, OutboxEntry, OutboxState, StoredReceipt
from clients.transport import Body, BrokerTransport, problem_of, transient
from keys.identity import AgencyIdentity
from protocol import codec, httpsig
from protocol.certificate import AGENCY_ID
from protocol.envelope import EnvelopeHeader
from protocol.errors import CaseBridgeError, InvalidField, MalformedInput, VerificationError
from protocol.primitives import Random
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject

log = logging.getLogger("casebridge.client.send")

ENVELOPE_MEDIA_TYPE = "application/vnd.casebridge.envelope"
READ_BYTES = 1 << 20
OUTBOX_DIR = "outbox"
LEFTOVER_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of one envelope: `accepted` (with the broker's verified receipts, one per
    recipient), `pending` (sealed in the outbox; the broker was unreachable or busy) or
    `failed` (refused for good; `problem` holds the broker's RFC 9457 problem details)."""

    envelope_id: str
    envelope_hash: str
    recipients: tuple[str, ...]
    state: OutboxState
    accepted: tuple[Receipt, ...] = ()
    problem: dict[str, Any] | None = None


def _digest_files(header: bytes, parts: Sequence[Path]) -> tuple[str, int]:
    """Content-Digest and length of the upload body, streaming over the part files."""
    digest = httpsig.ContentDigest()
    prefix = len(header).to_bytes(4, "big") + header
    digest.update(prefix)
    total = len(prefix)
    for path in parts:
        with path.open("rb") as f:
            while chunk := f.read(READ_BYTES):
                digest.update(chunk)
                total += len(chunk)
    return httpsig.content_digest_header(digest.finish()), total


def _read_header(directory: Path) -> bytes:
    with (directory / "header").open("rb") as f:
        return f.read(1 << 20)


def _part_paths(directory: Path, header: EnvelopeHeader) -> list[Path]:
    return [directory / f"part-{i}" for i in range(len(header.parts))]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Sender:
    """Seals, records and uploads envelopes for one agency."""

    def __init__(
        self,
        *,
        identity: AgencyIdentity,
        transport: BrokerTransport,
        state: LocalState,
        directory: VerifiedDirectory,
        clock: Callable[[], int],
        rng: Random,
        refresh_directory: Callable[[], Awaitable[object]],
    ) -> None:
        self._identity = identity
        self._transport = transport
        self._state = state
        self._directory = directory
        self._clock = clock
        self._rng = rng
        self._refresh = refresh_directory
        self._outbox = state.directory / OUTBOX_DIR
        self._locks: dict[str, asyncio.Lock] = {}

    # --- sealing -----------------------------------------------------------------------------

    async def seal(
        self,
        to: Sequence[str],
        body: bytes,
        *,
        content_type: str,
        attachments: Sequence[Path | AttachmentFile],
        ttl_seconds: int,
    ) -> OutboxEntry:
        """Seal into the outbox and record the entry; nothing is sent yet."""
        recipients = sorted({codec.nfc(a).strip() for a in to})
        if not recipients:
            raise InvalidField("to", "at least one recipient agency id")
        for agency_id in recipients:
            if not AGENCY_ID.fullmatch(agency_id):
                raise InvalidField("to", f"agency ids such as LA-NSATIP; {agency_id!r} is not one")
        now = self._clock()
        try:
            keys = [self._directory.encryption_key_for(a, now) for a in recipients]
        except CaseBridgeError:
            # The cache may be stale; one refresh, then the lookup is final.
            try:
                await self._refresh()
            except CaseBridgeError as e:
                if not transient(e):
                    raise
            keys = [self._directory.encryption_key_for(a, now) for a in recipients]
        cert = self._identity.certificate
        if cert is None:
            raise InvalidField("keystore", "a certified agency keystore")
        self._outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = self._outbox / f".sealing-{self._rng(8).hex()}"
        staging.mkdir(mode=0o700)
        try:
            sealed = await asyncio.to_thread(
                seal_to_directory,
                staging,
                sender=cert,
                signing_key=self._identity.signing_key,
                recipients=keys,
                content_type=content_type,
                body=body,
                attachments=attachments,
                now=now,
                ttl_seconds=ttl_seconds,
                rng=self._rng,
            )
            digest, total = await asyncio.to_thread(
                _digest_files, sealed.header.raw, _part_paths(staging, sealed.header)
            )
            final = self._outbox / sealed.header.envelope_id.hex()
            os.rename(staging, final)
            _fsync_directory(self._outbox)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        entry = OutboxEntry(
            envelope_id=sealed.header.envelope_id.hex(),
            envelope_hash=sealed.header.envelope_hash.hex(),
            recipients=tuple(recipients),
            directory=final,
            content_digest=digest,
            total_length=total,
            created_at=now,
            state=OutboxState.PENDING,
        )
        self._state.add_outbox(entry)
        return entry

    def discard_leftovers(self) -> None:
        """Remove what a crash left sealed but never recorded (so never promised to anyone):
        half-sealed directories, and sealed ones with no outbox entry that are older than
        `LEFTOVER_SECONDS` (younger ones may belong to another process recording them now)."""
        if not self._outbox.is_dir():
            return
        cutoff = time.time() - LEFTOVER_SECONDS
        for leftover in self._outbox.iterdir():
            try:
                stale = leftover.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue
            # Half-sealed ".sealing-*" directories never have an entry.
            if stale and self._state.outbox_entry(leftover.name) is None:
                shutil.rmtree(leftover, ignore_errors=True)

    # --- uploading ---------------------------------------------------------------------------

    async def upload(self, entry: OutboxEntry) -> SendResult:
        lock = self._locks.setdefault(entry.envelope_id, asyncio.Lock())
        async with lock:
            current = self._state.outbox_entry(entry.envelope_id) or entry
            if current.state is not OutboxState.PENDING:
                return self._result(current)
            return await self._upload(current)

    def _result(self, entry: OutboxEntry) -> SendResult:
        accepted: tuple[Receipt, ...] = ()
        if entry.state is OutboxState.ACCEPTED:
            accepted = tuple(
                Receipt.parse(r.raw)
                for r in self._state.receipts_for(entry.envelope_id)
                if r.kind == str(ReceiptKind.ACCEPTED)
            )
        return SendResult(
            entry.envelope_id,
            entry.envelope_hash,
            entry.recipients,
            entry.state,
            accepted,
            entry.problem,
        )

    async def _upload(self, entry: OutboxEntry) -> SendResult:
        try:
            header = await asyncio.to_thread(_read_header, entry.directory)
            parts = _part_paths(entry.directory, EnvelopeHeader.parse(header))
            if 4 + len(header) + sum(p.stat().st_size for p in parts) != entry.total_length:
                raise MalformedInput(reason="sealed files changed size")
        except (OSError, CaseBridgeError) as e:
            damaged = MalformedInput(
                f"the sealed files of {entry.envelope_id} in the outbox are missing or damaged; "
                "send the referral again.",
                reason=f"outbox entry unreadable: {e}",
            )
            self._state.mark_failed(entry.envelope_id, problem_of(damaged))
            raise damaged from e
        body = Body(
            entry.total_length, ENVELOPE_MEDIA_TYPE, entry.content_digest, lambda: _stream(header, parts)
        )
        try:
            answer = (await self._transport.request("POST", "/v1/envelopes", body=body)).json()
        except CaseBridgeError as e:
            if transient(e):
                self._state.note_attempt(entry.envelope_id, e.detail)
                log.info("outbox_entry_pending", extra={"envelope_id": entry.envelope_id, "reason": e.reason})
                return self._result(self._state.outbox_entry(entry.envelope_id) or entry)
            self._state.mark_failed(entry.envelope_id, problem_of(e))
            log.warning("outbox_entry_failed", extra={"envelope_id": entry.envelope_id, "reason": e.reason})
            raise
        receipts = await self._verify_accepted(entry, answer)
        stored = [
            StoredReceipt(entry.envelope_id, r.subject.recipient_id, str(r.kind), r.time, r.raw)
            for r in receipts
        ]
        self._state.mark_accepted(entry.envelope_id, min(r.time for r in receipts), stored)
        shutil.rmtree(entry.directory, ignore_errors=True)
        return SendResult(
            entry.envelope_id, entry.envelope_hash, entry.recipients, OutboxState.ACCEPTED, tuple(receipts)
        )

    async def _verify_accepted(self, entry: OutboxEntry, answer: Any) -> list[Receipt]:
        if not isinstance(answer, dict):
            raise MalformedInput(reason="send answer is not a JSON object")
        if (
            answer.get("envelope_id") != entry.envelope_id
            or answer.get("envelope_hash") != entry.envelope_hash
        ):
            raise VerificationError(reason="broker answered for another envelope")
        raws = answer.get("accepted")
        if not isinstance(raws, list):
            raise MalformedInput(reason="send answer: accepted is not a list")
        me = self._identity.agency_id
        by_recipient: dict[str, Receipt] = {}
        refreshed = False
        for i, value in enumerate(raws):
            raw = b64decode(value, f"accepted[{i}]")
            receipt = Receipt.parse(raw)
            recipient = receipt.subject.recipient_id
            subject = ReceiptSubject(
                bytes.fromhex(entry.envelope_hash), bytes.fromhex(entry.envelope_id), me, recipient
            )
            try:
                verified = self._directory.verify_receipt(raw, subject=subject, kinds=[ReceiptKind.ACCEPTED])
            except CaseBridgeError:
                if refreshed:
                    raise
                refreshed = True
                await self._refresh()
                verified = self._directory.verify_receipt(raw, subject=subject, kinds=[ReceiptKind.ACCEPTED])
            by_recipient[recipient] = verified
        if sorted(by_recipient) != sorted(entry.recipients):
            raise VerificationError(reason="accepted receipts do not cover every recipient")
        return [by_recipient[r] for r in sorted(by_recipient)]


def _read_at(path: Path, offset: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(READ_BYTES)


async def _stream(header: bytes, parts: Sequence[Path]) -> AsyncIterator[bytes]:
    # No file stays open across a yield: an upload cut off by the network abandons this
    # generator without closing it, which must not leak an open file.
    yield len(header).to_bytes(4, "big") + header
    for path in parts:
        offset = 0
        while chunk := await asyncio.to_thread(_read_at, path, offset):
            offset += len(chunk)
            yield chunk

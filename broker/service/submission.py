"""Accepting an envelope: `u32be(len(header)) || header || part 0 || part 1 || ...`, streamed.

Invariants:
- Nothing is committed before every check passed: the header (`validate_for_broker`, by the
  authenticated sender's verified certificate), the broker's limits, each part's length and
  digest as it streams, the end of the body and its Content-Digest (`BodySource.finish`).
- Memory is bounded by the inline limit and one read chunk, whatever the envelope's size:
  small parts are kept for the database transaction, larger ones stream to blob files.
- Acceptance is one transaction (envelope, inbox entries, audit leaves, one broker-signed
  `accepted` receipt per recipient carrying the acceptance leaf's index). The same bytes again
  get the first answer; other bytes under a used envelope id are a `Conflict`. Both are decided
  inside that transaction, so the body is always read whole and checked (a resubmission's
  blob files are rewritten with the same bytes: they are named by the envelope hash).
- Blob files of a refused envelope are removed (a conflicting envelope's hash is referenced by
  nothing else). Blob files of a failed or cancelled transaction may be shared with a concurrent
  identical submission, so they are left for the startup sweep of unreferenced blobs.
"""

from __future__ import annotations

import logging
from typing import Protocol

from broker.service.context import Services
from broker.service.directory import RegisteredAgencies
from broker.service.notify import Topic
from broker.storage.interfaces import BlobWriter
from broker.storage.records import Acceptance, IssuedReceipt, NewEnvelope, NewPart, ReceiptIssuer
from protocol import auditlog
from protocol.certificate import AgencyCertificate, Role
from protocol.envelope import HEADER_LIMITS, EnvelopeHeader, validate_for_broker
from protocol.errors import Conflict, InvalidField, MalformedInput, TooLarge, VerificationError
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject

READ_CHUNK_BYTES = 64 << 10
PREFIX_BYTES = 4

log = logging.getLogger("casebridge.broker.submission")


class BodySource(Protocol):
    """A request body as it arrives (the web layer hashes it for Content-Digest)."""

    async def read_exactly(self, n: int) -> bytes:
        """Exactly `n` bytes; `MalformedInput` if the body ends first."""
        ...

    async def read_some(self, max_bytes: int) -> bytes:
        """Up to `max_bytes` (at least one) bytes; `MalformedInput` if the body ended."""
        ...

    async def finish(self) -> None:
        """Check that the body ended here and matches its Content-Digest."""
        ...


class Submission:
    def __init__(self, services: Services) -> None:
        self._s = services

    def _check_limits(self, header: EnvelopeHeader, declared_length: int | None) -> None:
        settings = self._s.settings
        if len(header.recipients) > settings.max_recipients:
            raise InvalidField("recipients", f"at most {settings.max_recipients} agencies per envelope")
        for part in header.parts:
            if part.ciphertext_length > settings.max_part_bytes:
                raise TooLarge(reason=f"part {part.part_no} is larger than {settings.max_part_bytes} bytes")
        total = PREFIX_BYTES + len(header.raw) + header.total_ciphertext_length
        if total > settings.max_envelope_bytes:
            raise TooLarge(reason=f"the envelope is larger than {settings.max_envelope_bytes} bytes")
        if declared_length is not None and declared_length != total:
            raise MalformedInput(reason=f"body is {declared_length} bytes but the header describes {total}")

    async def _read_header(self, body: BodySource, caller: AgencyCertificate, now: int) -> EnvelopeHeader:
        length = int.from_bytes(await body.read_exactly(PREFIX_BYTES), "big")
        if length > HEADER_LIMITS.max_bytes:
            raise TooLarge(reason=f"header of {length} bytes exceeds {HEADER_LIMITS.max_bytes}")
        if length == 0:
            raise MalformedInput(reason="empty header")
        # Parsed once: both checks below take the parsed header.
        header = EnvelopeHeader.parse(await body.read_exactly(length))
        directory = self._s.directory
        recipients = RegisteredAgencies(directory, now)
        try:
            # The sender almost always signs with the key it authenticated with: try that one
            # first, so no other certificate is looked up.
            return validate_for_broker(
                header,
                sender=caller,
                authenticated_agency=caller.agency_id,
                recipient_exists=recipients,
                now=now,
            )
        except VerificationError:
            if header.sender_key_id == caller.key_id:
                raise
        sender = directory.verified(header.sender_key_id, now)
        if not sender.has_role(Role.AGENCY):
            raise InvalidField("sender_key_id", "the key of a certificate with the agency role")
        return validate_for_broker(
            header, sender=sender, authenticated_agency=caller.agency_id, recipient_exists=recipients, now=now
        )

    async def _receive_parts(
        self, body: BodySource, header: EnvelopeHeader, writers: list[BlobWriter]
    ) -> list[NewPart]:
        parts = []
        inline_max = self._s.settings.inline_part_max_bytes
        for info in header.parts:
            verifier = header.part_verifier(info.part_no)
            inline = info.ciphertext_length <= inline_max
            held = bytearray()
            writer = None if inline else self._s.store.blobs.writer(header.envelope_hash, info.part_no)
            if writer is not None:
                writers.append(writer)
            left = info.ciphertext_length
            while left > 0:
                chunk = await body.read_some(min(READ_CHUNK_BYTES, left))
                left -= len(chunk)
                verifier.update(chunk)
                if writer is None:
                    held += chunk
                else:
                    await writer.write(chunk)
            verifier.finish()
            parts.append(
                NewPart(info.part_no, info.ciphertext_length, info.digest, bytes(held) if inline else None)
            )
        return parts

    def _issuer(self, header: EnvelopeHeader, accepted_at: int) -> ReceiptIssuer:
        signer = self._s.signer

        def issue(index: int) -> list[IssuedReceipt]:
            issued = []
            for recipient in header.recipient_ids:
                subject = ReceiptSubject(
                    header.envelope_hash, header.envelope_id, header.sender_id, recipient
                )
                receipt = Receipt.issue(
                    ReceiptKind.ACCEPTED,
                    signing_key=signer.signing_key,
                    signer=signer.certificate,
                    subject=subject,
                    time=accepted_at,
                    log_index=index,
                )
                leaf = auditlog.encode_leaf(
                    accepted_at,
                    auditlog.ReceiptRecorded(
                        ReceiptKind.ACCEPTED, header.envelope_id, recipient, receipt.raw
                    ),
                )
                issued.append(IssuedReceipt(recipient, receipt.raw, leaf))
            return issued

        return issue

    async def submit(
        self, caller: AgencyCertificate, body: BodySource, declared_length: int | None
    ) -> Acceptance:
        """Check, store and acknowledge one envelope (see the module invariants)."""
        s = self._s
        header = await self._read_header(body, caller, s.clock.now())
        self._check_limits(header, declared_length)
        writers: list[BlobWriter] = []
        try:
            parts = await self._receive_parts(body, header, writers)
            await body.finish()
            for writer in writers:
                await writer.commit()
        except BaseException:
            for writer in writers:
                await writer.abort()
            raise
        accepted_at = s.clock.now()
        expires_at = min(header.expires_at, accepted_at + s.settings.ttl_seconds)
        new = NewEnvelope(
            envelope_id=header.envelope_id,
            envelope_hash=header.envelope_hash,
            sender_id=header.sender_id,
            sender_key_id=header.sender_key_id,
            header=header.raw,
            parts=tuple(parts),
            recipients=header.recipient_ids,
            accepted_at=accepted_at,
            expires_at=expires_at,
            leaf=auditlog.encode_leaf(
                accepted_at,
                auditlog.EnvelopeAccepted(
                    envelope_id=header.envelope_id,
                    envelope_hash=header.envelope_hash,
                    sender_id=header.sender_id,
                    sender_key_id=header.sender_key_id,
                    recipients=header.recipient_ids,
                    header_length=len(header.raw),
                    part_lengths=tuple(p.ciphertext_length for p in header.parts),
                    expires_at=expires_at,
                    sender_signature=header.signature,
                ),
            ),
        )
        try:
            accepted = await s.store.delivery.accept_envelope(new, self._issuer(header, accepted_at))
        except Conflict:
            if writers:
                await s.store.blobs.delete(header.envelope_hash)
            raise
        if accepted.created:
            self._announce(accepted)
        elif accepted.envelope.purged and writers:
            await s.store.blobs.delete(header.envelope_hash)
        return accepted

    def _announce(self, accepted: Acceptance) -> None:
        s = self._s
        envelope_id = accepted.envelope.envelope_id.hex()
        for recipient, cursor in accepted.cursors:
            s.notifier.publish(
                recipient, Topic.INBOX, {"type": "inbox", "envelope_id": envelope_id, "cursor": cursor}
            )
        for receipt in accepted.receipts:
            s.notifier.publish(
                receipt.sender_id,
                Topic.RECEIPTS,
                {"type": "receipt", "seq": receipt.seq, "envelope_id": envelope_id},
            )
        s.metrics.envelopes_submitted.inc()
        s.metrics.receipts.labels(kind="accepted").inc(len(accepted.receipts))
        s.metrics.inbox_depth.inc(len(accepted.cursors))
        log.info(
            "envelope_accepted",
            extra={
                "envelope_id": envelope_id,
                "sender_id": accepted.envelope.sender_id,
                "recipients": len(accepted.cursors),
                "bytes": accepted.envelope.header_length + sum(p.length for p in accepted.envelope.parts),
            },
        )

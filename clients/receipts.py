"""Receipts: posting the ones this agency signs, and the broker's feed and status of those about
what it sent.

Posting (`ReceiptPoster`): receipts go in batches (`POST /v1/receipts/batch`, at most
`MAX_BATCH_RECEIPTS` a request, in the order given) to a broker that takes them, one by one
(`POST /v1/receipts`) to one that does not (an older broker answers the batch route 404 or 405;
the poster then posts singly for the rest of its life). Either way each receipt gets its own
outcome: the broker has it, or the error that refused it (transient ones may be posted again;
posting the same bytes again is idempotent).

Invariants:
- Every receipt is verified before it is stored or shown: broker receipts (accepted, expired)
  against a broker certificate, recipient receipts (delivered, verified, rejected) against that
  recipient's certificate, each chained to a pinned root as of the receipt's time, and bound to
  the envelope (its hash when this agency still knows it), this agency as sender and the
  recipient the broker names. A receipt that fails is counted and dropped, never shown.
- The feed cursor (`receipt_seq`) advances in the transaction that stores the page it covers,
  so a sender offline for days resumes exactly where it stopped: nothing is lost or doubled.
- The states the broker reports are claims; the verified receipts are the evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clients.directory import VerifiedDirectory, b64decode
from clients.download import ENVELOPE_ID, check_envelope_id
from clients.outbox import LocalState, OutboxEntry, OutboxState, StoredReceipt
from clients.transport import Body, BrokerTransport, problem_details_error, transient
from protocol import codec
from protocol.errors import CaseBridgeError, MalformedInput, NotFound, UpstreamUnavailable
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject

log = logging.getLogger("casebridge.client.receipts")

RECEIPT_CURSOR = "receipt_seq"
RECEIPT_TYPE = "application/vnd.casebridge.receipt"
RECEIPT_BATCH_TYPE = "application/vnd.casebridge.receipt-batch"
MAX_BATCH_RECEIPTS = 64
PAGE_SIZE = 100
MAX_PAGES = 10_000
MAX_WAIT_SECONDS = 60


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    """A verified receipt about one envelope and one recipient."""

    envelope_id: str
    recipient_id: str
    kind: ReceiptKind
    time: int
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    state: str
    """What the broker says (pending, delivered, verified, rejected, expired)."""
    receipts: tuple[Receipt, ...]
    """The receipts that verified, oldest first."""
    refused_receipts: int = 0


@dataclass(frozen=True, slots=True)
class EnvelopeStatus:
    envelope_id: str
    envelope_hash: str
    sender_id: str
    accepted_at: int | None
    expires_at: int | None
    purged: bool
    recipients: dict[str, RecipientStatus]
    outbox_state: OutboxState | None = None
    """This agency's own outbox state when it sent the envelope from this state directory."""
    local_only: bool = False
    """True when the broker could not be asked: states come from the receipts stored here."""


def receipt_batch(receipts: Sequence[bytes]) -> bytes:
    """The body of `POST /v1/receipts/batch`: `u16be(len) || receipt` for each (docs/protocol.md)."""
    return b"".join(len(raw).to_bytes(2, "big") + raw for raw in receipts)


class ReceiptPoster:
    """Posts receipts this agency signed (see the module doc)."""

    def __init__(self, transport: BrokerTransport) -> None:
        self._transport = transport
        self.batches = True
        """False once the broker showed it has no batch route."""

    async def post(self, receipts: Sequence[bytes]) -> list[CaseBridgeError | None]:
        """Post each receipt, in order; per receipt, None once the broker has it, else the error
        that refused it."""
        outcomes: list[CaseBridgeError | None] = []
        for at in range(0, len(receipts), MAX_BATCH_RECEIPTS):
            chunk = receipts[at : at + MAX_BATCH_RECEIPTS]
            found = await self._batch(chunk) if self.batches and len(chunk) > 1 else None
            outcomes += found if found is not None else [await self._one(raw) for raw in chunk]
        return outcomes

    async def _one(self, raw: bytes) -> CaseBridgeError | None:
        try:
            await self._transport.request("POST", "/v1/receipts", body=Body.of(raw, RECEIPT_TYPE))
        except CaseBridgeError as e:
            return e
        return None

    async def _batch(self, receipts: Sequence[bytes]) -> list[CaseBridgeError | None] | None:
        """The outcomes of one batch request; None when the broker has no batch route."""
        body = Body.of(receipt_batch(receipts), RECEIPT_BATCH_TYPE)
        try:
            answer = (await self._transport.request("POST", "/v1/receipts/batch", body=body)).json()
        except CaseBridgeError as e:
            if e.status in (404, 405):
                self.batches = False
                return None
            return [e] * len(receipts)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(receipts):
            # The broker may have recorded them: posting them again later is safe.
            broken = UpstreamUnavailable(reason="receipt batch answer does not list one result per receipt")
            return [broken] * len(receipts)
        outcomes: list[CaseBridgeError | None] = []
        for result in results:
            status = result.get("status") if isinstance(result, dict) else None
            if not isinstance(status, int) or isinstance(status, bool):
                outcomes.append(UpstreamUnavailable(reason="receipt batch result without a status"))
            elif status >= 300:
                outcomes.append(problem_details_error(status, result))
            else:
                outcomes.append(None)
        return outcomes


def record_of(stored: StoredReceipt) -> ReceiptRecord:
    receipt = Receipt.parse(stored.raw)
    return ReceiptRecord(stored.envelope_id, stored.recipient_id, receipt.kind, receipt.time, receipt)


class ReceiptBook:
    """Verifies and keeps receipts about this agency's envelopes."""

    def __init__(
        self,
        *,
        agency_id: str,
        transport: BrokerTransport,
        state: LocalState,
        directory: VerifiedDirectory,
        refresh_directory: Callable[[], Awaitable[object]],
    ) -> None:
        self._me = agency_id
        self._transport = transport
        self._state = state
        self._directory = directory
        self._refresh = refresh_directory
        self._refreshed = False

    def _subject(
        self, envelope_id: str, sender_id: str, recipient_id: str, fallback_hash: bytes
    ) -> ReceiptSubject:
        entry = self._state.outbox_entry(envelope_id)
        envelope_hash = bytes.fromhex(entry.envelope_hash) if entry is not None else fallback_hash
        return ReceiptSubject(envelope_hash, bytes.fromhex(envelope_id), sender_id, recipient_id)

    async def verify(
        self,
        raw: bytes,
        *,
        envelope_id: str,
        sender_id: str,
        recipient_id: str,
        envelope_hash: bytes | None = None,
    ) -> Receipt:
        """Verify one receipt about `envelope_id` from `sender_id` to `recipient_id`, bound to
        the envelope hash this agency recorded when it sent it, else to `envelope_hash`."""
        fallback = envelope_hash if envelope_hash is not None else Receipt.parse(raw).subject.envelope_hash
        subject = self._subject(envelope_id, sender_id, recipient_id, fallback)
        try:
            return self._directory.verify_receipt(raw, subject=subject)
        except CaseBridgeError:
            if self._refreshed:
                raise
        # The signer may be newer than the cached directory: refresh once per call, then decide.
        self._refreshed = True
        await self._refresh()
        return self._directory.verify_receipt(raw, subject=subject)

    async def sync(self, *, wait_seconds: int = 0) -> list[ReceiptRecord]:
        """Pull the receipts feed from the last stored position; returns the new verified ones."""
        self._refreshed = False
        out: list[ReceiptRecord] = []
        wait = max(0, min(wait_seconds, MAX_WAIT_SECONDS))
        for _ in range(MAX_PAGES):
            cursor = self._state.counter(RECEIPT_CURSOR)
            query: dict[str, str | int] = {"after": cursor, "limit": PAGE_SIZE}
            if wait and not out:
                query["wait"] = wait
            answer = (
                await self._transport.request(
                    "GET", "/v1/receipts", query=query, read_timeout_seconds=wait + 30.0
                )
            ).json()
            if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
                raise MalformedInput(reason="receipts answer is not {items, next}")
            page: list[ReceiptRecord] = []
            last = cursor
            for item in answer["items"]:
                seq = codec.int_(item.get("seq") if isinstance(item, dict) else None, "seq")
                record = await self._feed_item(item)
                last = max(last, seq)
                if record is not None:
                    page.append(record)
            next_seq = answer.get("next")
            last = max(
                last, next_seq if isinstance(next_seq, int) and not isinstance(next_seq, bool) else last
            )
            self._state.store_receipts(
                [
                    StoredReceipt(r.envelope_id, r.recipient_id, str(r.kind), r.time, r.receipt.raw)
                    for r in page
                ],
                cursor=(RECEIPT_CURSOR, last),
            )
            out += page
            if not answer["items"]:
                break
        return out

    async def _feed_item(self, item: dict[str, Any]) -> ReceiptRecord | None:
        """One feed item, verified; None (logged) when it does not verify, so one bad item
        cannot stall the feed. Transient failures (the directory refresh) propagate."""
        try:
            envelope_id = codec.str_(item.get("envelope_id"), "envelope_id", pattern=ENVELOPE_ID)
            recipient_id = codec.str_(item.get("recipient_id"), "recipient_id", max_len=70)
            raw = b64decode(item.get("receipt"), "receipt")
            receipt = await self.verify(
                raw, envelope_id=envelope_id, sender_id=self._me, recipient_id=recipient_id
            )
            if str(receipt.kind) != item.get("kind"):
                raise MalformedInput(reason="feed kind differs from the receipt's")
        except CaseBridgeError as e:
            if transient(e):
                raise
            log.warning("receipt_refused", extra={"seq": item.get("seq"), "reason": e.reason})
            return None
        return ReceiptRecord(envelope_id, recipient_id, receipt.kind, receipt.time, receipt)

    def stored(self, envelope_id: str) -> list[ReceiptRecord]:
        return [record_of(r) for r in self._state.receipts_for(envelope_id)]

    def local_status(self, entry: OutboxEntry) -> EnvelopeStatus:
        """What this agency knows of an envelope it sent, from its own records only (each
        recipient's state is that of its latest stored receipt)."""
        receipts = self.stored(entry.envelope_id)
        recipients = {}
        for recipient in entry.recipients:
            mine = sorted(
                (r.receipt for r in receipts if r.recipient_id == recipient),
                key=lambda r: (r.time, list(ReceiptKind).index(r.kind)),
            )
            state = str(mine[-1].kind) if mine else str(entry.state)
            recipients[recipient] = RecipientStatus("pending" if state == "accepted" else state, tuple(mine))
        return EnvelopeStatus(
            envelope_id=entry.envelope_id,
            envelope_hash=entry.envelope_hash,
            sender_id=self._me,
            accepted_at=entry.accepted_at,
            expires_at=None,
            purged=False,
            recipients=recipients,
            outbox_state=entry.state,
            local_only=True,
        )

    async def status(self, envelope_id: str) -> EnvelopeStatus:
        """`GET /v1/envelopes/{id}` with every receipt verified. For an envelope this agency
        sent, when the broker is unreachable or never saw it (still in the outbox): what the
        local records say (`local_only`)."""
        check_envelope_id(envelope_id)
        self._refreshed = False
        local = self._state.outbox_entry(envelope_id)
        try:
            answer = (await self._transport.request("GET", f"/v1/envelopes/{envelope_id}")).json()
        except CaseBridgeError as e:
            unknown_here = isinstance(e, NotFound) and (local is None or local.state is OutboxState.ACCEPTED)
            if local is None or unknown_here or not (transient(e) or isinstance(e, NotFound)):
                raise
            return self.local_status(local)
        if not isinstance(answer, dict) or not isinstance(answer.get("recipients"), dict):
            raise MalformedInput(reason="status answer lacks recipients")
        sender_id = codec.str_(answer.get("sender_id"), "sender_id", max_len=70)
        claimed_hash = codec.str_(answer.get("envelope_hash"), "envelope_hash", max_len=64)
        try:
            hash_bytes = bytes.fromhex(claimed_hash)
        except ValueError as e:
            raise MalformedInput(reason="status: envelope_hash is not hex") from e
        recipients: dict[str, RecipientStatus] = {}
        mine: list[StoredReceipt] = []
        for recipient_id, value in sorted(answer["recipients"].items()):
            if not isinstance(value, dict) or not isinstance(value.get("receipts"), list):
                raise MalformedInput(reason=f"status of {recipient_id} is malformed")
            good: list[Receipt] = []
            refused = 0
            for i, b64 in enumerate(value["receipts"]):
                try:
                    raw = b64decode(b64, f"receipts[{i}]")
                    good.append(
                        await self.verify(
                            raw,
                            envelope_id=envelope_id,
                            sender_id=sender_id,
                            recipient_id=recipient_id,
                            envelope_hash=hash_bytes,
                        )
                    )
                except CaseBridgeError as e:
                    if transient(e):
                        raise
                    log.warning("receipt_refused", extra={"envelope_id": envelope_id, "reason": e.reason})
                    refused += 1
            good.sort(key=lambda r: (r.time, list(ReceiptKind).index(r.kind)))
            recipients[recipient_id] = RecipientStatus(str(value.get("state", "")), tuple(good), refused)
            if sender_id == self._me:
                mine += [StoredReceipt(envelope_id, recipient_id, str(r.kind), r.time, r.raw) for r in good]
        if mine:
            self._state.store_receipts(mine, cursor=None)
        return EnvelopeStatus(
            envelope_id=envelope_id,
            envelope_hash=claimed_hash,
            sender_id=sender_id,
            accepted_at=codec.optional_int(answer.get("accepted_at"), "accepted_at"),
            expires_at=codec.optional_int(answer.get("expires_at"), "expires_at"),
            purged=bool(answer.get("purged", False)),
            recipients=recipients,
            outbox_state=None if local is None else local.state,
        )

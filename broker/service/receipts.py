"""Receipts from recipients, and the feed that carries every receipt back to the sender.

Invariants:
- A posted receipt is a `delivered`, `verified` or `rejected` receipt signed by its recipient,
  the caller, with a certificate that verifies now; it must be about a stored envelope as
  stored (hash, id, sender) and the caller must be one of its recipients.
- Inbox transitions: pending -> delivered -> verified | rejected, and pending -> verified |
  rejected. The same receipt again is accepted and changes nothing; a receipt that the
  recorded state already implies (delivered after verified, a second verified) is accepted
  and not recorded; one that contradicts it (verified after rejected, anything after expiry)
  is a `Conflict`.
- Every recorded receipt is appended to the audit log and the sender's feed in the same
  transaction as the state change, then announced to the sender.
- A batch (`post_many`) is the same receipts posted one by one, in order: each is checked,
  recorded in its own transaction with its own audit leaf, or refused on its own (a refusal
  changes nothing and stops nothing). Its hints are coalesced: the sender hears once per
  envelope, with the highest feed sequence number the batch recorded for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from broker.service.context import Services
from broker.service.inbox import MAX_LIMIT, long_poll
from broker.service.notify import Topic
from broker.storage.records import OPEN_STATES, InboxState, NewReceipt, ReceiptOutcome, ReceiptRecord
from protocol import auditlog
from protocol.certificate import AgencyCertificate
from protocol.errors import CaseBridgeError, Conflict, Forbidden, InvalidField, NotFound
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject, verify_receipt

log = logging.getLogger("casebridge.broker.receipts")

TRANSITIONS: dict[ReceiptKind, tuple[frozenset[InboxState], InboxState]] = {
    ReceiptKind.DELIVERED: (frozenset({InboxState.PENDING}), InboxState.DELIVERED),
    ReceiptKind.VERIFIED: (OPEN_STATES, InboxState.VERIFIED),
    ReceiptKind.REJECTED: (OPEN_STATES, InboxState.REJECTED),
    ReceiptKind.EXPIRED: (OPEN_STATES, InboxState.EXPIRED),
}
IMPLIED_BY: dict[ReceiptKind, frozenset[InboxState]] = {
    ReceiptKind.DELIVERED: frozenset({InboxState.DELIVERED, InboxState.VERIFIED, InboxState.REJECTED}),
    ReceiptKind.VERIFIED: frozenset({InboxState.VERIFIED}),
    ReceiptKind.REJECTED: frozenset({InboxState.REJECTED}),
    ReceiptKind.EXPIRED: frozenset({InboxState.EXPIRED}),
}


@dataclass(frozen=True, slots=True)
class PostedReceipt:
    receipt: Receipt
    outcome: ReceiptOutcome

    @property
    def created(self) -> bool:
        return self.outcome.recorded is not None and not self.outcome.duplicate


def new_receipt(receipt: Receipt, now: int) -> NewReceipt:
    from_states, to_state = TRANSITIONS[receipt.kind]
    subject = receipt.subject
    return NewReceipt(
        envelope_id=subject.envelope_id,
        recipient_id=subject.recipient_id,
        kind=str(receipt.kind),
        raw=receipt.raw,
        recorded_at=now,
        from_states=from_states,
        to_state=to_state,
        leaf=auditlog.encode_leaf(
            now,
            auditlog.ReceiptRecorded(receipt.kind, subject.envelope_id, subject.recipient_id, receipt.raw),
        ),
    )


def announce(services: Services, receipt: Receipt, outcome: ReceiptOutcome) -> None:
    """Tell the sender and count a receipt that was recorded now."""
    record = outcome.recorded
    if record is None or outcome.duplicate:
        return
    _hint(services, record)
    count(services, receipt, outcome)


def _hint(services: Services, record: ReceiptRecord) -> None:
    services.notifier.publish(
        record.sender_id,
        Topic.RECEIPTS,
        {"type": "receipt", "seq": record.seq, "envelope_id": record.envelope_id.hex()},
    )


def count(services: Services, receipt: Receipt, outcome: ReceiptOutcome) -> None:
    """Count a receipt that was recorded now (no hint)."""
    if outcome.recorded is None or outcome.duplicate:
        return
    metrics = services.metrics
    metrics.receipts.labels(kind=str(receipt.kind)).inc()
    if outcome.previous is InboxState.PENDING and receipt.kind is not ReceiptKind.EXPIRED:
        metrics.envelopes_delivered.inc()
    previous, state = outcome.previous, outcome.state
    if previous is not None and previous.is_open and state is not None and not state.is_open:
        metrics.inbox_depth.dec()


class ReceiptDesk:
    def __init__(self, services: Services) -> None:
        self._s = services

    async def post(self, caller: AgencyCertificate, data: bytes) -> PostedReceipt:
        posted = await self._record(caller, data)
        announce(self._s, posted.receipt, posted.outcome)
        return posted

    async def post_many(
        self, caller: AgencyCertificate, receipts: list[bytes]
    ) -> list[PostedReceipt | CaseBridgeError]:
        """Post each receipt as `post` would, in order; a refused one is its error in the list.
        Hints go out once all are done, one per envelope (see the module invariants)."""
        results: list[PostedReceipt | CaseBridgeError] = []
        latest: dict[tuple[str, bytes], ReceiptRecord] = {}
        try:
            for data in receipts:
                try:
                    posted = await self._record(caller, data)
                except CaseBridgeError as e:
                    results.append(e)
                    continue
                results.append(posted)
                count(self._s, posted.receipt, posted.outcome)
                record = posted.outcome.recorded
                if posted.created and record is not None:
                    latest[(record.sender_id, record.envelope_id)] = record
        finally:
            for record in latest.values():
                _hint(self._s, record)
        return results

    async def _record(self, caller: AgencyCertificate, data: bytes) -> PostedReceipt:
        """Check and record one receipt (no hint, no count)."""
        s = self._s
        now = s.clock.now()
        receipt = Receipt.parse(data)
        if receipt.kind.signed_by_broker:
            raise InvalidField("kind", "delivered, verified or rejected: the broker signs the others")
        if receipt.subject.recipient_id != caller.agency_id or receipt.signer_id != caller.agency_id:
            raise Forbidden(reason="a receipt is posted by the recipient that signed it")
        if receipt.time > now + s.settings.clock_skew_seconds:
            raise InvalidField("time", "a receipt time that is not in the future")
        signer = s.directory.verified(receipt.signer_key_id, now)
        envelope = await s.store.delivery.envelope(receipt.subject.envelope_id)
        if envelope is None:
            raise NotFound(reason="no such envelope for this agency")
        subject = ReceiptSubject(
            envelope.envelope_hash, envelope.envelope_id, envelope.sender_id, caller.agency_id
        )
        verify_receipt(receipt, signer=signer, subject=subject)
        outcome = await s.store.delivery.record_receipt(new_receipt(receipt, now))
        if outcome.state is None:
            raise NotFound(reason="no such envelope for this agency")
        if outcome.recorded is None and outcome.state not in IMPLIED_BY[receipt.kind]:
            raise Conflict(reason=f"a {receipt.kind} receipt contradicts the recorded state {outcome.state}")
        if outcome.recorded is not None and not outcome.duplicate:
            log.info(
                "receipt_recorded",
                extra={
                    "envelope_id": envelope.envelope_id.hex(),
                    "kind": str(receipt.kind),
                    "state": str(outcome.state),
                },
            )
        return PostedReceipt(receipt, outcome)

    async def feed(self, sender_id: str, after: int, limit: int, wait_seconds: int) -> list[ReceiptRecord]:
        limit = max(1, min(limit, MAX_LIMIT))
        delivery = self._s.store.delivery
        return await long_poll(
            self._s,
            sender_id,
            Topic.RECEIPTS,
            wait_seconds,
            lambda: delivery.sender_feed(sender_id, after, limit),
        )

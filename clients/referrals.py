"""Typed referral messages in the client: building them with their header filled in from the
local case store, sending them through the workflow check, and admitting delivered ones.

Invariants:
- Nothing the workflow refuses is sealed: `ReferralMessaging.send` applies the message as its
  sender to the case rebuilt from the case store and records it there (one transaction) before
  the envelope is sealed; a refusal raises `InvalidTransition`, `ConsentError` or `InvalidField`
  and leaves the outbox and the case store as they were. If sealing then fails, the message is
  taken back out of the case store.
- A delivered envelope with a referral content type is decoded and applied as its recipient
  (`ReferralMessaging.admit`) before the `verified` receipt is signed. A message that does not
  decode is refused as `malformed`; one the case refuses, or whose header names another sender
  than the envelope's signer or another recipient than this agency, as `policy`. Either way the
  envelope is answered with a `rejected` receipt and the refusal, with why, is kept in the
  (encrypted) case store for the person to see.
- What a refusal leaves in logs and in the plain state database (`Refusal.summary`) names message
  types, error codes and field paths only, never a field's value.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from clients.case_store import CaseStore
from clients.case_threads import CaseThread, RefusedMessage
from clients.inbox import Refusal
from clients.local_records import OutboxEntry
from clients.sending import SendResult
from protocol import codec
from protocol.envelope import Manifest
from protocol.errors import (
    CaseBridgeError,
    ConsentError,
    InvalidField,
    InvalidTransition,
    UnsupportedVersion,
)
from protocol.primitives import Random
from protocol.receipt import RejectReason
from protocol.referral import (
    CONTENT_TYPE,
    MESSAGE_CLASSES,
    CaseState,
    Consent,
    ConsentChange,
    Header,
    InfoResponse,
    Message,
    MessageType,
    Referral,
    RequestKind,
    decode_message,
    encode_message,
)

MT = MessageType
REFERRAL_MEDIA_TYPE = CONTENT_TYPE.split(";", 1)[0]


class Reply(Enum):
    """`in_reply_to=Reply.NATURAL`: the message this type naturally answers in the case now."""

    NATURAL = "natural"


def _content_type_parts(content_type: str) -> tuple[str, str]:
    media, _, params = content_type.partition(";")
    return media.strip().lower(), "".join(params.split()).lower()


def is_referral_content(content_type: str) -> bool:
    """Whether an envelope body is a referral message (of any version)."""
    return _content_type_parts(content_type)[0] == REFERRAL_MEDIA_TYPE


def natural_reply(state: CaseState, message_type: MessageType) -> bytes | None:
    """The message a `message_type` from this agency would answer now, if there is one: the
    oldest unacknowledged message of the other side, the referral being decided, the oldest open
    request awaiting this side, the active repatriation plan, or the closure proposal."""
    side = state.local_side
    if message_type is MT.ACKNOWLEDGEMENT:
        todo = [m for m in state.messages if m.needs_acknowledgement and not m.acknowledged]
        return next((m.message_id for m in todo if m.sender is not side), None)
    if message_type in (MT.ACCEPTANCE, MT.DECLINE):
        return state.decision_on
    if message_type in (MT.REPATRIATION_CONFIRMATION, MT.HANDOVER_RECORD):
        plan = state.active_plan
        return None if plan is None else plan.request_id
    if message_type is MT.CASE_CLOSURE:
        return state.closure_proposal
    kinds = {
        MT.INFO_RESPONSE: RequestKind.INFO,
        MT.VERIFICATION_RESULT: RequestKind.VERIFICATION,
        MT.FAMILY_ASSESSMENT_RESULT: RequestKind.FAMILY_ASSESSMENT,
    }
    if message_type in kinds:
        open_ = (
            r for r in state.requests if r.kind is kinds[message_type] and r.is_open and side in r.awaiting
        )
        return next((r.request_id for r in open_), None)
    return None


def check_named_attachments(message: Message, filenames: Sequence[str]) -> None:
    """A message that names attachments (an INFO_RESPONSE) names files in the same envelope."""
    if isinstance(message, InfoResponse):
        present = {codec.nfc(n) for n in filenames}
        for i, name in enumerate(message.attachments):
            if name not in present:
                raise InvalidField(f"attachments[{i}]", "the name of a file attached to the same envelope")


# --- building ----------------------------------------------------------------------------------


class MessageBuilder:
    """Makes messages from this agency with their header filled in: a random message id, a new
    case link id for a referral, the time from the clock, both agencies, both case numbers and
    the current consent version from the case as the local case store holds it."""

    def __init__(self, agency_id: str, cases: CaseStore, *, clock: Callable[[], int], rng: Random) -> None:
        self.agency_id = agency_id
        self._cases = cases
        self._clock = clock
        self._rng = rng

    def case(self, case: CaseThread | CaseState | bytes | str) -> CaseState:
        """A case's current state, from a thread, a state, a link id or a case number."""
        if isinstance(case, CaseThread):
            return case.state
        if isinstance(case, CaseState):
            return case
        if isinstance(case, bytes):
            thread = self._cases.thread(case, now=self._clock())
            if thread is None:
                raise InvalidField("case", f"a case in this agency's case store; {case.hex()} is not one")
            return thread.state
        return self._cases.find(case, now=self._clock()).state

    def referral(self, *, to: str, case_ref: str, consent: Consent, **body: Any) -> Referral:
        """A REFERRAL opening a new case (with a new random case link id) under `case_ref`, this
        agency's case number; `body` holds the other fields (`person`, `identified_on`, ...)."""
        header = Header(
            message_id=self._rng(16),
            case_link_id=self._rng(16),
            sender_agency_id=self.agency_id,
            receiver_agency_id=to,
            created_at=self._clock(),
            consent_ref=consent.consent_id,
            sender_case_ref=case_ref,
        )
        return Referral(header=header, consent=consent, **body)

    def message(
        self,
        case: CaseThread | CaseState | bytes | str,
        message_type: MessageType | str,
        *,
        in_reply_to: bytes | Reply | None = Reply.NATURAL,
        case_ref: str | None = None,
        **body: Any,
    ) -> Message:
        """A message of `message_type` in an existing case. `case_ref` is this agency's new case
        number, for an ACCEPTANCE only. By default `in_reply_to` names what the type naturally
        answers now (see `natural_reply`); pass None or an id to choose."""
        state = self.case(case)
        try:
            mtype = MessageType(message_type)
        except ValueError:
            raise InvalidField("type", "one of " + ", ".join(t.value for t in MT)) from None
        if mtype is MT.REFERRAL:
            raise InvalidField("type", "a message within the case: a referral opens a new case")
        if (mtype is MT.ACCEPTANCE) != (case_ref is not None):
            raise InvalidField("case_ref", "this agency's new case number exactly for an acceptance")
        reply = natural_reply(state, mtype) if in_reply_to is Reply.NATURAL else in_reply_to
        new_consent = body.get("consent")
        consent_ref = (
            new_consent.consent_id
            if mtype is MT.CONSENT_CHANGE and isinstance(new_consent, Consent)
            else state.consent.consent_id
        )
        side = state.local_side
        header = Header(
            message_id=self._rng(16),
            case_link_id=state.case_link_id,
            sender_agency_id=self.agency_id,
            receiver_agency_id=state.agency_of(side.other),
            created_at=self._clock(),
            consent_ref=consent_ref,
            sender_case_ref=case_ref if mtype is MT.ACCEPTANCE else state.case_ref_of(side),
            receiver_case_ref=state.case_ref_of(side.other),
            in_reply_to=reply,
        )
        return MESSAGE_CLASSES[mtype](header=header, **body)

    def consent_in_force(self, message: Message) -> Consent:
        """The consent a message is checked against: its own for a referral or a consent change,
        else the case's current one."""
        if isinstance(message, Referral | ConsentChange):
            return message.consent
        return self.case(message.header.case_link_id).consent


# --- sending and admitting ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A referral message sent: the case's state after it, and what became of the envelope."""

    message: Message
    state: CaseState
    result: SendResult


def _path(field: str) -> str:
    """A field path as logs may show it: schema characters only (a key in an undecodable
    message is the sender's text), and not long."""
    return re.sub(r"[^a-z0-9_.\[\]]", "?", field)[:120]


def _summary(message_type: str, error: CaseBridgeError) -> str:
    where = ""
    if isinstance(error, InvalidField):
        where = f" at {_path(error.field)}"
    elif isinstance(error, ConsentError):
        where = " at " + ", ".join(_path(f) for f in error.fields)
    return f"referral message ({message_type}) refused: {error.code}{where}"


class ReferralMessaging:
    """The workflow gate between an agency's case store and its envelopes."""

    def __init__(self, agency_id: str, cases: CaseStore, *, clock: Callable[[], int]) -> None:
        self.agency_id = agency_id
        self._cases = cases
        self._clock = clock

    async def send(
        self,
        message: Message,
        *,
        filenames: Sequence[str],
        seal: Callable[[bytes], Awaitable[OutboxEntry]],
        upload: Callable[[OutboxEntry], Awaitable[SendResult]],
    ) -> SentMessage:
        """Check and record `message`, then `seal` its encoding and `upload` the envelope."""
        if message.header.sender_agency_id != self.agency_id:
            raise InvalidField("header.sender_agency_id", f"this agency ({self.agency_id})")
        names = tuple(codec.nfc(n) for n in filenames)
        check_named_attachments(message, names)
        state = self._cases.record_sent(message, now=self._clock(), attachments=names)
        try:
            entry = await seal(encode_message(message))
        except BaseException:
            self._cases.discard_unsealed(message)
            raise
        self._cases.mark_sealed(message, entry.envelope_id)
        return SentMessage(message, state, await upload(entry))

    def admit(self, envelope_id: str, sender_id: str, manifest: Manifest) -> Refusal | None:
        """The receiver's hook: None to accept the envelope, or why it is rejected."""
        if not is_referral_content(manifest.content_type):
            return None
        now = self._clock()
        try:
            if _content_type_parts(manifest.content_type) != _content_type_parts(CONTENT_TYPE):
                raise UnsupportedVersion(
                    reason=f"referral content type {manifest.content_type!r}; this side reads {CONTENT_TYPE}"
                )
            message = decode_message(manifest.body)
        except CaseBridgeError as e:
            return self._refuse(envelope_id, sender_id, RejectReason.MALFORMED, e, None, now)
        names = tuple(a.filename for a in manifest.attachments)
        try:
            if message.header.sender_agency_id != sender_id:
                raise InvalidField(
                    "header.sender_agency_id", f"the agency that signed the envelope ({sender_id})"
                )
            if message.header.receiver_agency_id != self.agency_id:
                raise InvalidField("header.receiver_agency_id", f"this agency ({self.agency_id})")
            check_named_attachments(message, names)
            self._cases.record_received(message, envelope_id=envelope_id, now=now, attachments=names)
        except (InvalidTransition, ConsentError, InvalidField) as e:
            return self._refuse(envelope_id, sender_id, RejectReason.POLICY, e, message, now)
        return None

    def _refuse(
        self,
        envelope_id: str,
        sender_id: str,
        reason: RejectReason,
        error: CaseBridgeError,
        message: Message | None,
        now: int,
    ) -> Refusal:
        link = None if message is None else message.header.case_link_id
        self._cases.record_refusal(
            RefusedMessage(envelope_id, sender_id, now, str(reason), error.reason, message, link)
        )
        return Refusal(reason, _summary("undecodable" if message is None else message.TYPE, error))

"""The case workflow: which referral message each case state allows, from which side, and what
it changes. Pure: `apply(state, message, *, as_sender, now)` returns the next state or raises,
and leaves `state` untouched either way.

The same function runs on the sender's side before sealing (`as_sender=True`) and on the
recipient's side after opening (`as_sender=False`), so both sides hold equal states. In order it
checks the header (this case's link id and agencies, this agency's role, a new message id, both
case numbers, a known consent version), that the case phase allows the type (`PHASES_ALLOWING`)
from the sender's side (`SENDERS`), that replies name a known message, the rules of the request
answered, and finally the consent gate (`consent.check_consent`), whose overrides it records.
Refusals are `InvalidTransition` (naming the phase and the messages allowed now),
`InvalidField` (a header that does not fit the case) or `ConsentError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, NoReturn

from protocol.certificate import country_of
from protocol.errors import InvalidField, InvalidTransition
from protocol.referral.case_messages import ConsentChange, Decline, InfoRequest, Referral
from protocol.referral.case_state import (
    PLAN_PHASE,
    CasePhase,
    CaseState,
    MessageRecord,
    RecordedOverride,
    RequestKind,
    RequestState,
    RequestStatus,
    Side,
)
from protocol.referral.codes import (
    AssessmentOutcome,
    HandoverOutcome,
    RepatriationAction,
    VerificationOutcome,
)
from protocol.referral.consent import OverrideRecord, check_consent
from protocol.referral.messages import Message
from protocol.referral.return_messages import (
    FamilyAssessmentRequest,
    FamilyAssessmentResult,
    HandoverRecord,
    RepatriationConfirmation,
    VerificationResult,
)
from protocol.referral.rules import (
    BOTH,
    DECIDING,
    MT,
    NEEDS_ACKNOWLEDGEMENT,
    REPLY_REQUIRED,
    P,
    allowed_messages,
    side_refusal,
)

CLOCK_SKEW_SECONDS = 300
"""How far ahead of `now` a message's `created_at` may be (clocks drift; offline laptops more)."""
RS = RequestStatus
RA = RepatriationAction


def _refuse(state: CaseState, side: Side, reason: str) -> NoReturn:
    allowed = tuple(sorted(t.value for t in allowed_messages(state, side)))
    raise InvalidTransition(
        f"{reason} (case is {state.phase}; the {side} side may send: {', '.join(allowed) or 'nothing'})",
        state=state.phase.value,
        allowed=allowed,
    )


# --- opening a case --------------------------------------------------------------------------


def _open_case(referral: Referral, *, as_sender: bool) -> CaseState:
    h = referral.header
    if h.in_reply_to is not None:
        raise InvalidField("header.in_reply_to", "nothing: a referral opens a case")
    if h.sender_case_ref is None:
        raise InvalidField("header.sender_case_ref", "the destination side's case number")
    if h.receiver_case_ref is not None:
        raise InvalidField("header.receiver_case_ref", "nothing until the origin side accepts")
    if country_of(h.sender_agency_id) == country_of(h.receiver_agency_id):
        raise InvalidField("header.receiver_agency_id", "an agency in another country")
    if h.consent_ref != referral.consent.consent_id:
        raise InvalidField("header.consent_ref", "the id of the referral's consent")
    overrides = check_consent(referral, referral.consent)
    state = CaseState(
        case_link_id=h.case_link_id,
        local_agency_id=h.sender_agency_id if as_sender else h.receiver_agency_id,
        destination_agency_id=h.sender_agency_id,
        origin_agency_id=h.receiver_agency_id,
        destination_case_ref=h.sender_case_ref,
        origin_case_ref=None,
        phase=P.REFERRED,
        consent=referral.consent,
        decision_on=h.message_id,
        consent_ids=(referral.consent.consent_id,),
        messages=(),
    )
    return _record(state, referral, Side.DESTINATION, overrides)


# --- checks common to every message in a case ----------------------------------------------


def _check_header(state: CaseState, message: Message, as_sender: bool) -> Side:
    h = message.header
    if h.case_link_id != state.case_link_id:
        raise InvalidField("header.case_link_id", "this case's link id")
    sender, receiver = state.side_of(h.sender_agency_id), state.side_of(h.receiver_agency_id)
    agencies = f"one of the case's agencies ({state.destination_agency_id}, {state.origin_agency_id})"
    if sender is None:
        raise InvalidField("header.sender_agency_id", agencies)
    if receiver is None:
        raise InvalidField("header.receiver_agency_id", agencies)
    local_field = "header.sender_agency_id" if as_sender else "header.receiver_agency_id"
    if (h.sender_agency_id if as_sender else h.receiver_agency_id) != state.local_agency_id:
        raise InvalidField(local_field, f"this agency ({state.local_agency_id})")
    if state.message(h.message_id) is not None:
        _refuse(state, sender, f"message {h.message_id.hex()} is already part of this case")
    if message.TYPE is not MT.ACCEPTANCE and h.sender_case_ref != state.case_ref_of(sender):
        raise InvalidField(
            "header.sender_case_ref", f"{state.case_ref_of(sender)!r}, the {sender} case number"
        )
    if h.receiver_case_ref != state.case_ref_of(receiver):
        raise InvalidField(
            "header.receiver_case_ref", f"{state.case_ref_of(receiver)!r}, the {receiver} case number"
        )
    if isinstance(message, ConsentChange):
        if message.consent.consent_id in state.consent_ids:
            raise InvalidField("consent.consent_id", "a new consent id")
        if h.consent_ref != message.consent.consent_id:
            raise InvalidField("header.consent_ref", "the id of the new consent")
    elif h.consent_ref not in state.consent_ids:
        raise InvalidField("header.consent_ref", "the id of one of this case's consent versions")
    return sender


def _check_transition(state: CaseState, message: Message, sender: Side) -> None:
    t = message.TYPE
    refusal = side_refusal(t, sender, state.phase)
    if refusal is not None:
        _refuse(state, sender, refusal)
    reply = message.header.in_reply_to
    if reply is None and t in REPLY_REQUIRED:
        raise InvalidField("header.in_reply_to", f"the id of the message a {t} answers")
    if reply is not None and state.message(reply) is None:
        raise InvalidField("header.in_reply_to", "the id of a message in this case")


def _record(
    state: CaseState, message: Message, sender: Side, overrides: Iterable[OverrideRecord]
) -> CaseState:
    h = message.header
    entry = MessageRecord(
        h.message_id, message.TYPE, sender, h.created_at, h.in_reply_to, message.TYPE in NEEDS_ACKNOWLEDGEMENT
    )
    recorded = tuple(RecordedOverride(h.message_id, sender, o) for o in overrides)
    return replace(state, messages=(*state.messages, entry), overrides=(*state.overrides, *recorded))


def _with_working_phase(state: CaseState, phase: CasePhase) -> CaseState:
    """Move the working phase, also while a closure is proposed or made."""
    if state.phase_before_closure is not None:
        return replace(state, phase_before_closure=phase)
    return replace(state, phase=phase)


def _put(state: CaseState, *requests: RequestState) -> CaseState:
    """Replace requests by id and kind, appending new ones."""
    out = list(state.requests)
    for r in requests:
        i = next((i for i, o in enumerate(out) if (o.request_id, o.kind) == (r.request_id, r.kind)), None)
        if i is None:
            out.append(r)
        else:
            out[i] = r
    return replace(state, requests=tuple(out))


def _open(state: CaseState, m: Message, kind: RequestKind, sender: Side, status: RS, **kw: Any) -> CaseState:
    kw.setdefault("awaiting", (sender.other,))
    return _put(state, RequestState(m.message_id, kind, sender, status, **kw))


def _answered(state: CaseState, m: Message, sender: Side, kind: RequestKind, from_: set[RS]) -> RequestState:
    request = state.request(m.header.in_reply_to, kind)
    if request is None or request.status not in from_ or sender not in request.awaiting:
        _refuse(state, sender, f"a {m.TYPE} answers an open {kind} request awaiting the {sender} side")
    return request


# --- what each message type does --------------------------------------------------------------


def _acknowledge(state: CaseState, m: Message, sender: Side) -> CaseState:
    target = state.message(m.header.in_reply_to)
    if target is None or target.sender is sender:
        _refuse(state, sender, "a side acknowledges the other side's messages")
    if not target.needs_acknowledgement:
        _refuse(state, sender, f"a {target.type} is answered by its reply, not acknowledged")
    if target.acknowledged:
        _refuse(state, sender, f"that {target.type} was already acknowledged")
    read = replace(target, acknowledged=True)
    state = replace(state, messages=tuple(read if x is target else x for x in state.messages))
    if target.message_id == state.decision_on and state.working_phase is P.REFERRED:
        state = _with_working_phase(state, P.ACKNOWLEDGED)
    return state


def _decide(state: CaseState, m: Message, sender: Side) -> CaseState:
    if m.header.in_reply_to != state.decision_on:
        _refuse(state, sender, f"a {m.TYPE} names the referral being decided in in_reply_to")
    unblocked = tuple(replace(r, blocks_decision=False) for r in state.requests)
    if isinstance(m, Decline):
        return replace(state, phase=P.DECLINED, decline_reason=m.reason, requests=unblocked)
    if m.header.sender_case_ref is None:
        raise InvalidField("header.sender_case_ref", "the origin side's new case number")
    return replace(state, phase=P.ACCEPTED, origin_case_ref=m.header.sender_case_ref, requests=unblocked)


def _info_request(state: CaseState, m: InfoRequest, sender: Side) -> CaseState:
    blocks = sender is Side.ORIGIN and state.phase in DECIDING
    state = _open(state, m, RequestKind.INFO, sender, RS.OPEN, due_on=m.due_on, blocks_decision=blocks)
    return replace(state, phase=P.INFO_REQUESTED) if blocks else state


def _info_response(state: CaseState, m: Message, sender: Side) -> CaseState:
    request = _answered(state, m, sender, RequestKind.INFO, {RS.OPEN})
    state = _put(state, replace(request, status=RS.ANSWERED, awaiting=()))
    still_blocked = any(r.blocks_decision and r.is_open for r in state.requests)
    if state.working_phase is P.INFO_REQUESTED and not still_blocked:
        state = _with_working_phase(state, P.ACKNOWLEDGED)
    return state


def _verification_request(state: CaseState, m: Message, sender: Side) -> CaseState:
    return _open(state, m, RequestKind.VERIFICATION, sender, RS.REQUESTED)


def _verification_result(state: CaseState, m: VerificationResult, sender: Side) -> CaseState:
    request = _answered(state, m, sender, RequestKind.VERIFICATION, {RS.REQUESTED})
    verified = m.outcome is VerificationOutcome.VERIFIED
    return _put(state, replace(request, status=RS.VERIFIED if verified else RS.NOT_VERIFIED, awaiting=()))


def _family_request(state: CaseState, m: FamilyAssessmentRequest, sender: Side) -> CaseState:
    return _open(state, m, RequestKind.FAMILY_ASSESSMENT, sender, RS.REQUESTED, due_on=m.due_on)


def _family_result(state: CaseState, m: FamilyAssessmentResult, sender: Side) -> CaseState:
    outcome = m.outcome
    if outcome is AssessmentOutcome.FORWARDED_TO_PROVINCE:
        request = _answered(state, m, sender, RequestKind.FAMILY_ASSESSMENT, {RS.REQUESTED})
        return _put(state, replace(request, status=RS.FORWARDED_TO_PROVINCE))
    request = _answered(
        state, m, sender, RequestKind.FAMILY_ASSESSMENT, {RS.REQUESTED, RS.FORWARDED_TO_PROVINCE}
    )
    done = RS.COMPLETED if outcome is AssessmentOutcome.COMPLETED else RS.NOT_FOUND
    return _put(state, replace(request, status=done, awaiting=()))


def _plan(state: CaseState, m: Message, sender: Side) -> CaseState:
    state = _open(state, m, RequestKind.REPATRIATION, sender, RS.PROPOSED)
    return replace(state, phase=P.REPATRIATION_PROPOSED)


def _plan_answer(state: CaseState, m: RepatriationConfirmation, sender: Side) -> CaseState:
    plan, handover = state.active_plan, state.pending_handover
    if plan is None or plan.request_id != m.header.in_reply_to:
        _refuse(state, sender, "a repatriation_confirmation names the active plan in in_reply_to")
    action = m.action
    changed: list[RequestState] = []
    awaiting: tuple[Side, ...]
    if action in (RA.CONFIRM, RA.COUNTER_PROPOSE):
        if plan.status not in (RS.PROPOSED, RS.COUNTER_PROPOSED) or sender not in plan.awaiting:
            _refuse(
                state, sender, f"the plan is {plan.status}; {action} comes from the side it was proposed to"
            )
        confirmed = action is RA.CONFIRM
        status, awaiting = (RS.CONFIRMED, BOTH) if confirmed else (RS.COUNTER_PROPOSED, (sender.other,))
    elif action is RA.SCHEDULE:
        if plan.status not in (RS.CONFIRMED, RS.POSTPONED):
            _refuse(
                state, sender, f"the plan is {plan.status}; only a confirmed or postponed plan is scheduled"
            )
        status, awaiting = RS.SCHEDULED, BOTH
        due = m.scheduled_on
        changed.append(
            RequestState(m.message_id, RequestKind.HANDOVER, sender, RS.PENDING, BOTH, due, plan.request_id)
        )
    elif action is RA.POSTPONE:
        if plan.status is not RS.SCHEDULED:
            _refuse(state, sender, f"the plan is {plan.status}; only a scheduled plan is postponed")
        status, awaiting = RS.POSTPONED, BOTH
    else:
        status, awaiting = RS.CANCELLED, ()
    if handover is not None and action in (RA.POSTPONE, RA.CANCEL):
        changed.append(replace(handover, status=RS.CANCELLED, awaiting=()))
    state = _put(state, replace(plan, status=status, awaiting=awaiting), *changed)
    return replace(state, phase=PLAN_PHASE.get(status, P.ACCEPTED))


def _handover(state: CaseState, m: HandoverRecord, sender: Side) -> CaseState:
    plan, handover = state.active_plan, state.pending_handover
    if plan is None or handover is None or plan.request_id != m.header.in_reply_to:
        _refuse(state, sender, "a handover_record names the scheduled plan in in_reply_to")
    if m.outcome is HandoverOutcome.COMPLETED:
        state = _put(
            state,
            replace(handover, status=RS.COMPLETED, awaiting=()),
            replace(plan, status=RS.CARRIED_OUT, awaiting=()),
        )
        return replace(state, phase=P.HANDED_OVER)
    state = _put(
        state,
        replace(handover, status=RS.FAILED, awaiting=()),
        replace(plan, status=RS.POSTPONED, awaiting=BOTH),
    )
    return replace(state, phase=P.REPATRIATION_POSTPONED)


def _reintegration(state: CaseState, m: Message, sender: Side) -> CaseState:
    return replace(state, phase=P.FOLLOW_UP)


def _unchanged(state: CaseState, m: Message, sender: Side) -> CaseState:
    return state


def _consent_change(state: CaseState, m: ConsentChange, sender: Side) -> CaseState:
    return replace(state, consent=m.consent, consent_ids=(*state.consent_ids, m.consent.consent_id))


def _closure(state: CaseState, m: Message, sender: Side) -> CaseState:
    if state.phase is P.CLOSURE_PROPOSED:
        if sender is state.closure_proposed_by:
            _refuse(state, sender, "this side proposed the closure; the other side confirms it")
        if m.header.in_reply_to != state.closure_proposal:
            _refuse(state, sender, "a closure confirmation names the proposal in in_reply_to")
        return replace(state, phase=P.CLOSED, closure_proposal=None, closure_proposed_by=None)
    return replace(
        state,
        phase=P.CLOSURE_PROPOSED,
        phase_before_closure=state.phase,
        closure_proposal=m.message_id,
        closure_proposed_by=sender,
    )


def _reopen(state: CaseState, m: Message, sender: Side) -> CaseState:
    if state.phase is P.DECLINED:
        return replace(state, phase=P.REFERRED, decline_reason=None, decision_on=m.message_id)
    restored = state.working_phase
    return replace(
        state, phase=restored, phase_before_closure=None, closure_proposal=None, closure_proposed_by=None
    )


_HANDLERS: Mapping[MT, Callable[[CaseState, Any, Side], CaseState]] = {
    MT.ACKNOWLEDGEMENT: _acknowledge,
    MT.ACCEPTANCE: _decide,
    MT.DECLINE: _decide,
    MT.INFO_REQUEST: _info_request,
    MT.INFO_RESPONSE: _info_response,
    MT.VERIFICATION_REQUEST: _verification_request,
    MT.VERIFICATION_RESULT: _verification_result,
    MT.FAMILY_ASSESSMENT_REQUEST: _family_request,
    MT.FAMILY_ASSESSMENT_RESULT: _family_result,
    MT.REPATRIATION_PLAN: _plan,
    MT.REPATRIATION_CONFIRMATION: _plan_answer,
    MT.HANDOVER_RECORD: _handover,
    MT.REINTEGRATION_PLAN: _reintegration,
    MT.CASE_UPDATE: _unchanged,
    MT.CONSENT_CHANGE: _consent_change,
    MT.CASE_CLOSURE: _closure,
    MT.CASE_REOPEN: _reopen,
}


def apply(state: CaseState | None, message: Message, *, as_sender: bool, now: int) -> CaseState:
    """The case after `message`, or a refusal. `state` is None before the REFERRAL that opens the
    case. `as_sender` says whether this agency is sending `message` (or has received it); `now`
    (Unix seconds) bounds `created_at` against clocks running ahead."""
    if message.header.created_at > now + CLOCK_SKEW_SECONDS:
        raise InvalidField("header.created_at", "a time that is not in the future")
    if state is None:
        if not isinstance(message, Referral):
            raise InvalidTransition(
                f"there is no case yet: only a referral opens one, not a {message.TYPE}",
                state="none",
                allowed=(MT.REFERRAL.value,),
            )
        return _open_case(message, as_sender=as_sender)
    if isinstance(message, Referral):
        side = state.side_of(message.header.sender_agency_id) or Side.DESTINATION
        _refuse(state, side, "a referral opens a new case (with a new case_link_id), not this one")
    sender = _check_header(state, message, as_sender)
    _check_transition(state, message, sender)
    after = _HANDLERS[message.TYPE](state, message, sender)
    consent = message.consent if isinstance(message, ConsentChange) else state.consent
    return _record(after, message, sender, check_consent(message, consent))


def replay(local_agency_id: str, messages: Iterable[Message], *, now: int) -> CaseState | None:
    """Rebuild a case from its messages in the order they were applied (a case store keeps the
    messages and derives the state, so the state never needs its own storage format)."""
    state: CaseState | None = None
    for message in messages:
        state = apply(state, message, as_sender=message.header.sender_agency_id == local_agency_id, now=now)
    return state

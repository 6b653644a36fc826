"""The state of one case as each side holds it: phase, per-request states, known messages,
current consent and recorded overrides. Pure data; `workflow.apply` is the only way forward.

The two sides apply the same messages and so hold equal states, except `local_agency_id` (which
side this copy belongs to). `invariant_violations` states what every reachable state satisfies;
the property tests hold `apply` to it, and a case store can run it on load.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocol.referral.codes import DeclineReason, MessageType
from protocol.referral.consent import Consent, OverrideRecord


class Side(StrEnum):
    """The two sides of a case. The destination side identified the person and sends the REFERRAL;
    the origin side is the person's country of origin."""

    DESTINATION = "destination"
    ORIGIN = "origin"

    @property
    def other(self) -> Side:
        return Side.ORIGIN if self is Side.DESTINATION else Side.DESTINATION


class CasePhase(StrEnum):
    REFERRED = "referred"
    ACKNOWLEDGED = "acknowledged"
    INFO_REQUESTED = "info_requested"
    DECLINED = "declined"
    ACCEPTED = "accepted"
    REPATRIATION_PROPOSED = "repatriation_proposed"
    REPATRIATION_COUNTER_PROPOSED = "repatriation_counter_proposed"
    REPATRIATION_CONFIRMED = "repatriation_confirmed"
    REPATRIATION_SCHEDULED = "repatriation_scheduled"
    REPATRIATION_POSTPONED = "repatriation_postponed"
    HANDED_OVER = "handed_over"
    FOLLOW_UP = "follow_up"
    CLOSURE_PROPOSED = "closure_proposed"
    CLOSED = "closed"


PRE_ACCEPTANCE = frozenset({CasePhase.REFERRED, CasePhase.ACKNOWLEDGED, CasePhase.INFO_REQUESTED})
"""Phases before the origin side decided (and so before it has a case number)."""


class RequestKind(StrEnum):
    INFO = "info"
    VERIFICATION = "verification"
    FAMILY_ASSESSMENT = "family_assessment"
    REPATRIATION = "repatriation"
    HANDOVER = "handover"


class RequestStatus(StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    OVERDUE = "overdue"  # derived from the due date and today; never stored
    REQUESTED = "requested"
    VERIFIED = "verified"
    NOT_VERIFIED = "not_verified"
    FORWARDED_TO_PROVINCE = "forwarded_to_province"
    COMPLETED = "completed"
    NOT_FOUND = "not_found"
    PROPOSED = "proposed"
    COUNTER_PROPOSED = "counter_proposed"
    CONFIRMED = "confirmed"
    SCHEDULED = "scheduled"
    POSTPONED = "postponed"
    CANCELLED = "cancelled"
    CARRIED_OUT = "carried_out"
    PENDING = "pending"
    FAILED = "failed"


RS = RequestStatus
STATUSES: dict[RequestKind, frozenset[RequestStatus]] = {
    RequestKind.INFO: frozenset({RS.OPEN, RS.ANSWERED}),
    RequestKind.VERIFICATION: frozenset({RS.REQUESTED, RS.VERIFIED, RS.NOT_VERIFIED}),
    RequestKind.FAMILY_ASSESSMENT: frozenset(
        {RS.REQUESTED, RS.FORWARDED_TO_PROVINCE, RS.COMPLETED, RS.NOT_FOUND}
    ),
    RequestKind.REPATRIATION: frozenset(
        {
            RS.PROPOSED,
            RS.COUNTER_PROPOSED,
            RS.CONFIRMED,
            RS.SCHEDULED,
            RS.POSTPONED,
            RS.CANCELLED,
            RS.CARRIED_OUT,
        }
    ),
    RequestKind.HANDOVER: frozenset({RS.PENDING, RS.COMPLETED, RS.FAILED, RS.CANCELLED}),
}
"""The statuses each kind of request can be in (stored; OVERDUE is only ever derived)."""
FINAL_STATUSES = frozenset(
    {
        RS.ANSWERED,
        RS.VERIFIED,
        RS.NOT_VERIFIED,
        RS.COMPLETED,
        RS.NOT_FOUND,
        RS.CANCELLED,
        RS.CARRIED_OUT,
        RS.FAILED,
    }
)
"""Statuses after which a request waits for nobody."""
PLAN_PHASE: dict[RequestStatus, CasePhase] = {
    RS.PROPOSED: CasePhase.REPATRIATION_PROPOSED,
    RS.COUNTER_PROPOSED: CasePhase.REPATRIATION_COUNTER_PROPOSED,
    RS.CONFIRMED: CasePhase.REPATRIATION_CONFIRMED,
    RS.SCHEDULED: CasePhase.REPATRIATION_SCHEDULED,
    RS.POSTPONED: CasePhase.REPATRIATION_POSTPONED,
}
"""The case phase while a repatriation plan is in each of its active statuses."""


@dataclass(frozen=True, slots=True)
class RequestState:
    """One request and where it stands. `request_id` is the id of the message that opened it
    (for a handover: the SCHEDULE answer; `parent_id` is then the plan's id). `awaiting` lists
    the sides expected to act next; empty once the request is final."""

    request_id: bytes
    kind: RequestKind
    opened_by: Side
    status: RequestStatus
    awaiting: tuple[Side, ...]
    due_on: str | None = None
    parent_id: bytes | None = None
    blocks_decision: bool = False

    @property
    def is_open(self) -> bool:
        return self.status not in FINAL_STATUSES

    def status_on(self, today: str) -> RequestStatus:
        """The status as shown on `today` (YYYY-MM-DD): an open request past its due date is
        OVERDUE."""
        if self.is_open and self.due_on is not None and today > self.due_on:
            return RS.OVERDUE
        return self.status


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message applied to the case (metadata only: the content stays in the case store)."""

    message_id: bytes
    type: MessageType
    sender: Side
    created_at: int
    in_reply_to: bytes | None
    needs_acknowledgement: bool
    acknowledged: bool = False


@dataclass(frozen=True, slots=True)
class RecordedOverride:
    message_id: bytes
    sender: Side
    override: OverrideRecord


@dataclass(frozen=True, slots=True)
class CaseState:
    case_link_id: bytes
    local_agency_id: str
    destination_agency_id: str
    origin_agency_id: str
    destination_case_ref: str
    origin_case_ref: str | None
    phase: CasePhase
    consent: Consent
    decision_on: bytes
    """The REFERRAL (or re-referring CASE_REOPEN) the origin side acknowledges and decides on."""
    consent_ids: tuple[bytes, ...]
    messages: tuple[MessageRecord, ...]
    requests: tuple[RequestState, ...] = ()
    overrides: tuple[RecordedOverride, ...] = ()
    decline_reason: DeclineReason | None = None
    phase_before_closure: CasePhase | None = None
    closure_proposal: bytes | None = None
    closure_proposed_by: Side | None = None

    @property
    def local_side(self) -> Side:
        return Side.DESTINATION if self.local_agency_id == self.destination_agency_id else Side.ORIGIN

    @property
    def working_phase(self) -> CasePhase:
        """The phase the case was in before a closure was proposed or made, else the phase."""
        return self.phase_before_closure if self.phase_before_closure is not None else self.phase

    def agency_of(self, side: Side) -> str:
        return self.destination_agency_id if side is Side.DESTINATION else self.origin_agency_id

    def side_of(self, agency_id: str) -> Side | None:
        if agency_id == self.destination_agency_id:
            return Side.DESTINATION
        if agency_id == self.origin_agency_id:
            return Side.ORIGIN
        return None

    def case_ref_of(self, side: Side) -> str | None:
        return self.destination_case_ref if side is Side.DESTINATION else self.origin_case_ref

    def message(self, message_id: bytes | None) -> MessageRecord | None:
        return next((m for m in self.messages if m.message_id == message_id), None)

    def request(self, request_id: bytes | None, kind: RequestKind) -> RequestState | None:
        return next((r for r in self.requests if r.request_id == request_id and r.kind is kind), None)

    @property
    def active_plan(self) -> RequestState | None:
        return next((r for r in self.requests if r.kind is RequestKind.REPATRIATION and r.is_open), None)

    @property
    def pending_handover(self) -> RequestState | None:
        return next((r for r in self.requests if r.kind is RequestKind.HANDOVER and r.is_open), None)

    @property
    def nationality_verified(self) -> bool | None:
        """The outcome of the latest finished verification, or None if none has finished."""
        done = [r for r in self.requests if r.kind is RequestKind.VERIFICATION and not r.is_open]
        return None if not done else done[-1].status is RS.VERIFIED

    @property
    def family_assessed(self) -> bool:
        return any(
            r.kind is RequestKind.FAMILY_ASSESSMENT and r.status is RS.COMPLETED for r in self.requests
        )


def invariant_violations(state: CaseState) -> tuple[str, ...]:
    """What is wrong with `state`; empty for every state `apply` can produce."""
    bad: list[str] = []
    phase, working = state.phase, state.working_phase
    ids = [m.message_id for m in state.messages]
    if len(set(ids)) != len(ids):
        bad.append("a message id appears twice")
    for r in state.requests:
        if r.status not in STATUSES[r.kind]:
            bad.append(f"{r.kind} request in status {r.status}")
        if r.request_id not in ids or (r.parent_id is not None and r.parent_id not in ids):
            bad.append(f"{r.kind} request opened by an unknown message")
        if r.is_open == (not r.awaiting):
            bad.append(f"{r.kind} request {r.status} awaiting {r.awaiting}")
    plans = [r for r in state.requests if r.kind is RequestKind.REPATRIATION and r.is_open]
    handovers = [r for r in state.requests if r.kind is RequestKind.HANDOVER and r.is_open]
    if len(plans) > 1 or len(handovers) > 1:
        bad.append("more than one active plan or pending handover")
    plan_phase = PLAN_PHASE[plans[0].status] if plans else None
    if working in PLAN_PHASE.values() and plan_phase is not working:
        bad.append(f"phase {working} but the active plan is in phase {plan_phase}")
    if plan_phase is not None and working not in PLAN_PHASE.values():
        bad.append(f"an active plan while the case is {working}")
    if bool(handovers) != (working is CasePhase.REPATRIATION_SCHEDULED):
        bad.append("a pending handover exactly while repatriation is scheduled")
    carried_out = any(
        r.kind is RequestKind.REPATRIATION and r.status is RS.CARRIED_OUT for r in state.requests
    )
    if working in (CasePhase.HANDED_OVER, CasePhase.FOLLOW_UP) and not carried_out:
        bad.append(f"phase {working} without a plan carried out")
    decided = working not in PRE_ACCEPTANCE and working is not CasePhase.DECLINED
    if decided != (state.origin_case_ref is not None):
        bad.append(f"origin case number {state.origin_case_ref!r} in phase {working}")
    if (working is CasePhase.DECLINED) != (state.decline_reason is not None):
        bad.append("a decline reason exactly while declined")
    closing = phase in (CasePhase.CLOSURE_PROPOSED, CasePhase.CLOSED)
    if closing != (state.phase_before_closure is not None) or working in (
        CasePhase.CLOSURE_PROPOSED,
        CasePhase.CLOSED,
    ):
        bad.append("a phase before closure exactly while closing")
    proposing = phase is CasePhase.CLOSURE_PROPOSED
    if proposing != (state.closure_proposal is not None) or proposing != (
        state.closure_proposed_by is not None
    ):
        bad.append("a closure proposal exactly while closure is proposed")
    blocking = any(r.blocks_decision and r.is_open for r in state.requests)
    if working in (CasePhase.ACKNOWLEDGED, CasePhase.INFO_REQUESTED) and blocking != (
        working is CasePhase.INFO_REQUESTED
    ):
        bad.append("info_requested exactly while the origin's question before deciding is open")
    if state.message(state.decision_on) is None:
        bad.append("the decision is on an unknown message")
    if not state.consent_ids or state.consent_ids[-1] != state.consent.consent_id:
        bad.append("the current consent is not the latest consent version")
    if state.side_of(state.local_agency_id) is None:
        bad.append("the local agency is neither side of the case")
    return tuple(bad)

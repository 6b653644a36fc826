"""What waits for whom: the open items of a case, per side, with due dates and overdue flags.

Derived from the case state alone (no clock: `today` is passed in as `YYYY-MM-DD`, in the
agencies' shared local time, UTC+7). An item is listed only while the message that settles it
is allowed in the case's phase, so a closed case lists only what can still be done on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from protocol.referral.case_state import CaseState, RequestKind, RequestStatus, Side
from protocol.referral.kinds import check_date
from protocol.referral.rules import DECIDING, MT, PHASES_ALLOWING


class WaitingKind(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    DECIDE = "decide"
    ANSWER_INFO = "answer_info"
    VERIFY = "verify"
    ASSESS_FAMILY = "assess_family"
    ANSWER_PLAN = "answer_plan"
    SCHEDULE = "schedule"
    HAND_OVER = "hand_over"
    CONFIRM_CLOSURE = "confirm_closure"


@dataclass(frozen=True, slots=True)
class OpenItem:
    """`waiting_on` sides owe the next step `kind` on the message `about`."""

    kind: WaitingKind
    waiting_on: tuple[Side, ...]
    about: bytes
    due_on: str | None = None
    overdue: bool = False


_SETTLED_BY = {
    RequestKind.INFO: (MT.INFO_RESPONSE, WaitingKind.ANSWER_INFO),
    RequestKind.VERIFICATION: (MT.VERIFICATION_RESULT, WaitingKind.VERIFY),
    RequestKind.FAMILY_ASSESSMENT: (MT.FAMILY_ASSESSMENT_RESULT, WaitingKind.ASSESS_FAMILY),
    RequestKind.HANDOVER: (MT.HANDOVER_RECORD, WaitingKind.HAND_OVER),
}
_PLAN_STEP = {
    RequestStatus.PROPOSED: WaitingKind.ANSWER_PLAN,
    RequestStatus.COUNTER_PROPOSED: WaitingKind.ANSWER_PLAN,
    RequestStatus.CONFIRMED: WaitingKind.SCHEDULE,
    RequestStatus.POSTPONED: WaitingKind.SCHEDULE,
}


def open_items(state: CaseState, today: str) -> tuple[OpenItem, ...]:
    """Every open item of the case, oldest first."""
    check_date(today, "today")
    allowed = {t for t, phases in PHASES_ALLOWING.items() if state.phase in phases}
    items: list[OpenItem] = []
    for m in state.messages:
        if m.needs_acknowledgement and not m.acknowledged:
            items.append(OpenItem(WaitingKind.ACKNOWLEDGE, (m.sender.other,), m.message_id))
        if m.message_id == state.decision_on and state.phase in DECIDING:
            items.append(OpenItem(WaitingKind.DECIDE, (Side.ORIGIN,), m.message_id))
        if m.message_id == state.closure_proposal and state.closure_proposed_by is not None:
            items.append(
                OpenItem(WaitingKind.CONFIRM_CLOSURE, (state.closure_proposed_by.other,), m.message_id)
            )
        for r in state.requests:
            if r.request_id != m.message_id or not r.is_open:
                continue
            if r.kind is RequestKind.REPATRIATION:
                if MT.REPATRIATION_CONFIRMATION in allowed and r.status in _PLAN_STEP:
                    items.append(OpenItem(_PLAN_STEP[r.status], r.awaiting, r.request_id))
                continue
            settling_type, kind = _SETTLED_BY[r.kind]
            if settling_type in allowed:
                overdue = r.status_on(today) is RequestStatus.OVERDUE
                items.append(OpenItem(kind, r.awaiting, r.request_id, r.due_on, overdue))
    return tuple(items)


def waiting_on(state: CaseState, side: Side, today: str) -> tuple[OpenItem, ...]:
    """The open items `side` owes the next step on (shared items, such as scheduling, included)."""
    return tuple(i for i in open_items(state, today) if side in i.waiting_on)

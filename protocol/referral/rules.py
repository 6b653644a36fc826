"""Who may send which referral message in which case phase: the workflow's rules as data.

`workflow.apply` enforces these tables, `waiting` reads them, and docs/referrals.md shows them
(generated and checked by a test). Request-level rules (which side answers a request, which
action a repatriation plan allows in each status) live with the handlers in `workflow`.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocol.referral.case_state import PLAN_PHASE, PRE_ACCEPTANCE, CasePhase, CaseState, Side
from protocol.referral.codes import MessageType

MT = MessageType
P = CasePhase
BOTH = (Side.DESTINATION, Side.ORIGIN)
ALL_PHASES = frozenset(P)
REPATRIATION_PHASES = frozenset(PLAN_PHASE.values())
DECIDING = frozenset({P.ACKNOWLEDGED, P.INFO_REQUESTED})
_WORKING = DECIDING | {P.ACCEPTED} | REPATRIATION_PHASES
_ANSWERING = ALL_PHASES - {P.REFERRED, P.CLOSED}

PHASES_ALLOWING: Mapping[MessageType, frozenset[CasePhase]] = {
    MT.REFERRAL: frozenset(),  # only opens a case
    MT.ACKNOWLEDGEMENT: ALL_PHASES,
    MT.ACCEPTANCE: DECIDING,
    MT.DECLINE: DECIDING,
    MT.INFO_REQUEST: _WORKING | {P.HANDED_OVER, P.FOLLOW_UP},
    MT.INFO_RESPONSE: _ANSWERING,
    MT.VERIFICATION_REQUEST: _WORKING,
    MT.VERIFICATION_RESULT: _ANSWERING,
    MT.FAMILY_ASSESSMENT_REQUEST: REPATRIATION_PHASES | {P.ACCEPTED},
    MT.FAMILY_ASSESSMENT_RESULT: _ANSWERING,
    MT.REPATRIATION_PLAN: frozenset({P.ACCEPTED}),
    MT.REPATRIATION_CONFIRMATION: REPATRIATION_PHASES,
    MT.HANDOVER_RECORD: frozenset({P.REPATRIATION_SCHEDULED}),
    MT.REINTEGRATION_PLAN: frozenset({P.HANDED_OVER, P.FOLLOW_UP}),
    MT.CASE_UPDATE: ALL_PHASES - {P.CLOSED},
    MT.CONSENT_CHANGE: ALL_PHASES,
    MT.CASE_CLOSURE: ALL_PHASES - {P.CLOSED},
    MT.CASE_REOPEN: frozenset({P.DECLINED, P.CLOSURE_PROPOSED, P.CLOSED}),
}
"""The case phases in which each message type may be sent at all."""

_DESTINATION = frozenset({Side.DESTINATION})
_ORIGIN = frozenset({Side.ORIGIN})
SENDERS: Mapping[MessageType, frozenset[Side]] = {t: frozenset(BOTH) for t in MT} | {
    MT.REFERRAL: _DESTINATION,
    MT.ACCEPTANCE: _ORIGIN,
    MT.DECLINE: _ORIGIN,
    MT.FAMILY_ASSESSMENT_REQUEST: _DESTINATION,
    MT.FAMILY_ASSESSMENT_RESULT: _ORIGIN,
    MT.REINTEGRATION_PLAN: _ORIGIN,
}
"""The sides that may send each message type."""

SIDE_EXCEPTIONS: Mapping[tuple[MessageType, Side], tuple[frozenset[CasePhase], str]] = {
    (MT.CASE_CLOSURE, Side.ORIGIN): (
        PRE_ACCEPTANCE,
        "the origin side accepts or declines a referral; it does not close it",
    ),
    (MT.CASE_REOPEN, Side.ORIGIN): (
        frozenset({P.DECLINED}),
        "a declined referral is referred again by the destination side",
    ),
}
"""Phases in which one side may not send a type the phase otherwise allows, and why."""

NEEDS_ACKNOWLEDGEMENT = frozenset(
    {
        MT.REFERRAL,
        MT.DECLINE,
        MT.CASE_UPDATE,
        MT.CONSENT_CHANGE,
        MT.HANDOVER_RECORD,
        MT.REINTEGRATION_PLAN,
        MT.CASE_REOPEN,
    }
)
"""Messages a person on the other side acknowledges (once); others are answered by their reply."""

REPLY_REQUIRED = frozenset(
    {
        MT.ACKNOWLEDGEMENT,
        MT.ACCEPTANCE,
        MT.DECLINE,
        MT.INFO_RESPONSE,
        MT.VERIFICATION_RESULT,
        MT.FAMILY_ASSESSMENT_RESULT,
        MT.REPATRIATION_CONFIRMATION,
        MT.HANDOVER_RECORD,
    }
)
"""Types whose `in_reply_to` must name the message or request they answer."""


def side_refusal(mtype: MessageType, side: Side, phase: CasePhase) -> str | None:
    """Why `side` may not send `mtype` in `phase` (None if the phase and side rules allow it)."""
    if phase not in PHASES_ALLOWING[mtype]:
        return f"{mtype} is not allowed now"
    if side not in SENDERS[mtype]:
        only = " or ".join(sorted(SENDERS[mtype]))
        return f"{mtype} is sent by the {only} side, not by the {side} side"
    phases, reason = SIDE_EXCEPTIONS.get((mtype, side), (frozenset(), ""))
    return reason if phase in phases else None


def allowed_messages(state: CaseState, side: Side) -> frozenset[MessageType]:
    """The types `side` may send in the case's current phase (before request-level rules)."""
    return frozenset(t for t in MT if side_refusal(t, side, state.phase) is None)

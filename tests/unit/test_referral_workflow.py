"""The case workflow on both sides: every phase refuses every message it does not allow (on the
sender's side before sealing and on the recipient's after opening), direction and reply rules
hold, requests move through their states, and both sides agree on what waits for whom."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol.errors import ErrorCode, InvalidField, InvalidTransition
from protocol.referral import (
    PHASES_ALLOWING,
    SENDERS,
    AssessmentOutcome,
    CasePhase,
    CaseState,
    HandoverOutcome,
    Message,
    MessageType,
    RepatriationAction,
    RequestKind,
    RequestStatus,
    Side,
    WaitingKind,
    apply,
    invariant_violations,
    open_items,
    replay,
    waiting_on,
)
from tests.referral_fixtures import (
    NOW,
    ORIGIN,
    PATHS,
    Sides,
    drive,
    exchange,
    fresh_id,
    make,
    referral,
)

MT = MessageType
RA = RepatriationAction
DEST, ORIG = Side.DESTINATION, Side.ORIGIN


def refused_on_both_sides(sides: Sides, message: Message) -> list[Exception]:
    """Apply `message` on the sender's and the recipient's copy; return both refusals."""
    sender = sides.destination.side_of(message.header.sender_agency_id)
    assert sender is not None
    errors: list[Exception] = []
    for state, as_sender in ((sides.of(sender), True), (sides.of(sender.other), False)):
        before = replace(state)
        with pytest.raises((InvalidTransition, InvalidField)) as e:
            apply(state, message, as_sender=as_sender, now=NOW)
        assert state == before
        errors.append(e.value)
    return errors


def test_a_whole_case_runs_to_closure_on_both_sides() -> None:
    sides, messages = drive(PATHS["closed"])
    assert sides.destination.phase is CasePhase.CLOSED
    assert sides.origin.origin_case_ref == "ຮສ 117/2025"
    assert not invariant_violations(sides.origin)
    assert replay(ORIGIN, messages, now=NOW) == sides.origin


@pytest.mark.parametrize("phase", list(CasePhase))
def test_every_message_a_phase_does_not_allow_is_refused_on_both_sides(phase: CasePhase) -> None:
    sides, _ = drive(PATHS[phase.value])
    assert sides.destination.phase is phase
    refused = [t for t in MessageType if phase not in PHASES_ALLOWING[t]]
    assert refused or phase is CasePhase.CLOSED
    for mtype in refused:
        for side in Side:
            message = make(sides.of(side), mtype, side, reply=sides.destination.decision_on)
            for error in refused_on_both_sides(sides, message):
                assert isinstance(error, InvalidTransition), (mtype, side, error)
                assert error.state == phase.value
                assert error.code is ErrorCode.INVALID_TRANSITION
                assert error.status == 409


@pytest.mark.parametrize("phase", list(CasePhase))
def test_a_message_from_the_wrong_side_is_refused(phase: CasePhase) -> None:
    sides, _ = drive(PATHS[phase.value])
    for mtype in MessageType:
        if phase not in PHASES_ALLOWING[mtype]:
            continue
        for side in set(Side) - SENDERS[mtype]:
            message = make(sides.of(side), mtype, side, reply=sides.destination.decision_on)
            for error in refused_on_both_sides(sides, message):
                assert isinstance(error, InvalidTransition)
                assert f"not by the {side} side" in error.reason


def test_a_refusal_names_the_phase_and_the_messages_allowed() -> None:
    sides, _ = drive([])
    with pytest.raises(InvalidTransition) as e:
        apply(sides.origin, make(sides.origin, MT.ACCEPTANCE, ORIG), as_sender=True, now=NOW)
    assert "case is referred" in e.value.reason
    assert e.value.allowed == ("acknowledgement", "case_update", "consent_change")


def test_a_case_opens_only_with_a_referral_and_only_once() -> None:
    sides, _ = drive(PATHS["accepted"])
    with pytest.raises(InvalidTransition, match="only a referral opens one"):
        apply(None, make(sides.origin, MT.CASE_UPDATE, ORIG), as_sender=True, now=NOW)
    with pytest.raises(InvalidTransition, match="new case"):
        apply(sides.destination, referral(), as_sender=True, now=NOW)


def test_a_referral_crosses_a_border() -> None:
    message = referral(header={"receiver_agency_id": "TH-ATPD"})
    with pytest.raises(InvalidField) as e:
        apply(None, message, as_sender=True, now=NOW)
    assert e.value.field == "header.receiver_agency_id"


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ({"case_link_id": bytes(16)}, "header.case_link_id"),
        ({"receiver_agency_id": "LA-ATD"}, "header.receiver_agency_id"),
        ({"sender_case_ref": "ศคม.นค. 43/2568"}, "header.sender_case_ref"),
        ({"receiver_case_ref": None}, "header.receiver_case_ref"),
        ({"consent_ref": bytes(16)}, "header.consent_ref"),
        ({"in_reply_to": bytes(16)}, "header.in_reply_to"),
        ({"created_at": NOW + 3600}, "header.created_at"),
    ],
)
def test_a_header_that_does_not_fit_the_case_is_refused(header: dict[str, object], field: str) -> None:
    sides, _ = drive(PATHS["accepted"])
    message = make(sides.destination, MT.CASE_UPDATE, DEST, **header)
    for error in refused_on_both_sides(sides, message):
        assert is_field_error(error, field)


def is_field_error(error: Exception, field: str) -> bool:
    return isinstance(error, InvalidField) and error.field == field


def test_an_outgoing_message_is_not_applied_as_received() -> None:
    sides, _ = drive(PATHS["accepted"])
    message = make(sides.destination, MT.CASE_UPDATE, DEST)
    with pytest.raises(InvalidField) as e:
        apply(sides.destination, message, as_sender=False, now=NOW)
    assert e.value.field == "header.receiver_agency_id"


def test_the_same_message_is_applied_once() -> None:
    sides, messages = drive(PATHS["accepted"])
    with pytest.raises(InvalidTransition, match="already part of this case"):
        apply(sides.origin, messages[-1], as_sender=True, now=NOW)


def test_acceptance_sets_the_origin_case_number_shown_from_then_on() -> None:
    sides, _ = drive(PATHS["acknowledged"])
    without = make(sides.origin, MT.ACCEPTANCE, ORIG, sender_case_ref=None)
    assert all(is_field_error(e, "header.sender_case_ref") for e in refused_on_both_sides(sides, without))
    sides, _ = drive(PATHS["accepted"])
    from_origin = make(sides.origin, MT.CASE_UPDATE, ORIG, sender_case_ref=None)
    assert all(is_field_error(e, "header.sender_case_ref") for e in refused_on_both_sides(sides, from_origin))


def test_replies_name_what_they_answer() -> None:
    sides, _ = drive(PATHS["acknowledged"])
    unnamed = make(sides.origin, MT.ACCEPTANCE, ORIG, natural=False)
    assert all(is_field_error(e, "header.in_reply_to") for e in refused_on_both_sides(sides, unnamed))
    wrong = make(sides.origin, MT.ACCEPTANCE, ORIG, reply=sides.origin.messages[-1].message_id)
    assert all("names the referral being decided" in str(e) for e in refused_on_both_sides(sides, wrong))


def test_acknowledgements_are_for_the_other_sides_messages_once() -> None:
    sides, messages = drive(PATHS["accepted"])
    own = make(sides.destination, MT.ACKNOWLEDGEMENT, DEST, reply=messages[0].message_id)
    assert all("other side's messages" in str(e) for e in refused_on_both_sides(sides, own))
    again = make(sides.origin, MT.ACKNOWLEDGEMENT, ORIG, reply=messages[0].message_id)
    assert all("already acknowledged" in str(e) for e in refused_on_both_sides(sides, again))
    acceptance = make(sides.destination, MT.ACKNOWLEDGEMENT, DEST, reply=messages[-1].message_id)
    assert all("answered by its reply" in str(e) for e in refused_on_both_sides(sides, acceptance))


def test_an_info_request_is_answered_once_by_the_side_asked_and_blocks_the_decision() -> None:
    sides, _ = drive(PATHS["info_requested"])
    request = sides.origin.requests[-1]
    assert request.blocks_decision
    assert request.awaiting == (DEST,)
    wrong_side = make(sides.origin, MT.INFO_RESPONSE, ORIG, reply=request.request_id)
    assert all("awaiting the origin side" in str(e) for e in refused_on_both_sides(sides, wrong_side))
    answer = make(sides.destination, MT.INFO_RESPONSE, DEST)
    sides = exchange(sides, answer)
    assert sides.origin.phase is CasePhase.ACKNOWLEDGED
    again = make(sides.destination, MT.INFO_RESPONSE, DEST, reply=request.request_id)
    assert refused_on_both_sides(sides, again)


def test_the_origin_side_may_decide_while_its_question_is_open() -> None:
    sides, _ = drive([*PATHS["info_requested"], (MT.ACCEPTANCE, ORIG)])
    assert sides.origin.phase is CasePhase.ACCEPTED
    assert sides.origin.requests[-1].status is RequestStatus.OPEN


def test_family_assessment_is_forwarded_then_completed() -> None:
    steps = [
        *PATHS["accepted"],
        (MT.FAMILY_ASSESSMENT_REQUEST, DEST),
        (MT.FAMILY_ASSESSMENT_RESULT, ORIG, AssessmentOutcome.FORWARDED_TO_PROVINCE),
    ]
    sides, _ = drive(steps)
    assert sides.origin.requests[-1].status is RequestStatus.FORWARDED_TO_PROVINCE
    twice = make(
        sides.origin, MT.FAMILY_ASSESSMENT_RESULT, ORIG, option=AssessmentOutcome.FORWARDED_TO_PROVINCE
    )
    assert refused_on_both_sides(sides, twice)
    sides = exchange(sides, make(sides.origin, MT.FAMILY_ASSESSMENT_RESULT, ORIG))
    assert sides.origin.family_assessed


def test_verification_results_come_from_the_side_asked() -> None:
    sides, _ = drive([*PATHS["accepted"], (MT.VERIFICATION_REQUEST, DEST)])
    own = make(
        sides.destination, MT.VERIFICATION_RESULT, DEST, reply=sides.destination.requests[-1].request_id
    )
    assert refused_on_both_sides(sides, own)
    assert sides.destination.nationality_verified is None
    sides = exchange(sides, make(sides.origin, MT.VERIFICATION_RESULT, ORIG))
    assert sides.destination.nationality_verified is True


def test_repatriation_plans_are_answered_by_the_side_they_were_proposed_to() -> None:
    sides, _ = drive(PATHS["repatriation_proposed"])
    proposer = make(sides.destination, MT.REPATRIATION_CONFIRMATION, DEST, option=RA.CONFIRM)
    assert all("comes from the side" in str(e) for e in refused_on_both_sides(sides, proposer))
    early = make(sides.destination, MT.REPATRIATION_CONFIRMATION, DEST, option=RA.SCHEDULE)
    assert all("only a confirmed or postponed plan" in str(e) for e in refused_on_both_sides(sides, early))
    for side, action in ((ORIG, RA.COUNTER_PROPOSE), (DEST, RA.COUNTER_PROPOSE), (ORIG, RA.CONFIRM)):
        sides = exchange(sides, make(sides.of(side), MT.REPATRIATION_CONFIRMATION, side, option=action))
    assert sides.origin.phase is CasePhase.REPATRIATION_CONFIRMED


def test_a_failed_handover_is_postponed_and_scheduled_again() -> None:
    steps = [
        *PATHS["repatriation_scheduled"],
        (MT.HANDOVER_RECORD, DEST, HandoverOutcome.FAILED),
        (MT.REPATRIATION_CONFIRMATION, ORIG, RA.SCHEDULE),
        (MT.HANDOVER_RECORD, ORIG),
    ]
    sides, _ = drive(steps)
    handovers = [r.status for r in sides.origin.requests if r.kind is RequestKind.HANDOVER]
    assert handovers == [RequestStatus.FAILED, RequestStatus.COMPLETED]
    assert sides.origin.phase is CasePhase.HANDED_OVER


def test_a_cancelled_plan_makes_room_for_a_new_one() -> None:
    sides, _ = drive([*PATHS["repatriation_scheduled"], (MT.REPATRIATION_CONFIRMATION, ORIG, RA.CANCEL)])
    assert sides.origin.phase is CasePhase.ACCEPTED
    assert sides.origin.pending_handover is None
    sides = exchange(sides, make(sides.origin, MT.REPATRIATION_PLAN, ORIG))
    assert sides.destination.phase is CasePhase.REPATRIATION_PROPOSED


def test_closure_is_confirmed_by_the_other_side_and_reopening_restores_the_case() -> None:
    sides, _ = drive([*PATHS["repatriation_scheduled"], (MT.CASE_CLOSURE, DEST)])
    by_proposer = make(sides.destination, MT.CASE_CLOSURE, DEST, reply=sides.destination.closure_proposal)
    assert all("other side confirms" in str(e) for e in refused_on_both_sides(sides, by_proposer))
    sides = exchange(sides, make(sides.origin, MT.CASE_REOPEN, ORIG))
    assert sides.origin.phase is CasePhase.REPATRIATION_SCHEDULED
    assert sides.origin.pending_handover is not None


def test_the_origin_side_declines_rather_than_closes_a_referral() -> None:
    sides, _ = drive(PATHS["acknowledged"])
    closing = make(sides.origin, MT.CASE_CLOSURE, ORIG)
    assert all("does not close it" in str(e) for e in refused_on_both_sides(sides, closing))


def test_a_declined_referral_is_referred_again_by_the_destination_side() -> None:
    sides, _ = drive(PATHS["declined"])
    by_origin = make(sides.origin, MT.CASE_REOPEN, ORIG)
    assert refused_on_both_sides(sides, by_origin)
    sides = exchange(sides, make(sides.destination, MT.CASE_REOPEN, DEST))
    assert sides.origin.phase is CasePhase.REFERRED
    assert sides.origin.decline_reason is None
    for step in (MT.ACKNOWLEDGEMENT, MT.ACCEPTANCE):
        sides = exchange(sides, make(sides.origin, step, ORIG))
    assert sides.origin.phase is CasePhase.ACCEPTED


def test_a_referral_read_while_its_withdrawal_is_pending_can_be_decided_after_reopening() -> None:
    sides, _ = drive([(MT.CASE_CLOSURE, DEST), (MT.ACKNOWLEDGEMENT, ORIG), (MT.CASE_REOPEN, ORIG)])
    assert sides.origin.phase is CasePhase.ACKNOWLEDGED


def kinds_for(state: CaseState, side: Side, today: str) -> list[WaitingKind]:
    return [i.kind for i in waiting_on(state, side, today)]


def test_what_waits_for_whom_follows_the_case() -> None:
    sides, _ = drive([])
    assert kinds_for(sides.origin, ORIG, "2025-03-01") == [WaitingKind.ACKNOWLEDGE]
    assert kinds_for(sides.origin, DEST, "2025-03-01") == []
    sides, _ = drive(PATHS["info_requested"])
    assert kinds_for(sides.origin, ORIG, "2025-03-01") == [WaitingKind.DECIDE]
    [item] = waiting_on(sides.destination, DEST, "2025-03-07")
    assert item.kind is WaitingKind.ANSWER_INFO
    assert item.due_on == "2025-03-07"
    assert not item.overdue
    assert waiting_on(sides.destination, DEST, "2025-03-08")[0].overdue
    assert sides.destination.requests[-1].status_on("2025-03-08") is RequestStatus.OVERDUE
    sides, _ = drive(PATHS["repatriation_confirmed"])
    assert (
        kinds_for(sides.origin, ORIG, "2025-04-01")
        == kinds_for(sides.origin, DEST, "2025-04-01")
        == [WaitingKind.SCHEDULE]
    )
    sides, _ = drive(PATHS["repatriation_scheduled"])
    [handover] = open_items(sides.origin, "2025-04-11")
    assert handover.kind is WaitingKind.HAND_OVER
    assert handover.overdue
    assert handover.waiting_on == (DEST, ORIG)
    sides, _ = drive(PATHS["closure_proposed"])
    assert kinds_for(sides.origin, DEST, "2025-10-10")[-1] is WaitingKind.CONFIRM_CLOSURE
    sides, _ = drive(PATHS["closed"])
    # A closed case owes only the reading of what was sent before it closed.
    assert {i.kind for i in open_items(sides.origin, "2026-01-01")} == {WaitingKind.ACKNOWLEDGE}
    with pytest.raises(InvalidField):
        open_items(sides.origin, "2026-1-1")


def test_a_case_under_a_different_link_id_is_a_different_case() -> None:
    sides, _ = drive([])
    other = fresh_id()
    message = make(sides.origin, MT.ACKNOWLEDGEMENT, ORIG, case_link_id=other)
    assert all(is_field_error(e, "header.case_link_id") for e in refused_on_both_sides(sides, message))

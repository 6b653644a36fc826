"""The consent gate: fields outside the granted scopes, withheld from the recipient, or sensitive
without explicit consent are refused on both sides; overrides need a reason, an officer, a basis
other than consent and (for sensitive fields) a second approver, travel in the message and are
recorded; a withdrawal blocks later messages in the withdrawn scopes on both sides."""

from __future__ import annotations

from typing import Any

import pytest

from protocol.errors import ConsentError, ErrorCode, InvalidField
from protocol.referral import (
    DataClass,
    LegalBasis,
    Message,
    MessageType,
    OverrideRecord,
    Scope,
    Side,
    Violation,
    WithheldItem,
    apply,
    carried_fields,
    check_consent,
    consent_problems,
    decode_message,
    encode_message,
    override_consent,
    with_override,
    withdrawn_scopes,
)
from tests.referral_fixtures import NOW, PATHS, Sides, consent, drive, exchange, make, person, referral

MT = MessageType
DEST, ORIG = Side.DESTINATION, Side.ORIGIN
ALL_BUT = {s: tuple(x for x in Scope if x is not s) for s in Scope}


def refused(state_pair: Sides | None, message: Message) -> ConsentError:
    """`message` must be refused with ConsentError on the sending and on the receiving side."""
    errors = []
    for as_sender in (True, False):
        state = None if state_pair is None else state_pair.of(DEST if as_sender else ORIG)
        if (
            state_pair is not None
            and message.header.sender_agency_id != state_pair.destination.destination_agency_id
        ):
            state = state_pair.of(ORIG if as_sender else DEST)
        with pytest.raises(ConsentError) as e:
            apply(state, message, as_sender=as_sender, now=NOW)
        errors.append(e.value)
    assert errors[0].fields == errors[1].fields
    return errors[0]


def test_a_field_outside_the_granted_scopes_is_refused() -> None:
    message = referral(the_consent=consent(ALL_BUT[Scope.HEALTH]), health_needs="ຕ້ອງການພົບແພດ")
    error = refused(None, message)
    assert error.fields == ("health_needs",)
    assert error.code is ErrorCode.CONSENT_REQUIRED
    assert error.status == 403
    assert "s5_health" in error.reason


def test_a_nested_record_can_pin_its_own_scope() -> None:
    from protocol.referral import DocumentKind, TravelDocument

    document = TravelDocument(kind=DocumentKind.PASSPORT, number="P0123456")
    message = referral(
        the_consent=consent(ALL_BUT[Scope.VERIFICATION]), person=person("lo", document=document)
    )
    assert refused(None, message).fields == ("person.document.kind", "person.document.number")


def test_a_withheld_field_is_refused_for_that_recipient_only() -> None:
    aliases = "person.name.aliases"
    for audience, blocked in (("LA", True), ("LA-MLSW", True), ("*", True), ("LA-ATD", False), ("TH", False)):
        withheld = (WithheldItem(field_path="person.name", withheld_from=audience, reason="ນາງບໍ່ຢາກໃຫ້ເປີດເຜີຍ"),)
        message = referral(the_consent=consent(withheld=withheld))
        if blocked:
            assert aliases in refused(None, message).fields
        else:
            assert apply(None, message, as_sender=True, now=NOW).phase.value == "referred"


def test_sensitive_fields_need_explicit_consent_or_another_s26_basis() -> None:
    plain = referral(the_consent=consent(legal_basis=LegalBasis.CONSENT), risks="ผู้จัดหางานรู้ที่อยู่บ้าน")
    problems = consent_problems(plain, plain.consent)  # type: ignore[attr-defined]
    assert [(p.path, p.violation) for p in problems] == [("risks", Violation.EXPLICIT_CONSENT_NEEDED)]
    assert refused(None, plain).fields == ("risks",)
    vital = referral(the_consent=consent(legal_basis=LegalBasis.VITAL_INTEREST), risks="ผู้จัดหางานรู้ที่อยู่บ้าน")
    assert apply(None, vital, as_sender=False, now=NOW).overrides == ()


def family_request_without_tracing_consent() -> tuple[Sides, Message]:
    steps: list[Any] = [*PATHS["accepted"], (MT.CONSENT_CHANGE, DEST, ALL_BUT[Scope.FAMILY_TRACING])]
    sides, _ = drive(steps)
    return sides, make(sides.destination, MT.FAMILY_ASSESSMENT_REQUEST, DEST)


def test_an_override_with_a_reason_travels_in_the_message_and_is_recorded_on_both_sides() -> None:
    sides, message = family_request_without_tracing_consent()
    assert set(refused(sides, message).fields) == {
        "home.country",
        "home.province",
        "known_family.name.full_native",
        "known_family.relation",
    }
    record = override_consent(
        message,
        sides.destination.consent,
        reason="ແມ່ຂອງນາງຢູ່ໃນອັນຕະລາຍ: vital interest, family must be found before the return",
        officer="TH-DSDW:off-0417",
        legal_basis=LegalBasis.VITAL_INTEREST,
        at=NOW,
    )
    assert record.field_paths == (
        "home.country",
        "home.province",
        "known_family.name.full_native",
        "known_family.relation",
    )
    sealed = with_override(message, record)
    received = decode_message(encode_message(sealed))
    assert received.header.overrides == (record,)
    sides = exchange(sides, received)
    for state in (sides.destination, sides.origin):
        [recorded] = state.overrides
        assert recorded.override == record
        assert recorded.message_id == message.message_id
        assert recorded.sender is DEST


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"reason": ""}, "stated reason"),
        ({"reason": "  \n "}, "stated reason"),
        ({"legal_basis": LegalBasis.CONSENT}, "cannot rest on consent"),
        ({"legal_basis": LegalBasis.EXPLICIT_CONSENT}, "cannot rest on explicit_consent"),
    ],
)
def test_an_override_needs_a_reason_and_a_basis_other_than_consent(kw: dict[str, Any], match: str) -> None:
    sides, message = family_request_without_tracing_consent()
    args: dict[str, Any] = {
        "reason": "vital interest",
        "officer": "TH-a",
        "legal_basis": LegalBasis.PUBLIC_TASK,
        "at": NOW,
    }
    with pytest.raises(ConsentError, match=match):
        override_consent(message, sides.destination.consent, **(args | kw))


def health_update_without_health_consent() -> tuple[Sides, Message]:
    sides, _ = drive([*PATHS["follow_up"], (MT.CONSENT_CHANGE, ORIG, ALL_BUT[Scope.HEALTH])])
    message = make(sides.origin, MT.CASE_UPDATE, ORIG)
    return sides, with_health(message)


def with_health(message: Message) -> Message:
    from dataclasses import replace

    return replace(message, health_note="ນາງຍັງປິ່ນປົວຢູ່ໂຮງໝໍແຂວງ")  # type: ignore[type-var]


def test_overriding_consent_for_sensitive_fields_needs_a_second_approver() -> None:
    sides, message = health_update_without_health_consent()
    args: dict[str, Any] = {"reason": "ສຸຂະພາບຮ້າຍແຮງ", "officer": "LA-MLSW:off-2231", "at": NOW}
    with pytest.raises(ConsentError, match="second approver") as e:
        override_consent(message, sides.origin.consent, legal_basis=LegalBasis.VITAL_INTEREST, **args)
    assert e.value.fields == ("health_note",)
    with pytest.raises(ConsentError, match="second approver"):
        override_consent(
            message,
            sides.origin.consent,
            legal_basis=LegalBasis.VITAL_INTEREST,
            second_approver="LA-MLSW:off-2231",
            **args,
        )
    with pytest.raises(ConsentError, match="vital interest or legal obligation"):
        override_consent(
            message,
            sides.origin.consent,
            legal_basis=LegalBasis.PUBLIC_TASK,
            second_approver="LA-MLSW:off-9",
            **args,
        )
    record = override_consent(
        message,
        sides.origin.consent,
        legal_basis=LegalBasis.VITAL_INTEREST,
        second_approver="LA-MLSW:off-9",
        **args,
    )
    exchange(sides, with_override(message, record))


def test_a_forged_override_without_a_second_approver_does_not_pass_the_recipient() -> None:
    sides, message = health_update_without_health_consent()
    forged = OverrideRecord(
        field_paths=("health_note",),
        reason="trust me",
        officer="LA-MLSW:off-2231",
        legal_basis=LegalBasis.VITAL_INTEREST,
        overridden_at=NOW,
    )
    error = refused(sides, with_override(message, forged))
    assert error.fields == ("health_note",)
    assert "second approver" in error.reason


def test_an_override_for_other_fields_does_not_cover_this_one() -> None:
    sides, message = health_update_without_health_consent()
    other = OverrideRecord(
        field_paths=("summary",),
        reason="vital",
        officer="LA-a",
        second_approver="LA-b",
        legal_basis=LegalBasis.VITAL_INTEREST,
        overridden_at=NOW,
    )
    assert refused(sides, with_override(message, other)).fields == ("health_note",)


def test_there_is_nothing_to_override_when_consent_covers_the_message() -> None:
    sides, _ = drive(PATHS["accepted"])
    message = make(sides.origin, MT.CASE_UPDATE, ORIG)
    assert check_consent(message, sides.origin.consent) == ()
    with pytest.raises(InvalidField):
        override_consent(
            message,
            sides.origin.consent,
            reason="x",
            officer="a",
            legal_basis=LegalBasis.VITAL_INTEREST,
            at=NOW,
        )


def test_a_withdrawal_blocks_later_messages_in_that_scope_on_both_sides() -> None:
    sides, _ = drive(PATHS["follow_up"])
    before = sides.origin.consent
    sides = exchange(sides, make(sides.origin, MT.CASE_UPDATE, ORIG))
    sides = exchange(sides, with_health(make(sides.origin, MT.CASE_UPDATE, ORIG)))
    sides = exchange(sides, make(sides.origin, MT.CONSENT_CHANGE, ORIG, option=ALL_BUT[Scope.HEALTH]))
    assert withdrawn_scopes(before, sides.destination.consent) == {Scope.HEALTH}
    for side in (ORIG, DEST):
        blocked = with_health(make(sides.of(side), MT.CASE_UPDATE, side))
        assert refused(sides, blocked).fields == ("health_note",)
        exchange(sides, make(sides.of(side), MT.CASE_UPDATE, side))


def test_a_message_built_under_an_earlier_consent_is_checked_against_the_current_one() -> None:
    sides, _ = drive(PATHS["follow_up"])
    first = sides.origin.consent.consent_id
    sides = exchange(sides, make(sides.origin, MT.CONSENT_CHANGE, ORIG, option=ALL_BUT[Scope.HEALTH]))
    stale = with_health(make(sides.destination, MT.CASE_UPDATE, DEST, consent_ref=first))
    assert refused(sides, stale).fields == ("health_note",)


def test_carried_fields_list_each_personal_leaf_once_with_its_inherited_scope() -> None:
    message = referral("th")
    fields = {f.path: f for f in carried_fields(message)}
    assert fields["person.name.aliases"].scope is Scope.NOTIFY_ORIGIN
    assert fields["person.name.aliases"].data is DataClass.PERSONAL
    assert "consent.interpreter" in fields
    assert fields["consent.interpreter"].scope is None
    assert "identified_on" not in fields
    assert "header.message_id" not in fields

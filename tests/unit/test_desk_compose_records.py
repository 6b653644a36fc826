"""The compose form's lists of records (family members, withheld items) and its consent override:
rows drawn from the schema, empty rows dropped, refusals naming the row the person sees, forged
row numbers refused, and an override recorded in the message only with a reason, a lawful basis
and the unlocked officer. Built against a real case store, as the desk does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.case_store import CaseStore
from clients.desk.form_problems import ProblemKind, problem_of
from clients.desk.forms import Repeat, build_from_form, layout, read_form, rows_to_show, widgets_for
from clients.desk.i18n import load_translations
from clients.desk.message_view import shown_fields
from clients.referrals import MessageBuilder
from keys.lifecycle import create_agency
from protocol.errors import ConsentError, InvalidField
from protocol.primitives import system_random
from protocol.referral import (
    CaseState,
    FamilyAssessmentRequest,
    LegalBasis,
    Message,
    MessageType,
    Scope,
    Side,
)
from tests.referral_fixtures import DESTINATION, MT, NOW, consent, fresh_id, make, referral

FAR = MessageType.FAMILY_ASSESSMENT_REQUEST
HOME = {"home.country": ["LA"], "home.province": ["ສະຫວັນນະເຂດ"], "home.village": ["ບ້ານໂພນສະຫວາດ"]}


def family_row(i: int, name: str, relation: str = "mother") -> dict[str, list[str]]:
    return {f"known_family[{i}].name.full_native": [name], f"known_family[{i}].relation": [relation]}


def open_case(store: CaseStore, scopes: tuple[Scope, ...]) -> CaseState:
    header = {
        "case_link_id": os.urandom(16),
        "sender_case_ref": "ศคม.นค. 7/2569",
        "message_id": os.urandom(16),
    }
    opening = referral("lo", header=header, the_consent=consent(scopes))
    state = store.record_sent(opening, now=NOW)
    store.mark_sealed(opening, fresh_id().hex())
    for mtype in (MT.ACKNOWLEDGEMENT, MT.ACCEPTANCE):
        state = store.record_received(make(state, mtype, Side.ORIGIN), envelope_id=fresh_id().hex(), now=NOW)
    return state


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CaseStore]:
    identity = create_agency(DESTINATION, "Department of Social Development and Welfare", NOW)
    with CaseStore(tmp_path, identity) as opened:
        yield opened


def build(
    store: CaseStore, state: CaseState, form: dict[str, list[str]], officer: str | None = "somchai.j"
) -> Message:
    builder = MessageBuilder(DESTINATION, store, clock=lambda: NOW, rng=system_random)
    return build_from_form(
        FAR,
        form,
        builder=builder,
        state=state,
        case_ref=None,
        to=None,
        officer=officer,
        rng=system_random,
        now=NOW,
    )


def test_a_list_of_records_is_a_repeat_with_one_empty_row_to_start() -> None:
    repeats = [item for item in layout(FAR) if isinstance(item, Repeat)]
    assert [r.path for r in repeats] == ["known_family"]
    family = repeats[0]
    assert (family.max_items, family.mark, family.scope) == (20, "PD", Scope.FAMILY_TRACING)
    assert len(family.rows) == 1
    paths = {w.path: w for w in family.rows[0]}
    assert paths["known_family[0].relation"].control == "select"
    assert "mother" in paths["known_family[0].relation"].choices
    assert paths["known_family[0].name.full_native"].required
    assert paths["known_family[0].name.full_native"].legend == ("known_family", "name")
    withheld = [i for i in layout(MessageType.REFERRAL) if isinstance(i, Repeat)]
    assert [r.path for r in withheld] == ["consent.withheld"]


def test_rows_shown_reach_the_last_filled_row_and_one_more() -> None:
    form = {**family_row(0, "ນາງ ຄຳ"), **family_row(2, "ທ້າວ ບຸນມີ", "father")}
    assert rows_to_show(FAR, form) == {"known_family": 4}
    widgets = {w.path for w in widgets_for(FAR, rows_to_show(FAR, form))}
    assert "known_family[3].relation" in widgets
    assert "known_family[4].relation" not in widgets


def test_empty_rows_are_dropped_and_refusals_name_the_row_on_the_form() -> None:
    form = {**family_row(1, "ນາງ ຄຳ ແກ້ວມະນີ"), "known_family[3].name.full_native": ["ທ້າວ ບຸນມີ"]}
    values = read_form(FAR, form)
    assert [m["name"]["full_native"] for m in values.raw["known_family"]] == ["ນາງ ຄຳ ແກ້ວມະນີ", "ທ້າວ ບຸນມີ"]
    assert values.form_path("known_family[1].relation") == "known_family[3].relation"
    assert values.form_path("known_family[0].name.full_native") == "known_family[1].name.full_native"


def test_a_forged_row_number_beyond_the_list_limit_is_refused() -> None:
    with pytest.raises(InvalidField) as caught:
        read_form(FAR, family_row(20, "ນາງ ຄຳ"))
    assert caught.value.field == "known_family"
    assert rows_to_show(FAR, family_row(99999, "x")) == {}


def test_a_missing_relation_in_a_later_row_is_reported_on_that_row(store: CaseStore) -> None:
    state = open_case(store, tuple(Scope))
    form = {**HOME, **family_row(0, "ນາງ ຄຳ"), "known_family[2].name.full_native": ["ທ້າວ ບຸນມີ"]}
    with pytest.raises(InvalidField) as caught:
        build(store, state, form)
    assert caught.value.field == "known_family[2].relation"
    problem = problem_of(caught.value, widgets_for(FAR, rows_to_show(FAR, form)), form)
    assert (problem.field, problem.kind) == ("known_family[2].relation", ProblemKind.REQUIRED)
    thai = load_translations()["th"].gettext
    assert problem.message(thai) == "ต้องกรอกช่องนี้"


def test_family_members_travel_in_the_message_in_form_order(store: CaseStore) -> None:
    state = open_case(store, tuple(Scope))
    form = {**HOME, **family_row(0, "ນາງ ຄຳ ແກ້ວມະນີ"), **family_row(1, "ທ້າວ ບຸນມີ", "father")}
    message = build(store, state, form)
    assert isinstance(message, FamilyAssessmentRequest)
    assert [(m.name.full_native, m.relation.value) for m in message.known_family] == [
        ("ນາງ ຄຳ ແກ້ວມະນີ", "mother"),
        ("ທ້າວ ບຸນມີ", "father"),
    ]
    assert message.header.overrides == ()
    relations = [(f.path, f.numbers, f.values) for f in shown_fields(message) if f.names[-1] == "relation"]
    assert relations == [
        ("known_family[0].relation", ("1", ""), ("mother",)),
        ("known_family[1].relation", ("2", ""), ("father",)),
    ]


def test_fields_outside_the_consent_need_an_override_with_reason_and_basis(store: CaseStore) -> None:
    state = open_case(store, tuple(s for s in Scope if s is not Scope.FAMILY_TRACING))
    form = {**HOME, **family_row(0, "ນາງ ຄຳ")}
    with pytest.raises(ConsentError) as refused:
        build(store, state, form)
    problem = problem_of(refused.value, widgets_for(FAR), form)
    assert problem.kind is ProblemKind.CONSENT
    assert problem.field.startswith(("home", "known_family"))

    with pytest.raises(InvalidField) as no_basis:
        build(store, state, {**form, "override.reason": ["ครอบครัวต้องได้รับการติดตามก่อนส่งกลับ"]})
    assert no_basis.value.field == "override.legal_basis"
    assert problem_of(no_basis.value, widgets_for(FAR), form).kind is ProblemKind.OVERRIDE

    consent_basis = {**form, "override.reason": ["เหตุผล"], "override.legal_basis": [LegalBasis.CONSENT.value]}
    with pytest.raises(InvalidField) as forged:
        build(store, state, consent_basis)
    assert forged.value.field == "override.legal_basis"

    overridden = {
        **form,
        "override.reason": ["ครอบครัวต้องได้รับการติดตามก่อนส่งกลับ"],
        "override.legal_basis": [LegalBasis.VITAL_INTEREST.value],
    }
    with pytest.raises(InvalidField) as nobody:
        build(store, state, overridden, officer=None)
    assert nobody.value.field == "override.officer"

    message = build(store, state, overridden)
    (record,) = message.header.overrides
    assert record.officer == "somchai.j"
    assert record.legal_basis is LegalBasis.VITAL_INTEREST
    assert record.reason == "ครอบครัวต้องได้รับการติดตามก่อนส่งกลับ"
    assert {p.split(".")[0].split("[")[0] for p in record.field_paths} == {"home", "known_family"}


def test_an_override_the_consent_does_not_need_is_refused_on_the_override(store: CaseStore) -> None:
    state = open_case(store, tuple(Scope))
    form = {
        **HOME,
        "override.reason": ["ไม่จำเป็น"],
        "override.legal_basis": [LegalBasis.PUBLIC_TASK.value],
    }
    with pytest.raises(InvalidField) as caught:
        build(store, state, form)
    assert caught.value.field == "override.reason"
    assert problem_of(caught.value, widgets_for(FAR), form).kind is ProblemKind.OVERRIDE_NOT_NEEDED


@pytest.mark.parametrize(
    ("value", "kind"),
    [("", ProblemKind.REQUIRED), ("2569-13-45", ProblemKind.DATE), ("2025-02-30", ProblemKind.DATE)],
)
def test_a_date_problem_is_named_by_what_the_person_typed(value: str, kind: ProblemKind) -> None:
    form = {"due_on": [value]}
    problem = problem_of(InvalidField("due_on", "a date YYYY-MM-DD"), widgets_for(FAR), form)
    assert problem.kind is kind
    lao = load_translations()["lo"].gettext
    assert problem.message(lao) != problem.message(lambda s: s)

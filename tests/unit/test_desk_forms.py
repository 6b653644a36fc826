"""Compose forms come from the referral schema, and a submitted form is checked like a draft
file: every refusal names the field."""

from __future__ import annotations

import pytest

from clients.desk.forms import fields_from_form, widgets_for
from clients.referral_drafts import draft_from_fields
from protocol.errors import InvalidField
from protocol.primitives import system_random
from protocol.referral import MessageType


def test_referral_form_has_every_required_field_with_scope_and_data_class() -> None:
    widgets = {w.path: w for w in widgets_for(MessageType.REFERRAL)}
    name = widgets["person.name.full_native"]
    assert (name.required, name.mark, name.scope and name.scope.value) == (True, "PD", "s1_notify_origin")
    assert widgets["health_needs"].mark == "S"
    assert widgets["health_needs"].scope is not None
    assert widgets["health_needs"].scope.value == "s5_health"
    assert widgets["requested_actions"].control == "checkboxes"
    assert widgets["consent.scopes"].control == "checkboxes"
    assert widgets["person.is_child"].control == "yesno"
    assert "consent.consent_id" not in widgets


def test_form_values_become_draft_values() -> None:
    form = {
        "read_by": ["molsw-off-07"],
        "note": ["ໄດ້ຮັບແລ້ວ ກຳລັງພິຈາລະນາ"],
    }
    raw = fields_from_form(MessageType.ACKNOWLEDGEMENT, form)
    assert raw == {"type": "acknowledgement", "read_by": "molsw-off-07", "note": "ໄດ້ຮັບແລ້ວ ກຳລັງພິຈາລະນາ"}
    draft = draft_from_fields(raw, rng=system_random)
    assert draft.body["read_by"] == "molsw-off-07"


def test_bad_value_is_refused_naming_its_field() -> None:
    form = {
        "person.name.full_native": ["สมชาย ใจดี"],
        "person.sex": ["male"],
        "person.is_child": ["no"],
        "person.estimated_age": ["สามสิบ"],
        "identified_on": ["2568-01-02"],
    }
    raw = fields_from_form(MessageType.REFERRAL, form)
    assert raw["person"]["estimated_age"] == "สามสิบ"
    with pytest.raises(InvalidField) as caught:
        draft_from_fields(raw, rng=system_random)
    assert caught.value.field in ("identified_on", "person.estimated_age", "identified_by")


def test_empty_inputs_are_left_out_and_lines_split() -> None:
    raw = fields_from_form(
        MessageType.REFERRAL,
        {"person.name.aliases": ["ສົມພອນ\n\nນາງ ພອນ\n"], "summary": ["  "], "exploitation": []},
    )
    assert raw == {"type": "referral", "person": {"name": {"aliases": ["ສົມພອນ", "ນາງ ພອນ"]}}}

"""Referral messages: every type round-trips in Thai, Lao and English; Thai and Lao text is never
refused; bad fields are refused with their full path; the schema registry is complete and marks
every personal and sensitive field with a consent scope."""

from __future__ import annotations

import unicodedata
from dataclasses import replace
from typing import Any

import pytest

from protocol import codec
from protocol.envelope import MEDIA_TYPE, Manifest
from protocol.errors import InvalidField, MalformedInput, UnsupportedVersion
from protocol.referral import (
    CONTENT_TYPE,
    MESSAGE_CLASSES,
    Consent,
    ConsentGiver,
    DataClass,
    GuardianRelation,
    LegalBasis,
    MessageType,
    OverrideRecord,
    Person,
    PersonName,
    Proceedings,
    RepatriationAction,
    RepatriationConfirmation,
    Sex,
    TravelDocument,
    WithheldItem,
    carried_fields,
    decode_message,
    encode_message,
    schema_of,
)
from protocol.referral.codes import DocumentKind, ExploitationForm
from protocol.referral.fields import Nested
from protocol.referral.kinds import ListOf
from protocol.referral.wire import message_from_wire, message_to_wire
from tests.referral_fixtures import PATHS, consent, drive, fresh_id, make, person, referral

LANGS = ("th", "lo", "en")
ACCEPTED, _ = drive(PATHS["accepted"])


def full_referral(lang: str) -> Any:
    """A referral carrying every optional field, sensitive ones included."""
    document = TravelDocument(kind=DocumentKind.NATIONAL_ID_CARD, number="1234-5678", issuing_country="LA")
    return referral(
        lang,
        person=person(lang, ethnicity="ລາວລຸ່ມ", document=document, estimated_age=21),
        placement_code="NK-07",
        return_wish_note="อยากกลับไปอยู่กับแม่",
        exploitation=(ExploitationForm.SEXUAL_EXPLOITATION, ExploitationForm.FORCED_LABOUR),
        risks="Recruiter knows her home village.",
        health_needs="ຕ້ອງການກວດສຸຂະພາບ",
        proceedings=Proceedings(
            is_witness=True, police_case_ref="นค. 118/2568", next_hearing_on="2025-06-02"
        ),
        suspected_traffickers="นาย ก. (นามสมมุติ)",
    )


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("mtype", list(MessageType))
def test_every_message_type_round_trips(mtype: MessageType, lang: str) -> None:
    message = make(ACCEPTED.destination, mtype, ACCEPTED.destination.local_side, lang=lang, reply=fresh_id())
    data = encode_message(message)
    decoded = decode_message(data)
    assert decoded == message
    assert type(decoded) is MESSAGE_CLASSES[mtype]
    assert encode_message(decoded) == data


@pytest.mark.parametrize("lang", LANGS)
def test_a_referral_with_every_optional_field_round_trips(lang: str) -> None:
    message = full_referral(lang)
    assert decode_message(encode_message(message)) == message
    paths = {f.path for f in carried_fields(message)}
    assert {"person.ethnicity", "person.document.number", "proceedings.police_case_ref"} <= paths


def test_a_referral_travels_as_an_envelope_manifest_body() -> None:
    message = full_referral("lo")
    assert MEDIA_TYPE.fullmatch(CONTENT_TYPE)
    manifest = Manifest(fresh_id(), "TH-DSDW", ("LA-MLSW",), CONTENT_TYPE, encode_message(message), ())
    assert decode_message(Manifest.parse(manifest.encode()).body) == message


THAI_AND_LAO_NAMES = [
    "สมชาย ใจดี",  # tone marks and vowels above and below
    "ฤดี ฦๅสาย",  # ฤ ฦ and lakkhangyao
    "น้ำฝน ศรีสุข",  # sara am after a tone mark
    "ນາງ ສົມພອນ ແກ້ວມະນີ",
    "ໜູນ້ອຍ ໝັ້ນຄົງ",  # Lao ligatures ho-no and ho-mo
    "ທອງຫຼ່ຽນ ພົມມະຈັນ",  # subscript lo
    "ສົມ\u200bໃຈ",  # zero-width space as a word break hint
    "ธน\u200dพร",  # zero-width joiner
    "ພຸດທະ\u0eceສັດ",  # LAO YAMAKKAN, newer than this Python's Unicode tables
]


@pytest.mark.parametrize("name", THAI_AND_LAO_NAMES)
def test_thai_and_lao_names_are_kept_exactly(name: str) -> None:
    assert unicodedata.is_normalized("NFC", name)
    built = PersonName(full_native=name, given_native=name, aliases=(name,))
    assert built.full_native == name
    message = referral("lo", person=person("lo", name=built))
    decoded = decode_message(encode_message(message))
    assert decoded.person.name == built  # type: ignore[attr-defined]


def test_text_is_normalised_to_nfc_on_construction() -> None:
    thai_tone_before_vowel = "ก\u0e48\u0e38"  # mai ek typed before sara u
    lao_tone_before_vowel = "ກ\u0ec8\u0eb8"
    name = PersonName(
        full_native=thai_tone_before_vowel, given_native=lao_tone_before_vowel, family_native="Jose\u0301"
    )
    assert name.full_native == "ก\u0e38\u0e48"
    assert name.given_native == "ກ\u0eb8\u0ec8"
    assert name.family_native == "José"


def test_line_breaks_are_normalised_in_notes_and_refused_in_names() -> None:
    message = make(ACCEPTED.destination, MessageType.CASE_UPDATE, ACCEPTED.destination.local_side)
    updated = replace(message, summary="บรรทัดหนึ่ง\r\nບັນທັດສອງ\rline three")  # type: ignore[type-var]
    assert updated.summary == "บรรทัดหนึ่ง\nບັນທັດສອງ\nline three"  # type: ignore[attr-defined]
    with pytest.raises(InvalidField) as e:
        PersonName(full_native="ສົມພອນ\nແກ້ວມະນີ")
    assert e.value.field == "full_native"


@pytest.mark.parametrize(
    "bad", ["\x00", "\x07", "\x1b[31m", "\x85", "\u202e", "\u2066", "\ufeff", "\ue000", "\u2028", "\ufdd0"]
)
def test_control_bidi_private_use_and_non_characters_are_refused(bad: str) -> None:
    with pytest.raises(InvalidField) as e:
        PersonName(full_native=f"ສົມພອນ{bad}")
    assert e.value.field == "full_native"
    assert "U+" in e.value.expected


@pytest.mark.parametrize("blank", ["", "   ", "\u200b", " \u00a0 "])
def test_required_text_needs_visible_characters(blank: str) -> None:
    with pytest.raises(InvalidField, match="visible text"):
        PersonName(full_native=blank)


def test_lengths_count_code_points_after_nfc() -> None:
    PersonName(full_native="ก" * 200)
    with pytest.raises(InvalidField, match="at most 200"):
        PersonName(full_native="ก" * 201)


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("2025-02-29", "exists"),
        ("2568-02-18", "Buddhist Era"),
        ("1850-01-01", "1900"),
        ("2025-2-18", "YYYY-MM-DD"),
        ("๒๐๒๕-๐๒-๑๘", "YYYY-MM-DD"),  # Thai digits
        ("20250218", "YYYY-MM-DD"),
    ],
)
def test_bad_dates_are_refused_with_a_hint(value: str, hint: str) -> None:
    with pytest.raises(InvalidField, match=hint) as e:
        referral("lo", identified_on=value)
    assert e.value.field == "identified_on"


def test_a_leap_day_is_a_date() -> None:
    assert referral("lo", identified_on="2024-02-29").identified_on == "2024-02-29"  # type: ignore[attr-defined]


def wire_of_full_referral() -> dict[str, Any]:
    return message_to_wire(full_referral("lo"))


def _set(wire: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node: Any = wire
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is KeyError:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return wire


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("person.name.full_native", "ສົມພອນ\x00", "person.name.full_native"),
        ("person.name.aliases.0", 7, "person.name.aliases[0]"),
        ("person.document.expires_on", "2025-13-01", "person.document.expires_on"),
        ("person.sex", "woman", "person.sex"),
        ("person.sex", KeyError, "person.sex"),
        ("person.nickname", "Phone", "person.nickname"),
        ("person.languages", ["th", "lo"], "person.languages"),
        ("person.estimated_age", 121, "person.estimated_age"),
        ("person.is_child", 0, "person.is_child"),
        ("consent.scopes", ["s9_everything"], "consent.scopes[0]"),
        ("consent.consent_id", b"short", "consent.consent_id"),
        ("proceedings.next_hearing_on", "2568-06-02", "proceedings.next_hearing_on"),
        ("header.case_link_id", "not bytes", "header.case_link_id"),
        ("header.sender_agency_id", "th-dsdw", "header.sender_agency_id"),
        ("header.receiver_agency_id", "TH-DSDW", "header.receiver_agency_id"),
        ("return_wish", "maybe", "return_wish"),
        ("exploitation", [], "exploitation"),
        ("home", None, "home"),
        ("requested_actions", [], "requested_actions"),
        ("type", "referal", "type"),
    ],
)
def test_decoding_names_the_path_of_a_bad_field(path: str, value: Any, field: str) -> None:
    wire = _set(wire_of_full_referral(), path, value)
    with pytest.raises(InvalidField) as e:
        message_from_wire(wire)
    assert e.value.field == field
    if path != "type":
        with pytest.raises(InvalidField):
            decode_message(codec.encode(wire))


def test_a_rule_inside_a_nested_record_names_its_full_path() -> None:
    wire = wire_of_full_referral()
    del wire["person"]["date_of_birth"], wire["person"]["estimated_age"]
    with pytest.raises(InvalidField) as e:
        message_from_wire(wire)
    assert e.value.field == "person.date_of_birth"


def test_an_unknown_schema_version_is_unsupported() -> None:
    wire = wire_of_full_referral()
    wire["v"] = 2
    with pytest.raises(UnsupportedVersion):
        decode_message(codec.encode(wire))


@pytest.mark.parametrize("data", [codec.encode([1, 2]), codec.encode("referral"), b"\xc1", b""])
def test_what_is_not_a_message_map_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        decode_message(data)


def test_person_needs_a_date_of_birth_or_an_estimated_age() -> None:
    with pytest.raises(InvalidField) as e:
        Person(name=PersonName(full_native="สมชาย ใจดี"), sex=Sex.MALE, is_child=False)
    assert e.value.field == "date_of_birth"


@pytest.mark.parametrize(
    ("action", "fields", "bad"),
    [
        (RepatriationAction.COUNTER_PROPOSE, {"proposed_on": "2025-04-10"}, "crossing"),
        (RepatriationAction.SCHEDULE, {"scheduled_on": "2025-04-10"}, "scheduled_time"),
        (RepatriationAction.CONFIRM, {"scheduled_on": "2025-04-10"}, "scheduled_on"),
        (RepatriationAction.CANCEL, {}, "reason_text"),
        (
            RepatriationAction.SCHEDULE,
            {"scheduled_on": "2025-04-10", "scheduled_time": "9:30"},
            "scheduled_time",
        ),
    ],
)
def test_each_repatriation_action_has_its_own_fields(
    action: RepatriationAction, fields: dict[str, Any], bad: str
) -> None:
    head = make(ACCEPTED.destination, MessageType.CASE_UPDATE, ACCEPTED.destination.local_side).header
    with pytest.raises(InvalidField) as e:
        RepatriationConfirmation(header=head, action=action, **fields)
    assert e.value.field == bad


def test_a_childs_consent_comes_from_a_guardian_with_a_best_interests_reference() -> None:
    with pytest.raises(InvalidField, match="best-interests"):
        consent(is_child=True, given_by=ConsentGiver.GUARDIAN, guardian_relation=GuardianRelation.PARENT)
    with pytest.raises(InvalidField, match="guardian"):
        consent(is_child=True, best_interests_ref="BID-TH-2025-014")
    with pytest.raises(InvalidField, match="relation"):
        consent(given_by=ConsentGiver.GUARDIAN)
    child: Consent = consent(
        is_child=True,
        given_by=ConsentGiver.GUARDIAN,
        guardian_relation=GuardianRelation.SOCIAL_WORKER,
        best_interests_ref="BID-TH-2025-014",
    )
    assert child.given_by is ConsentGiver.GUARDIAN


def test_an_override_rests_on_a_basis_other_than_consent_and_another_approver() -> None:
    fields: dict[str, Any] = {
        "field_paths": ("health_needs",),
        "reason": "Vital: needs treatment",
        "overridden_at": 1,
    }
    with pytest.raises(InvalidField) as e:
        OverrideRecord(officer="TH-a", legal_basis=LegalBasis.CONSENT, **fields)
    assert e.value.field == "legal_basis"
    with pytest.raises(InvalidField) as e:
        OverrideRecord(
            officer="TH-a", second_approver="TH-a", legal_basis=LegalBasis.VITAL_INTEREST, **fields
        )
    assert e.value.field == "second_approver"
    with pytest.raises(InvalidField):
        WithheldItem(field_path="person.Name", withheld_from="LA", reason="x")


def _leaves(cls: type, prefix: str = "", scope: Any = None) -> list[tuple[str, DataClass, Any, bool]]:
    out = []
    for spec in schema_of(cls):
        path = f"{prefix}.{spec.name}" if prefix else spec.name
        effective = spec.scope or scope
        kind = spec.kind.item if isinstance(spec.kind, ListOf) else spec.kind
        out.append((path, spec.data, effective, spec.required))
        if isinstance(kind, Nested):
            out += _leaves(kind.record, path, effective)
    return out


def test_every_personal_or_sensitive_field_has_a_scope_and_sensitive_ones_are_optional() -> None:
    unscoped = set()
    for mtype, cls in MESSAGE_CLASSES.items():
        for path, data, scope, required in _leaves(cls):
            if data is not DataClass.NONE and scope is None:
                unscoped.add(path)
            if data is DataClass.SENSITIVE and path.count(".") == 0:
                assert not required, f"{mtype}.{path} is sensitive and required"
            if path.startswith("header"):
                assert data is DataClass.NONE, f"{mtype}.{path}: the header holds no personal data"
    # The interpreter's name is personal data of the interpreter, kept for accountability.
    assert unscoped == {"consent.interpreter"}


def test_the_registry_has_one_class_per_message_type() -> None:
    assert set(MESSAGE_CLASSES) == set(MessageType)
    assert all(cls.TYPE is t and cls.VERSION == 1 for t, cls in MESSAGE_CLASSES.items())

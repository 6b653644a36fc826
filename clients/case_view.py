"""How a case reads for a person: labels, message fields as lines, consent and overrides in
words, and what waits for whom. Shared by `casebridge cases` and the PDF export.

Invariants: every field a message carries appears (nothing is summarised away), in schema
order, with its data class (PD personal, S sensitive) taken from the schema; text is shown as
stored (NFC). Times are shown in the agencies' shared time, UTC+7, and say so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from clients.case_threads import REGION_UTC_OFFSET_SECONDS, CaseThread
from protocol.referral import (
    CaseState,
    Consent,
    DataClass,
    Message,
    MessageType,
    OpenItem,
    RecordedOverride,
    WaitingKind,
    schema_of,
)
from protocol.referral.fields import Nested, Record
from protocol.referral.kinds import ListOf

LABELS = {
    "full_native": "Full name (own script)",
    "given_native": "Given name (own script)",
    "family_native": "Family name (own script)",
    "full_romanised": "Full name (romanised)",
    "given_romanised": "Given name (romanised)",
    "family_romanised": "Family name (romanised)",
    "is_child": "Child",
    "date_of_birth": "Date of birth",
    "claimed_nationality": "Claimed nationality",
    "identified_on": "Identified on",
    "identified_by": "Identified by",
    "requested_actions": "Requested actions",
    "return_wish": "Wish to return",
    "placement_code": "Placement code",
    "health_needs": "Health needs",
    "suspected_traffickers": "Suspected traffickers",
    "due_on": "Due on",
    "read_by": "Read by",
    "accepted_by": "Accepted by",
    "declined_by": "Declined by",
    "police_case_ref": "Police case number",
    "consent_id": "Consent id",
}
WAITING_TEXT = {
    WaitingKind.ACKNOWLEDGE: "acknowledge",
    WaitingKind.DECIDE: "accept or decline the referral",
    WaitingKind.ANSWER_INFO: "answer the info request",
    WaitingKind.VERIFY: "verify nationality or documents",
    WaitingKind.ASSESS_FAMILY: "assess the family",
    WaitingKind.ANSWER_PLAN: "answer the repatriation plan",
    WaitingKind.SCHEDULE: "schedule the handover",
    WaitingKind.HAND_OVER: "record the handover",
    WaitingKind.CONFIRM_CLOSURE: "confirm the closure",
}


def local_time(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds + REGION_UTC_OFFSET_SECONDS)) + " (UTC+7)"


def label(name: str) -> str:
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def type_label(message_type: MessageType) -> str:
    return message_type.value.replace("_", " ").capitalize()


def short_id(value: bytes) -> str:
    return value.hex()[:12]


@dataclass(frozen=True, slots=True)
class FieldLine:
    """One value of a message: `label` is the path in words (`Person › Name › Full name`)."""

    path: str
    label: str
    value: str
    data: DataClass

    @property
    def mark(self) -> str:
        return {DataClass.PERSONAL: "PD", DataClass.SENSITIVE: "S"}.get(self.data, "")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, StrEnum):
        return str(value.value)
    return str(value)


def _walk(record: Record, path: str, words: str, inherited: DataClass) -> list[FieldLine]:
    out: list[FieldLine] = []
    for spec in schema_of(type(record)):
        value = getattr(record, spec.name)
        if value is None or value == () or spec.name == "header":
            continue
        here = f"{path}.{spec.name}" if path else spec.name
        name = f"{words} › {label(spec.name)}" if words else label(spec.name)
        data = spec.data if spec.data is not DataClass.NONE else inherited
        kind = spec.kind.item if isinstance(spec.kind, ListOf) else spec.kind
        if isinstance(kind, Nested):
            items = value if isinstance(spec.kind, ListOf) else (value,)
            for i, item in enumerate(items, 1):
                suffix = f" {i}" if isinstance(spec.kind, ListOf) else ""
                out += _walk(item, here, name + suffix, data)
        elif isinstance(spec.kind, ListOf):
            out.append(FieldLine(here, name, ", ".join(_scalar(v) for v in value), data))
        else:
            out.append(FieldLine(here, name, _scalar(value), data))
    return out


def message_fields(message: Message) -> list[FieldLine]:
    """Every body field `message` carries, flattened in schema order."""
    return _walk(message, "", "", DataClass.NONE)


def consent_summary(consent: Consent) -> list[str]:
    scopes = ", ".join(s.value for s in consent.scopes) or "none"
    lines = [
        f"Consent {short_id(consent.consent_id)}: given by the {consent.given_by.value} on {consent.given_on}"
        f" (language {consent.language}, officer {consent.officer}); legal basis {consent.legal_basis.value}",
        f"Scopes granted: {scopes}",
    ]
    if consent.guardian_relation is not None:
        lines.append(
            f"Guardian: {consent.guardian_relation.value}; best interests {consent.best_interests_ref}"
        )
    lines += [f"Withheld: {w.field_path} from {w.withheld_from} ({w.reason})" for w in consent.withheld]
    return lines


def override_lines(overrides: tuple[RecordedOverride, ...], state: CaseState) -> list[str]:
    out = []
    for r in overrides:
        o = r.override
        second = f", second approver {o.second_approver}" if o.second_approver else ""
        out.append(
            f"Override in message {short_id(r.message_id)} by {state.agency_of(r.sender)} officer {o.officer}"
            f"{second}, {local_time(o.overridden_at)}: {', '.join(o.field_paths)}; "
            f"legal basis {o.legal_basis.value}; reason: {o.reason}"
        )
    return out


def item_text(item: OpenItem, thread: CaseThread) -> str:
    state = thread.state
    who = ", ".join(
        state.agency_of(s) + (" (this agency)" if s is state.local_side else "") for s in item.waiting_on
    )
    about = thread.message(item.about)
    subject = f"{type_label(about.message.TYPE)} {short_id(item.about)}" if about else short_id(item.about)
    due = f", due {item.due_on}" if item.due_on else ""
    overdue = ", OVERDUE" if item.overdue else ""
    return f"{who}: {WAITING_TEXT[item.kind]} ({subject}){due}{overdue}"


def person_text(thread: CaseThread) -> str:
    name = thread.person_name
    if name is None:
        return "-"
    if name.full_romanised:
        return f"{name.full_native} ({name.full_romanised})"
    return name.full_native


def case_refs(state: CaseState) -> str:
    origin = state.origin_case_ref or "not yet set"
    return f"{state.destination_agency_id} {state.destination_case_ref} / {state.origin_agency_id} {origin}"

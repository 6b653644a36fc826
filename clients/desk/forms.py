"""Compose forms made from the referral schema, and form submissions turned back into messages.

Invariants:
- The schema (`protocol.referral.schema_of`) is the only source of fields: every body field of a
  message type becomes a widget named by its dotted path (`person.name.full_native`), with its
  kind, whether it is required, its data class (PD / S) and its consent scope. Lists of nested
  records (family members, withheld items) and ids are not offered in the desk's form; a draft
  file and `casebridge send --referral` carry them.
- A submission is checked by the same code as a draft file (`clients.referral_drafts`), then
  built with its header from the case store and applied to a copy of the case's state as its
  sender (`protocol.referral.apply`), so the workflow and the consent gate speak before anything
  is sealed. Every refusal names a field path (or `type` / `case` for the message as a whole).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clients.referral_drafts import build_message, draft_from_fields
from clients.referrals import MessageBuilder
from protocol.errors import CaseBridgeError, ConsentError, InvalidField
from protocol.primitives import Random
from protocol.referral import (
    MESSAGE_CLASSES,
    CaseState,
    DataClass,
    Message,
    MessageType,
    Scope,
    apply,
    schema_of,
)
from protocol.referral.fields import Nested, Record
from protocol.referral.kinds import Bool, Code, Date, Id, Int, ListOf, Text, Time


@dataclass(frozen=True, slots=True)
class Widget:
    """One input of a compose form. `control` is text, textarea, date, time, number, yesno,
    select, checkboxes or lines (a list of texts, one per line); `group` is the path of the
    nested record it belongs to ("" at the top)."""

    path: str
    name: str
    control: str
    required: bool
    data: DataClass
    scope: Scope | None
    choices: tuple[str, ...] = ()
    group: str = ""
    max_length: int | None = None

    @property
    def mark(self) -> str:
        return {DataClass.PERSONAL: "PD", DataClass.SENSITIVE: "S"}.get(self.data, "")


def _control(kind: Any) -> tuple[str, tuple[str, ...], int | None]:
    if isinstance(kind, ListOf):
        if isinstance(kind.item, Code):
            return "checkboxes", tuple(m.value for m in kind.item.enum), None
        return "lines", (), None
    if isinstance(kind, Code):
        return "select", tuple(m.value for m in kind.enum), None
    if isinstance(kind, Bool):
        return "yesno", (), None
    if isinstance(kind, Int):
        return "number", (), None
    if isinstance(kind, Date):
        return "date", (), None
    if isinstance(kind, Time):
        return "time", (), None
    if isinstance(kind, Text):
        return ("textarea" if kind.multiline else "text"), (), kind.max_len
    raise TypeError(f"no control for {kind!r}")


def _walk(
    cls: type[Record], prefix: str, required: bool, data: DataClass, scope: Scope | None
) -> list[Widget]:
    out: list[Widget] = []
    for spec in schema_of(cls):
        if spec.name == "header" or isinstance(spec.kind, Id):
            continue
        path = f"{prefix}.{spec.name}" if prefix else spec.name
        here_scope = spec.scope if spec.scope is not None else scope
        here_data = spec.data if spec.data is not DataClass.NONE else data
        here_required = required and spec.required
        if isinstance(spec.kind, ListOf) and isinstance(spec.kind.item, Nested):
            continue
        if isinstance(spec.kind, Nested):
            out += _walk(spec.kind.record, path, here_required, here_data, here_scope)
            continue
        control, choices, max_length = _control(spec.kind)
        out.append(
            Widget(
                path, spec.name, control, here_required, here_data, here_scope, choices, prefix, max_length
            )
        )
    return out


def widgets_for(message_type: MessageType) -> list[Widget]:
    """The form of one message type, in schema order."""
    return _walk(MESSAGE_CLASSES[message_type], "", True, DataClass.NONE, None)


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        tree = tree.setdefault(name, {})
    tree[leaf] = value


def _converted(widget: Widget, values: Sequence[str]) -> Any:
    texts = [v for v in values if v.strip()]
    if widget.control == "checkboxes":
        return sorted(set(texts)) or None
    if widget.control == "lines":
        lines = [line.strip() for text in texts for line in text.splitlines() if line.strip()]
        return lines or None
    if not texts:
        return None
    text = texts[0]
    if widget.control == "number":
        try:
            return int(text.strip())
        except ValueError:
            return text
    if widget.control == "yesno":
        return {"yes": True, "no": False}.get(text, text)
    return text


def fields_from_form(message_type: MessageType, form: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The form's values as a draft's plain values: empty inputs are left out."""
    raw: dict[str, Any] = {"type": message_type.value}
    for widget in widgets_for(message_type):
        value = _converted(widget, form.get(widget.path, ()))
        if value is not None:
            _set(raw, widget.path, value)
    return raw


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a form does not make a sendable message: the field path and what it expects."""

    field: str
    expected: str


def problem_of(error: CaseBridgeError) -> Problem:
    if isinstance(error, InvalidField):
        return Problem(error.field, error.expected)
    if isinstance(error, ConsentError):
        return Problem(error.fields[0] if error.fields else "consent", error.detail)
    return Problem("type", error.detail)


def build_from_form(
    message_type: MessageType,
    form: Mapping[str, Sequence[str]],
    *,
    builder: MessageBuilder,
    state: CaseState | None,
    case_ref: str | None,
    to: str | None,
    rng: Random,
    now: int,
) -> Message:
    """Check a submitted form and build the message it describes; raises the first refusal
    (`InvalidField`, `ConsentError`, `InvalidTransition`)."""
    raw = fields_from_form(message_type, form)
    if message_type is MessageType.REFERRAL:
        if not (case_ref or "").strip():
            raise InvalidField("case_ref", "this agency's case number for the new case")
        raw["case_ref"] = case_ref
        if not (to or "").strip():
            raise InvalidField("to", "the agency the referral goes to")
    else:
        if state is None:
            raise InvalidField("case", "a case in this agency's case store")
        raw["case"] = state.case_link_id.hex()
        if message_type is MessageType.ACCEPTANCE:
            if not (case_ref or "").strip():
                raise InvalidField("case_ref", "this agency's case number for the accepted case")
            raw["case_ref"] = case_ref
    draft = draft_from_fields(raw, rng=rng)
    message = build_message(draft, builder, to=to if message_type is MessageType.REFERRAL else None)
    apply(state, message, as_sender=True, now=now)
    return message

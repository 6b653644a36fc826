"""Compose forms made from the referral schema, and form submissions turned back into messages.

Invariants:
- The schema (`protocol.referral.schema_of`) is the only source of fields: every body field of a
  message type becomes a widget named by its dotted path (`person.name.full_native`), with its
  kind, whether it is required, its data class (PD / S) and its consent scope. Ids are drawn,
  never typed.
- A list of nested records (family members, withheld items) is a `Repeat`: rows of widgets whose
  paths carry the row number (`known_family[1].relation`). The form shows the rows filled so far
  and one empty row (the page's script adds more); a row left empty is dropped, and a refusal
  about a kept row names the row the person sees. Row numbers at or beyond the list's maximum are
  refused, so a forged form cannot make the desk build huge lists.
- Setting the consent aside is part of the form (`override.reason`, `override.legal_basis`,
  `override.second_approver`); the officer is the unlocked session's, never a form value.
- A submission is checked by the same code as a draft file (`clients.referral_drafts`), then
  built with its header from the case store and applied to a copy of the case's state as its
  sender (`protocol.referral.apply`), so the workflow and the consent gate speak before anything
  is sealed. Every refusal names a field path (or `type` / `case` for the message as a whole).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clients.referral_drafts import build_message, draft_from_fields
from clients.referrals import MessageBuilder
from protocol.errors import ConsentError, InvalidField
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
from protocol.referral.consent import OVERRIDE_BASES
from protocol.referral.fields import Nested, Record
from protocol.referral.kinds import Bool, Code, Date, Id, Int, ListOf, Text, Time

OVERRIDE_FIELDS = ("override.reason", "override.legal_basis", "override.second_approver")
OVERRIDE_CHOICES = tuple(sorted(b.value for b in OVERRIDE_BASES))
_ROW = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Widget:
    """One input of a compose form. `control` is text, textarea, date, time, number, yesno,
    select, checkboxes or lines (a list of texts, one per line); `group` is the path of the
    nested record it belongs to ("" at the top) and `legend` that path's schema names."""

    path: str
    name: str
    control: str
    required: bool
    data: DataClass
    scope: Scope | None
    choices: tuple[str, ...] = ()
    group: str = ""
    max_length: int | None = None
    legend: tuple[str, ...] = ()

    @property
    def mark(self) -> str:
        return {DataClass.PERSONAL: "PD", DataClass.SENSITIVE: "S"}.get(self.data, "")


@dataclass(frozen=True, slots=True)
class Repeat:
    """A list of nested records: `rows` of widgets, each row's paths under `path[i]`."""

    path: str
    name: str
    max_items: int
    data: DataClass
    scope: Scope | None
    rows: tuple[tuple[Widget, ...], ...]

    @property
    def mark(self) -> str:
        return {DataClass.PERSONAL: "PD", DataClass.SENSITIVE: "S"}.get(self.data, "")


Item = Widget | Repeat


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
    cls: type[Record],
    prefix: str,
    legend: tuple[str, ...],
    required: bool,
    data: DataClass,
    scope: Scope | None,
    rows: Mapping[str, int],
) -> list[Item]:
    out: list[Item] = []
    for spec in schema_of(cls):
        if spec.name == "header" or isinstance(spec.kind, Id):
            continue
        path = f"{prefix}.{spec.name}" if prefix else spec.name
        here_scope = spec.scope if spec.scope is not None else scope
        here_data = spec.data if spec.data is not DataClass.NONE else data
        here_required = required and spec.required
        if isinstance(spec.kind, ListOf) and isinstance(spec.kind.item, Nested):
            record, limit = spec.kind.item.record, spec.kind.max_items
            count = min(max(1, rows.get(path, 1)), limit)
            made = []
            for i in range(count):
                row = _walk(record, f"{path}[{i}]", (*legend, spec.name), True, here_data, here_scope, rows)
                made.append(tuple(w for w in row if isinstance(w, Widget)))
            out.append(Repeat(path, spec.name, limit, here_data, here_scope, tuple(made)))
            continue
        if isinstance(spec.kind, Nested):
            out += _walk(
                spec.kind.record, path, (*legend, spec.name), here_required, here_data, here_scope, rows
            )
            continue
        control, choices, max_length = _control(spec.kind)
        out.append(
            Widget(
                path, spec.name, control, here_required, here_data, here_scope, choices, prefix,
                max_length, legend,
            )
        )  # fmt: skip
    return out


def layout(message_type: MessageType, rows: Mapping[str, int] | None = None) -> list[Item]:
    """The form of one message type, in schema order: widgets and repeated records, each
    repeated record with `rows[path]` rows (one when not given)."""
    return _walk(MESSAGE_CLASSES[message_type], "", (), True, DataClass.NONE, None, rows or {})


def widgets_for(message_type: MessageType, rows: Mapping[str, int] | None = None) -> list[Widget]:
    """Every input of the form, the rows of repeated records included."""
    out: list[Widget] = []
    for item in layout(message_type, rows):
        out += [w for row in item.rows for w in row] if isinstance(item, Repeat) else [item]
    return out


def _repeats(message_type: MessageType) -> dict[str, int]:
    return {i.path: i.max_items for i in layout(message_type) if isinstance(i, Repeat)}


def _used_rows(form: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
    """For each list path, the row numbers whose inputs hold something, in order."""
    used: dict[str, set[int]] = {}
    for key, values in form.items():
        if not any(v.strip() for v in values):
            continue
        for match in _ROW.finditer(key):
            used.setdefault(key[: match.start()], set()).add(int(match.group(1)))
    return {path: sorted(numbers) for path, numbers in used.items()}


def rows_to_show(message_type: MessageType, form: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Rows to draw per repeated record: up to the last one filled, and one more empty."""
    limits = _repeats(message_type)
    return {
        path: min(limits[path], numbers[-1] + 2)
        for path, numbers in _used_rows(form).items()
        if path in limits and numbers[-1] < limits[path]
    }


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


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        tree = tree.setdefault(name, {})
    tree[leaf] = value


@dataclass(frozen=True, slots=True)
class FormValues:
    """A form read as a draft's plain values, and where each kept row of a repeated record was
    on the form (`rows[path][i]` is the form's row number of the message's item `i`)."""

    raw: dict[str, Any]
    rows: dict[str, list[int]]

    def form_path(self, message_path: str) -> str:
        """A path in the message (`known_family[0].relation`) as the form numbers it."""
        for path, numbers in self.rows.items():
            match = re.match(re.escape(path) + r"\[(\d+)\]", message_path)
            if match and int(match.group(1)) < len(numbers):
                return f"{path}[{numbers[int(match.group(1))]}]" + message_path[match.end() :]
        return message_path


def read_form(
    message_type: MessageType, form: Mapping[str, Sequence[str]], *, officer: str | None = None
) -> FormValues:
    """The form's values as a draft's plain values: empty inputs and empty rows left out."""
    limits = _repeats(message_type)
    used = _used_rows(form)
    for path, numbers in used.items():
        if path in limits and numbers[-1] >= limits[path]:
            raise InvalidField(path, f"at most {limits[path]} entries")
    raw: dict[str, Any] = {"type": message_type.value}
    rows = {path: numbers for path, numbers in used.items() if path in limits}
    for item in layout(message_type, {p: n[-1] + 1 for p, n in rows.items()}):
        if isinstance(item, Widget):
            value = _converted(item, form.get(item.path, ()))
            if value is not None:
                _set(raw, item.path, value)
            continue
        records = []
        for number in rows.get(item.path, []):
            record: dict[str, Any] = {}
            prefix = f"{item.path}[{number}]."
            for widget in item.rows[number]:
                value = _converted(widget, form.get(widget.path, ()))
                if value is not None:
                    _set(record, widget.path.removeprefix(prefix), value)
            records.append(record)
        if records:
            _set(raw, item.path, records)
    override = {f.removeprefix("override."): " ".join(form.get(f, ())).strip() for f in OVERRIDE_FIELDS}
    if any(override.values()):
        raw["override"] = {k: v for k, v in override.items() if v} | ({"officer": officer} if officer else {})
    return FormValues(raw, rows)


def fields_from_form(message_type: MessageType, form: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The form's values as a draft's plain values (see `read_form`)."""
    return read_form(message_type, form).raw


def build_from_form(
    message_type: MessageType,
    form: Mapping[str, Sequence[str]],
    *,
    builder: MessageBuilder,
    state: CaseState | None,
    case_ref: str | None,
    to: str | None,
    officer: str | None,
    rng: Random,
    now: int,
) -> Message:
    """Check a submitted form and build the message it describes; raises the first refusal
    (`InvalidField`, `ConsentError`, `InvalidTransition`), its field path as the form has it."""
    values = read_form(message_type, form, officer=officer)
    raw = values.raw
    if "override" in raw and not officer:
        raise InvalidField("override.officer", "the unlocked officer's id")
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
    override = raw.get("override")
    if override is not None and override.get("legal_basis") not in OVERRIDE_CHOICES:
        raise InvalidField("override.legal_basis", "one of " + ", ".join(OVERRIDE_CHOICES))
    try:
        draft = draft_from_fields(raw, rng=rng)
        message = build_message(draft, builder, to=to if message_type is MessageType.REFERRAL else None)
    except InvalidField as e:
        field = "override.reason" if e.field == "header.overrides" else values.form_path(e.field)
        raise InvalidField(field, e.expected) from None
    except ConsentError as e:
        if override is None:
            raise
        # Only the override's own checks refuse consent while the message is built.
        approver = override.get("second_approver")
        field = "override.second_approver" if approver in (None, officer) else "override.legal_basis"
        raise InvalidField(field, e.detail) from None
    apply(state, message, as_sender=True, now=now)
    return message

"""Why a compose form does not make a sendable message, said in the person's language.

Invariants:
- A refusal comes from the protocol in English (`InvalidField.expected`, a `ConsentError` or
  `InvalidTransition` detail). The desk does not translate that text; it says what kind of
  problem it is in its own translated words, chosen from what the desk knows for certain: the
  field's widget (its control, its length limit), whether the person left it empty, and the
  error's class. The protocol's exact English wording stays beside it as the detail, for support.
- Each kind's words are a gettext msgid in `labels.PROBLEMS`, translated like any other.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from clients.desk import labels
from clients.desk.forms import Widget
from protocol.errors import CaseBridgeError, ConsentError, InvalidField, InvalidTransition


class ProblemKind(StrEnum):
    REQUIRED = "required"
    DATE = "date"
    TIME = "time"
    NUMBER = "number"
    TOO_LONG = "too_long"
    CHOICE = "choice"
    NOT_ACCEPTED = "not_accepted"
    CONSENT = "consent"
    OVERRIDE = "override"
    OVERRIDE_APPROVER = "override_approver"
    OVERRIDE_BASIS = "override_basis"
    OVERRIDE_NOT_NEEDED = "override_not_needed"
    TOO_MANY_ROWS = "too_many_rows"
    CASE_REF = "case_ref"
    RECIPIENT = "recipient"
    WORKFLOW = "workflow"


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"\d{2}:\d{2}")


@dataclass(frozen=True, slots=True)
class Problem:
    """The first refusal of a form: the field path, the kind of problem and the protocol's
    English detail."""

    field: str
    kind: ProblemKind
    expected: str

    def message(self, gettext: Callable[[str], str]) -> str:
        return gettext(labels.PROBLEMS[self.kind.value])


def _valid_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return bool(_DATE.fullmatch(text))


def _kind_of_field(widget: Widget | None, values: Sequence[str]) -> ProblemKind:
    texts = [v.strip() for v in values if v.strip()]
    if widget is None:
        return ProblemKind.NOT_ACCEPTED
    if not texts:
        return ProblemKind.REQUIRED
    text = texts[0]
    if widget.control == "date" and not _valid_date(text):
        return ProblemKind.DATE
    if widget.control == "time" and not _TIME.fullmatch(text):
        return ProblemKind.TIME
    if widget.control == "number" and not text.lstrip("-").isdigit():
        return ProblemKind.NUMBER
    if widget.max_length is not None and len(text) > widget.max_length:
        return ProblemKind.TOO_LONG
    allowed = ("yes", "no") if widget.control == "yesno" else widget.choices
    if widget.control in ("select", "checkboxes", "yesno") and any(t not in allowed for t in texts):
        return ProblemKind.CHOICE
    return ProblemKind.NOT_ACCEPTED


def _field_of(path: str, widgets: Mapping[str, Widget]) -> str:
    """The closest path the form has an input for (a record's refusal goes to its first input)."""
    if path in widgets:
        return path
    below = [p for p in widgets if p.startswith(path + ".")]
    return below[0] if below else path


def problem_of(
    error: CaseBridgeError, widgets: Sequence[Widget], form: Mapping[str, Sequence[str]]
) -> Problem:
    """The problem `error` describes, classified for the person who filled `form`."""
    by_path = {w.path: w for w in widgets}
    if isinstance(error, InvalidField):
        field = error.field
        if field == "case_ref":
            return Problem(field, ProblemKind.CASE_REF, error.expected)
        if field == "to":
            return Problem(field, ProblemKind.RECIPIENT, error.expected)
        if field == "override.second_approver":
            return Problem(field, ProblemKind.OVERRIDE_APPROVER, error.expected)
        if field == "override.legal_basis":
            has_basis = any(v.strip() for v in form.get(field, ()))
            kind = ProblemKind.OVERRIDE_BASIS if has_basis else ProblemKind.OVERRIDE
            return Problem(field, kind, error.expected)
        if field.startswith("override."):
            empty = not any(v.strip() for v in form.get("override.reason", ()))
            kind = ProblemKind.OVERRIDE if empty else ProblemKind.OVERRIDE_NOT_NEEDED
            return Problem(field, kind, error.expected)
        if any(p.startswith(field + "[") for p in by_path):
            filled = any(k.startswith(field + "[") and any(v.strip() for v in vs) for k, vs in form.items())
            kind = ProblemKind.TOO_MANY_ROWS if filled else ProblemKind.REQUIRED
            return Problem(field, kind, error.expected)
        shown = _field_of(field, by_path)
        return Problem(shown, _kind_of_field(by_path.get(shown), form.get(shown, ())), error.expected)
    if isinstance(error, ConsentError):
        field = error.fields[0] if error.fields else "consent"
        return Problem(_field_of(field, by_path), ProblemKind.CONSENT, error.detail)
    if isinstance(error, InvalidTransition):
        return Problem("type", ProblemKind.WORKFLOW, error.detail)
    return Problem("type", ProblemKind.NOT_ACCEPTED, error.detail)

"""Consent records and the consent gate every referral message passes, on both sides.

A `Consent` records what the person (or a child's guardian) agreed to share: scopes, who agreed,
when, in which language, through which interpreter, before which officer, what is withheld from
whom, and the legal basis. Each message field is marked with a data class and a scope (see
`fields`); `check_consent` walks the fields a message actually carries and refuses, with
`ConsentError` naming the field paths, any personal or sensitive field that is

- in a scope the consent does not grant (never granted, or withdrawn by a CONSENT_CHANGE),
- withheld from the message's recipient (by agency id, by country, or from everyone: `*`),
- sensitive (S) while the legal basis is neither explicit consent, vital interest nor a legal
  obligation (PDPA s.26),

unless an `OverrideRecord` embedded in the message's header covers it. An override states its
reason, the overriding officer, a legal basis other than consent and, when it covers a
sensitive field, a second approver who is not the officer. Overrides travel inside the message,
so the other side sees them, and the case state records them.

Field paths are schema paths without list indices (`person.name.full_native`,
`family_members.contact`); a withheld or overridden path also covers everything below it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, TypeVar

from protocol.certificate import country_of
from protocol.errors import ConsentError, InvalidField
from protocol.referral.codes import ConsentGiver, GuardianRelation, LegalBasis
from protocol.referral.fields import PD, DataClass, Nested, Record, Scope, Spec, schema_of
from protocol.referral.kinds import LANGUAGE, OFFICER, TIMESTAMP, Code, Date, Id, ListOf, Text

if TYPE_CHECKING:
    from protocol.referral.messages import Message

M = TypeVar("M", bound="Message")

FIELD_PATH = Text(200, pattern=re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*"), hint="field path")
AUDIENCE = Text(64, pattern=re.compile(r"\*|[A-Z]{2}|[A-Z]{2}-[A-Z0-9-]+"), hint="agency id, country or *")
SCOPES = ListOf(Code(Scope), 6, as_set=True)
REASON = Text(500, multiline=True)
SENSITIVE_BASES = frozenset(
    {LegalBasis.EXPLICIT_CONSENT, LegalBasis.VITAL_INTEREST, LegalBasis.LEGAL_OBLIGATION}
)
"""Legal bases under which sensitive (S) fields may be shared at all (PDPA s.26)."""
OVERRIDE_BASES = frozenset({LegalBasis.VITAL_INTEREST, LegalBasis.PUBLIC_TASK, LegalBasis.LEGAL_OBLIGATION})
"""An override sets consent aside, so it must rest on a basis other than consent."""
SENSITIVE_OVERRIDE_BASES = frozenset({LegalBasis.VITAL_INTEREST, LegalBasis.LEGAL_OBLIGATION})


@dataclass(frozen=True, slots=True)
class WithheldItem(Record):
    """A field kept from some recipients: `withheld_from` is an agency id, a country or `*`."""

    field_path: Annotated[str, Spec(FIELD_PATH)]
    withheld_from: Annotated[str, Spec(AUDIENCE)]
    reason: Annotated[str, Spec(REASON)]

    def applies_to(self, recipient: str) -> bool:
        return self.withheld_from in ("*", recipient, country_of(recipient))


@dataclass(frozen=True, slots=True)
class Consent(Record):
    """One version of the person's consent. A CONSENT_CHANGE replaces it with a new version (a new
    `consent_id`); every message names the version it was built under in `header.consent_ref`."""

    consent_id: Annotated[bytes, Spec(Id())]
    given_by: Annotated[ConsentGiver, Spec()]
    is_child: Annotated[bool, Spec()]
    given_on: Annotated[str, Spec(Date())]
    language: Annotated[str, Spec(LANGUAGE)]
    officer: Annotated[str, Spec(OFFICER)]
    legal_basis: Annotated[LegalBasis, Spec()]
    scopes: Annotated[tuple[Scope, ...], Spec(SCOPES)] = ()
    guardian_relation: Annotated[GuardianRelation | None, Spec()] = None
    best_interests_ref: Annotated[str | None, Spec(Text(100))] = None
    interpreter: Annotated[str | None, Spec(Text(200), PD)] = None
    withheld: Annotated[tuple[WithheldItem, ...], Spec(ListOf(Nested(WithheldItem), 64))] = ()

    def _check(self) -> None:
        if (self.given_by is ConsentGiver.GUARDIAN) != (self.guardian_relation is not None):
            raise InvalidField("guardian_relation", "a relation exactly when a guardian gave consent")
        if self.is_child and self.best_interests_ref is None:
            raise InvalidField("best_interests_ref", "a best-interests determination reference for a child")
        consent_based = self.legal_basis in (LegalBasis.CONSENT, LegalBasis.EXPLICIT_CONSENT)
        if self.is_child and consent_based and self.given_by is not ConsentGiver.GUARDIAN:
            raise InvalidField("given_by", "guardian: a child's consent is given by a guardian (PDPA s.20)")


@dataclass(frozen=True, slots=True)
class OverrideRecord(Record):
    """An officer's decision to send fields the consent does not cover. Embedded in the message."""

    field_paths: Annotated[tuple[str, ...], Spec(ListOf(FIELD_PATH, 64, min_items=1, as_set=True))]
    reason: Annotated[str, Spec(REASON)]
    officer: Annotated[str, Spec(OFFICER)]
    legal_basis: Annotated[LegalBasis, Spec()]
    overridden_at: Annotated[int, Spec(TIMESTAMP)]
    second_approver: Annotated[str | None, Spec(OFFICER)] = None

    def covers(self, path: str) -> bool:
        return any(_under(path, p) for p in self.field_paths)

    def _check(self) -> None:
        if self.legal_basis not in OVERRIDE_BASES:
            raise InvalidField("legal_basis", "one of " + ", ".join(sorted(OVERRIDE_BASES)))
        if self.second_approver is not None and self.second_approver == self.officer:
            raise InvalidField("second_approver", "an approver other than the overriding officer")


class Violation(StrEnum):
    SCOPE_NOT_GRANTED = "scope_not_granted"
    WITHHELD = "withheld"
    EXPLICIT_CONSENT_NEEDED = "explicit_consent_needed"


@dataclass(frozen=True, slots=True)
class CarriedField:
    """A personal or sensitive leaf a message carries, with its effective scope."""

    path: str
    data: DataClass
    scope: Scope | None


@dataclass(frozen=True, slots=True)
class ConsentProblem:
    path: str
    violation: Violation
    data: DataClass
    scope: Scope | None

    def describe(self) -> str:
        if self.violation is Violation.SCOPE_NOT_GRANTED:
            return f"{self.path} needs scope {self.scope}, which is not granted (or was withdrawn)"
        if self.violation is Violation.WITHHELD:
            return f"{self.path} is withheld from this recipient"
        return f"{self.path} is sensitive and the legal basis is not explicit consent"


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def _walk(record: Record, prefix: str, inherited: Scope | None) -> Iterator[CarriedField]:
    for spec in schema_of(type(record)):
        value = getattr(record, spec.name)
        if value is None or value == ():
            continue
        path = f"{prefix}.{spec.name}" if prefix else spec.name
        scope = spec.scope if spec.scope is not None else inherited
        kind = spec.kind.item if isinstance(spec.kind, ListOf) else spec.kind
        values = value if isinstance(spec.kind, ListOf) else (value,)
        if isinstance(kind, Nested):
            for item in values:
                yield from _walk(item, path, scope)
        elif spec.data is not DataClass.NONE:
            yield CarriedField(path, spec.data, scope)


def carried_fields(message: Record) -> tuple[CarriedField, ...]:
    """The personal and sensitive leaves a message carries, one per schema path, sorted."""
    found = {f.path: f for f in _walk(message, "", None)}
    return tuple(found[p] for p in sorted(found))


def consent_problems(message: Message, consent: Consent) -> tuple[ConsentProblem, ...]:
    """Every way `message` goes beyond `consent`, before overrides are taken into account."""
    recipient = message.header.receiver_agency_id
    withheld = [w.field_path for w in consent.withheld if w.applies_to(recipient)]
    problems = []
    for f in carried_fields(message):
        if f.scope is not None and f.scope not in consent.scopes:
            problems.append(ConsentProblem(f.path, Violation.SCOPE_NOT_GRANTED, f.data, f.scope))
        elif any(_under(f.path, w) for w in withheld):
            problems.append(ConsentProblem(f.path, Violation.WITHHELD, f.data, f.scope))
        elif f.data is DataClass.SENSITIVE and consent.legal_basis not in SENSITIVE_BASES:
            problems.append(ConsentProblem(f.path, Violation.EXPLICIT_CONSENT_NEEDED, f.data, f.scope))
    return tuple(problems)


def _refuse(problems: list[ConsentProblem] | tuple[ConsentProblem, ...], lead: str) -> ConsentError:
    paths = tuple(p.path for p in problems)
    return ConsentError(lead + "; ".join(p.describe() for p in problems), fields=paths)


def check_consent(message: Message, consent: Consent) -> tuple[OverrideRecord, ...]:
    """Refuse `message` unless every field it carries is covered by `consent` or by a valid
    override embedded in it. Returns the overrides the message carries, for the case record."""
    overrides = message.header.overrides
    problems = consent_problems(message, consent)
    uncovered = [p for p in problems if not any(o.covers(p.path) for o in overrides)]
    if uncovered:
        raise _refuse(uncovered, "consent does not cover: ")
    for p in problems:
        if p.data is DataClass.SENSITIVE:
            for o in overrides:
                if o.covers(p.path) and (
                    o.second_approver is None or o.legal_basis not in SENSITIVE_OVERRIDE_BASES
                ):
                    raise ConsentError(
                        f"the override of sensitive field {p.path} needs a second approver and a legal "
                        "basis of vital interest or legal obligation",
                        fields=(p.path,),
                    )
    return overrides


def override_consent(
    message: Message,
    consent: Consent,
    *,
    reason: str,
    officer: str,
    legal_basis: LegalBasis,
    at: int,
    second_approver: str | None = None,
) -> OverrideRecord:
    """Record an officer's override for every field of `message` that `consent` does not cover.

    The returned record must be embedded in the message (`with_override`) before sealing and
    kept in the case record. Refuses (`ConsentError`) an override with no reason, with a basis
    that is consent, or covering a sensitive field without a second approver."""
    problems = consent_problems(message, consent)
    if not problems:
        raise InvalidField("header.overrides", "an override only for fields the consent does not cover")
    if not reason.strip():
        raise _refuse(problems, "an override needs a stated reason; not covered: ")
    if legal_basis not in OVERRIDE_BASES:
        raise _refuse(problems, f"an override cannot rest on {legal_basis}; not covered: ")
    sensitive = [p for p in problems if p.data is DataClass.SENSITIVE]
    if sensitive and (second_approver is None or second_approver == officer):
        raise _refuse(sensitive, "overriding consent for sensitive fields needs a second approver: ")
    if sensitive and legal_basis not in SENSITIVE_OVERRIDE_BASES:
        raise _refuse(
            sensitive, "sensitive fields may be overridden for vital interest or legal obligation only: "
        )
    return OverrideRecord(
        field_paths=tuple(p.path for p in problems),
        reason=reason,
        officer=officer,
        legal_basis=legal_basis,
        overridden_at=at,
        second_approver=second_approver,
    )


def with_override(message: M, record: OverrideRecord) -> M:
    """`message` with `record` added to its header's overrides."""
    header = replace(message.header, overrides=(*message.header.overrides, record))
    return replace(message, header=header)


def withdrawn_scopes(before: Consent, after: Consent) -> frozenset[Scope]:
    return frozenset(before.scopes) - frozenset(after.scopes)

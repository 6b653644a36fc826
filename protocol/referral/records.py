"""Records nested inside referral messages: a person's names and identity, documents, addresses,
family members and criminal proceedings.

Invariants: every record validates and normalises on construction (see `fields`). Records carry
their own data class per field; consent scopes come from the message field that holds them,
except where a record pins one (a travel document always needs the verification scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from protocol.errors import InvalidField
from protocol.referral.codes import DocumentKind, FamilyRelation, Sex
from protocol.referral.fields import PD, Record, S, Scope, Spec
from protocol.referral.kinds import CASE_REF, COUNTRY, LANGUAGE, NAME, Date, Int, ListOf, Text

FULL_NAME = Text(200)


@dataclass(frozen=True, slots=True)
class PersonName(Record):
    """A name as the person gives it, in their own script, with its romanisation beside it.

    `full_native` is required (it is what the person answers to); the parts and the romanised
    forms are optional, because not every name splits into given and family names."""

    full_native: Annotated[str, Spec(FULL_NAME, PD)]
    given_native: Annotated[str | None, Spec(NAME, PD)] = None
    family_native: Annotated[str | None, Spec(NAME, PD)] = None
    full_romanised: Annotated[str | None, Spec(FULL_NAME, PD)] = None
    given_romanised: Annotated[str | None, Spec(NAME, PD)] = None
    family_romanised: Annotated[str | None, Spec(NAME, PD)] = None
    aliases: Annotated[tuple[str, ...], Spec(ListOf(FULL_NAME, 10), PD)] = ()


@dataclass(frozen=True, slots=True)
class TravelDocument(Record):
    kind: Annotated[DocumentKind, Spec(data=PD)]
    number: Annotated[str | None, Spec(Text(40), PD)] = None
    issuing_country: Annotated[str | None, Spec(COUNTRY, PD)] = None
    expires_on: Annotated[str | None, Spec(Date(), PD)] = None


@dataclass(frozen=True, slots=True)
class Address(Record):
    """A home address down to the village (Thai/Lao: province, district, village)."""

    country: Annotated[str, Spec(COUNTRY, PD)]
    province: Annotated[str, Spec(NAME, PD)]
    district: Annotated[str | None, Spec(NAME, PD)] = None
    village: Annotated[str | None, Spec(NAME, PD)] = None


@dataclass(frozen=True, slots=True)
class Person(Record):
    """Who the case is about. The whole record takes its scope from the message field holding it;
    the travel document always needs the verification scope, ethnicity is sensitive."""

    name: Annotated[PersonName, Spec(data=PD)]
    sex: Annotated[Sex, Spec(data=PD)]
    is_child: Annotated[bool, Spec(data=PD)]
    date_of_birth: Annotated[str | None, Spec(Date(), PD)] = None
    estimated_age: Annotated[int | None, Spec(Int(0, 120), PD)] = None
    claimed_nationality: Annotated[str | None, Spec(COUNTRY, PD)] = None
    languages: Annotated[tuple[str, ...], Spec(ListOf(LANGUAGE, 8, as_set=True), PD)] = ()
    ethnicity: Annotated[str | None, Spec(Text(64), S)] = None
    document: Annotated[TravelDocument | None, Spec(data=PD, scope=Scope.VERIFICATION)] = None

    def _check(self) -> None:
        if self.date_of_birth is None and self.estimated_age is None:
            raise InvalidField("date_of_birth", "a date of birth or an estimated_age")


@dataclass(frozen=True, slots=True)
class FamilyMember(Record):
    """A relative: personal data of a third party, shared for family tracing only."""

    name: Annotated[PersonName, Spec(data=PD)]
    relation: Annotated[FamilyRelation, Spec(data=PD)]
    contact: Annotated[str | None, Spec(Text(100), PD)] = None
    address: Annotated[Address | None, Spec(data=PD)] = None


@dataclass(frozen=True, slots=True)
class Proceedings(Record):
    """Criminal proceedings the person takes part in (sensitive: criminal matters)."""

    is_witness: Annotated[bool, Spec(data=S)]
    police_case_ref: Annotated[str | None, Spec(CASE_REF, S)] = None
    court: Annotated[str | None, Spec(Text(200), S)] = None
    next_hearing_on: Annotated[str | None, Spec(Date(), S)] = None
    compensation_claimed: Annotated[bool | None, Spec(data=S)] = None

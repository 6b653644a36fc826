"""Referral messages on the way home: nationality and document verification, family tracing and
assessment, the repatriation plan and its answers, the handover at the crossing, and the
reintegration plan.

Each body field is annotated with its kind, data class (PD personal, S sensitive) and consent
scope; `docs/referrals.md` lists them. Sensitive fields are always optional. Rules that tie
fields together (a completed assessment has a recommendation; a failed handover a reason; each
repatriation action its own fields) are checked on construction and on decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from protocol.errors import InvalidField
from protocol.referral.codes import (
    AssessmentOutcome,
    CrossingPoint,
    HandoverOutcome,
    MedicalFitness,
    MessageType,
    Recommendation,
    RepatriationAction,
    RiskLevel,
    Service,
    VerificationOutcome,
    VerificationSubject,
)
from protocol.referral.fields import PD, Nested, S, Scope, Spec
from protocol.referral.kinds import AGENCY, COUNTRY, NAME, NOTE, OFFICER, Code, Date, ListOf, Text, Time
from protocol.referral.messages import Message
from protocol.referral.records import Address, FamilyMember, Person, TravelDocument

S1 = Scope.NOTIFY_ORIGIN
S2 = Scope.VERIFICATION
S3 = Scope.FAMILY_TRACING
S6 = Scope.CRIMINAL_PROCEEDINGS
OFFICERS = ListOf(OFFICER, 8, min_items=1)


@dataclass(frozen=True, slots=True)
class VerificationRequest(Message):
    TYPE: ClassVar[MessageType] = MessageType.VERIFICATION_REQUEST

    subject: Annotated[VerificationSubject, Spec()]
    person: Annotated[Person, Spec(data=PD, scope=S2)]
    note: Annotated[str | None, Spec(NOTE, PD, S2)] = None


@dataclass(frozen=True, slots=True)
class VerificationResult(Message):
    TYPE: ClassVar[MessageType] = MessageType.VERIFICATION_RESULT

    outcome: Annotated[VerificationOutcome, Spec()]
    verified_by: Annotated[str, Spec(OFFICER)]
    nationality: Annotated[str | None, Spec(COUNTRY, PD, S2)] = None
    document: Annotated[TravelDocument | None, Spec(data=PD, scope=S2)] = None
    note: Annotated[str | None, Spec(NOTE, PD, S2)] = None

    def _check(self) -> None:
        if (
            self.outcome is VerificationOutcome.VERIFIED
            and self.nationality is None
            and self.document is None
        ):
            raise InvalidField("nationality", "the verified nationality or document")


@dataclass(frozen=True, slots=True)
class FamilyAssessmentRequest(Message):
    """Family tracing and assessment, destination side -> origin side."""

    TYPE: ClassVar[MessageType] = MessageType.FAMILY_ASSESSMENT_REQUEST

    home: Annotated[Address, Spec(data=PD, scope=S3)]
    known_family: Annotated[tuple[FamilyMember, ...], Spec(ListOf(Nested(FamilyMember), 20), PD, S3)] = ()
    due_on: Annotated[str | None, Spec(Date())] = None
    questions: Annotated[str | None, Spec(NOTE, PD, S3)] = None


@dataclass(frozen=True, slots=True)
class FamilyAssessmentResult(Message):
    """Forwarded to the province (interim), completed, or family not found; origin -> destination."""

    TYPE: ClassVar[MessageType] = MessageType.FAMILY_ASSESSMENT_RESULT

    outcome: Annotated[AssessmentOutcome, Spec()]
    province: Annotated[str | None, Spec(NAME)] = None
    assessed_by: Annotated[str | None, Spec(OFFICER)] = None
    assessed_on: Annotated[str | None, Spec(Date())] = None
    family_members: Annotated[tuple[FamilyMember, ...], Spec(ListOf(Nested(FamilyMember), 20), PD, S3)] = ()
    willing_to_receive: Annotated[bool | None, Spec(data=PD, scope=S3)] = None
    recommendation: Annotated[Recommendation | None, Spec(data=PD, scope=S3)] = None
    note: Annotated[str | None, Spec(NOTE, PD, S3)] = None
    safety_risk: Annotated[RiskLevel | None, Spec(data=S, scope=S3)] = None
    re_trafficking_risk: Annotated[RiskLevel | None, Spec(data=S, scope=S3)] = None
    risk_note: Annotated[str | None, Spec(NOTE, S, S3)] = None

    def _check(self) -> None:
        if self.outcome is AssessmentOutcome.FORWARDED_TO_PROVINCE and self.province is None:
            raise InvalidField("province", "the province the request was forwarded to")
        if self.outcome is AssessmentOutcome.COMPLETED:
            if self.recommendation is None:
                raise InvalidField("recommendation", "a recommendation for a completed assessment")
            if self.assessed_on is None:
                raise InvalidField("assessed_on", "the assessment date for a completed assessment")


@dataclass(frozen=True, slots=True)
class RepatriationPlan(Message):
    TYPE: ClassVar[MessageType] = MessageType.REPATRIATION_PLAN

    proposed_on: Annotated[str, Spec(Date())]
    crossing: Annotated[CrossingPoint, Spec()]
    receiving_agency: Annotated[str, Spec(AGENCY)]
    escorts: Annotated[tuple[str, ...], Spec(ListOf(OFFICER, 8))] = ()
    transit_note: Annotated[str | None, Spec(NOTE)] = None
    travel_document: Annotated[TravelDocument | None, Spec(data=PD, scope=S2)] = None
    belongings_note: Annotated[str | None, Spec(NOTE, PD, S1)] = None
    medical_fitness: Annotated[MedicalFitness | None, Spec(data=S, scope=Scope.HEALTH)] = None
    medical_note: Annotated[str | None, Spec(NOTE, S, Scope.HEALTH)] = None
    wages_compensation_note: Annotated[str | None, Spec(NOTE, S, S6)] = None
    pending_legal_obligations: Annotated[str | None, Spec(NOTE, S, S6)] = None


_ACTION_FIELDS: dict[RepatriationAction, tuple[frozenset[str], frozenset[str]]] = {
    # action: (required fields, allowed optional fields)
    RepatriationAction.CONFIRM: (frozenset(), frozenset({"note"})),
    RepatriationAction.COUNTER_PROPOSE: (
        frozenset({"proposed_on", "crossing"}),
        frozenset({"note", "reason_text"}),
    ),
    RepatriationAction.SCHEDULE: (
        frozenset({"scheduled_on", "scheduled_time"}),
        frozenset({"crossing", "note"}),
    ),
    RepatriationAction.POSTPONE: (frozenset({"reason_text"}), frozenset({"proposed_on", "note"})),
    RepatriationAction.CANCEL: (frozenset({"reason_text"}), frozenset({"note"})),
}


@dataclass(frozen=True, slots=True)
class RepatriationConfirmation(Message):
    """An answer to the plan named by `in_reply_to`: confirm, counter-propose (a new date and
    crossing), schedule (date and local time), postpone or cancel (with a reason)."""

    TYPE: ClassVar[MessageType] = MessageType.REPATRIATION_CONFIRMATION

    action: Annotated[RepatriationAction, Spec()]
    proposed_on: Annotated[str | None, Spec(Date())] = None
    crossing: Annotated[CrossingPoint | None, Spec()] = None
    scheduled_on: Annotated[str | None, Spec(Date())] = None
    scheduled_time: Annotated[str | None, Spec(Time())] = None
    reason_text: Annotated[str | None, Spec(NOTE)] = None
    note: Annotated[str | None, Spec(NOTE, PD, S1)] = None

    def _check(self) -> None:
        required, optional = _ACTION_FIELDS[self.action]
        for name in ("proposed_on", "crossing", "scheduled_on", "scheduled_time", "reason_text", "note"):
            present = getattr(self, name) is not None
            if name in required and not present:
                raise InvalidField(name, f"a value when the action is {self.action}")
            if present and name not in required | optional:
                raise InvalidField(name, f"no value when the action is {self.action}")


@dataclass(frozen=True, slots=True)
class HandoverRecord(Message):
    """What happened at the crossing; officers of both sides are named, and the other side
    countersigns by acknowledging it."""

    TYPE: ClassVar[MessageType] = MessageType.HANDOVER_RECORD

    outcome: Annotated[HandoverOutcome, Spec()]
    handed_over_on: Annotated[str, Spec(Date())]
    crossing: Annotated[CrossingPoint, Spec()]
    handing_officers: Annotated[tuple[str, ...], Spec(OFFICERS)]
    receiving_officers: Annotated[tuple[str, ...], Spec(OFFICERS)]
    handed_over_time: Annotated[str | None, Spec(Time())] = None
    failure_reason: Annotated[str | None, Spec(NOTE)] = None
    items: Annotated[tuple[str, ...], Spec(ListOf(Text(200), 32), PD, S1)] = ()
    condition_note: Annotated[str | None, Spec(NOTE, S, Scope.HEALTH)] = None

    def _check(self) -> None:
        if (self.outcome is HandoverOutcome.FAILED) != (self.failure_reason is not None):
            raise InvalidField("failure_reason", "a reason exactly when the handover failed")


@dataclass(frozen=True, slots=True)
class ReintegrationPlan(Message):
    """A summary of the reintegration plan, origin side -> destination side."""

    TYPE: ClassVar[MessageType] = MessageType.REINTEGRATION_PLAN

    services: Annotated[
        tuple[Service, ...], Spec(ListOf(Code(Service), 9, min_items=1, as_set=True), PD, Scope.NGO_SERVICES)
    ]
    responsible_agency: Annotated[str, Spec(Text(200))]
    follow_up_until: Annotated[str | None, Spec(Date())] = None
    next_contact_on: Annotated[str | None, Spec(Date())] = None
    summary: Annotated[str | None, Spec(NOTE, PD, Scope.NGO_SERVICES)] = None

"""Referral messages about the case itself: the referral, a person's and an agency's answers to
it, questions and answers, updates, consent changes, closure and reopening.

Each body field is annotated with its kind, data class (PD personal, S sensitive) and consent
scope; `docs/referrals.md` lists them (generated from these annotations and checked by a test).
Sensitive fields are always optional: a message is complete without them. Free texts that
carry an agency's reasoning (`reason_text`, `questions`) are expected to hold no personal data
and are not scoped; notes that may describe the person are personal and scoped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from protocol.errors import InvalidField
from protocol.referral.codes import (
    ClosureReason,
    DeclineReason,
    ExploitationForm,
    MessageType,
    RequestedAction,
    ReturnWish,
    UpdateKind,
)
from protocol.referral.consent import Consent
from protocol.referral.fields import PD, S, Scope, Spec
from protocol.referral.kinds import NOTE, OFFICER, Code, Date, ListOf, Text
from protocol.referral.messages import Message
from protocol.referral.records import Address, Person, Proceedings

S1 = Scope.NOTIFY_ORIGIN
FILENAME = Text(255, hint="name of an attachment in the same envelope")


@dataclass(frozen=True, slots=True)
class Referral(Message):
    """Identification notice and request for assistance, destination side -> origin side."""

    TYPE: ClassVar[MessageType] = MessageType.REFERRAL

    person: Annotated[Person, Spec(data=PD, scope=S1)]
    identified_on: Annotated[str, Spec(Date())]
    identified_by: Annotated[str, Spec(Text(200))]
    requested_actions: Annotated[
        tuple[RequestedAction, ...], Spec(ListOf(Code(RequestedAction), 7, min_items=1, as_set=True))
    ]
    return_wish: Annotated[ReturnWish, Spec(data=PD, scope=S1)]
    consent: Annotated[Consent, Spec()]
    home: Annotated[Address | None, Spec(data=PD, scope=S1)] = None
    placement_code: Annotated[str | None, Spec(Text(32), PD, S1)] = None
    summary: Annotated[str | None, Spec(NOTE, PD, S1)] = None
    return_wish_note: Annotated[str | None, Spec(NOTE, PD, S1)] = None
    exploitation: Annotated[
        tuple[ExploitationForm, ...], Spec(ListOf(Code(ExploitationForm), 7, as_set=True), S, S1)
    ] = ()
    risks: Annotated[str | None, Spec(NOTE, S, S1)] = None
    health_needs: Annotated[str | None, Spec(NOTE, S, Scope.HEALTH)] = None
    proceedings: Annotated[Proceedings | None, Spec(data=S, scope=Scope.CRIMINAL_PROCEEDINGS)] = None
    suspected_traffickers: Annotated[str | None, Spec(NOTE, S, Scope.CRIMINAL_PROCEEDINGS)] = None


@dataclass(frozen=True, slots=True)
class Acknowledgement(Message):
    """A person (not a device) has read the message named by `in_reply_to`."""

    TYPE: ClassVar[MessageType] = MessageType.ACKNOWLEDGEMENT

    read_by: Annotated[str, Spec(OFFICER)]
    note: Annotated[str | None, Spec(NOTE, PD, S1)] = None


@dataclass(frozen=True, slots=True)
class Acceptance(Message):
    """The origin agency takes the case on; its header carries the origin's new case number."""

    TYPE: ClassVar[MessageType] = MessageType.ACCEPTANCE

    accepted_by: Annotated[str, Spec(OFFICER)]
    responsible_unit: Annotated[str | None, Spec(Text(200))] = None
    note: Annotated[str | None, Spec(NOTE, PD, S1)] = None


@dataclass(frozen=True, slots=True)
class Decline(Message):
    TYPE: ClassVar[MessageType] = MessageType.DECLINE

    reason: Annotated[DeclineReason, Spec()]
    reason_text: Annotated[str, Spec(NOTE)]
    declined_by: Annotated[str, Spec(OFFICER)]


@dataclass(frozen=True, slots=True)
class InfoRequest(Message):
    TYPE: ClassVar[MessageType] = MessageType.INFO_REQUEST

    questions: Annotated[str, Spec(NOTE)]
    due_on: Annotated[str, Spec(Date())]


@dataclass(frozen=True, slots=True)
class InfoResponse(Message):
    """Answers to an INFO_REQUEST, one field per consent scope so each is gated on its own."""

    TYPE: ClassVar[MessageType] = MessageType.INFO_RESPONSE

    answer: Annotated[str | None, Spec(NOTE, PD, S1)] = None
    document_answer: Annotated[str | None, Spec(NOTE, PD, Scope.VERIFICATION)] = None
    family_answer: Annotated[str | None, Spec(NOTE, PD, Scope.FAMILY_TRACING)] = None
    services_answer: Annotated[str | None, Spec(NOTE, PD, Scope.NGO_SERVICES)] = None
    health_answer: Annotated[str | None, Spec(NOTE, S, Scope.HEALTH)] = None
    legal_answer: Annotated[str | None, Spec(NOTE, S, Scope.CRIMINAL_PROCEEDINGS)] = None
    attachments: Annotated[tuple[str, ...], Spec(ListOf(FILENAME, 32))] = ()

    def _check(self) -> None:
        answers = (self.answer, self.document_answer, self.family_answer, self.services_answer)
        if all(a is None for a in (*answers, self.health_answer, self.legal_answer)) and not self.attachments:
            raise InvalidField("answer", "at least one answer or attachment")


@dataclass(frozen=True, slots=True)
class CaseUpdate(Message):
    """Append-only news on the case: court dates, compensation, follow-up, alerts."""

    TYPE: ClassVar[MessageType] = MessageType.CASE_UPDATE

    kind: Annotated[UpdateKind, Spec()]
    event_on: Annotated[str | None, Spec(Date())] = None
    summary: Annotated[str | None, Spec(NOTE, PD, S1)] = None
    services_note: Annotated[str | None, Spec(NOTE, PD, Scope.NGO_SERVICES)] = None
    alert_note: Annotated[str | None, Spec(NOTE, S, S1)] = None
    health_note: Annotated[str | None, Spec(NOTE, S, Scope.HEALTH)] = None
    hearing_on: Annotated[str | None, Spec(Date(), S, Scope.CRIMINAL_PROCEEDINGS)] = None
    compensation_note: Annotated[str | None, Spec(NOTE, S, Scope.CRIMINAL_PROCEEDINGS)] = None

    def _check(self) -> None:
        notes = (self.summary, self.services_note, self.alert_note, self.health_note, self.compensation_note)
        if all(n is None for n in notes) and self.hearing_on is None:
            raise InvalidField("summary", "a summary or another note")


@dataclass(frozen=True, slots=True)
class ConsentChange(Message):
    """A new version of the consent (scopes granted or withdrawn, items withheld). Both sides
    apply it on sealing and on opening; the header's `consent_ref` is the new version's id."""

    TYPE: ClassVar[MessageType] = MessageType.CONSENT_CHANGE

    consent: Annotated[Consent, Spec()]
    note: Annotated[str | None, Spec(NOTE)] = None


@dataclass(frozen=True, slots=True)
class CaseClosure(Message):
    """Proposes closing the case; the same type from the other side, in reply, confirms it."""

    TYPE: ClassVar[MessageType] = MessageType.CASE_CLOSURE

    reason: Annotated[ClosureReason, Spec()]
    closed_on: Annotated[str, Spec(Date())]
    dispose_by: Annotated[str | None, Spec(Date())] = None
    note: Annotated[str | None, Spec(NOTE, PD, S1)] = None


@dataclass(frozen=True, slots=True)
class CaseReopen(Message):
    """Reopens a closed case, withdraws a closure proposal, or refers a declined case again."""

    TYPE: ClassVar[MessageType] = MessageType.CASE_REOPEN

    reason_text: Annotated[str, Spec(NOTE)]

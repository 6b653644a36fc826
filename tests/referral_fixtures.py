"""Building blocks for the referral tests: a consent, a person in Thai, Lao or English, and a
factory that makes a valid message of any type for a case state, from either side.

`drive` plays a script of (type, side, options) steps through `apply` on both sides' states,
exactly as a sender (before sealing) and a recipient (after opening) would, and checks that
both sides accept each message and agree on the result. Nothing here stands in for a CaseBridge
component: every helper calls the real referral code.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from protocol.referral import (
    MESSAGE_CLASSES,
    Address,
    AssessmentOutcome,
    CaseState,
    ClosureReason,
    Consent,
    ConsentGiver,
    CrossingPoint,
    DeclineReason,
    FamilyMember,
    FamilyRelation,
    HandoverOutcome,
    Header,
    LegalBasis,
    Message,
    MessageType,
    Person,
    PersonName,
    Recommendation,
    RepatriationAction,
    RequestedAction,
    RequestKind,
    ReturnWish,
    Scope,
    Service,
    Sex,
    Side,
    UpdateKind,
    VerificationOutcome,
    VerificationSubject,
    apply,
)

MT = MessageType
NOW = 1_743_465_600  # 2025-04-01T00:00:00Z
DESTINATION = "TH-DSDW"
ORIGIN = "LA-MLSW"
LINK = bytes.fromhex("5eed" * 8)
DEST_REF = "ศคม.นค. 42/2568"
ORIGIN_REF = "ຮສ 117/2025"
_ids = itertools.count(1)


def fresh_id() -> bytes:
    return next(_ids).to_bytes(16, "big")


TEXT = {
    "th": {
        "full": "สมชาย ใจดี",
        "given": "สมชาย",
        "family": "ใจดี",
        "romanised": "Somchai Jaidee",
        "alias": "ฤทธิ์ ฦๅชา",
        "note": "ผู้เสียหายประสงค์จะกลับบ้าน ต้องการล่ามภาษาไทย\nเอกสารประกอบ.pdf แนบมาแล้ว",
        "province": "จังหวัดอุบลราชธานี",
        "country": "TH",
        "language": "th",
    },
    "lo": {
        "full": "ສົມພອນ ແກ້ວມະນີ",
        "given": "ສົມພອນ",
        "family": "ແກ້ວມະນີ",
        "romanised": "Somphone Keomany",
        "alias": "ນາງ ໝີ່ ໜູ ຫຼວງ",
        "note": "ຜູ້ເສຍຫາຍຢາກກັບບ້ານ ແລະ ຕ້ອງການລ່າມພາສາລາວ\nເອກະສານ.pdf ຄັດຕິດມາແລ້ວ",
        "province": "ແຂວງສະຫວັນນະເຂດ",
        "country": "LA",
        "language": "lo",
    },
    "en": {
        "full": "Mary Ann Phillips",
        "given": "Mary Ann",
        "family": "Phillips",
        "romanised": "Mary Ann Phillips",
        "alias": "Annie",
        "note": "The person wishes to return home and asks for an English interpreter.",
        "province": "Vientiane Capital",
        "country": "LA",
        "language": "en",
    },
}


def consent(
    scopes: Iterable[Scope] = tuple(Scope),
    *,
    consent_id: bytes | None = None,
    legal_basis: LegalBasis = LegalBasis.EXPLICIT_CONSENT,
    **kw: Any,
) -> Consent:
    return Consent(
        consent_id=consent_id or fresh_id(),
        given_by=kw.pop("given_by", ConsentGiver.PERSON),
        is_child=kw.pop("is_child", False),
        given_on="2025-02-20",
        language="lo",
        officer="TH-DSDW:off-0417",
        legal_basis=legal_basis,
        scopes=tuple(scopes),
        interpreter="ບົວໄລ ສີສຸວັນ",
        **kw,
    )


def person(lang: str = "lo", **kw: Any) -> Person:
    t = TEXT[lang]
    name = PersonName(
        full_native=t["full"],
        given_native=t["given"],
        family_native=t["family"],
        full_romanised=t["romanised"],
        aliases=(t["alias"],),
    )
    fields: dict[str, Any] = {
        "name": name,
        "sex": Sex.FEMALE,
        "is_child": False,
        "date_of_birth": "2003-05-14",
        "claimed_nationality": t["country"],
        "languages": (t["language"],),
    }
    return Person(**(fields | kw))


def home(lang: str = "lo") -> Address:
    return Address(country=TEXT[lang]["country"], province=TEXT[lang]["province"])


def header(state: CaseState | None, sender: Side, **kw: Any) -> Header:
    if state is None:
        opening: dict[str, Any] = {
            "message_id": fresh_id(),
            "case_link_id": LINK,
            "sender_agency_id": DESTINATION,
            "receiver_agency_id": ORIGIN,
            "created_at": NOW,
            "sender_case_ref": DEST_REF,
        }
        return Header(**(opening | kw))
    fields: dict[str, Any] = {
        "message_id": fresh_id(),
        "case_link_id": state.case_link_id,
        "sender_agency_id": state.agency_of(sender),
        "receiver_agency_id": state.agency_of(sender.other),
        "created_at": NOW,
        "consent_ref": state.consent.consent_id,
        "sender_case_ref": state.case_ref_of(sender),
        "receiver_case_ref": state.case_ref_of(sender.other),
    }
    return Header(**(fields | kw))


def referral(lang: str = "lo", *, the_consent: Consent | None = None, **kw: Any) -> Message:
    c = the_consent or consent()
    body: dict[str, Any] = {
        "person": person(lang),
        "identified_on": "2025-02-18",
        "identified_by": "ตำรวจภูธรจังหวัดหนองคาย",
        "requested_actions": (RequestedAction.VERIFY_NATIONALITY, RequestedAction.REPATRIATE),
        "return_wish": ReturnWish.WANTS_TO_RETURN,
        "consent": c,
        "home": home(lang),
        "summary": TEXT[lang]["note"],
    }
    head = header(None, Side.DESTINATION, consent_ref=c.consent_id, **kw.pop("header", {}))
    return MESSAGE_CLASSES[MT.REFERRAL](header=head, **(body | kw))


def natural_reply(state: CaseState, mtype: MessageType, sender: Side) -> bytes | None:
    """The message a reply of `mtype` from `sender` would naturally answer, if any."""
    if mtype is MT.ACKNOWLEDGEMENT:
        todo = [
            m
            for m in state.messages
            if m.needs_acknowledgement and not m.acknowledged and m.sender is not sender
        ]
        return todo[0].message_id if todo else None
    if mtype in (MT.ACCEPTANCE, MT.DECLINE):
        return state.decision_on
    if mtype in (MT.REPATRIATION_CONFIRMATION, MT.HANDOVER_RECORD):
        plan = state.active_plan
        return plan.request_id if plan else None
    if mtype is MT.CASE_CLOSURE:
        return state.closure_proposal
    kinds = {
        MT.INFO_RESPONSE: RequestKind.INFO,
        MT.VERIFICATION_RESULT: RequestKind.VERIFICATION,
        MT.FAMILY_ASSESSMENT_RESULT: RequestKind.FAMILY_ASSESSMENT,
    }
    if mtype in kinds:
        open_ = [r for r in state.requests if r.kind is kinds[mtype] and r.is_open and sender in r.awaiting]
        return open_[0].request_id if open_ else None
    return None


def body(mtype: MessageType, lang: str, option: Any = None) -> dict[str, Any]:
    """A minimal valid body; `option` picks the action, outcome or consent scopes."""
    t = TEXT[lang]
    note = t["note"]
    if mtype is MT.REPATRIATION_CONFIRMATION:
        action = option or RepatriationAction.CONFIRM
        extra: dict[RepatriationAction, dict[str, Any]] = {
            RepatriationAction.CONFIRM: {},
            RepatriationAction.COUNTER_PROPOSE: {
                "proposed_on": "2025-04-10",
                "crossing": CrossingPoint.NONG_KHAI_VIENTIANE,
            },
            RepatriationAction.SCHEDULE: {"scheduled_on": "2025-04-10", "scheduled_time": "09:30"},
            RepatriationAction.POSTPONE: {"reason_text": note},
            RepatriationAction.CANCEL: {"reason_text": note},
        }
        return {"action": action, **extra[action]}
    if mtype is MT.HANDOVER_RECORD:
        outcome = option or HandoverOutcome.COMPLETED
        failed = {"failure_reason": note} if outcome is HandoverOutcome.FAILED else {}
        return {
            "outcome": outcome,
            "handed_over_on": "2025-04-10",
            "crossing": CrossingPoint.NONG_KHAI_VIENTIANE,
            "handing_officers": ("TH-DSDW:off-0417",),
            "receiving_officers": ("LA-MLSW:off-2231",),
            "items": ("เอกสารประกอบ.pdf", "ເອກະສານ.pdf"),
            **failed,
        }
    if mtype is MT.FAMILY_ASSESSMENT_RESULT:
        outcome = option or AssessmentOutcome.COMPLETED
        if outcome is AssessmentOutcome.FORWARDED_TO_PROVINCE:
            return {"outcome": outcome, "province": t["province"]}
        done = (
            {"recommendation": Recommendation.RETURN_TO_FAMILY}
            if outcome is AssessmentOutcome.COMPLETED
            else {}
        )
        return {"outcome": outcome, "assessed_on": "2025-03-20", "note": note, **done}
    simple: dict[MessageType, dict[str, Any]] = {
        MT.ACKNOWLEDGEMENT: {"read_by": "LA-MLSW:off-2231", "note": note},
        MT.ACCEPTANCE: {"accepted_by": "LA-MLSW:off-2231", "note": note},
        MT.DECLINE: {
            "reason": DeclineReason.OUTSIDE_MANDATE,
            "reason_text": note,
            "declined_by": "LA-MLSW:off-2",
        },
        MT.INFO_REQUEST: {"questions": note, "due_on": "2025-03-07"},
        MT.INFO_RESPONSE: {"answer": note, "attachments": ("เอกสารประกอบ.pdf", "ເອກະສານ.pdf")},
        MT.VERIFICATION_REQUEST: {
            "subject": VerificationSubject.NATIONALITY,
            "person": person(lang),
            "note": note,
        },
        MT.VERIFICATION_RESULT: {
            "outcome": option or VerificationOutcome.VERIFIED,
            "verified_by": "LA-MLSW:off-2231",
            "nationality": t["country"],
        },
        MT.FAMILY_ASSESSMENT_REQUEST: {
            "home": home(lang),
            "known_family": (
                FamilyMember(name=PersonName(full_native=t["full"]), relation=FamilyRelation.MOTHER),
            ),
            "due_on": "2025-03-25",
        },
        MT.REPATRIATION_PLAN: {
            "proposed_on": "2025-04-08",
            "crossing": CrossingPoint.NONG_KHAI_VIENTIANE,
            "receiving_agency": ORIGIN,
            "transit_note": note,
        },
        MT.REINTEGRATION_PLAN: {
            "services": (Service.VOCATIONAL_TRAINING,),
            "responsible_agency": t["province"],
        },
        MT.CASE_UPDATE: {"kind": UpdateKind.FOLLOW_UP, "summary": note},
        MT.CASE_CLOSURE: {"reason": ClosureReason.REINTEGRATED, "closed_on": "2025-10-10", "note": note},
        MT.CASE_REOPEN: {"reason_text": note},
    }
    return simple[mtype]


def make(
    state: CaseState,
    mtype: MessageType,
    sender: Side,
    *,
    lang: str = "lo",
    option: Any = None,
    reply: bytes | None = None,
    natural: bool = True,
    **header_kw: Any,
) -> Message:
    """A valid message of `mtype` from `sender` for `state` (valid as a message; whether the
    case allows it is for `apply` to say). `natural` picks `in_reply_to` with `natural_reply`."""
    if mtype is MT.REFERRAL:
        return referral(lang)
    if reply is None and natural:
        reply = natural_reply(state, mtype, sender)
    header_kw.setdefault("in_reply_to", reply)
    if mtype is MT.CONSENT_CHANGE:
        new = consent(option if option is not None else tuple(Scope))
        head = header(state, sender, consent_ref=new.consent_id, **header_kw)
        return MESSAGE_CLASSES[mtype](header=head, consent=new)
    if mtype is MT.ACCEPTANCE:
        header_kw.setdefault("sender_case_ref", ORIGIN_REF)
    head = header(state, sender, **header_kw)
    return MESSAGE_CLASSES[mtype](header=head, **body(mtype, lang, option))


@dataclass(frozen=True)
class Sides:
    """Both sides' copies of one case."""

    destination: CaseState
    origin: CaseState

    def of(self, side: Side) -> CaseState:
        return self.destination if side is Side.DESTINATION else self.origin


def exchange(sides: Sides | None, message: Message, *, now: int = NOW) -> Sides:
    """Apply `message` on the sender's side (sealing) and on the recipient's (opening); both must
    accept it and agree on the result."""
    if sides is None:
        dest = apply(None, message, as_sender=True, now=now)
        origin = apply(None, message, as_sender=False, now=now)
    else:
        sender = sides.destination.side_of(message.header.sender_agency_id)
        mine, theirs = (
            (sides.destination, sides.origin)
            if sender is Side.DESTINATION
            else (sides.origin, sides.destination)
        )
        a = apply(mine, message, as_sender=True, now=now)
        b = apply(theirs, message, as_sender=False, now=now)
        dest, origin = (a, b) if sender is Side.DESTINATION else (b, a)
    assert replace(origin, local_agency_id=dest.local_agency_id) == dest
    return Sides(dest, origin)


Step = tuple[MessageType, Side] | tuple[MessageType, Side, Any]


def drive(steps: Sequence[Step], *, lang: str = "lo") -> tuple[Sides, list[Message]]:
    """Open a case with a referral, then play `steps`; returns both sides and the messages."""
    messages = [referral(lang)]
    sides = exchange(None, messages[0])
    for step in steps:
        mtype, side = step[0], step[1]
        option = step[2] if len(step) == 3 else None
        message = make(sides.of(side), mtype, side, lang=lang, option=option)
        sides = exchange(sides, message)
        messages.append(message)
    return sides, messages


DEST, ORIG = Side.DESTINATION, Side.ORIGIN
RA = RepatriationAction
_ACK: list[Step] = [(MT.ACKNOWLEDGEMENT, ORIG)]
_ACCEPTED: list[Step] = [*_ACK, (MT.ACCEPTANCE, ORIG)]
_PROPOSED: list[Step] = [*_ACCEPTED, (MT.REPATRIATION_PLAN, DEST)]
_CONFIRMED: list[Step] = [*_PROPOSED, (MT.REPATRIATION_CONFIRMATION, ORIG, RA.CONFIRM)]
_SCHEDULED: list[Step] = [*_CONFIRMED, (MT.REPATRIATION_CONFIRMATION, DEST, RA.SCHEDULE)]
_HANDED_OVER: list[Step] = [*_SCHEDULED, (MT.HANDOVER_RECORD, DEST)]
_FOLLOW_UP: list[Step] = [*_HANDED_OVER, (MT.REINTEGRATION_PLAN, ORIG)]
PATHS: dict[str, list[Step]] = {
    "referred": [],
    "acknowledged": _ACK,
    "info_requested": [*_ACK, (MT.INFO_REQUEST, ORIG)],
    "declined": [*_ACK, (MT.DECLINE, ORIG)],
    "accepted": _ACCEPTED,
    "repatriation_proposed": _PROPOSED,
    "repatriation_counter_proposed": [*_PROPOSED, (MT.REPATRIATION_CONFIRMATION, ORIG, RA.COUNTER_PROPOSE)],
    "repatriation_confirmed": _CONFIRMED,
    "repatriation_scheduled": _SCHEDULED,
    "repatriation_postponed": [*_SCHEDULED, (MT.REPATRIATION_CONFIRMATION, ORIG, RA.POSTPONE)],
    "handed_over": _HANDED_OVER,
    "follow_up": _FOLLOW_UP,
    "closure_proposed": [*_FOLLOW_UP, (MT.CASE_CLOSURE, ORIG)],
    "closed": [*_FOLLOW_UP, (MT.CASE_CLOSURE, ORIG), (MT.CASE_CLOSURE, DEST)],
}
"""A script reaching each case phase (keyed by the phase's code)."""

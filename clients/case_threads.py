"""Case threads as the local case store returns them: the messages of one case, the state they
lead to, and the messages refused in it; the summary of a case that lists it without its
messages; with the helpers that order cases for a person.

Invariants: a `CaseThread` is what `protocol.referral.replay` made of exactly its `messages`;
a `CaseSummary` is what `summarise` made of a thread, so it shows what the thread shows (its
open items on any day are `protocol.referral.open_items` of the thread's state on that day);
dates are in the agencies' shared time, UTC+7 (`region_today`), like the workflow's due dates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from protocol import codec
from protocol.referral import (
    CasePhase,
    CaseState,
    Message,
    OpenItem,
    PersonName,
    Referral,
    Side,
    WaitingKind,
    open_items,
)
from protocol.referral.kinds import check_date

REGION_UTC_OFFSET_SECONDS = 7 * 3600
"""Thailand and Lao PDR share UTC+7: due dates and "today" are in that time."""
UNDATED = "1900-01-01"
"""The earliest day `open_items` takes: on it no item is overdue yet."""


def region_today(now: int) -> str:
    """`now` (Unix seconds) as the date YYYY-MM-DD in the agencies' shared time, UTC+7."""
    return time.strftime("%Y-%m-%d", time.gmtime(now + REGION_UTC_OFFSET_SECONDS))


def normal_case_ref(text: str) -> str:
    """A case number as compared: NFC, surrounding space removed, inner runs of space as one."""
    return " ".join(codec.nfc(text).split())


class Direction(StrEnum):
    SENT = "sent"
    RECEIVED = "received"


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of a case thread. A sent message has no `envelope_id` while it is being
    sealed (or if sealing was interrupted by a crash: it was then never sent)."""

    seq: int
    direction: Direction
    message: Message
    envelope_id: str | None
    recorded_at: int
    attachments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RefusedMessage:
    """A delivered referral message this agency refused (and answered with a `rejected`
    receipt): `reason` is the receipt's reason code, `detail` says why, for the person."""

    envelope_id: str
    sender_id: str
    refused_at: int
    reason: str
    detail: str
    message: Message | None = None
    case_link_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class CaseThread:
    """A case as this agency holds it: its messages, the state they lead to, and the
    messages refused in it."""

    state: CaseState
    messages: tuple[StoredMessage, ...]
    refused: tuple[RefusedMessage, ...] = ()

    @property
    def case_link_id(self) -> bytes:
        return self.state.case_link_id

    @property
    def person_name(self) -> PersonName | None:
        """The person's name as the referral gave it, if the thread holds the referral."""
        for stored in self.messages:
            if isinstance(stored.message, Referral):
                return stored.message.person.name
        return None

    @property
    def last_activity(self) -> int:
        return max(m.recorded_at for m in self.messages)

    def open_items(self, today: str) -> tuple[OpenItem, ...]:
        return open_items(self.state, today)

    def message(self, message_id: bytes) -> StoredMessage | None:
        return next((m for m in self.messages if m.message.message_id == message_id), None)


@dataclass(frozen=True, slots=True)
class CaseStanding:
    """Where a case stands for this agency: the side it holds and the case's open items as of
    no particular day (none marked overdue; `items_on` marks them for a day)."""

    local_side: Side
    open_items: tuple[OpenItem, ...]

    def items_on(self, today: str) -> tuple[OpenItem, ...]:
        """The open items on `today` (YYYY-MM-DD), as `open_items` gives them: the list does not
        change with the day, and an item with a due date (an open request) is overdue once
        `today` is past it (`RequestState.status_on`)."""
        check_date(today, "today")
        return tuple(
            item if item.due_on is None else replace(item, overdue=today > item.due_on)
            for item in self.open_items
        )


@dataclass(frozen=True, slots=True)
class CaseSummary:
    """One line of the case list: both case numbers, the person's name, the phase, the last
    activity and what is open. The case store keeps it sealed in the case's own row, so listing
    every case decrypts one small record per case and replays nothing."""

    case_link_id: bytes
    destination_agency_id: str
    origin_agency_id: str
    destination_case_ref: str
    origin_case_ref: str | None
    name_native: str | None
    name_romanised: str | None
    phase: CasePhase
    last_activity: int
    state: CaseStanding
    """What the list needs of the case's state (the local side and the open items)."""

    @property
    def case_hex(self) -> str:
        return self.case_link_id.hex()

    @property
    def local_is_destination(self) -> bool:
        return self.state.local_side is Side.DESTINATION

    @property
    def partner_id(self) -> str:
        return self.origin_agency_id if self.local_is_destination else self.destination_agency_id

    def items(self, today: str) -> tuple[OpenItem, ...]:
        return self.state.items_on(today)


def summarise(thread: CaseThread) -> CaseSummary:
    state = thread.state
    name = thread.person_name
    return CaseSummary(
        case_link_id=state.case_link_id,
        destination_agency_id=state.destination_agency_id,
        origin_agency_id=state.origin_agency_id,
        destination_case_ref=state.destination_case_ref,
        origin_case_ref=state.origin_case_ref,
        name_native=None if name is None else name.full_native,
        name_romanised=None if name is None else name.full_romanised,
        phase=state.phase,
        last_activity=thread.last_activity,
        state=CaseStanding(state.local_side, open_items(state, UNDATED)),
    )


def summary_record(summary: CaseSummary) -> list[Any]:
    """The summary as the case store seals it, after the case link id."""
    s = summary
    items = [[str(i.kind), [str(x) for x in i.waiting_on], i.about, i.due_on] for i in s.state.open_items]
    return [
        s.destination_agency_id, s.origin_agency_id, s.destination_case_ref, s.origin_case_ref,
        s.name_native, s.name_romanised, str(s.phase), s.last_activity, items,
    ]  # fmt: skip


def summary_from_record(case_link_id: bytes, fields: list[Any], local_agency_id: str) -> CaseSummary:
    """The summary `summary_record` wrote for `local_agency_id`'s case store; raises ValueError
    or TypeError if `fields` is not such a record."""
    destination, origin, destination_ref, origin_ref, native, roman, phase, last, items = fields
    if not isinstance(case_link_id, bytes) or not isinstance(last, int):
        raise TypeError("a case summary record holds a link id and a time")
    side = Side.DESTINATION if destination == local_agency_id else Side.ORIGIN
    open_now = tuple(
        OpenItem(WaitingKind(kind), tuple(Side(x) for x in waiting), about, due)
        for kind, waiting, about, due in items
    )
    return CaseSummary(
        case_link_id, destination, origin, destination_ref, origin_ref, native, roman,
        CasePhase(phase), last, CaseStanding(side, open_now),
    )  # fmt: skip


def attention_order(threads: list[CaseThread], today: str) -> list[CaseThread]:
    """Cases with an overdue item first, then those waiting on this agency, then the rest;
    the most recently active first within each group."""

    def key(thread: CaseThread) -> tuple[int, int]:
        items = thread.open_items(today)
        local = thread.state.local_side
        if any(i.overdue for i in items):
            group = 0
        elif any(local in i.waiting_on for i in items):
            group = 1
        else:
            group = 2
        return group, -thread.last_activity

    return sorted(threads, key=key)

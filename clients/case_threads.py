"""Case threads as the local case store returns them: the messages of one case, the state they
lead to, and the messages refused in it; with the helpers that order cases for a person.

Invariants: a `CaseThread` is what `protocol.referral.replay` made of exactly its `messages`;
dates are in the agencies' shared time, UTC+7 (`region_today`), like the workflow's due dates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from protocol import codec
from protocol.referral import CaseState, Message, OpenItem, PersonName, Referral, open_items

REGION_UTC_OFFSET_SECONDS = 7 * 3600
"""Thailand and Lao PDR share UTC+7: due dates and "today" are in that time."""


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

"""The common header and base of every referral message.

A referral message is what travels inside an envelope as the manifest body (content type
`CONTENT_TYPE`). Every message is a frozen slotted dataclass: a `header` followed by the body
fields of its type. Its type and schema version are class constants (`TYPE`, `VERSION`) and
appear on the wire next to the header (see `wire`).

Header invariants: ids are 16 random bytes chosen by the caller; `case_link_id` ties every
message of one case and carries nothing else; `sender_case_ref` and `receiver_case_ref` are each
side's own case number (the origin side's is set by its ACCEPTANCE and shown everywhere after);
`consent_ref` names the consent version the message was built under; `overrides` are the consent
overrides the sender recorded for this message. The header holds no personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from protocol.errors import InvalidField
from protocol.referral.codes import MessageType
from protocol.referral.consent import OverrideRecord
from protocol.referral.fields import Nested, Record, Spec
from protocol.referral.kinds import AGENCY, CASE_REF, TIMESTAMP, Id, ListOf

CONTENT_TYPE = "application/vnd.casebridge.referral-message+msgpack; version=1"
"""The envelope manifest content type of a referral message body."""


@dataclass(frozen=True, slots=True)
class Header(Record):
    message_id: Annotated[bytes, Spec(Id())]
    case_link_id: Annotated[bytes, Spec(Id())]
    sender_agency_id: Annotated[str, Spec(AGENCY)]
    receiver_agency_id: Annotated[str, Spec(AGENCY)]
    created_at: Annotated[int, Spec(TIMESTAMP)]
    consent_ref: Annotated[bytes, Spec(Id())]
    sender_case_ref: Annotated[str | None, Spec(CASE_REF)] = None
    receiver_case_ref: Annotated[str | None, Spec(CASE_REF)] = None
    in_reply_to: Annotated[bytes | None, Spec(Id())] = None
    overrides: Annotated[tuple[OverrideRecord, ...], Spec(ListOf(Nested(OverrideRecord), 16))] = ()

    def _check(self) -> None:
        if self.sender_agency_id == self.receiver_agency_id:
            raise InvalidField("receiver_agency_id", "an agency other than the sender")
        if self.in_reply_to == self.message_id:
            raise InvalidField("in_reply_to", "another message's id")


@dataclass(frozen=True, slots=True)
class Message(Record):
    """Base of every referral message type; never sent as such."""

    TYPE: ClassVar[MessageType]
    VERSION: ClassVar[int] = 1

    header: Annotated[Header, Spec()]

    @property
    def message_id(self) -> bytes:
        return self.header.message_id

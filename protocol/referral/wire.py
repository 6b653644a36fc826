"""The wire form of referral messages, and the registry of message types.

A message is one canonical msgpack map (see docs/referrals.md, "Wire format"): the text keys
`type` (the `MessageType` code), `v` (the type's schema version), `header` (a map) and one key per
body field that has a value. Absent values (None, empty lists) are left out, never sent as nil or
as an empty array. Nested records are maps under the same rules; codes are their text values;
dates are `YYYY-MM-DD` text; ids are 16-byte bin. `protocol.codec` sorts the keys by their
encoded bytes (shorter keys first) and refuses anything not canonical.

Decoding checks size limits before a byte is decoded, then the type, then the version (an
unknown version is `UnsupportedVersion`), then every field (`InvalidField` naming its path), and
finally that re-encoding yields the same bytes, so exactly one byte string stands for each
message and hashes over it are stable.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from protocol import codec
from protocol.errors import InvalidField, MalformedInput, UnsupportedVersion
from protocol.referral.case_messages import (
    Acceptance,
    Acknowledgement,
    CaseClosure,
    CaseReopen,
    CaseUpdate,
    ConsentChange,
    Decline,
    InfoRequest,
    InfoResponse,
    Referral,
)
from protocol.referral.codes import MessageType
from protocol.referral.fields import record_from_wire, record_to_wire, schema_of
from protocol.referral.messages import Message
from protocol.referral.return_messages import (
    FamilyAssessmentRequest,
    FamilyAssessmentResult,
    HandoverRecord,
    ReintegrationPlan,
    RepatriationConfirmation,
    RepatriationPlan,
    VerificationRequest,
    VerificationResult,
)

MESSAGE_LIMITS = codec.Limits(max_bytes=1 << 20, max_str_len=1 << 14, max_bin_len=64, max_array_len=64)
_ENVELOPE_KEYS = frozenset({"type", "v"})


def _registry(*classes: type[Message]) -> Mapping[MessageType, type[Message]]:
    out: dict[MessageType, type[Message]] = {}
    for cls in classes:
        names = {s.name for s in schema_of(cls)}
        if names & _ENVELOPE_KEYS or cls.TYPE in out:
            raise TypeError(f"{cls.__name__}: reserved field name or duplicate type")
        out[cls.TYPE] = cls
    if set(out) != set(MessageType):
        raise TypeError("every MessageType needs exactly one message class")
    return MappingProxyType(out)


MESSAGE_CLASSES: Mapping[MessageType, type[Message]] = _registry(
    Referral,
    Acknowledgement,
    Acceptance,
    Decline,
    InfoRequest,
    InfoResponse,
    VerificationRequest,
    VerificationResult,
    FamilyAssessmentRequest,
    FamilyAssessmentResult,
    RepatriationPlan,
    RepatriationConfirmation,
    HandoverRecord,
    ReintegrationPlan,
    CaseUpdate,
    ConsentChange,
    CaseClosure,
    CaseReopen,
)
"""Message type -> its class: the one source of schemas, validation and documentation."""


def message_to_wire(message: Message) -> dict[str, object]:
    """The decoded-msgpack form of a message (what `encode_message` serialises)."""
    out = record_to_wire(message)
    out["type"] = message.TYPE.value
    out["v"] = message.VERSION
    return out


def encode_message(message: Message) -> bytes:
    return codec.encode(message_to_wire(message), limits=MESSAGE_LIMITS)


def message_from_wire(raw: object) -> Message:
    """Build a message from its decoded-msgpack form, checking every field."""
    if not isinstance(raw, dict):
        raise MalformedInput(reason="a referral message is a map")
    type_code = raw.get("type")
    cls = next((c for t, c in MESSAGE_CLASSES.items() if t.value == type_code), None)
    if cls is None:
        raise InvalidField("type", "one of " + ", ".join(t.value for t in MESSAGE_CLASSES))
    version = raw.get("v")
    if version != cls.VERSION or isinstance(version, bool):
        raise UnsupportedVersion(
            reason=f"{cls.TYPE} schema version {version!r}; this side knows {cls.VERSION}"
        )
    message: Message = record_from_wire(cls, raw, "", skip=_ENVELOPE_KEYS)
    return message


def decode_message(data: bytes) -> Message:
    """Decode and validate one referral message; raises a `CaseBridgeError` subclass, nothing else."""
    message = message_from_wire(codec.decode(data, limits=MESSAGE_LIMITS))
    if encode_message(message) != bytes(data):
        raise MalformedInput(reason="referral message is not in canonical form")
    return message

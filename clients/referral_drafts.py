"""A referral message as a person writes it in a file (TOML or JSON): its type, which case it
belongs to, and its body fields as plain values. The draft is checked field by field when it is
read, before any keystore is opened or anything sealed; every error names the field's path
(`person.name.full_native`, `known_family[1].relation`) and what it expects.

The file's keys are the message's body fields (docs/referrals.md lists them per type) next to
these reserved ones:

    type = "info_request"         # the message type code (required)
    case = "ศคม.นค. 42/2568"      # the case: either side's case number or its link id (not for a referral)
    case_ref = "ຮສ 117/2025"      # this agency's case number: a referral's, or the one an acceptance sets
    in_reply_to = "<32 hex>"      # optional: by default, what the type naturally answers in the case
    [override]                    # optional: reason, officer, legal_basis, second_approver

Values: text in UTF-8 (normalised to NFC, CR LF read as LF), dates `YYYY-MM-DD` (TOML dates
too), times `HH:MM`, codes as their text, ids as 32 hex digits (a consent's `consent_id` may be
left out: a new one is drawn), nested records as tables, lists as arrays.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.referrals import MessageBuilder, Reply
from keys.files import read_bytes
from protocol import codec
from protocol.errors import InvalidField, MalformedInput
from protocol.primitives import Random
from protocol.referral import (
    MESSAGE_CLASSES,
    Consent,
    Header,
    LegalBasis,
    Message,
    MessageType,
    override_consent,
    schema_of,
    with_override,
)
from protocol.referral.fields import Nested, Record
from protocol.referral.kinds import Id, Kind, ListOf

MAX_FILE_BYTES = 1 << 20
RESERVED = frozenset({"type", "case", "case_ref", "in_reply_to", "override"})
_PLACEHOLDER = Header(
    message_id=bytes(16),
    case_link_id=bytes(16),
    sender_agency_id="XX-DRAFT",
    receiver_agency_id="YY-DRAFT",
    created_at=0,
    consent_ref=bytes(16),
)
"""A stand-in header, so a draft's body is checked before the case is known."""

for _cls in MESSAGE_CLASSES.values():
    if RESERVED & {s.name for s in schema_of(_cls)}:
        raise TypeError(f"{_cls.__name__} has a field named like a reserved draft key")


@dataclass(frozen=True, slots=True)
class OverrideRequest:
    reason: str
    officer: str
    legal_basis: LegalBasis
    second_approver: str | None = None


@dataclass(frozen=True, slots=True)
class MessageDraft:
    """A checked draft; `build_message` gives it its header. `body` holds constructor values."""

    message_type: MessageType
    body: Mapping[str, Any]
    case: str | None = None
    case_ref: str | None = None
    in_reply_to: bytes | Reply | None = Reply.NATURAL
    override: OverrideRequest | None = None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _text(value: str) -> str:
    return codec.nfc(value.replace("\r\n", "\n").replace("\r", "\n"))


def _hex_id(value: Any, path: str) -> bytes:
    if isinstance(value, str) and len(value) == 32:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise InvalidField(path, "an id written as 32 hexadecimal digits")


def _value(kind: Kind, value: Any, path: str, rng: Random) -> Any:
    if isinstance(kind, Nested):
        return _record(kind.record, value, path, rng)
    if isinstance(kind, ListOf):
        if not isinstance(value, list):
            raise InvalidField(path, "a list")
        return [_value(kind.item, v, f"{path}[{i}]", rng) for i, v in enumerate(value)]
    if isinstance(kind, Id):
        return _hex_id(value, path)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dt.datetime):
        raise InvalidField(path, "a date YYYY-MM-DD or a time HH:MM, not a date and time")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.strftime("%H:%M")
    return value


def _values(cls: type[Record], raw: Any, path: str, rng: Random, *, top: bool = False) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidField(path or cls.__name__, f"a table of {cls.__name__} fields")
    specs = {s.name: s for s in schema_of(cls) if not (top and s.name == "header")}
    for key in raw:
        if key not in specs and not (top and key in RESERVED):
            raise InvalidField(_join(path, str(key)), f"a field of {cls.__name__}: one of {', '.join(specs)}")
    values = {
        name: _value(specs[name].kind, raw[name], _join(path, name), rng) for name in specs if name in raw
    }
    if cls is Consent and "consent_id" not in values:
        values["consent_id"] = rng(16)
    for name, spec in specs.items():
        if spec.required and name not in values:
            raise InvalidField(_join(path, name), f"a value ({spec.kind.describe()})")
    return values


def _construct(cls: type[Any], values: Mapping[str, Any], path: str) -> Any:
    try:
        return cls(**values)
    except InvalidField as e:
        raise InvalidField(_join(path, e.field), e.expected) from None


def _record(cls: type[Record], raw: Any, path: str, rng: Random) -> Record:
    record: Record = _construct(cls, _values(cls, raw, path, rng), path)
    return record


def _optional_text(raw: Mapping[str, Any], key: str, path: str = "") -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidField(_join(path, key), "some text")
    return _text(value).strip()


def _override(raw: Any) -> OverrideRequest | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidField("override", "a table with reason, officer, legal_basis and second_approver")
    allowed = {"reason", "officer", "legal_basis", "second_approver"}
    for key in raw:
        if key not in allowed:
            raise InvalidField(f"override.{key}", "one of " + ", ".join(sorted(allowed)))
    try:
        basis = LegalBasis(str(raw.get("legal_basis")))
    except ValueError:
        raise InvalidField(
            "override.legal_basis", "one of " + ", ".join(b.value for b in LegalBasis)
        ) from None
    reason = _optional_text(raw, "reason", "override")
    officer = _optional_text(raw, "officer", "override")
    if reason is None or officer is None:
        raise InvalidField("override.reason" if reason is None else "override.officer", "some text")
    return OverrideRequest(reason, officer, basis, _optional_text(raw, "second_approver", "override"))


def draft_from_fields(raw: Mapping[str, Any], *, rng: Random) -> MessageDraft:
    """Check a message written as plain values; raises `InvalidField` naming the field."""
    type_code = raw.get("type")
    try:
        mtype = MessageType(str(type_code))
    except ValueError:
        raise InvalidField("type", "one of " + ", ".join(t.value for t in MessageType)) from None
    cls = MESSAGE_CLASSES[mtype]
    body = _values(cls, dict(raw), "", rng, top=True)
    _construct(cls, {"header": _PLACEHOLDER, **body}, "")
    reply: bytes | Reply | None = Reply.NATURAL
    if "in_reply_to" in raw:
        reply = _hex_id(raw["in_reply_to"], "in_reply_to")
    return MessageDraft(
        message_type=mtype,
        body=body,
        case=_optional_text(raw, "case"),
        case_ref=_optional_text(raw, "case_ref"),
        in_reply_to=reply,
        override=_override(raw.get("override")),
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidField(key, "the key once only (it appears twice)")
        out[key] = value
    return out


def read_draft(path: str | Path, *, rng: Random) -> MessageDraft:
    """Read and check a message file: `.json` is JSON, anything else TOML."""
    data = read_bytes(path, max_bytes=MAX_FILE_BYTES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MalformedInput(f"{path} is not UTF-8 text; save it as UTF-8.") from None
    try:
        if Path(path).suffix.lower() == ".json":
            raw = json.loads(text, object_pairs_hook=_no_duplicates)
        else:
            raw = tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        kind = "JSON" if Path(path).suffix.lower() == ".json" else "TOML"
        raise MalformedInput(f"{path} is not valid {kind}: {e}.") from None
    if not isinstance(raw, dict):
        raise MalformedInput(f'{path} holds no table of fields; start it with type = "...".')
    return draft_from_fields(raw, rng=rng)


def build_message(draft: MessageDraft, builder: MessageBuilder, *, to: str | None) -> Message:
    """The draft with its header, for the case it names (or a new case, for a referral)."""
    if draft.message_type is MessageType.REFERRAL:
        if to is None:
            raise InvalidField("--to", "the agency the referral goes to")
        if draft.case is not None:
            raise InvalidField("case", "nothing: a referral opens a new case (give case_ref)")
        if draft.case_ref is None:
            raise InvalidField("case_ref", "this agency's case number for the new case")
        message: Message = builder.referral(to=to, case_ref=draft.case_ref, **draft.body)
    else:
        if draft.case is None:
            raise InvalidField("case", "the case: either side's case number or its case link id")
        state = builder.case(draft.case)
        other = state.agency_of(state.local_side.other)
        if to is not None and to != other:
            raise InvalidField("--to", f"{other}, the other agency of this case")
        message = builder.message(
            state, draft.message_type, in_reply_to=draft.in_reply_to, case_ref=draft.case_ref, **draft.body
        )
    o = draft.override
    if o is not None:
        record = override_consent(
            message,
            builder.consent_in_force(message),
            reason=o.reason,
            officer=o.officer,
            legal_basis=o.legal_basis,
            at=message.header.created_at,
            second_approver=o.second_approver,
        )
        message = with_override(message, record)
    return message

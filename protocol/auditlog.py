"""Audit-log leaves: the exact bytes of every entry of the broker's transparency log. Sans-I/O.

A leaf is one canonical msgpack array `[version, kind, time, ...fields]`: `version` 1, `kind`
the text of a `LeafKind`, `time` the broker's Unix time of the change, then the fields of that
kind in a fixed order (docs/audit-log.md gives every kind byte for byte). The Merkle tree hashes
these bytes as they are (RFC 6962 `SHA-256(0x00 || leaf)`); nothing is ever re-serialised.

Invariants:
- Parsing is strict (the one canonical encoding, the exact number of items, every field's type
  and range, every embedded signed record parsing and agreeing with the fields beside it) and
  raises `MalformedInput`, or `UnsupportedVersion` for a leaf of another version.
- `encode_leaf` checks every field as parsing does, so `parse_leaf(encode_leaf(t, f))` gives
  back `f`, provided the embedded records are the ones the fields describe (it does not
  re-parse them: that is the cost of a second decode on the broker's hot path).
- A leaf is at most 65535 bytes (a tlog-tiles entry bundle prefixes each entry with a uint16).
- A leaf holds ids, agency ids, times, sizes, hashes and public signed records (certificates,
  encryption-key statements, revocation lists, receipts, the sender's envelope signature), never
  personal data, plaintext, ciphertext or private keys: an envelope appears as its id, hash,
  sizes and signature only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import msgpack

from protocol import codec
from protocol.certificate import (
    AGENCY_ID,
    COUNTRY,
    AgencyCertificate,
    EncryptionKey,
    RevocationList,
    RootCertificate,
)
from protocol.errors import InvalidField, MalformedInput, UnsupportedVersion
from protocol.note import SIG_COSIGNATURE_V1, SIG_ED25519, VerifierKey
from protocol.primitives import HASH_BYTES, KEY_ID_BYTES, SIGNATURE_BYTES
from protocol.receipt import Receipt, ReceiptKind

LEAF_VERSION = 1
MAX_LEAF_BYTES = 0xFFFF
MAX_RECORD_BYTES = 60_000
"""A signed record is embedded whole only up to this size (a revocation list may be larger;
its leaf then carries only its SHA-256)."""
ENVELOPE_ID_BYTES = 16
MAX_ITEMS = 64
OFFLINE = "offline"
"""`by` of a registration made with the operator's offline command rather than over HTTP."""
LEAF_LIMITS = codec.Limits(max_bytes=MAX_LEAF_BYTES, max_depth=4, max_bin_len=MAX_LEAF_BYTES)

_ACTION = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SUBJECT = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
_SOFTWARE = re.compile(r"[\x21-\x7e]{1,64}")


class LeafKind(StrEnum):
    BROKER_STARTED = "broker_started"
    BROKER_STOPPED = "broker_stopped"
    ROOT_CONFIGURED = "root_configured"
    CERTIFICATE_REGISTERED = "certificate_registered"
    ENCRYPTION_KEY_REGISTERED = "encryption_key_registered"
    REVOCATION_LIST_REGISTERED = "revocation_list_registered"
    ENVELOPE_ACCEPTED = "envelope_accepted"
    RECEIPT = "receipt"
    ENVELOPE_PURGED = "envelope_purged"
    OPERATOR_ACTION = "operator_action"


# --- field readers: each raises MalformedInput naming the field ------------------------------


def _agency(value: Any, name: str) -> str:
    return codec.str_(value, name, max_len=66, pattern=AGENCY_ID)


def _by(value: Any, name: str) -> str:
    text = codec.str_(value, name, max_len=66)
    return text if text == OFFLINE else _agency(text, name)


def _agencies(value: Any, name: str, *, at_least: int = 0) -> tuple[str, ...]:
    ids = [_agency(v, f"{name}[]") for v in codec.array(value, name, max_len=MAX_ITEMS)]
    if len(ids) < at_least:
        raise MalformedInput(reason=f"{name}: fewer than {at_least}")
    codec.sorted_unique(ids, name)
    return tuple(ids)


def _vkey(value: Any, name: str, sig_type: int) -> str:
    text = codec.str_(value, name, max_len=512)
    if VerifierKey.parse(text).sig_type != sig_type:
        raise MalformedInput(reason=f"{name}: a vkey of signature type {sig_type:#04x}")
    return text


def _same(name: str, inside: object, beside: object) -> None:
    if inside != beside:
        raise MalformedInput(reason=f"audit leaf: {name} differs from the embedded record")


def _record(value: Any, name: str) -> bytes:
    return codec.bin_(value, name, max_len=MAX_RECORD_BYTES)


# --- one dataclass per kind: its fields in leaf order ----------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerStarted:
    """The broker started serving, with the keys it signs with and the witnesses it asks."""

    KIND: ClassVar[LeafKind] = LeafKind.BROKER_STARTED
    broker_id: str
    receipt_key_id: bytes
    checkpoint_vkey: str
    witness_vkeys: tuple[str, ...]
    software: str

    def items(self) -> list[Any]:
        return [
            self.broker_id,
            self.receipt_key_id,
            self.checkpoint_vkey,
            list(self.witness_vkeys),
            self.software,
        ]

    @classmethod
    def from_items(cls, f: list[Any]) -> BrokerStarted:
        witnesses = [
            _vkey(v, "witness_vkeys[]", SIG_COSIGNATURE_V1) for v in codec.array(f[3], "witness_vkeys")
        ]
        codec.sorted_unique(witnesses, "witness_vkeys")
        return cls(
            _agency(f[0], "broker_id"),
            codec.bin_(f[1], "receipt_key_id", KEY_ID_BYTES),
            _vkey(f[2], "checkpoint_vkey", SIG_ED25519),
            tuple(witnesses),
            codec.str_(f[4], "software", pattern=_SOFTWARE),
        )


@dataclass(frozen=True, slots=True)
class BrokerStopped:
    KIND: ClassVar[LeafKind] = LeafKind.BROKER_STOPPED
    broker_id: str

    def items(self) -> list[Any]:
        return [self.broker_id]

    @classmethod
    def from_items(cls, f: list[Any]) -> BrokerStopped:
        return cls(_agency(f[0], "broker_id"))


@dataclass(frozen=True, slots=True)
class RootConfigured:
    """A national root certificate the broker was configured to trust (self-signed)."""

    KIND: ClassVar[LeafKind] = LeafKind.ROOT_CONFIGURED
    country: str
    key_id: bytes
    certificate: bytes = field(repr=False)

    def items(self) -> list[Any]:
        return [self.country, self.key_id, self.certificate]

    @classmethod
    def from_items(cls, f: list[Any]) -> RootConfigured:
        return cls(
            codec.str_(f[0], "country", pattern=COUNTRY),
            codec.bin_(f[1], "key_id", KEY_ID_BYTES),
            _record(f[2], "certificate"),
        )


@dataclass(frozen=True, slots=True)
class CertificateRegistered:
    """An agency (or operator, auditor) certificate, registered by `by` (an operator or OFFLINE)."""

    KIND: ClassVar[LeafKind] = LeafKind.CERTIFICATE_REGISTERED
    agency_id: str
    key_id: bytes
    certificate: bytes = field(repr=False)
    by: str

    def items(self) -> list[Any]:
        return [self.agency_id, self.key_id, self.certificate, self.by]

    @classmethod
    def from_items(cls, f: list[Any]) -> CertificateRegistered:
        return cls(
            _agency(f[0], "agency_id"),
            codec.bin_(f[1], "key_id", KEY_ID_BYTES),
            _record(f[2], "certificate"),
            _by(f[3], "by"),
        )


@dataclass(frozen=True, slots=True)
class EncryptionKeyRegistered:
    KIND: ClassVar[LeafKind] = LeafKind.ENCRYPTION_KEY_REGISTERED
    agency_id: str
    key_id: bytes
    statement: bytes = field(repr=False)

    def items(self) -> list[Any]:
        return [self.agency_id, self.key_id, self.statement]

    @classmethod
    def from_items(cls, f: list[Any]) -> EncryptionKeyRegistered:
        return cls(
            _agency(f[0], "agency_id"),
            codec.bin_(f[1], "key_id", KEY_ID_BYTES),
            _record(f[2], "statement"),
        )


@dataclass(frozen=True, slots=True)
class RevocationListRegistered:
    """A root-signed revocation list: always its SHA-256, and the list itself if it fits."""

    KIND: ClassVar[LeafKind] = LeafKind.REVOCATION_LIST_REGISTERED
    country: str
    number: int
    list_sha256: bytes
    revocation_list: bytes | None = field(repr=False)
    by: str

    @classmethod
    def of(cls, raw: bytes, *, country: str, number: int, by: str) -> RevocationListRegistered:
        """The leaf fields for the signed list `raw` (embedded if at most MAX_RECORD_BYTES)."""
        embedded = raw if len(raw) <= MAX_RECORD_BYTES else None
        return cls(country, number, hashlib.sha256(raw).digest(), embedded, by)

    def items(self) -> list[Any]:
        return [self.country, self.number, self.list_sha256, self.revocation_list, self.by]

    @classmethod
    def from_items(cls, f: list[Any]) -> RevocationListRegistered:
        return cls(
            codec.str_(f[0], "country", pattern=COUNTRY),
            codec.int_(f[1], "number"),
            codec.bin_(f[2], "list_sha256", HASH_BYTES),
            None if f[3] is None else _record(f[3], "revocation_list"),
            _by(f[4], "by"),
        )


@dataclass(frozen=True, slots=True)
class EnvelopeAccepted:
    """An envelope durably stored: what the broker checked, never what it carries."""

    KIND: ClassVar[LeafKind] = LeafKind.ENVELOPE_ACCEPTED
    envelope_id: bytes
    envelope_hash: bytes
    sender_id: str
    sender_key_id: bytes
    recipients: tuple[str, ...]
    header_length: int
    part_lengths: tuple[int, ...]
    expires_at: int
    sender_signature: bytes

    def items(self) -> list[Any]:
        return [
            self.envelope_id,
            self.envelope_hash,
            self.sender_id,
            self.sender_key_id,
            list(self.recipients),
            self.header_length,
            list(self.part_lengths),
            self.expires_at,
            self.sender_signature,
        ]

    @classmethod
    def from_items(cls, f: list[Any]) -> EnvelopeAccepted:
        lengths = codec.array(f[6], "part_lengths", max_len=MAX_ITEMS)
        if not lengths:
            raise MalformedInput(reason="part_lengths: none")
        return cls(
            codec.bin_(f[0], "envelope_id", ENVELOPE_ID_BYTES),
            codec.bin_(f[1], "envelope_hash", HASH_BYTES),
            _agency(f[2], "sender_id"),
            codec.bin_(f[3], "sender_key_id", KEY_ID_BYTES),
            _agencies(f[4], "recipients", at_least=1),
            codec.int_(f[5], "header_length", 1),
            tuple(codec.int_(v, "part_lengths[]", 1) for v in lengths),
            codec.int_(f[7], "expires_at"),
            codec.bin_(f[8], "sender_signature", SIGNATURE_BYTES),
        )


@dataclass(frozen=True, slots=True)
class ReceiptRecorded:
    """A receipt (accepted, delivered, verified, rejected or expired) as its signer made it."""

    KIND: ClassVar[LeafKind] = LeafKind.RECEIPT
    receipt_kind: ReceiptKind
    envelope_id: bytes
    recipient_id: str
    receipt: bytes = field(repr=False)

    def items(self) -> list[Any]:
        return [str(self.receipt_kind), self.envelope_id, self.recipient_id, self.receipt]

    @classmethod
    def from_items(cls, f: list[Any]) -> ReceiptRecorded:
        kind = codec.str_(f[0], "receipt_kind", max_len=16)
        if kind not in ReceiptKind.__members__.values():
            raise MalformedInput(reason=f"receipt_kind {kind!r} is unknown")
        return cls(
            ReceiptKind(kind),
            codec.bin_(f[1], "envelope_id", ENVELOPE_ID_BYTES),
            _agency(f[2], "recipient_id"),
            _record(f[3], "receipt"),
        )

    def parsed(self) -> Receipt:
        return Receipt.parse(self.receipt)


@dataclass(frozen=True, slots=True)
class EnvelopePurged:
    """The header and ciphertext of an envelope were deleted (the facts stay in the log)."""

    KIND: ClassVar[LeafKind] = LeafKind.ENVELOPE_PURGED
    envelope_id: bytes
    envelope_hash: bytes
    bytes_purged: int

    def items(self) -> list[Any]:
        return [self.envelope_id, self.envelope_hash, self.bytes_purged]

    @classmethod
    def from_items(cls, f: list[Any]) -> EnvelopePurged:
        return cls(
            codec.bin_(f[0], "envelope_id", ENVELOPE_ID_BYTES),
            codec.bin_(f[1], "envelope_hash", HASH_BYTES),
            codec.int_(f[2], "bytes_purged"),
        )


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """Something an operator did that changes no other record: `action` a snake_case name,
    `subjects` the ids it concerns (agency ids, key ids in hex, ...), never personal data."""

    KIND: ClassVar[LeafKind] = LeafKind.OPERATOR_ACTION
    operator_id: str
    action: str
    subjects: tuple[str, ...]

    def items(self) -> list[Any]:
        return [self.operator_id, self.action, list(self.subjects)]

    @classmethod
    def from_items(cls, f: list[Any]) -> OperatorAction:
        subjects = codec.array(f[2], "subjects", max_len=MAX_ITEMS)
        return cls(
            _by(f[0], "operator_id"),
            codec.str_(f[1], "action", pattern=_ACTION),
            tuple(codec.str_(s, "subjects[]", pattern=_SUBJECT) for s in subjects),
        )


LeafFields = (
    BrokerStarted
    | BrokerStopped
    | RootConfigured
    | CertificateRegistered
    | EncryptionKeyRegistered
    | RevocationListRegistered
    | EnvelopeAccepted
    | ReceiptRecorded
    | EnvelopePurged
    | OperatorAction
)

_PARSERS: dict[LeafKind, tuple[int, Callable[[list[Any]], LeafFields]]] = {
    LeafKind.BROKER_STARTED: (5, BrokerStarted.from_items),
    LeafKind.BROKER_STOPPED: (1, BrokerStopped.from_items),
    LeafKind.ROOT_CONFIGURED: (3, RootConfigured.from_items),
    LeafKind.CERTIFICATE_REGISTERED: (4, CertificateRegistered.from_items),
    LeafKind.ENCRYPTION_KEY_REGISTERED: (3, EncryptionKeyRegistered.from_items),
    LeafKind.REVOCATION_LIST_REGISTERED: (5, RevocationListRegistered.from_items),
    LeafKind.ENVELOPE_ACCEPTED: (9, EnvelopeAccepted.from_items),
    LeafKind.RECEIPT: (4, ReceiptRecorded.from_items),
    LeafKind.ENVELOPE_PURGED: (3, EnvelopePurged.from_items),
    LeafKind.OPERATOR_ACTION: (3, OperatorAction.from_items),
}


def check_records(fields: LeafFields) -> None:
    """Every signed record a leaf embeds parses and agrees with the fields beside it (its
    signature is the verifier's business: the record names its signer)."""
    if isinstance(fields, RootConfigured):
        root = RootCertificate.parse(fields.certificate)
        _same("country", root.country, fields.country)
        _same("key_id", root.key_id, fields.key_id)
    elif isinstance(fields, CertificateRegistered):
        cert = AgencyCertificate.parse(fields.certificate)
        _same("agency_id", cert.agency_id, fields.agency_id)
        _same("key_id", cert.key_id, fields.key_id)
    elif isinstance(fields, EncryptionKeyRegistered):
        statement = EncryptionKey.parse(fields.statement)
        _same("agency_id", statement.agency_id, fields.agency_id)
        _same("key_id", statement.key_id, fields.key_id)
    elif isinstance(fields, RevocationListRegistered) and fields.revocation_list is not None:
        crl = RevocationList.parse(fields.revocation_list)
        _same("country", crl.country, fields.country)
        _same("number", crl.number, fields.number)
        _same("list_sha256", hashlib.sha256(fields.revocation_list).digest(), fields.list_sha256)
    elif isinstance(fields, ReceiptRecorded):
        receipt = fields.parsed()
        _same("receipt_kind", receipt.kind, fields.receipt_kind)
        _same("envelope_id", receipt.subject.envelope_id, fields.envelope_id)
        _same("recipient_id", receipt.subject.recipient_id, fields.recipient_id)


@dataclass(frozen=True, slots=True)
class Leaf:
    """A parsed leaf: when, what (`fields`, one of the kind dataclasses), and its exact bytes."""

    time: int
    fields: LeafFields
    raw: bytes = field(repr=False)

    @property
    def kind(self) -> LeafKind:
        return self.fields.KIND


def encode_leaf(time: int, fields: LeafFields) -> bytes:
    """The leaf bytes for `fields` at `time`. Every field's type, range and pattern is checked as
    `parse_leaf` checks it (`InvalidField` otherwise); embedded records are taken as given, so
    build the fields from records you parsed or issued (`check_records` re-checks them)."""
    items = fields.items()
    try:
        checked = type(fields).from_items(items)
        codec.int_(time, "time")
        raw = codec.encode([LEAF_VERSION, str(fields.KIND), time, *items], limits=LEAF_LIMITS)
    except MalformedInput as e:
        raise InvalidField(str(fields.KIND), f"fields a verifier accepts ({e.reason})") from e
    if checked != fields:
        raise InvalidField(str(fields.KIND), "fields of the types the leaf holds (tuples, not lists)")
    if len(raw) > MAX_LEAF_BYTES:
        raise InvalidField("leaf", f"at most {MAX_LEAF_BYTES} bytes, not {len(raw)}")
    return raw


def _items(data: bytes) -> tuple[LeafKind, list[Any]]:
    if len(data) > MAX_LEAF_BYTES:
        raise MalformedInput(reason=f"audit leaf of {len(data)} bytes exceeds {MAX_LEAF_BYTES}")
    items = codec.array(codec.decode(data, limits=LEAF_LIMITS), "audit leaf")
    if len(items) < 3:
        raise MalformedInput(reason="audit leaf: fewer than 3 items")
    version = codec.int_(items[0], "audit leaf version")
    if version != LEAF_VERSION:
        raise UnsupportedVersion(reason=f"audit leaf version {version}")
    kind = codec.str_(items[1], "audit leaf kind", max_len=64)
    if kind not in LeafKind.__members__.values():
        raise MalformedInput(reason=f"audit leaf kind {kind!r} is unknown")
    return LeafKind(kind), items


def parse_leaf(data: bytes) -> Leaf:
    """Parse a leaf strictly (see the module invariants)."""
    kind, items = _items(data)
    count, parse = _PARSERS[kind]
    if len(items) != 3 + count:
        raise MalformedInput(reason=f"{kind} leaf: expected {3 + count} items, got {len(items)}")
    time = codec.int_(items[2], "audit leaf time")
    fields = parse(items[3:])
    check_records(fields)
    return Leaf(time, fields, bytes(data))


def leaf_kind(data: bytes) -> LeafKind:
    """The kind of a leaf, reading only its first three items."""
    return _items(data)[0]


def envelope_ids(leaf: Leaf) -> tuple[bytes, ...]:
    """The envelopes a leaf records something about (for tracing one referral)."""
    f = leaf.fields
    if isinstance(f, EnvelopeAccepted | ReceiptRecorded | EnvelopePurged):
        return (f.envelope_id,)
    return ()


_ENVELOPE_ID_AT = {
    str(LeafKind.ENVELOPE_ACCEPTED): 3,
    str(LeafKind.RECEIPT): 4,
    str(LeafKind.ENVELOPE_PURGED): 3,
}


def unsafe_envelope_id(data: bytes) -> bytes | None:
    """The envelope a leaf names, read WITHOUT checking the leaf: only for indexing leaves one's
    own broker encoded (on its hot path, where `parse_leaf` would decode twice). Anything that is
    not such a leaf gives None; a verifier uses `parse_leaf` and `envelope_ids`."""
    if len(data) > MAX_LEAF_BYTES:
        return None
    try:
        items = msgpack.unpackb(data, raw=False, max_bin_len=MAX_LEAF_BYTES, max_array_len=MAX_ITEMS)
    except Exception:  # msgpack raises several types; any undecodable input names no envelope
        return None
    if not isinstance(items, list) or len(items) < 5 or items[0] != LEAF_VERSION:
        return None
    at = _ENVELOPE_ID_AT.get(items[1]) if isinstance(items[1], str) else None
    found = items[at] if at is not None else None
    return found if isinstance(found, bytes) and len(found) == ENVELOPE_ID_BYTES else None


def agencies(leaf: Leaf) -> tuple[str, ...]:
    """Every agency id a leaf names (sorted): the parties of an envelope or receipt, the holder of
    a certificate or key, the operator who acted. Broker ids count (they have the agency form)."""
    f = leaf.fields
    found: set[str] = set()
    if isinstance(f, BrokerStarted | BrokerStopped):
        found.add(f.broker_id)
    elif isinstance(f, CertificateRegistered):
        found.update((f.agency_id, f.by))
    elif isinstance(f, EncryptionKeyRegistered):
        found.add(f.agency_id)
    elif isinstance(f, RevocationListRegistered):
        found.add(f.by)
    elif isinstance(f, EnvelopeAccepted):
        found.update((f.sender_id, *f.recipients))
    elif isinstance(f, ReceiptRecorded):
        receipt = f.parsed()
        found.update((receipt.subject.sender_id, receipt.subject.recipient_id, receipt.signer_id))
    elif isinstance(f, OperatorAction):
        found.add(f.operator_id)
        found.update(s for s in f.subjects if AGENCY_ID.fullmatch(s))
    found.discard(OFFLINE)
    return tuple(sorted(found))

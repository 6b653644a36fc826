"""Checking an audit-log leaf at verification speed: the kind and time of a leaf `parse_leaf` accepts.

A verifier recomputing a log of a million leaves needs, for each, only to know that it parses
and its kind and time; building the leaf's objects (and its receipt's) costs far more than
hashing it. `check_leaf` answers that question for the kinds a busy log is made of
(`envelope_accepted`, `receipt`, `envelope_purged`) with one decode and one re-encode per
msgpack layer and plain type, length and pattern tests, and hands every other leaf, and every
leaf it is not sure of, to `protocol.auditlog.parse_leaf`.

Invariants:
- `check_leaf(data)` returns `(kind, time)` exactly when `parse_leaf(data)` returns a leaf of
  that kind and time, and otherwise raises what `parse_leaf` raises (it is `parse_leaf` that
  raises): the fast path only ever accepts, and accepts only what the strict parser accepts.
  `tests/unit/test_auditlog_fastpath.py` checks both directions on valid leaves, mutations and
  random bytes.
- The canonical-encoding rule is the codec's: a layer is accepted only if re-encoding the
  decoded value gives its bytes back. Maps, extension types, floats and booleans never appear in
  these kinds, and only values of the exact expected types pass (the strict parser then says
  why another does not).
- Every string these kinds hold is ASCII (agency ids, kinds, reasons, the receipt magic), so
  the codec's NFC rule holds for anything the patterns accept.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from protocol.auditlog import (
    ENVELOPE_ID_BYTES,
    LEAF_VERSION,
    MAX_ITEMS,
    MAX_LEAF_BYTES,
    MAX_RECORD_BYTES,
    LeafKind,
    parse_leaf,
)
from protocol.certificate import AGENCY_ID
from protocol.primitives import HASH_BYTES, KEY_ID_BYTES, SIGNATURE_BYTES
from protocol.receipt import MAGIC, REASON_MAX, VERSION, ReceiptKind, RejectReason

_INT_MAX = 2**63 - 1
_AGENCY_MAX = 66
"""The leaf's own agency fields are at most 66 characters (the receipt's are bound by the
pattern alone, which allows 67)."""
_RECEIPT_KINDS = frozenset(str(k) for k in ReceiptKind)
_REASONS = frozenset(str(r) for r in RejectReason)
_ACCEPTED = str(ReceiptKind.ACCEPTED)
_REJECTED = str(ReceiptKind.REJECTED)
_SIGNATURE_HEADER = bytes([0xC4, SIGNATURE_BYTES])
_agency = AGENCY_ID.fullmatch
_unpackb = msgpack.unpackb
"""Used with its defaults: they bound every length by the input's, and whatever they decode
(maps, extension types, raw strings) a leaf of these kinds never holds, so the type tests below
refuse it. Only exact `list`, `bytes`, `str`, `int` and None are ever accepted."""
_packb = msgpack.packb


class LeafSummary(NamedTuple):
    """What a verifier needs of a leaf that parses: its kind and time."""

    kind: LeafKind
    time: int


def _receipt_body(body: bytes, receipt_kind: str, envelope_id: bytes, recipient: str) -> bool:
    """The signed body of the receipt a `receipt` leaf embeds, agreeing with the leaf."""
    try:
        items = _unpackb(body)
    except Exception:  # msgpack raises several types; the strict parser names the fault
        return False
    if type(items) is not list or len(items) != 12 or _packb(items) != body:
        return False
    magic, version, kind, envelope_hash, inner_id, sender, inner_recipient = items[:7]
    signer, signer_key_id, time, reason, log_index = items[7:]
    if reason is None:
        if kind == _REJECTED:
            return False
    elif kind != _REJECTED or type(reason) is not str or len(reason) > REASON_MAX or reason not in _REASONS:
        return False
    if log_index is None:
        if kind == _ACCEPTED:
            return False
    elif kind != _ACCEPTED or type(log_index) is not int or not 0 <= log_index <= _INT_MAX:
        return False
    return (
        type(magic) is str
        and magic == MAGIC
        and type(version) is int
        and version == VERSION
        and type(kind) is str
        and kind == receipt_kind
        and type(envelope_hash) is bytes
        and len(envelope_hash) == HASH_BYTES
        and type(inner_id) is bytes
        and inner_id == envelope_id
        and type(sender) is str
        and _agency(sender) is not None
        and type(inner_recipient) is str
        and inner_recipient == recipient
        and type(signer) is str
        and _agency(signer) is not None
        and type(signer_key_id) is bytes
        and len(signer_key_id) == KEY_ID_BYTES
        and type(time) is int
        and 0 <= time <= _INT_MAX
    )


def _receipt(f: list[Any]) -> bool:
    receipt_kind, envelope_id, recipient, record = f
    if not (
        type(receipt_kind) is str
        and receipt_kind in _RECEIPT_KINDS
        and type(envelope_id) is bytes
        and len(envelope_id) == ENVELOPE_ID_BYTES
        and type(recipient) is str
        and len(recipient) <= _AGENCY_MAX
        and _agency(recipient) is not None
        and type(record) is bytes
        and len(record) <= MAX_RECORD_BYTES
    ):
        return False
    # `[bin body, bin signature]` has one canonical encoding: 0x92, the body as bin 8 or bin 16
    # (whichever is shortest for its length), then 0xc4 0x40 and the 64-byte signature.
    size = len(record) - 69
    if size < 0 or record[0] != 0x92 or record[-66:-64] != _SIGNATURE_HEADER:
        return False
    if record[1] == 0xC4 and record[2] == size:
        body = record[3:-66]
    elif record[1] == 0xC5 and size - 1 >= 0x100 and int.from_bytes(record[2:4], "big") == size - 1:
        body = record[4:-66]
    else:
        return False
    return _receipt_body(body, receipt_kind, envelope_id, recipient)


def _envelope_accepted(f: list[Any]) -> bool:
    envelope_id, envelope_hash, sender, key_id, recipients, header_length, parts, expires, sig = f
    if not (
        type(envelope_id) is bytes
        and len(envelope_id) == ENVELOPE_ID_BYTES
        and type(envelope_hash) is bytes
        and len(envelope_hash) == HASH_BYTES
        and type(sender) is str
        and len(sender) <= _AGENCY_MAX
        and _agency(sender) is not None
        and type(key_id) is bytes
        and len(key_id) == KEY_ID_BYTES
        and type(recipients) is list
        and 1 <= len(recipients) <= MAX_ITEMS
        and type(header_length) is int
        and 1 <= header_length <= _INT_MAX
        and type(parts) is list
        and 1 <= len(parts) <= MAX_ITEMS
        and type(expires) is int
        and 0 <= expires <= _INT_MAX
        and type(sig) is bytes
        and len(sig) == SIGNATURE_BYTES
    ):
        return False
    previous = ""
    for recipient in recipients:
        if type(recipient) is not str or len(recipient) > _AGENCY_MAX or _agency(recipient) is None:
            return False
        if not previous < recipient:
            return False
        previous = recipient
    return all(type(length) is int and 1 <= length <= _INT_MAX for length in parts)


def _envelope_purged(f: list[Any]) -> bool:
    envelope_id, envelope_hash, bytes_purged = f
    return (
        type(envelope_id) is bytes
        and len(envelope_id) == ENVELOPE_ID_BYTES
        and type(envelope_hash) is bytes
        and len(envelope_hash) == HASH_BYTES
        and type(bytes_purged) is int
        and 0 <= bytes_purged <= _INT_MAX
    )


_FAST = {
    str(LeafKind.ENVELOPE_ACCEPTED): (LeafKind.ENVELOPE_ACCEPTED, 12, _envelope_accepted),
    str(LeafKind.RECEIPT): (LeafKind.RECEIPT, 7, _receipt),
    str(LeafKind.ENVELOPE_PURGED): (LeafKind.ENVELOPE_PURGED, 6, _envelope_purged),
}


def fast_check(data: bytes) -> LeafSummary | None:
    """The kind and time of a leaf of a common kind that `parse_leaf` accepts; None when the
    leaf is of another kind or anything is off (None never means the leaf is wrong)."""
    if type(data) is not bytes or len(data) > MAX_LEAF_BYTES:
        return None
    try:
        items = _unpackb(data)
    except Exception:  # msgpack raises several types; the strict parser names the fault
        return None
    if type(items) is not list or len(items) < 3:
        return None
    version, kind, time = items[0], items[1], items[2]
    if type(version) is not int or version != LEAF_VERSION or type(kind) is not str:
        return None
    if type(time) is not int or not 0 <= time <= _INT_MAX:
        return None
    found = _FAST.get(kind)
    if found is None or len(items) != found[1] or _packb(items) != data or not found[2](items[3:]):
        return None
    return LeafSummary(found[0], time)


def check_leaf(data: bytes) -> LeafSummary:
    """The kind and time of a leaf, exactly as strict as `parse_leaf` (which raises for it)."""
    found = fast_check(data)
    if found is not None:
        return found
    leaf = parse_leaf(data)
    return LeafSummary(leaf.kind, leaf.time)

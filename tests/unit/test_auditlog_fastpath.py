"""The verifier's fast leaf check accepts exactly what the strict parser accepts, and nothing else.

`protocol.leaf_check.fast_check` answers for `envelope_accepted`, `receipt` and
`envelope_purged` leaves without building them; `check_leaf` falls back to `parse_leaf`. Here
both are run beside `protocol.auditlog.parse_leaf` on real leaves (receipts signed with real
keys), on those leaves with one field or one receipt field replaced by a value of every wrong
type and edge, re-encoded canonically or not, on byte mutations and on random bytes: a leaf the
fast check accepts must parse to the same kind and time, a common leaf that parses must be
accepted by the fast check, and `check_leaf` must give `parse_leaf`'s answer or its very error.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import auditlog
from protocol.certificate import join_signed
from protocol.errors import CaseBridgeError
from protocol.leaf_check import check_leaf, fast_check
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject, RejectReason
from tests.audit_log_fixtures import LogBuilder, Parties, referral_life, register_parties

FAST_KINDS = {
    auditlog.LeafKind.ENVELOPE_ACCEPTED,
    auditlog.LeafKind.RECEIPT,
    auditlog.LeafKind.ENVELOPE_PURGED,
}


def _log() -> list[bytes]:
    log = LogBuilder()
    parties = Parties.create()
    register_parties(log, parties)
    referral_life(log, parties)
    referral_life(log, parties, envelope_id=b"\x07" * 16, forge_delivery=True)
    recipient, broker = parties.agencies["LA-MOLSW"], parties.broker
    assert recipient.certificate is not None
    assert broker.certificate is not None
    subject = ReceiptSubject(hashlib.sha256(b"\x09" * 16).digest(), b"\x09" * 16, "TH-ATPD", "LA-MOLSW")
    for kind, key, cert, reason in (
        (ReceiptKind.REJECTED, recipient.signing_key, recipient.certificate, RejectReason.POLICY),
        (ReceiptKind.EXPIRED, broker.receipt_key, broker.certificate, None),
    ):
        made = Receipt.issue(
            kind, signing_key=key, signer=cert, subject=subject, time=log.time, reason=reason
        )
        log.add(auditlog.ReceiptRecorded(kind, subject.envelope_id, "LA-MOLSW", made.raw))
    return log.leaves


LEAVES = _log()
COMMON = [leaf for leaf in LEAVES if auditlog.leaf_kind(leaf) in FAST_KINDS]
RECEIPTS = [leaf for leaf in LEAVES if auditlog.leaf_kind(leaf) is auditlog.LeafKind.RECEIPT]


def strict(data: bytes) -> tuple[object, ...]:
    try:
        leaf = auditlog.parse_leaf(data)
    except CaseBridgeError as e:
        return (type(e), e.reason)
    return (leaf.kind, leaf.time)


def assert_agrees(data: bytes) -> None:
    expected = strict(data)
    fast = fast_check(data)
    if fast is not None:
        assert (fast.kind, fast.time) == expected, "the fast check accepted what the strict parser does not"
    else:
        assert expected[0] not in FAST_KINDS, "the fast check refused a common leaf that parses"
    try:
        checked: tuple[object, ...] = tuple(check_leaf(data))
    except CaseBridgeError as e:
        checked = (type(e), e.reason)
    assert checked == expected


# --- values that sit on every boundary the parsers test ----------------------------------------

EDGE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    255,
    256,
    65535,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**63),
    "",
    "TH-ATPD",
    "LA-MOLSW",
    "th-atpd",
    "TH-" + "A" * 63,  # 66 characters: the leaf's limit
    "TH-" + "A" * 64,  # 67: a receipt's agency pattern allows it, a leaf's field does not
    "TH-ATPD-",
    "สมชาย ใจดี",
    "ນາງ ສົມພອນ ແກ້ວມະນີ",
    "e\u0301",  # not NFC
    "accepted",
    "delivered",
    "verified",
    "rejected",
    "expired",
    "untrusted_sender",
    "policy",
    "CB-RCPT",
    b"",
    b"\x00" * 15,
    b"\x00" * 16,
    b"\x42" * 16,
    b"\x07" * 16,
    b"\x00" * 32,
    b"\x00" * 64,
    [],
    ["LA-MOLSW"],
    ["LA-MOLSW", "LA-MOLSW"],
    ["TH-ATPD", "LA-MOLSW"],
    ["LA-MOLSW", "TH-ATPD"],
    [0],
    [4096],
    [1, 2**63],
    {"a": 1},
    1.5,
]
values = (
    st.sampled_from(EDGE_VALUES)
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=70)
    | st.binary(max_size=70)
)


def _wide_int(value: int) -> bytes:
    """A non-canonical encoding of a small non-negative int: int16/int32 instead of uint."""
    return b"\xd1" + value.to_bytes(2, "big") if value < 2**15 else b"\xd2" + value.to_bytes(4, "big")


@pytest.mark.parametrize("index", range(len(LEAVES)))
def test_every_real_leaf_gets_the_strict_answer_and_common_ones_take_the_fast_path(index: int) -> None:
    leaf = LEAVES[index]
    assert_agrees(leaf)
    if auditlog.leaf_kind(leaf) in FAST_KINDS:
        found = fast_check(leaf)
        assert found is not None
        parsed = auditlog.parse_leaf(leaf)
        assert (found.kind, found.time) == (parsed.kind, parsed.time)


def _one_of_each_kind(leaves: list[bytes]) -> list[bytes]:
    seen: dict[tuple[object, object], bytes] = {}
    for leaf in leaves:
        items = msgpack.unpackb(leaf)
        seen.setdefault((items[1], items[3] if items[1] == "receipt" else None), leaf)
    return list(seen.values())


@pytest.mark.parametrize("leaf", _one_of_each_kind(COMMON))
def test_every_field_of_every_common_kind_given_every_edge_value_is_judged_alike(leaf: bytes) -> None:
    items = msgpack.unpackb(leaf)
    for at in range(len(items)):
        for value in EDGE_VALUES:
            changed = list(items)
            changed[at] = value
            assert_agrees(msgpack.packb(changed))


@pytest.mark.parametrize("leaf", _one_of_each_kind(RECEIPTS))
def test_every_field_of_every_receipt_kind_given_every_edge_value_is_judged_alike(leaf: bytes) -> None:
    items = msgpack.unpackb(leaf)
    body, signature = msgpack.unpackb(items[6])
    fields = msgpack.unpackb(body)
    for at in range(len(fields)):
        for value in EDGE_VALUES:
            changed = list(fields)
            changed[at] = value
            items[6] = join_signed(msgpack.packb(changed), signature)
            assert_agrees(msgpack.packb(items))


def test_a_67_character_agency_id_passes_in_a_receipt_but_not_in_the_leaf_beside_it() -> None:
    long_id = "LA-" + "M" * 64
    receipt = next(leaf for leaf in RECEIPTS if msgpack.unpackb(leaf)[3] == str(ReceiptKind.DELIVERED))
    items = msgpack.unpackb(receipt)
    body, signature = msgpack.unpackb(items[6])
    fields = msgpack.unpackb(body)
    fields[5] = long_id  # the sender: a receipt field, bound by the pattern only
    items[6] = join_signed(msgpack.packb(fields), signature)
    accepted = msgpack.packb(items)
    assert fast_check(accepted) is not None
    assert_agrees(accepted)
    fields[6], items[5] = long_id, long_id  # the recipient: also a leaf field, at most 66
    items[6] = join_signed(msgpack.packb(fields), signature)
    refused = msgpack.packb(items)
    assert fast_check(refused) is None
    assert_agrees(refused)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(leaf=st.sampled_from(COMMON), data=st.data())
def test_a_leaf_with_one_field_replaced_is_judged_alike(leaf: bytes, data: st.DataObject) -> None:
    items = msgpack.unpackb(leaf)
    at = data.draw(st.integers(0, len(items)))
    value = data.draw(values)
    if at == len(items):
        items.append(value)
    else:
        items[at] = value
    assert_agrees(msgpack.packb(items))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(leaf=st.sampled_from(RECEIPTS), data=st.data())
def test_a_receipt_with_one_field_replaced_is_judged_alike(leaf: bytes, data: st.DataObject) -> None:
    items = msgpack.unpackb(leaf)
    body, signature = msgpack.unpackb(items[6])
    fields = msgpack.unpackb(body)
    at = data.draw(st.integers(0, len(fields)))
    value = data.draw(values)
    if at == len(fields):
        fields.append(value)
    else:
        fields[at] = value
    items[6] = join_signed(msgpack.packb(fields), signature) if data.draw(st.booleans()) else b""
    if not items[6]:
        items[6] = msgpack.packb(
            [msgpack.packb(fields), data.draw(st.sampled_from([signature, signature[:63]]))]
        )
    assert_agrees(msgpack.packb(items))


@pytest.mark.parametrize("leaf", RECEIPTS[:4])
def test_non_canonical_receipt_layers_are_refused_by_both(leaf: bytes) -> None:
    items = msgpack.unpackb(leaf)
    body, signature = msgpack.unpackb(items[6])
    wrapped = [
        # bin 16 for a short body, a signature as bin 16, an array 16 header:
        b"\x92\xc5" + len(body).to_bytes(2, "big") + body + b"\xc4\x40" + signature,
        b"\x92\xc4" + bytes([len(body)]) + body + b"\xc5\x00\x40" + signature,
        b"\xdc\x00\x02\xc4" + bytes([len(body)]) + body + b"\xc4\x40" + signature,
        msgpack.packb([body, signature, b""]),
        msgpack.packb([body]),
    ]
    fields = msgpack.unpackb(body)
    wide_time = (
        b"\x9c" + b"".join(msgpack.packb(f) for f in fields[:9]) + b"\xd2" + fields[9].to_bytes(4, "big")
    )
    wide_time += b"".join(msgpack.packb(f) for f in fields[10:])
    wrapped.append(join_signed(wide_time, signature))
    for record in wrapped:
        items[6] = record
        mutated = msgpack.packb(items)
        assert_agrees(mutated)
        assert fast_check(mutated) is None


@pytest.mark.parametrize("leaf", COMMON[:6])
def test_a_non_canonical_time_or_array_header_is_refused_by_both(leaf: bytes) -> None:
    items = msgpack.unpackb(leaf)
    head = bytes([0x90 | len(items)])
    rest = b"".join(msgpack.packb(item) for item in items[3:])
    time = items[2]
    for mutated in (
        head + b"\x01" + msgpack.packb(items[1]) + b"\xcf" + time.to_bytes(8, "big") + rest,
        b"\xdc" + len(items).to_bytes(2, "big") + leaf[1:],
        head + b"\xd0\x01" + leaf[2:],
        leaf + b"\x00",
        head + b"\x01" + msgpack.packb(items[1]) + _wide_int(time & 0x7FFF) + rest,
    ):
        assert_agrees(mutated)
        assert fast_check(mutated) is None


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(leaf=st.sampled_from(COMMON), data=st.data())
def test_byte_mutations_are_judged_alike(leaf: bytes, data: st.DataObject) -> None:
    mutated = bytearray(leaf)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        action = data.draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate")))
        if action == "flip":
            mutated[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "set":
            mutated[at] = data.draw(st.integers(0, 255))
        elif action == "insert":
            mutated.insert(at, data.draw(st.integers(0, 255)))
        elif action == "delete" and len(mutated) > 1:
            del mutated[at]
        else:
            del mutated[max(1, at) :]
    assert_agrees(bytes(mutated))


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_are_judged_alike(data: bytes) -> None:
    assert_agrees(data)


@settings(max_examples=200)
@given(st.sampled_from(COMMON), st.binary(min_size=1, max_size=40))
def test_random_bytes_after_a_valid_prefix_are_judged_alike(leaf: bytes, tail: bytes) -> None:
    assert_agrees(leaf[: len(leaf) // 2] + tail)


def test_a_leaf_of_another_version_gets_the_strict_error() -> None:
    items = msgpack.unpackb(COMMON[0])
    items[0] = 2
    data = msgpack.packb(items)
    assert fast_check(data) is None
    assert_agrees(data)


def test_a_receipt_for_another_envelope_or_recipient_is_refused_by_both() -> None:
    receipt = next(leaf for leaf in RECEIPTS if msgpack.unpackb(leaf)[3] == str(ReceiptKind.ACCEPTED))
    items = msgpack.unpackb(receipt)
    for at, value in ((4, hashlib.sha256(b"other").digest()[:16]), (5, "TH-ATPD"), (3, "delivered")):
        changed = list(items)
        changed[at] = value
        data = msgpack.packb(changed)
        assert fast_check(data) is None
        assert_agrees(data)

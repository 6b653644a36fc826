"""The canonical codec: exactly one byte string per value, and `MalformedInput` for anything else.

Every refusal is checked for its class (exactly `MalformedInput`) and for a reason that names
what was wrong, since the reason is what an operator reads in the log.
"""

from __future__ import annotations

import tracemalloc
import unicodedata
from typing import Any

import msgpack
import pytest

from protocol import codec
from protocol.errors import MalformedInput
from tests.protocol_fixtures import refused

THAI_LAO_TEXTS = [
    "สมชาย ใจดี",
    "ນາງ ສົມພອນ ແກ້ວມະນີ",
    "เอกสารประกอบ.pdf",
    "ເອກະສານ.pdf",
    "ปู่ย่าตายาย กุ้ง น้ำ",
    "ກຸ້ງ ນ້ຳ ແມ່ນ້ຳຂອງ",
    "Café – ไทย/ລາວ ✓",
]

# Thai and Lao combining marks typed in the wrong canonical order (tone mark before the vowel
# below): valid UTF-8, looks identical on screen, but not NFC.
THAI_OUT_OF_ORDER = "\u0e1b\u0e48\u0e39"  # ป + mai ek + sara uu; NFC puts sara uu first
LAO_OUT_OF_ORDER = "\u0e81\u0ec9\u0eb8"  # ກ + mai tho + vowel u; NFC puts the vowel first
LATIN_DECOMPOSED = "Cafe\u0301"


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        1,
        -1,
        127,
        128,
        -32,
        -33,
        255,
        256,
        65_535,
        65_536,
        2**32,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        b"",
        b"\x00\xff" * 200,
        "",
        "a" * 31,
        "a" * 32,
        "a" * 256,
        [],
        [1, [2, [3, b"x"]], {"k": None}],
        {},
        {"b": 1, "aa": [True, False], "ค": {"ລ": b"\x01"}},
    ],
)
def test_canonical_round_trip(value: Any) -> None:
    encoded = codec.encode(value)
    assert codec.decode(encoded) == value
    assert codec.encode(codec.decode(encoded)) == encoded


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, b"\x01"),
        (128, b"\xcc\x80"),
        (-33, b"\xd0\xdf"),
        ("a", b"\xa1a"),
        (b"a", b"\xc4\x01a"),
        ([None, True], b"\x92\xc0\xc3"),
        # Map keys sort by their encoded bytes: "b" (a1 62) before "aa" (a2 61 61).
        ({"aa": 1, "b": 2}, b"\x82\xa1b\x02\xa2aa\x01"),
    ],
)
def test_shortest_encoding_and_sorted_keys(value: Any, expected: bytes) -> None:
    assert codec.encode(value) == expected


def test_encoding_ignores_map_insertion_order() -> None:
    forward = {"sender": "TH-DSDW", "recipient": "LA-MLSW", "n": 1}
    backward = dict(reversed(list(forward.items())))
    assert codec.encode(forward) == codec.encode(backward)


def test_tuples_encode_as_arrays() -> None:
    assert codec.encode((1, "x")) == codec.encode([1, "x"])


@pytest.mark.parametrize("text", THAI_LAO_TEXTS)
def test_thai_and_lao_text_round_trips_byte_for_byte(text: str) -> None:
    assert unicodedata.is_normalized("NFC", text)
    encoded = codec.encode(text)
    assert encoded.endswith(text.encode("utf-8"))
    decoded = codec.decode(encoded)
    assert decoded == text
    assert decoded.encode("utf-8") == text.encode("utf-8")


@pytest.mark.parametrize("text", [THAI_OUT_OF_ORDER, LAO_OUT_OF_ORDER, LATIN_DECOMPOSED])
def test_nfc_helper_normalises_what_the_codec_refuses(text: str) -> None:
    assert not unicodedata.is_normalized("NFC", text)
    fixed = codec.nfc(text)
    assert fixed != text
    assert codec.decode(codec.encode(fixed)) == fixed


# --- refusals when decoding ------------------------------------------------------------------

REFUSED_ENCODINGS = [
    ("empty input", b"", "empty input"),
    ("trailing bytes", b"\x01\x02", "trailing bytes"),
    ("float64", msgpack.packb(1.5), "float"),
    ("float32", b"\xca\x00\x00\x00\x00", "float"),
    ("ext type", msgpack.packb(msgpack.ExtType(5, b"ab")), "max_ext_len"),
    ("timestamp", msgpack.packb(msgpack.Timestamp(1_767_225_600)), "max_ext_len"),
    ("int map key", b"\x81\x01\x01", "map key"),
    ("bin map key", b"\x81\xc4\x01a\x01", "map key is not a string"),
    ("nil map key", b"\x81\xc0\x01", "map key"),
    ("duplicate map key", b"\x82\xa1a\x01\xa1a\x02", "duplicate map key"),
    ("unsorted map keys", b"\x82\xa1b\x01\xa1a\x02", "not in canonical encoding"),
    ("uint8 for a fixint", b"\xcc\x01", "not in canonical encoding"),
    ("int16 for a negative fixint", b"\xd1\xff\xff", "not in canonical encoding"),
    ("uint64 for a small number", b"\xcf" + (5).to_bytes(8, "big"), "not in canonical encoding"),
    ("str8 where fixstr fits", b"\xd9\x01a", "not in canonical encoding"),
    ("bin16 where bin8 fits", b"\xc5\x00\x01a", "not in canonical encoding"),
    ("array16 where fixarray fits", b"\xdc\x00\x01\x01", "not in canonical encoding"),
    ("map16 where fixmap fits", b"\xde\x00\x00", "not in canonical encoding"),
    ("raw str without bin type", b"\xa1\xff", "UnicodeDecodeError"),
    ("invalid utf-8", b"\xa2\xc3\x28", "UnicodeDecodeError"),
    ("utf-8 surrogate", b"\xa3\xed\xa0\x80", "UnicodeDecodeError"),
    ("overlong utf-8", b"\xa2\xc0\xaf", "UnicodeDecodeError"),
    ("thai marks out of order", msgpack.packb(THAI_OUT_OF_ORDER), "not in Unicode NFC"),
    ("lao marks out of order", msgpack.packb(LAO_OUT_OF_ORDER), "not in Unicode NFC"),
    ("decomposed latin", msgpack.packb(LATIN_DECOMPOSED), "not in Unicode NFC"),
    ("nfd map key", msgpack.packb({LATIN_DECOMPOSED: 1}), "not in Unicode NFC"),
    ("reserved byte 0xc1", b"\xc1", "undecodable"),
    ("truncated array", b"\x92\x01", "undecodable"),
    ("truncated str", b"\xa5abc", "undecodable"),
    ("nesting past the limit", b"\x91" * 17 + b"\x01", "nesting deeper than 16"),
    ("nesting past the decoder's stack", b"\x91" * 100_000 + b"\x01", "undecodable"),
]


@pytest.mark.parametrize(
    ("data", "reason"), [(d, r) for _, d, r in REFUSED_ENCODINGS], ids=[n for n, _, _ in REFUSED_ENCODINGS]
)
def test_decode_refuses_non_canonical_or_disallowed_input(data: bytes, reason: str) -> None:
    with refused(MalformedInput) as info:
        codec.decode(data)
    assert reason in info.value.reason  # type: ignore[attr-defined]


def test_decode_refuses_what_is_not_bytes() -> None:
    with refused(MalformedInput):
        codec.decode("\x01")  # type: ignore[arg-type]


def test_size_limit_is_checked_before_a_byte_is_decoded() -> None:
    limits = codec.Limits(max_bytes=100)
    # A valid encoding one byte over the limit, and junk that would fail decoding: both are
    # refused for their size, so the decoder never saw them.
    for data in (codec.encode(b"x" * 99), b"\xc1" * 101):
        assert len(data) == 101
        with refused(MalformedInput) as info:
            codec.decode(data, limits=limits)
        assert info.value.reason == "101 bytes exceeds the limit of 100"  # type: ignore[attr-defined]
    assert codec.decode(codec.encode(b"x" * 98), limits=limits) == b"x" * 98


@pytest.mark.parametrize(
    "prefix",
    [b"\xc6", b"\xdb", b"\xdd", b"\xdf"],
    ids=["bin32", "str32", "array32", "map32"],
)
def test_huge_declared_length_is_refused_without_allocating(prefix: bytes) -> None:
    data = prefix + b"\xff\xff\xff\xff" + b"\x00" * 64
    tracemalloc.start()
    try:
        with refused(MalformedInput):
            codec.decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize(
    ("limits", "value", "reason"),
    [
        (codec.Limits(max_array_len=3), [1, 2, 3, 4], "exceeds max_array_len(3)"),
        (codec.Limits(max_map_len=1), {"a": 1, "b": 2}, "exceeds max_map_len(1)"),
        (codec.Limits(max_str_len=5), "abcdef", "exceeds max_str_len(5)"),
        (codec.Limits(max_str_len=5), "ไทย", "exceeds max_str_len(5)"),  # 9 UTF-8 bytes
        (codec.Limits(max_bin_len=2), b"abc", "exceeds max_bin_len(2)"),
        (codec.Limits(max_bin_len=2), [b"ab", [b"abc"]], "exceeds max_bin_len(2)"),
    ],
)
def test_length_limits_are_enforced(limits: codec.Limits, value: Any, reason: str) -> None:
    data = codec.encode(value)
    with refused(MalformedInput) as info:
        codec.decode(data, limits=limits)
    assert reason in info.value.reason  # type: ignore[attr-defined]


def test_values_at_the_length_limits_are_accepted() -> None:
    limits = codec.Limits(max_array_len=3, max_map_len=1, max_str_len=9, max_bin_len=2)
    value = [{"a": "ไทย"}, b"ab", [1, 2, 3]]
    assert codec.decode(codec.encode(value), limits=limits) == value


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("max_depth", [1, 4, 16])
def test_nesting_up_to_max_depth_passes_and_one_more_is_refused(max_depth: int) -> None:
    limits = codec.Limits(max_depth=max_depth)
    assert codec.decode(codec.encode(nested(max_depth)), limits=limits) == nested(max_depth)
    too_deep = msgpack.packb(nested(max_depth + 1))
    with refused(MalformedInput) as info:
        codec.decode(too_deep, limits=limits)
    assert info.value.reason == f"nesting deeper than {max_depth}"  # type: ignore[attr-defined]
    with refused(MalformedInput):
        codec.encode(nested(max_depth + 1), limits=limits)


def test_maps_count_towards_nesting() -> None:
    limits = codec.Limits(max_depth=2)
    assert codec.decode(codec.encode({"a": [1]}), limits=limits) == {"a": [1]}
    with refused(MalformedInput):
        codec.decode(msgpack.packb({"a": [[1]]}), limits=limits)


# --- refusals when encoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1.5, "type float is not allowed"),
        (bytearray(b"x"), "type bytearray is not allowed"),
        ({1, 2}, "type set is not allowed"),
        ({1: "x"}, "map key is not a string"),
        ({b"k": "x"}, "map key is not a string"),
        (2**64, "integer out of 64-bit range"),
        (-(2**63) - 1, "integer out of 64-bit range"),
        (THAI_OUT_OF_ORDER, "text is not in Unicode NFC"),
        ([{"k": LATIN_DECOMPOSED}], "text is not in Unicode NFC"),
        (nested(17), "nesting deeper than 16"),
    ],
)
def test_encode_refuses_values_outside_the_model(value: Any, reason: str) -> None:
    with refused(MalformedInput) as info:
        codec.encode(value)
    assert info.value.reason == reason  # type: ignore[attr-defined]


# --- typed field helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "reason"),
    [
        (lambda: codec.array("x", "f"), "f: expected an array"),
        (lambda: codec.array([1, 2], "f", 3), "f: expected 3 items, got 2"),
        (lambda: codec.array([1, 2], "f", max_len=1), "f: more than 1 items"),
        (lambda: codec.bin_("x", "f"), "f: expected bytes"),
        (lambda: codec.bin_(b"ab", "f", 3), "f: expected 3 bytes, got 2"),
        (lambda: codec.int_(True, "f"), "f: expected an integer"),
        (lambda: codec.int_(-1, "f"), "f: -1 outside 0..9223372036854775807"),
        (lambda: codec.str_(b"x", "f"), "f: expected text"),
        (lambda: codec.str_("ไทย", "f", max_len=2), "f: longer than 2 characters"),
        (lambda: codec.literal(1, "f", True), "f: expected True"),
        (lambda: codec.literal("1", "f", 1), "f: expected 1"),
        (lambda: codec.sorted_unique(["b", "a"], "f"), "f: not sorted or has duplicates"),
        (lambda: codec.sorted_unique(["a", "a"], "f"), "f: not sorted or has duplicates"),
        (lambda: codec.sorted_unique([1, "a"], "f"), "f: not sorted or has duplicates"),
    ],
)
def test_field_helpers_name_the_field(check: Any, reason: str) -> None:
    with refused(MalformedInput) as info:
        check()
    assert info.value.reason == reason

"""Canonical msgpack: the one codec every CaseBridge structure goes through.

Invariants:
- The size limit is checked before a byte is decoded; length and depth limits bound the rest.
- Only nil, bool, int (64-bit), bin, str and arrays and maps of them exist. No floats, no
  extension types, no timestamps.
- Map keys are strings, unique, and sorted by their encoded bytes; strings are valid UTF-8 in
  Unicode NFC. Every value uses its shortest encoding. Decoding re-encodes and compares, so
  exactly one byte string stands for each value and hashes over it are stable.
- Every failure is `MalformedInput`, with a precise reason.

The field helpers (`array`, `bin_`, `int_`, `str_`, ...) turn a decoded value into typed
fields and raise `MalformedInput` naming the field, so parsers stay short and strict.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import msgpack

from protocol.errors import MalformedInput

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds applied while decoding. The defaults fit every header-sized structure."""

    max_bytes: int = 1 << 20
    max_depth: int = 16
    max_str_len: int = 1 << 16
    max_bin_len: int = 1 << 20
    max_array_len: int = 4096
    max_map_len: int = 256


DEFAULT_LIMITS = Limits()


def _fail(reason: str) -> NoReturn:
    raise MalformedInput(reason=reason)


def _check(value: Any, depth: int, limits: Limits) -> bool:
    """Walk a value: allowed types only, NFC strings, depth bound. True if it holds a map.

    The checks and their order (so the first failure and its reason) are those of a plain
    recursive walk that checks the depth of every value; scalars of the exact built-in types
    are checked inline in their container's loop rather than by a call each.
    """
    if depth > limits.max_depth:
        _fail(f"nesting deeper than {limits.max_depth}")
    kind = type(value)
    if kind is list or kind is tuple:
        return _check_items(value, depth + 1, limits)
    if kind is dict:
        _check_map(value, depth + 1, limits)
        return True
    if value is None or isinstance(value, bool | bytes):
        return False
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            _fail("integer out of 64-bit range")
        return False
    if isinstance(value, str):
        if not value.isascii() and not unicodedata.is_normalized("NFC", value):
            _fail("text is not in Unicode NFC")
        return False
    if isinstance(value, list | tuple):
        return _check_items(value, depth + 1, limits)
    if isinstance(value, dict):
        _check_map(value, depth + 1, limits)
        return True
    _fail(f"type {type(value).__name__} is not allowed")


def _check_items(items: Sequence[Any], depth: int, limits: Limits) -> bool:
    """`_check` of each item at `depth`; ASCII text (always NFC), bytes and in-range ints inline."""
    if items and depth > limits.max_depth:
        _fail(f"nesting deeper than {limits.max_depth}")
    has_map = False
    for item in items:
        kind = type(item)
        if kind is bytes or (kind is str and item.isascii()) or item is None or kind is bool:
            continue
        if kind is int:
            if not INT_MIN <= item <= INT_MAX:
                _fail("integer out of 64-bit range")
        elif kind is list or kind is tuple:
            # The item's own depth is within the bound (checked above), so straight to its items.
            has_map = _check_items(item, depth + 1, limits) or has_map
        elif _check(item, depth, limits):
            has_map = True
    return has_map


def _check_map(value: dict[Any, Any], depth: int, limits: Limits) -> None:
    for key, item in value.items():
        if not isinstance(key, str):
            _fail("map key is not a string")
        _check(key, depth, limits)
        _check(item, depth, limits)


def _sorted_maps(value: Any) -> Any:
    if isinstance(value, dict):
        items = sorted(
            ((msgpack.packb(k, use_bin_type=True), k, v) for k, v in value.items()),
            key=lambda t: t[0],
        )
        return {k: _sorted_maps(v) for _, k, v in items}
    if isinstance(value, list | tuple):
        return [_sorted_maps(v) for v in value]
    return value


def _maps_sorted(value: Any) -> bool:
    """Whether every map in a decoded value lists its keys in encoded-byte order (keys are
    unique and their encodings distinct, so this is the order `_sorted_maps` would give)."""
    if type(value) is dict:
        encoded = [msgpack.packb(k, use_bin_type=True) for k in value]
        if any(a >= b for a, b in itertools.pairwise(encoded)):
            return False
        return all(_maps_sorted(v) for v in value.values())
    if type(value) is list:
        return all(_maps_sorted(v) for v in value if type(v) is list or type(v) is dict)
    return True


def _pack(value: Any) -> bytes:
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True)
    except (ValueError, TypeError, OverflowError) as e:
        raise MalformedInput(reason=f"cannot encode: {e}") from e
    return data


def encode(value: Any, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Encode a value canonically. Raises `MalformedInput` for a value outside the model."""
    has_map = _check(value, 0, limits)
    return _pack(_sorted_maps(value) if has_map else value)


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in pairs:
        if key in out:
            _fail(f"duplicate map key {key!r}")
        out[key] = value
    return out


def _no_ext(code: int, data: bytes) -> NoReturn:
    _fail(f"extension type {code} is not allowed")


def decode(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode exactly one canonical value from `data`, or raise `MalformedInput`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        _fail("input is not bytes")
    if len(data) > limits.max_bytes:
        _fail(f"{len(data)} bytes exceeds the limit of {limits.max_bytes}")
    if len(data) == 0:
        _fail("empty input")
    data = bytes(data)
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            object_pairs_hook=_pairs,
            ext_hook=_no_ext,
            timestamp=0,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
        )
    except MalformedInput:
        raise
    except msgpack.ExtraData as e:
        raise MalformedInput(reason="trailing bytes after the value") from e
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as e:
        raise MalformedInput(reason=f"undecodable msgpack ({type(e).__name__} {e})".replace(" )", ")")) from e
    except Exception as e:  # msgpack raises several internal types; all mean the same here
        raise MalformedInput(reason=f"undecodable msgpack: {type(e).__name__}") from e
    # Canonical means: re-encoding gives the input back. A decoded value keeps its maps in their
    # wire order, so that is the same as its plain encoding giving the input back with every
    # map's keys already in sorted order (two orders of distinct keys never encode alike).
    has_map = _check(value, 0, limits)
    if _pack(value) != data or (has_map and not _maps_sorted(value)):
        _fail("not in canonical encoding")
    return value


# --- typed field access ----------------------------------------------------------------------


def array(value: Any, field: str, length: int | None = None, *, max_len: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        _fail(f"{field}: expected an array")
    if length is not None and len(value) != length:
        _fail(f"{field}: expected {length} items, got {len(value)}")
    if max_len is not None and len(value) > max_len:
        _fail(f"{field}: more than {max_len} items")
    return value


def bin_(value: Any, field: str, length: int | None = None, *, max_len: int | None = None) -> bytes:
    if not isinstance(value, bytes):
        _fail(f"{field}: expected bytes")
    if length is not None and len(value) != length:
        _fail(f"{field}: expected {length} bytes, got {len(value)}")
    if max_len is not None and len(value) > max_len:
        _fail(f"{field}: more than {max_len} bytes")
    return value


def int_(value: Any, field: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{field}: expected an integer")
    if not lo <= value <= hi:
        _fail(f"{field}: {value} outside {lo}..{hi}")
    return value


def str_(value: Any, field: str, *, max_len: int = 4096, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        _fail(f"{field}: expected text")
    if len(value) > max_len:
        _fail(f"{field}: longer than {max_len} characters")
    if pattern is not None and not pattern.fullmatch(value):
        _fail(f"{field}: {value!r} does not match {pattern.pattern}")
    return value


def optional_str(value: Any, field: str, *, max_len: int = 4096) -> str | None:
    return None if value is None else str_(value, field, max_len=max_len)


def optional_int(value: Any, field: str, lo: int = 0, hi: int = 2**63 - 1) -> int | None:
    return None if value is None else int_(value, field, lo, hi)


def literal(value: Any, field: str, expected: str | int) -> None:
    if type(value) is not type(expected) or value != expected:
        _fail(f"{field}: expected {expected!r}")


def sorted_unique(values: Sequence[Any], field: str) -> None:
    """Refuse lists that are not strictly increasing: one order, no duplicates."""
    for a, b in itertools.pairwise(values):
        try:
            ordered = a < b
        except TypeError:  # values of types that do not compare (text and a number, say)
            ordered = False
        if not ordered:
            _fail(f"{field}: not sorted or has duplicates")


def nfc(text: str) -> str:
    """Normalise text to NFC. Every text entering CaseBridge passes through here."""
    return unicodedata.normalize("NFC", text)

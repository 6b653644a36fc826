"""Parsing what handlers take from paths, queries and headers; every failure is an input error
naming the parameter."""

from __future__ import annotations

import base64
import re

from aiohttp import web

from protocol.errors import InvalidField

_HEX_ID = re.compile(r"[0-9a-f]{32}")
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
# A byte position never needs more digits than this (2**63 - 1 has 19); a longer one is absurd,
# and refusing it early keeps int() from working on (or refusing) thousands of digits.
MAX_RANGE_DIGITS = 19


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def envelope_id(request: web.Request) -> bytes:
    text = request.match_info["envelope_id"]
    if not _HEX_ID.fullmatch(text):
        raise InvalidField("envelope_id", "32 lowercase hex digits")
    return bytes.fromhex(text)


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise InvalidField(name, f"a whole number from {lo} to {hi}")
    value = int(text)
    if not lo <= value <= hi:
        raise InvalidField(name, f"a whole number from {lo} to {hi}")
    return value


def require_content_type(request: web.Request, expected: str) -> None:
    if request.content_type != expected:
        raise InvalidField("Content-Type", expected)


def byte_range(header: str | None, length: int) -> tuple[int, int] | None:
    """`(start, end)` (end exclusive) for a single `bytes=` range, None to send everything.

    Per RFC 9110, a Range header that does not parse, or asks for several ranges, is ignored.
    Raises `ValueError` for a well-formed range that lies outside the part (answer 416), and
    `InvalidField` (400) for a position longer than `MAX_RANGE_DIGITS` digits.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if len(first) > MAX_RANGE_DIGITS or len(last) > MAX_RANGE_DIGITS:
        raise InvalidField("Range", f"byte positions of at most {MAX_RANGE_DIGITS} digits")
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise ValueError("empty suffix range")
        return max(0, length - suffix), length
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= length:
        raise ValueError("range starts after the end")
    return start, length if not last else min(int(last) + 1, length)

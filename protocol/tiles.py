"""C2SP tlog-tiles: the Merkle tree served as static tiles of hashes and bundles of entries.

Sans-I/O. A hash tile at tile level L holds up to 256 consecutive node hashes of tree level 8L;
an entry bundle holds up to 256 leaf entries, each prefixed with its uint16 big-endian length.
Paths follow c2sp.org/tlog-tiles exactly (`tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`,
N written in groups of three digits as `x001/x234/067`); parsing accepts only that spelling.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.errors import InvalidField, MalformedInput
from protocol.merkle import HASH_SIZE, MAX_SIZE, root_from_leaf_hashes
from protocol.merkle import check_size as _check_size

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_ENTRY_BYTES = 0xFFFF


@dataclass(frozen=True, slots=True)
class TileSpan:
    """Where a node's hash comes from: `count` hashes from `start` in tile (level, index)."""

    level: int
    index: int
    start: int
    count: int


@dataclass(frozen=True, slots=True)
class TilePath:
    """A parsed `tile/<L>/<N>[.p/<W>]` (level is None for `tile/entries/<N>[.p/<W>]`)."""

    level: int | None
    index: int
    width: int


def node_tile(level: int, index: int) -> TileSpan:
    """The tile holding the hashes node (level, index) is computed from (itself if level % 8 == 0)."""
    _check_size(level, "level")
    _check_size(index, "index")
    sub = level % TILE_HEIGHT
    first = index << sub
    return TileSpan(level // TILE_HEIGHT, first >> TILE_HEIGHT, first % TILE_WIDTH, 1 << sub)


def hash_from_tile(level: int, index: int, tile: Sequence[bytes]) -> bytes:
    """The hash of node (level, index) from the decoded hashes of its tile (`node_tile`)."""
    span = node_tile(level, index)
    if span.start + span.count > len(tile):
        raise InvalidField("tile", f"at least {span.start + span.count} hashes for node ({level}, {index})")
    return root_from_leaf_hashes(tile[span.start : span.start + span.count])


def tile_count(size: int, level: int) -> tuple[int, int]:
    """For a tree of `size` leaves: how many full tiles at tile `level`, and the partial tile's width."""
    _check_size(size, "size")
    _check_level(level)
    hashes = size >> (TILE_HEIGHT * level)
    return hashes // TILE_WIDTH, hashes % TILE_WIDTH


def tile_index_path(index: int) -> str:
    """`1234067` -> `x001/x234/067`: three-digit elements, all but the last prefixed with x."""
    _check_size(index, "index")
    elements = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        elements.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(elements))


def _check_level(level: int) -> None:
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 63:
        raise InvalidField("level", "0..63")


def _check_width(width: int) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= TILE_WIDTH:
        raise InvalidField("width", f"1..{TILE_WIDTH}")


def _width_suffix(width: int) -> str:
    _check_width(width)
    return "" if width == TILE_WIDTH else f".p/{width}"


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    _check_level(level)
    return f"tile/{level}/{tile_index_path(index)}{_width_suffix(width)}"


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    return f"tile/entries/{tile_index_path(index)}{_width_suffix(width)}"


_TILE_PATH = re.compile(
    r"tile/(entries|0|[1-9]|[1-5][0-9]|6[0-3])/((?:x[0-9]{3}/)*)([0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?",
    re.ASCII,
)


def parse_tile_path(path: str) -> TilePath:
    """Parse a tile or entry-bundle path strictly (the canonical spelling only)."""
    match = _TILE_PATH.fullmatch(path) if len(path) <= 96 else None
    if match is None:
        raise MalformedInput(reason=f"not a tlog-tiles path: {path[:80]!r}")
    kind, upper, last, width_text = match.groups()
    digits = upper.replace("x", "").replace("/", "") + last
    index = int(digits)
    width = int(width_text) if width_text else TILE_WIDTH
    if index > MAX_SIZE or (width_text and width >= TILE_WIDTH) or upper.startswith("x000"):
        raise MalformedInput(reason=f"not a canonical tlog-tiles path: {path[:80]!r}")
    return TilePath(None if kind == "entries" else int(kind), index, width)


def encode_hash_tile(hashes: Sequence[bytes]) -> bytes:
    if not 1 <= len(hashes) <= TILE_WIDTH or any(len(h) != HASH_SIZE for h in hashes):
        raise InvalidField("tile", f"1..{TILE_WIDTH} hashes of {HASH_SIZE} bytes")
    return b"".join(hashes)


def decode_hash_tile(data: bytes, width: int) -> list[bytes]:
    """Split a hash tile of exactly `width` hashes."""
    _check_width(width)
    if len(data) != width * HASH_SIZE:
        raise MalformedInput(reason=f"hash tile: {len(data)} bytes, expected {width * HASH_SIZE}")
    return [bytes(data[i : i + HASH_SIZE]) for i in range(0, len(data), HASH_SIZE)]


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise InvalidField("entries", f"1..{TILE_WIDTH} entries")
    if any(len(entry) > MAX_ENTRY_BYTES for entry in entries):
        raise InvalidField("entry", f"at most {MAX_ENTRY_BYTES} bytes")
    return b"".join(len(entry).to_bytes(2, "big") + entry for entry in entries)


def decode_entry_bundle(data: bytes, width: int) -> list[bytes]:
    """Split an entry bundle of exactly `width` uint16-length-prefixed entries."""
    _check_width(width)
    entries: list[bytes] = []
    at = 0
    while at < len(data):
        if len(entries) == width or at + 2 > len(data):
            raise MalformedInput(reason=f"entry bundle: trailing bytes after entry {len(entries)}")
        end = at + 2 + int.from_bytes(data[at : at + 2], "big")
        if end > len(data):
            raise MalformedInput(reason=f"entry bundle: entry {len(entries)} is truncated")
        entries.append(bytes(data[at + 2 : end]))
        at = end
    if len(entries) != width:
        raise MalformedInput(reason=f"entry bundle: {len(entries)} entries, expected {width}")
    return entries

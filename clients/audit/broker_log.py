"""A live broker's audit log, read with requests signed by an auditor's (or operator's) key.

Routes (all under /v1/audit, docs/audit-log.md): the checkpoint, tlog-tiles hash tiles and entry
bundles, bulk entries, inclusion and consistency proofs, and the leaves naming one envelope.

Invariants:
- Nothing the broker answers is trusted here: this module only fetches and decodes strictly
  (canonical base64, exact sizes, the counts asked for); `verifier` and `trace` decide.
- Leaves are streamed a bundle (256) or a batch (at most 4096) at a time, so memory stays bounded
  whatever the log's size; every loop is bounded by the checkpoint's size.
- A damaged bundle or tile is reported as a `source` problem and the stream goes on (with the
  logged hashes standing in for lost leaves), so one bad tile does not hide the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from clients.audit.policy import Problem, ProblemKind
from clients.audit.sources import Report, SourceEntry
from clients.transport import BrokerTransport
from protocol.errors import MalformedInput, NotFound
from protocol.merkle import HASH_SIZE
from protocol.note import strict_b64decode
from protocol.tiles import (
    TILE_WIDTH,
    decode_entry_bundle,
    decode_hash_tile,
    entries_path,
    tile_path,
)

AUDIT = "/v1/audit"
MAX_ENTRIES_PER_REQUEST = 4096
FETCH_MODES = ("tiles", "entries")


@dataclass(frozen=True, slots=True)
class EnvelopeEntry:
    index: int
    kind: str
    leaf: bytes
    proof: tuple[bytes, ...] | None


@dataclass(frozen=True, slots=True)
class EnvelopeEntries:
    """The broker's answer for one envelope: its latest checkpoint and each leaf naming it."""

    checkpoint: bytes
    size: int
    entries: tuple[EnvelopeEntry, ...]


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedInput(reason=f"{field}: expected a non-negative integer")
    return value


def _hashes(value: Any, field: str) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > 64:
        raise MalformedInput(reason=f"{field}: expected a list of at most 64 hashes")
    hashes = tuple(strict_b64decode(_text(v, field), field) for v in value)
    if any(len(h) != HASH_SIZE for h in hashes):
        raise MalformedInput(reason=f"{field}: every hash is {HASH_SIZE} bytes")
    return hashes


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise MalformedInput(reason=f"{field}: expected text")
    return value


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedInput(reason=f"{field}: expected an object")
    return value


def split_entries(data: bytes) -> list[bytes]:
    """uint16 big-endian length-prefixed leaves, as /v1/audit/entries serves them."""
    leaves: list[bytes] = []
    at = 0
    while at < len(data):
        if at + 2 > len(data):
            raise MalformedInput(reason=f"entries: trailing byte after entry {len(leaves)}")
        end = at + 2 + int.from_bytes(data[at : at + 2], "big")
        if end > len(data):
            raise MalformedInput(reason=f"entries: entry {len(leaves)} is truncated")
        leaves.append(data[at + 2 : end])
        at = end
    return leaves


class BrokerAuditLog:
    """The audit routes of one broker. `fetch` is "tiles" (entry bundles with their level-0 hash
    tiles, which also name an altered leaf) or "entries" (bulk batches, fewer requests)."""

    def __init__(self, transport: BrokerTransport, *, fetch: str = "tiles") -> None:
        if fetch not in FETCH_MODES:
            raise ValueError(f"fetch is one of {FETCH_MODES}")
        self.transport = transport
        self.fetch = fetch

    @property
    def description(self) -> str:
        return f"broker {self.transport.base}"

    async def _get(self, path: str, query: dict[str, str | int] | None = None) -> bytes:
        return (await self.transport.request("GET", f"{AUDIT}/{path}", query=query)).body

    async def _json(self, path: str, query: dict[str, str | int] | None = None) -> dict[str, Any]:
        response = await self.transport.request("GET", f"{AUDIT}/{path}", query=query)
        return _object(response.json(), path)

    async def checkpoint(self) -> bytes:
        return await self._get("checkpoint")

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes] | None:
        doc = await self._json("proof/consistency", {"from": old_size, "to": new_size})
        if _int(doc.get("from"), "from") != old_size or _int(doc.get("to"), "to") != new_size:
            raise MalformedInput(reason="consistency proof: for other sizes than asked")
        return list(_hashes(doc.get("proof"), "consistency proof"))

    async def inclusion_proof(self, index: int, size: int) -> tuple[bytes, tuple[bytes, ...]]:
        """The leaf hash the broker holds at `index` and its inclusion proof in the tree of `size`."""
        doc = await self._json("proof/inclusion", {"index": index, "size": size})
        if _int(doc.get("index"), "index") != index or _int(doc.get("size"), "size") != size:
            raise MalformedInput(reason="inclusion proof: for another index or size than asked")
        leaf_hash = strict_b64decode(_text(doc.get("leaf_hash"), "leaf_hash"), "leaf_hash")
        return leaf_hash, _hashes(doc.get("proof"), "inclusion proof")

    async def envelope(self, envelope_id: bytes) -> EnvelopeEntries:
        doc = await self._json(f"envelopes/{envelope_id.hex()}")
        entries = []
        listed = doc.get("entries")
        if not isinstance(listed, list) or len(listed) > MAX_ENTRIES_PER_REQUEST:
            raise MalformedInput(reason="envelope entries: expected a list")
        for n, raw in enumerate(listed):
            item = _object(raw, f"entries[{n}]")
            proof = item.get("proof")
            entries.append(
                EnvelopeEntry(
                    index=_int(item.get("index"), f"entries[{n}].index"),
                    kind=_text(item.get("kind"), f"entries[{n}].kind"),
                    leaf=strict_b64decode(
                        _text(item.get("leaf"), f"entries[{n}].leaf"), f"entries[{n}].leaf"
                    ),
                    proof=None if proof is None else _hashes(proof, f"entries[{n}].proof"),
                )
            )
        note = _text(doc.get("checkpoint"), "checkpoint").encode("utf-8")
        return EnvelopeEntries(note, _int(doc.get("size"), "size"), tuple(entries))

    async def tlog_proof(self, envelope_id: bytes) -> bytes:
        return await self._get(f"envelopes/{envelope_id.hex()}/tlog-proof")

    async def entries(self, start: int, end: int, report: Report) -> AsyncIterator[list[SourceEntry]]:
        stream = (
            self._tiles(start, end, report) if self.fetch == "tiles" else self._batches(start, end, report)
        )
        async for item in stream:
            yield item

    async def _batches(self, start: int, end: int, report: Report) -> AsyncIterator[list[SourceEntry]]:
        at = start
        while at < end:
            count = min(MAX_ENTRIES_PER_REQUEST, end - at)
            try:
                leaves = split_entries(await self._get("entries", {"start": at, "count": count}))
            except MalformedInput as e:
                report(Problem(ProblemKind.SOURCE, f"entries from {at}: {e.reason}", at))
                return
            if not leaves or len(leaves) > count:
                report(
                    Problem(
                        ProblemKind.SOURCE, f"entries from {at}: {len(leaves)} entries for {count} asked", at
                    )
                )
                return
            yield [(leaf, None) for leaf in leaves]
            at += len(leaves)

    async def _tiles(self, start: int, end: int, report: Report) -> AsyncIterator[list[SourceEntry]]:
        first = start // TILE_WIDTH
        for bundle in range(first, (end + TILE_WIDTH - 1) // TILE_WIDTH):
            width = min(TILE_WIDTH, end - bundle * TILE_WIDTH)
            hashes = await self._hash_tile(bundle, width, report)
            leaves = await self._entry_bundle(bundle, width, report)
            skip = start - bundle * TILE_WIDTH if bundle == first else 0
            yield [
                (None if leaves is None else leaves[offset], None if hashes is None else hashes[offset])
                for offset in range(skip, width)
            ]

    async def _hash_tile(self, index: int, width: int, report: Report) -> list[bytes] | None:
        path = tile_path(0, index, width)
        try:
            return decode_hash_tile(await self._get(path), width)
        except (MalformedInput, NotFound) as e:
            report(Problem(ProblemKind.SOURCE, f"hash tile {path}: {e.reason}", index * TILE_WIDTH))
            return None

    async def _entry_bundle(self, index: int, width: int, report: Report) -> list[bytes] | None:
        path = entries_path(index, width)
        try:
            return decode_entry_bundle(await self._get(path), width)
        except (MalformedInput, NotFound) as e:
            report(Problem(ProblemKind.SOURCE, f"entry bundle {path}: {e.reason}", index * TILE_WIDTH))
            return None

    async def broker_certificate(self) -> bytes | None:
        """The broker's own certificate from its directory (trusted only through pinned roots)."""
        response = await self.transport.request("GET", "/v1/directory")
        raw = _object(response.json(), "directory").get("broker")
        return None if raw is None else strict_b64decode(_text(raw, "directory.broker"), "directory.broker")

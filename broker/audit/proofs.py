"""What the broker serves from its audit log: the published checkpoint, proofs, tiles, entries,
and one envelope's trace, each checked against the caller's roles.

Invariants:
- Everything is relative to the published checkpoint (the latest signed one, with every
  cosignature collected for its tree head): no proof, tile or entry beyond its size is served,
  except that an envelope's trace lists its newer entries without a proof.
- Proofs come from stored nodes (one query each); leaves are checked against their stored leaf
  hashes before they are handed out.
- Auditors and operators see the whole log. An agency sees the published checkpoint and
  consistency proofs (hashes only), and the entries and inclusion proofs of envelopes it sent
  or received and of leaves that name it; anything else is `NotFound` or `Forbidden`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.audit.records import StoredCheckpoint
from broker.audit.store import AuditStore
from protocol import auditlog
from protocol.certificate import AgencyCertificate, Role
from protocol.errors import CaseBridgeError, Forbidden, InvalidField, NotFound, StorageUnavailable
from protocol.merkle import NodeId
from protocol.note import NoteSignature, add_signatures
from protocol.tiles import TILE_WIDTH, TilePath, encode_entry_bundle, encode_hash_tile
from protocol.tlog_proof import TlogProof

MAX_EXPORT_ENTRIES = 4096


class CheckpointPending(StorageUnavailable):
    title = "Not yet checkpointed"
    remedy = "The audit log has not signed a checkpoint covering this yet; retry in a few seconds."


@dataclass(frozen=True, slots=True)
class Published:
    """The latest checkpoint and its note with every cosignature collected for its tree head."""

    checkpoint: StoredCheckpoint
    note: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return self.checkpoint.size


@dataclass(frozen=True, slots=True)
class TraceEntry:
    index: int
    kind: str
    leaf: bytes = field(repr=False)
    proof: tuple[bytes, ...] | None
    """Inclusion proof to the published checkpoint; None if the entry is newer than it."""


@dataclass(frozen=True, slots=True)
class EnvelopeTrace:
    published: Published
    entries: tuple[TraceEntry, ...]


def sees_whole_log(caller: AgencyCertificate) -> bool:
    return caller.has_role(Role.AUDITOR) or caller.has_role(Role.OPERATOR)


def _parsed(raw: bytes) -> auditlog.Leaf | None:
    try:
        return auditlog.parse_leaf(raw)
    except CaseBridgeError:
        return None


class AuditReader:
    def __init__(self, audit: AuditStore) -> None:
        self._audit = audit

    async def published(self) -> Published:
        latest = await self._audit.latest_checkpoint()
        if latest is None:
            raise CheckpointPending(reason="no checkpoint signed yet")
        cosignatures = await self._audit.cosignatures(latest)
        if not cosignatures:
            return Published(latest, latest.note)
        lines = [NoteSignature.parse(c.line) for c in sorted(cosignatures, key=lambda c: c.witness)]
        return Published(latest, add_signatures(latest.note, lines))

    async def _within(self, size: int, what: str) -> Published:
        published = await self.published()
        if not 0 < size <= published.size:
            raise InvalidField(what, f"a tree size from 1 to {published.size}, the latest checkpoint's")
        return published

    async def _parties(self, leaf: auditlog.Leaf) -> set[str]:
        """The agencies a leaf concerns: those it names, and the parties of envelopes it names."""
        found = set(auditlog.agencies(leaf))
        for envelope_id in auditlog.envelope_ids(leaf):
            for _, raw in await self._audit.envelope_leaves(envelope_id):
                parsed = _parsed(raw)
                if parsed is not None and parsed.kind is auditlog.LeafKind.ENVELOPE_ACCEPTED:
                    found.update(auditlog.agencies(parsed))
        return found

    async def inclusion(self, caller: AgencyCertificate, index: int, size: int) -> tuple[bytes, list[bytes]]:
        """The stored leaf hash at `index` and its inclusion proof in the tree of `size` leaves."""
        await self._within(size, "size")
        if index >= size:
            raise InvalidField("index", f"below size ({size})")
        if not sees_whole_log(caller):
            leaf = _parsed((await self._audit.checked_leaves(index, index + 1))[0])
            if leaf is None or caller.agency_id not in await self._parties(leaf):
                raise Forbidden(reason=f"entry {index} concerns no envelope of {caller.agency_id}")
        (leaf_hash,) = await self._audit.node_hashes([NodeId(0, index)])
        return leaf_hash, await self._audit.inclusion_proof(index, size)

    async def consistency(self, size1: int, size2: int) -> list[bytes]:
        await self._within(size2, "to")
        if not 0 < size1 <= size2:
            raise InvalidField("from", f"a tree size from 1 to {size2}")
        return await self._audit.consistency_proof(size1, size2)

    async def tile(self, path: TilePath) -> bytes:
        """A hash tile or an entry bundle (c2sp.org/tlog-tiles) within the published tree."""
        size = (await self.published()).size
        first = path.index * TILE_WIDTH
        end = first + path.width
        if path.level is None:
            if end > size:
                raise NotFound(reason="this entry bundle is beyond the latest checkpoint")
            return encode_entry_bundle(await self._audit.checked_leaves(first, end))
        level = 8 * path.level
        if level > 63 or end > size >> level:
            raise NotFound(reason="this tile is beyond the latest checkpoint")
        return encode_hash_tile(await self._audit.level_hashes(level, first, end))

    async def entries(self, start: int, count: int) -> tuple[bytes, int]:
        """Entries from `start` (uint16-length-prefixed), at most `count`, within the published
        tree; and that tree's size."""
        size = (await self.published()).size
        if not 1 <= count <= MAX_EXPORT_ENTRIES:
            raise InvalidField("count", f"a whole number from 1 to {MAX_EXPORT_ENTRIES}")
        if start > size:
            raise InvalidField("start", f"at most the latest checkpoint's size ({size})")
        leaves = await self._audit.checked_leaves(start, min(start + count, size))
        return b"".join(len(leaf).to_bytes(2, "big") + leaf for leaf in leaves), size

    async def envelope(self, caller: AgencyCertificate, envelope_id: bytes) -> EnvelopeTrace:
        """Every entry naming the envelope, with inclusion proofs to the published checkpoint."""
        stored = await self._audit.envelope_leaves(envelope_id)
        parties: set[str] = set()
        for _, raw in stored:
            leaf = _parsed(raw)
            if leaf is not None and leaf.kind is auditlog.LeafKind.ENVELOPE_ACCEPTED:
                parties.update(auditlog.agencies(leaf))
        if not stored or not (sees_whole_log(caller) or caller.agency_id in parties):
            raise NotFound(reason="no such envelope in the audit log for this caller")
        published = await self.published()
        entries = []
        for index, raw in stored:
            leaf = _parsed(raw)
            if leaf is None or envelope_id not in auditlog.envelope_ids(leaf):
                continue
            proof = None
            if index < published.size:
                proof = tuple(await self._audit.inclusion_proof(index, published.size))
            entries.append(TraceEntry(index, str(leaf.kind), raw, proof))
        return EnvelopeTrace(published, tuple(entries))

    async def tlog_proof(self, caller: AgencyCertificate, envelope_id: bytes) -> bytes:
        """c2sp.org/tlog-proof@v1 of the envelope's `envelope_accepted` entry."""
        trace = await self.envelope(caller, envelope_id)
        for entry in trace.entries:
            if entry.kind == auditlog.LeafKind.ENVELOPE_ACCEPTED:
                if entry.proof is None:
                    raise CheckpointPending(reason=f"entry {entry.index} is not checkpointed yet")
                return TlogProof(entry.index, entry.proof, trace.published.note).encode()
        raise NotFound(reason="the envelope has no acceptance entry")

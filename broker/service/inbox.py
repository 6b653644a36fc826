"""Reading: inbox listings with long polls, header and part downloads, envelope status.

Invariants:
- An agency sees only envelopes it sent or is a recipient of; anything else is `NotFound`, the
  same answer as for an id that never existed, so ids cannot be probed.
- A recipient sees only its own entry and receipts in an envelope's status; its sender sees all.
- A long poll holds at most `MAX_WAIT_SECONDS`; it returns as soon as something is there.
- Ciphertext is served only while kept: after purging, downloads are `NotFound`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from broker.service.context import Services
from broker.service.notify import Topic
from broker.storage.records import EnvelopeRecord, InboxEntry, ReceiptRecord
from protocol.errors import NotFound

MAX_WAIT_SECONDS = 60
MAX_LIMIT = 500
T = TypeVar("T")


def _absent(what: str) -> NotFound:
    return NotFound(reason=f"no such {what} for this agency")


async def long_poll(
    services: Services,
    agency_id: str,
    topic: Topic,
    wait_seconds: int,
    query: Callable[[], Awaitable[list[T]]],
) -> list[T]:
    """Run `query`; if it finds nothing, wait for a hint on `topic` (at most `wait_seconds`, and
    not at all once the broker is shutting down)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait_seconds, MAX_WAIT_SECONDS)
    seen = services.notifier.generation(agency_id, topic)
    found = await query()
    while not found and not services.notifier.closed and loop.time() < deadline:
        await services.notifier.wait(agency_id, topic, seen, deadline - loop.time())
        seen = services.notifier.generation(agency_id, topic)
        found = await query()
    return found


@dataclass(frozen=True, slots=True)
class PartDownload:
    """One part's ciphertext, ready to stream (whole or a range)."""

    length: int
    digest: bytes
    read: Callable[[int, int], AsyncIterator[bytes]]


@dataclass(frozen=True, slots=True)
class EnvelopeStatus:
    envelope: EnvelopeRecord
    entries: list[InboxEntry]
    receipts: list[ReceiptRecord]


class Inbox:
    def __init__(self, services: Services) -> None:
        self._s = services

    async def listing(self, agency_id: str, after: int, limit: int, wait_seconds: int) -> list[InboxEntry]:
        limit = max(1, min(limit, MAX_LIMIT))
        delivery = self._s.store.delivery
        return await long_poll(
            self._s, agency_id, Topic.INBOX, wait_seconds, lambda: delivery.inbox(agency_id, after, limit)
        )

    async def _entry(self, agency_id: str, envelope_id: bytes) -> InboxEntry:
        entry = await self._s.store.delivery.inbox_entry(envelope_id, agency_id)
        if entry is None:
            raise _absent("envelope")
        if entry.envelope.purged:
            raise NotFound(reason="the envelope's ciphertext was purged after its retention time")
        return entry

    async def header(self, agency_id: str, envelope_id: bytes) -> tuple[bytes, bytes]:
        """The header bytes and this recipient's `accepted` receipt."""
        await self._entry(agency_id, envelope_id)
        header = await self._s.store.delivery.header(envelope_id)
        if header is None:
            raise NotFound(reason="the envelope's ciphertext was purged after its retention time")
        accepted = [
            r.raw
            for r in await self._s.store.delivery.receipts_for(envelope_id)
            if r.kind == "accepted" and r.recipient_id == agency_id
        ]
        if not accepted:
            raise AssertionError("every inbox entry has its accepted receipt")
        return header, accepted[0]

    async def part(self, agency_id: str, envelope_id: bytes, part_no: int) -> PartDownload:
        entry = await self._entry(agency_id, envelope_id)
        parts = {p.part_no: p for p in entry.envelope.parts}
        part = parts.get(part_no)
        if part is None:
            raise _absent("part")
        store = self._s.store
        if part.stored_inline:
            data = await store.delivery.inline_part(envelope_id, part_no)
            if data is None:
                raise NotFound(reason="the envelope's ciphertext was purged after its retention time")

            async def read_inline(start: int, end: int) -> AsyncIterator[bytes]:
                yield data[start:end]

            return PartDownload(part.length, part.digest, read_inline)
        envelope_hash = entry.envelope.envelope_hash
        if await store.blobs.size(envelope_hash, part_no) != part.length:
            raise NotFound(reason="the part's ciphertext is not stored (purged or lost)")

        def read_blob(start: int, end: int) -> AsyncIterator[bytes]:
            return store.blobs.read(envelope_hash, part_no, start, end)

        return PartDownload(part.length, part.digest, read_blob)

    async def status(self, agency_id: str, envelope_id: bytes) -> EnvelopeStatus:
        delivery = self._s.store.delivery
        envelope = await delivery.envelope(envelope_id)
        if envelope is None:
            raise _absent("envelope")
        entries = await delivery.inbox_entries(envelope_id)
        receipts = await delivery.receipts_for(envelope_id)
        if envelope.sender_id != agency_id:
            entries = [e for e in entries if e.recipient_id == agency_id]
            if not entries:
                raise _absent("envelope")
            receipts = [r for r in receipts if r.recipient_id == agency_id]
        return EnvelopeStatus(envelope, entries, receipts)

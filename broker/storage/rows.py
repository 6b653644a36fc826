"""Rows to records: the column lists and conversions both storage engines share.

The SQL around them differs per engine (placeholders, array parameters, async or not); what a
row of `envelopes`, `parts`, `inbox` or `receipts` means does not, so it is written once here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from broker.storage.records import EnvelopeRecord, InboxEntry, InboxState, PartRecord, ReceiptRecord

ENVELOPE_COLUMNS = (
    "e.envelope_id, e.envelope_hash, e.sender_id, e.sender_key_id, e.header_length, e.accepted_at, "
    "e.expires_at, e.accepted_index, e.purged_at"
)
RECEIPT_COLUMNS = "sender_id, seq, envelope_id, recipient_id, kind, raw, recorded_at, log_index"
PART_COLUMNS = "envelope_id, part_no, length, digest, stored_inline"
OPEN_STATES = "('pending', 'delivered')"
INBOX_COLUMNS = f"i.recipient_id, i.cursor, i.state, {ENVELOPE_COLUMNS}"
"""An inbox row followed by its envelope's columns (see `inbox_entries`)."""


class Row(Protocol):
    """What both drivers return for a row: a sqlite3 tuple or an asyncpg Record."""

    def __getitem__(self, index: int, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


def envelope_from_row(row: Sequence[Any] | Row, parts: tuple[PartRecord, ...]) -> EnvelopeRecord:
    """An `ENVELOPE_COLUMNS` row and the envelope's parts."""
    return EnvelopeRecord(
        envelope_id=bytes(row[0]),
        envelope_hash=bytes(row[1]),
        sender_id=str(row[2]),
        sender_key_id=bytes(row[3]),
        header_length=int(row[4]),
        parts=parts,
        accepted_at=int(row[5]),
        expires_at=int(row[6]),
        accepted_index=int(row[7]),
        purged_at=None if row[8] is None else int(row[8]),
    )


def receipt_from_row(row: Row) -> ReceiptRecord:
    """A `RECEIPT_COLUMNS` row."""
    return ReceiptRecord(
        sender_id=str(row[0]),
        seq=int(row[1]),
        envelope_id=bytes(row[2]),
        recipient_id=str(row[3]),
        kind=str(row[4]),
        raw=bytes(row[5]),
        recorded_at=int(row[6]),
        log_index=int(row[7]),
    )


def group_parts(envelope_ids: Iterable[bytes], rows: Iterable[Row]) -> dict[bytes, tuple[PartRecord, ...]]:
    """`PART_COLUMNS` rows (ordered by envelope and part number) grouped per envelope."""
    found: dict[bytes, list[PartRecord]] = {bytes(e): [] for e in envelope_ids}
    for r in rows:
        found[bytes(r[0])].append(PartRecord(r[1], r[2], bytes(r[3]), bool(r[4])))
    return {k: tuple(v) for k, v in found.items()}


def inbox_entries(rows: Iterable[Row], parts: Mapping[bytes, tuple[PartRecord, ...]]) -> list[InboxEntry]:
    """`INBOX_COLUMNS` rows with their envelopes' parts."""
    return [
        InboxEntry(r[0], r[1], InboxState(r[2]), envelope_from_row(tuple(r)[3:], parts[bytes(r[3])]))
        for r in rows
    ]

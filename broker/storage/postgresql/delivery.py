"""Envelopes, parts, inboxes and receipts in PostgreSQL, shared by every replica.

Inbox cursors and feed sequence numbers increase per recipient and per sender (MAX + 1), so
neither reveals how much traffic other agencies have. Every change that allocates one also
appends to the audit log, so it is made by the replica's `SequencedWriter` (under the audit
sequencer, batched with other changes into one transaction): allocations from all replicas are
serialised, so two never take the same number, and an envelope id submitted to two replicas at
once is accepted once (the second finds the first). An acceptance and a receipt are one
statement each that checks and writes (`delivery_statements`); their inbox and receipt changes
are announced to the other replicas when their batch commits. `open_recipients` changes in the
same statement as the entry's state.

Reads need no transaction: what they read together (an envelope and its parts, an entry and its
envelope, an acceptance's receipts and cursors) is committed together and never changed after,
except the purge columns and entry states, which a read sees as of one moment or the next.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.storage.postgresql import delivery_statements as statements
from broker.storage.postgresql.audit_appender import AuditAppender
from broker.storage.postgresql.database import Connection, Database
from broker.storage.postgresql.sequencing import SequencedWriter
from broker.storage.records import (
    Acceptance,
    EnvelopeRecord,
    InboxEntry,
    NewEnvelope,
    NewReceipt,
    PartRecord,
    ReceiptIssuer,
    ReceiptOutcome,
    ReceiptRecord,
    StoreCounts,
)
from broker.storage.rows import (
    ENVELOPE_COLUMNS,
    INBOX_COLUMNS,
    OPEN_STATES,
    PART_COLUMNS,
    RECEIPT_COLUMNS,
    envelope_from_row,
    group_parts,
    inbox_entries,
    receipt_from_row,
)
from protocol.errors import Conflict


async def _parts(conn: Connection, envelope_ids: Sequence[bytes]) -> dict[bytes, tuple[PartRecord, ...]]:
    ids = list(dict.fromkeys(bytes(e) for e in envelope_ids))
    if not ids:
        return {}
    rows = await conn.fetch(
        f"SELECT {PART_COLUMNS} FROM parts "  # noqa: S608 - constant columns
        "WHERE envelope_id = ANY($1::bytea[]) ORDER BY envelope_id, part_no",
        ids,
    )
    return group_parts(ids, rows)


async def _load_envelope(conn: Connection, envelope_id: bytes) -> EnvelopeRecord | None:
    row = await conn.fetchrow(
        f"SELECT {ENVELOPE_COLUMNS} FROM envelopes e WHERE e.envelope_id = $1",  # noqa: S608 - constant columns
        envelope_id,
    )
    if row is None:
        return None
    return envelope_from_row(tuple(row), (await _parts(conn, [envelope_id]))[envelope_id])


async def _entries(conn: Connection, where: str, *params: object) -> list[InboxEntry]:
    rows = await conn.fetch(
        f"SELECT {INBOX_COLUMNS} "  # noqa: S608 - constant fragments
        f"FROM inbox i JOIN envelopes e ON e.envelope_id = i.envelope_id WHERE {where}",
        *params,
    )
    return inbox_entries(rows, await _parts(conn, [bytes(r[3]) for r in rows]))


async def _acceptance(conn: Connection, envelope_id: bytes, *, created: bool) -> Acceptance | None:
    envelope = await _load_envelope(conn, envelope_id)
    if envelope is None:
        return None
    receipts = await conn.fetch(
        f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE envelope_id = $1 AND kind = 'accepted' "  # noqa: S608
        "ORDER BY recipient_id",
        envelope_id,
    )
    cursors = await conn.fetch(
        "SELECT recipient_id, cursor FROM inbox WHERE envelope_id = $1 ORDER BY recipient_id", envelope_id
    )
    return Acceptance(
        created=created,
        envelope=envelope,
        receipts=tuple(receipt_from_row(r) for r in receipts),
        cursors=tuple((str(r[0]), int(r[1])) for r in cursors),
    )


class PostgresDeliveryStore:
    def __init__(self, db: Database, writer: SequencedWriter) -> None:
        self._db = db
        self._writer = writer

    @staticmethod
    async def _first_acceptance(conn: Connection, new: NewEnvelope, held: bytes) -> Acceptance:
        """The first acceptance of `new`'s id, which holds the hash `held`; or `Conflict`."""
        if held != new.envelope_hash:
            raise Conflict(reason=f"envelope id {new.envelope_id.hex()} was already used for other bytes")
        first = await _acceptance(conn, new.envelope_id, created=False)
        if first is None:
            raise AssertionError("unreachable: the envelope row was just read")
        return first

    async def accept_envelope(self, new: NewEnvelope, issue: ReceiptIssuer) -> Acceptance:
        # An id already used stays used: that is answered without the sequencer (and without
        # signing receipts); a race with another replica is settled by the statement.
        async with self._db.connection() as conn:
            held = await conn.fetchval(
                "SELECT envelope_hash FROM envelopes WHERE envelope_id = $1", new.envelope_id
            )
            if held is not None:
                return await self._first_acceptance(conn, new, bytes(held))
        return await self._writer.run(statements.accept(new, issue, self._first_acceptance))

    async def acceptance(self, envelope_id: bytes) -> Acceptance | None:
        async with self._db.connection() as conn:
            return await _acceptance(conn, envelope_id, created=False)

    async def envelope(self, envelope_id: bytes) -> EnvelopeRecord | None:
        async with self._db.connection() as conn:
            return await _load_envelope(conn, envelope_id)

    async def header(self, envelope_id: bytes) -> bytes | None:
        async with self._db.connection() as conn:
            found = await conn.fetchval("SELECT header FROM envelopes WHERE envelope_id = $1", envelope_id)
        return None if found is None else bytes(found)

    async def inline_part(self, envelope_id: bytes, part_no: int) -> bytes | None:
        async with self._db.connection() as conn:
            found = await conn.fetchval(
                "SELECT inline_data FROM parts WHERE envelope_id = $1 AND part_no = $2", envelope_id, part_no
            )
        return None if found is None else bytes(found)

    async def inbox_entry(self, envelope_id: bytes, recipient_id: str) -> InboxEntry | None:
        async with self._db.connection() as conn:
            found = await _entries(
                conn, "i.envelope_id = $1 AND i.recipient_id = $2", envelope_id, recipient_id
            )
        return found[0] if found else None

    async def inbox_entries(self, envelope_id: bytes) -> list[InboxEntry]:
        async with self._db.connection() as conn:
            return await _entries(conn, "i.envelope_id = $1 ORDER BY i.recipient_id", envelope_id)

    async def inbox(self, recipient_id: str, after: int, limit: int) -> list[InboxEntry]:
        where = (
            f"i.recipient_id = $1 AND i.cursor > $2 AND i.state IN {OPEN_STATES} ORDER BY i.cursor LIMIT $3"
        )
        async with self._db.connection() as conn:
            return await _entries(conn, where, recipient_id, after, limit)

    async def record_receipt(self, receipt: NewReceipt) -> ReceiptOutcome:
        return await self._writer.run(statements.record_receipt(receipt))

    async def receipts_for(self, envelope_id: bytes) -> list[ReceiptRecord]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE envelope_id = $1 ORDER BY log_index",  # noqa: S608
                envelope_id,
            )
        return [receipt_from_row(r) for r in rows]

    async def sender_feed(self, sender_id: str, after: int, limit: int) -> list[ReceiptRecord]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE sender_id = $1 AND seq > $2 "  # noqa: S608
                "ORDER BY seq LIMIT $3",
                sender_id,
                after,
                limit,
            )
        return [receipt_from_row(r) for r in rows]

    async def expiring(self, now: int, limit: int) -> list[InboxEntry]:
        where = (
            f"e.open_recipients > 0 AND e.expires_at <= $1 AND i.state IN {OPEN_STATES} "
            "ORDER BY e.expires_at, i.recipient_id LIMIT $2"
        )
        async with self._db.connection() as conn:
            return await _entries(conn, where, now, limit)

    async def purgeable(self, limit: int) -> list[EnvelopeRecord]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {ENVELOPE_COLUMNS} FROM envelopes e "  # noqa: S608 - constant columns
                "WHERE e.open_recipients = 0 AND e.purged_at IS NULL ORDER BY e.accepted_at LIMIT $1",
                limit,
            )
            parts = await _parts(conn, [bytes(r[0]) for r in rows])
        return [envelope_from_row(tuple(r), parts[bytes(r[0])]) for r in rows]

    async def mark_purged(self, envelope_id: bytes, now: int, leaf: bytes) -> bool:
        async def purge(conn: Connection, appender: AuditAppender) -> bool:
            purgeable = await conn.fetchval(
                "SELECT 1 FROM envelopes "
                "WHERE envelope_id = $1 AND open_recipients = 0 AND purged_at IS NULL",
                envelope_id,
            )
            if purgeable is None:
                return False
            appender.append(leaf, now)
            await conn.execute(statements.PURGE, now, envelope_id)
            return True

        return await self._writer.run(purge)

    async def stored_hashes(self) -> set[bytes]:
        async with self._db.connection() as conn:
            rows = await conn.fetch("SELECT envelope_hash FROM envelopes WHERE purged_at IS NULL")
        return {bytes(r[0]) for r in rows}

    async def counts(self) -> StoreCounts:
        async with self._db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT (SELECT COUNT(DISTINCT agency_id) FROM certificates), "
                "(SELECT COUNT(*) FROM certificates), "
                "(SELECT COUNT(*) FROM envelopes WHERE purged_at IS NULL), "
                "(SELECT COUNT(*) FROM inbox WHERE state IN ('pending', 'delivered')), "
                "(SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log)"
            )
        if row is None:
            raise AssertionError("unreachable: a SELECT of scalars returns one row")
        return StoreCounts(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))

"""Envelopes, parts, inboxes and receipts in PostgreSQL, shared by every replica.

Inbox cursors and feed sequence numbers increase per recipient and per sender (MAX + 1), so
neither reveals how much traffic other agencies have. Every transaction that allocates one
also appends to the audit log, and takes the audit sequencer first: allocations from all
replicas are serialised, so two never take the same number, and an envelope id submitted to
two replicas at once is accepted once (the second finds the first). Each such transaction
announces its inbox and receipt changes, delivered to the other replicas when it commits.
`open_recipients` changes in the same transaction as the entry's state.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.storage.postgresql.audit import PostgresAuditLog
from broker.storage.postgresql.changes import announce
from broker.storage.postgresql.database import Connection, Database
from broker.storage.records import (
    Acceptance,
    Change,
    ChangeKind,
    EnvelopeRecord,
    InboxEntry,
    InboxState,
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
    def __init__(self, db: Database, audit: PostgresAuditLog, origin: str) -> None:
        self._db = db
        self._audit = audit
        self._origin = origin

    async def _insert_receipt(
        self,
        conn: Connection,
        *,
        sender_id: str,
        envelope_id: bytes,
        recipient_id: str,
        kind: str,
        raw: bytes,
        leaf: bytes,
        now: int,
    ) -> ReceiptRecord:
        log_index = await self._audit.append(conn, leaf, now)
        seq = int(
            await conn.fetchval(
                "INSERT INTO receipts (sender_id, seq, envelope_id, recipient_id, kind, raw, recorded_at, "
                "log_index) SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6, $7 FROM receipts "
                "WHERE sender_id = $1 RETURNING seq",
                sender_id,
                envelope_id,
                recipient_id,
                kind,
                raw,
                now,
                log_index,
            )
        )
        return ReceiptRecord(sender_id, seq, envelope_id, recipient_id, kind, raw, now, log_index)

    async def _accept(self, conn: Connection, new: NewEnvelope, issue: ReceiptIssuer) -> Acceptance:
        await self._audit.lock(conn)
        held = await conn.fetchval(
            "SELECT envelope_hash FROM envelopes WHERE envelope_id = $1", new.envelope_id
        )
        if held is not None:
            if bytes(held) != new.envelope_hash:
                raise Conflict(reason=f"envelope id {new.envelope_id.hex()} was already used for other bytes")
            first = await _acceptance(conn, new.envelope_id, created=False)
            if first is None:
                raise AssertionError("unreachable: the envelope row was just read")
            return first
        now = new.accepted_at
        index = await self._audit.append(conn, new.leaf, now)
        await conn.execute(
            "INSERT INTO envelopes (envelope_id, envelope_hash, sender_id, sender_key_id, header, "
            "header_length, accepted_at, expires_at, accepted_index, open_recipients) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            new.envelope_id,
            new.envelope_hash,
            new.sender_id,
            new.sender_key_id,
            new.header,
            len(new.header),
            now,
            new.expires_at,
            index,
            len(new.recipients),
        )
        await conn.executemany(
            "INSERT INTO parts (envelope_id, part_no, length, digest, stored_inline, inline_data) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (new.envelope_id, p.part_no, p.length, p.digest, p.inline_data is not None, p.inline_data)
                for p in new.parts
            ],
        )
        cursors = []
        for recipient in sorted(new.recipients):
            cursor = await conn.fetchval(
                "INSERT INTO inbox (recipient_id, cursor, envelope_id, state, updated_at) "
                "SELECT $1, COALESCE(MAX(cursor), 0) + 1, $2, 'pending', $3 FROM inbox "
                "WHERE recipient_id = $1 RETURNING cursor",
                recipient,
                new.envelope_id,
                now,
            )
            cursors.append((recipient, int(cursor)))
        issued = sorted(issue(index), key=lambda r: r.recipient_id)
        if [r.recipient_id for r in issued] != sorted(new.recipients):
            raise AssertionError("one accepted receipt per recipient")
        receipts = []
        for receipt in issued:
            receipts.append(
                await self._insert_receipt(
                    conn,
                    sender_id=new.sender_id,
                    envelope_id=new.envelope_id,
                    recipient_id=receipt.recipient_id,
                    kind="accepted",
                    raw=receipt.raw,
                    leaf=receipt.leaf,
                    now=now,
                )
            )
        changes = [Change(ChangeKind.INBOX, r, new.envelope_id, c) for r, c in cursors]
        changes += [Change(ChangeKind.RECEIPT, r.sender_id, new.envelope_id, r.seq) for r in receipts]
        await announce(conn, self._origin, changes)
        parts = tuple(PartRecord(p.part_no, p.length, p.digest, p.inline_data is not None) for p in new.parts)
        envelope = EnvelopeRecord(
            envelope_id=new.envelope_id,
            envelope_hash=new.envelope_hash,
            sender_id=new.sender_id,
            sender_key_id=new.sender_key_id,
            header_length=len(new.header),
            parts=parts,
            accepted_at=now,
            expires_at=new.expires_at,
            accepted_index=index,
            purged_at=None,
        )
        return Acceptance(created=True, envelope=envelope, receipts=tuple(receipts), cursors=tuple(cursors))

    async def accept_envelope(self, new: NewEnvelope, issue: ReceiptIssuer) -> Acceptance:
        async with self._db.transaction() as conn:
            return await self._accept(conn, new, issue)

    async def acceptance(self, envelope_id: bytes) -> Acceptance | None:
        async with self._db.transaction() as conn:
            return await _acceptance(conn, envelope_id, created=False)

    async def envelope(self, envelope_id: bytes) -> EnvelopeRecord | None:
        async with self._db.transaction() as conn:
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
        async with self._db.transaction() as conn:
            found = await _entries(
                conn, "i.envelope_id = $1 AND i.recipient_id = $2", envelope_id, recipient_id
            )
        return found[0] if found else None

    async def inbox_entries(self, envelope_id: bytes) -> list[InboxEntry]:
        async with self._db.transaction() as conn:
            return await _entries(conn, "i.envelope_id = $1 ORDER BY i.recipient_id", envelope_id)

    async def inbox(self, recipient_id: str, after: int, limit: int) -> list[InboxEntry]:
        where = (
            f"i.recipient_id = $1 AND i.cursor > $2 AND i.state IN {OPEN_STATES} ORDER BY i.cursor LIMIT $3"
        )
        async with self._db.transaction() as conn:
            return await _entries(conn, where, recipient_id, after, limit)

    async def _record(self, conn: Connection, new: NewReceipt) -> ReceiptOutcome:
        await self._audit.lock(conn)
        entry = await conn.fetchrow(
            "SELECT i.state, e.sender_id FROM inbox i JOIN envelopes e ON e.envelope_id = i.envelope_id "
            "WHERE i.envelope_id = $1 AND i.recipient_id = $2",
            new.envelope_id,
            new.recipient_id,
        )
        if entry is None:
            return ReceiptOutcome(None, False, None, None)
        state, sender_id = InboxState(entry[0]), str(entry[1])
        same = await conn.fetchrow(f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE raw = $1", new.raw)  # noqa: S608
        if same is not None:
            return ReceiptOutcome(receipt_from_row(same), True, state, state)
        if state not in new.from_states:
            return ReceiptOutcome(None, False, state, state)
        await conn.execute(
            "UPDATE inbox SET state = $1, updated_at = $2 WHERE envelope_id = $3 AND recipient_id = $4",
            str(new.to_state),
            new.recorded_at,
            new.envelope_id,
            new.recipient_id,
        )
        if state.is_open and not new.to_state.is_open:
            await conn.execute(
                "UPDATE envelopes SET open_recipients = open_recipients - 1 WHERE envelope_id = $1",
                new.envelope_id,
            )
        record = await self._insert_receipt(
            conn,
            sender_id=sender_id,
            envelope_id=new.envelope_id,
            recipient_id=new.recipient_id,
            kind=new.kind,
            raw=new.raw,
            leaf=new.leaf,
            now=new.recorded_at,
        )
        change = Change(ChangeKind.RECEIPT, sender_id, new.envelope_id, record.seq)
        await announce(conn, self._origin, [change])
        return ReceiptOutcome(record, False, state, new.to_state)

    async def record_receipt(self, receipt: NewReceipt) -> ReceiptOutcome:
        async with self._db.transaction() as conn:
            return await self._record(conn, receipt)

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
        async with self._db.transaction() as conn:
            return await _entries(conn, where, now, limit)

    async def purgeable(self, limit: int) -> list[EnvelopeRecord]:
        async with self._db.transaction() as conn:
            rows = await conn.fetch(
                f"SELECT {ENVELOPE_COLUMNS} FROM envelopes e "  # noqa: S608 - constant columns
                "WHERE e.open_recipients = 0 AND e.purged_at IS NULL ORDER BY e.accepted_at LIMIT $1",
                limit,
            )
            parts = await _parts(conn, [bytes(r[0]) for r in rows])
        return [envelope_from_row(tuple(r), parts[bytes(r[0])]) for r in rows]

    async def mark_purged(self, envelope_id: bytes, now: int, leaf: bytes) -> bool:
        async with self._db.transaction() as conn:
            await self._audit.lock(conn)
            purgeable = await conn.fetchval(
                "SELECT 1 FROM envelopes "
                "WHERE envelope_id = $1 AND open_recipients = 0 AND purged_at IS NULL",
                envelope_id,
            )
            if purgeable is None:
                return False
            await self._audit.append(conn, leaf, now)
            await conn.execute(
                "UPDATE envelopes SET header = NULL, purged_at = $1 WHERE envelope_id = $2", now, envelope_id
            )
            await conn.execute("UPDATE parts SET inline_data = NULL WHERE envelope_id = $1", envelope_id)
            return True

    async def stored_hashes(self) -> set[bytes]:
        async with self._db.connection() as conn:
            rows = await conn.fetch("SELECT envelope_hash FROM envelopes WHERE purged_at IS NULL")
        return {bytes(r[0]) for r in rows}

    async def counts(self) -> StoreCounts:
        async with self._db.transaction() as conn:
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

"""Envelopes, parts, inboxes and receipts in SQLite.

Inbox cursors and feed sequence numbers increase per recipient and per sender (MAX + 1 under the
single writer), so neither reveals how much traffic other agencies have. `open_recipients`
counts an envelope's pending or delivered entries; it changes in the same statement group as
the entry's state, so expiry and purging can find their envelopes through small indexes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from broker.storage.records import (
    Acceptance,
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
from broker.storage.sqlite.audit import SqliteAuditLog
from broker.storage.sqlite.database import Database
from protocol.errors import Conflict


def _parts(conn: sqlite3.Connection, envelope_ids: Sequence[bytes]) -> dict[bytes, tuple[PartRecord, ...]]:
    ids = list(dict.fromkeys(bytes(e) for e in envelope_ids))
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT {PART_COLUMNS} FROM parts "  # noqa: S608 - constant columns and placeholders only
        f"WHERE envelope_id IN ({marks}) ORDER BY envelope_id, part_no",
        ids,
    )
    return group_parts(ids, rows)


_JOINED_PARTS = "p.part_no, p.length, p.digest, p.stored_inline"
_PART_FIELDS = 4
_ENVELOPE_WITH_PARTS = (
    f"SELECT {ENVELOPE_COLUMNS}, {_JOINED_PARTS} FROM envelopes e "  # noqa: S608 - constant columns
    "LEFT JOIN parts p ON p.envelope_id = e.envelope_id WHERE e.envelope_id = ? ORDER BY p.part_no"
)
_ENTRY_WITH_PARTS = (
    f"SELECT {INBOX_COLUMNS}, {_JOINED_PARTS} FROM inbox i "  # noqa: S608 - constant columns
    "JOIN envelopes e ON e.envelope_id = i.envelope_id LEFT JOIN parts p ON p.envelope_id = e.envelope_id "
    "WHERE i.envelope_id = ? AND i.recipient_id = ? ORDER BY p.part_no"
)


def _joined_parts(rows: list[Any]) -> tuple[PartRecord, ...]:
    """The parts of rows that end with `_JOINED_PARTS` (one row per part; NULLs for none)."""
    return tuple(
        PartRecord(r[-4], r[-3], bytes(r[-2]), bool(r[-1])) for r in rows if r[-_PART_FIELDS] is not None
    )


def _load_envelope(conn: sqlite3.Connection, envelope_id: bytes) -> EnvelopeRecord | None:
    """One envelope with its parts, in one statement."""
    rows = conn.execute(_ENVELOPE_WITH_PARTS, (envelope_id,)).fetchall()
    if not rows:
        return None
    return envelope_from_row(rows[0], _joined_parts(rows))


def _load_entry(conn: sqlite3.Connection, envelope_id: bytes, recipient_id: str) -> InboxEntry | None:
    """One inbox entry with its envelope and parts, in one statement."""
    rows = conn.execute(_ENTRY_WITH_PARTS, (envelope_id, recipient_id)).fetchall()
    if not rows:
        return None
    head = rows[0]
    return InboxEntry(head[0], head[1], InboxState(head[2]), envelope_from_row(head[3:], _joined_parts(rows)))


def _entries(conn: sqlite3.Connection, where: str, params: Sequence[Any]) -> list[InboxEntry]:
    rows = conn.execute(
        f"SELECT {INBOX_COLUMNS} "  # noqa: S608 - constant fragments
        f"FROM inbox i JOIN envelopes e ON e.envelope_id = i.envelope_id WHERE {where}",
        params,
    ).fetchall()
    return inbox_entries(rows, _parts(conn, [bytes(r[3]) for r in rows]))


def _insert_receipt(
    conn: sqlite3.Connection,
    audit: SqliteAuditLog,
    *,
    sender_id: str,
    envelope_id: bytes,
    recipient_id: str,
    kind: str,
    raw: bytes,
    leaf: bytes,
    now: int,
) -> ReceiptRecord:
    log_index = audit.append(conn, leaf, now)
    seq = int(
        conn.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM receipts WHERE sender_id = ?", (sender_id,)
        ).fetchone()[0]
    )
    record = ReceiptRecord(sender_id, seq, envelope_id, recipient_id, kind, raw, now, log_index)
    conn.execute(
        f"INSERT INTO receipts ({RECEIPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - constant columns
        (sender_id, seq, envelope_id, recipient_id, kind, raw, now, log_index),
    )
    return record


def _acceptance(conn: sqlite3.Connection, envelope_id: bytes, *, created: bool) -> Acceptance | None:
    envelope = _load_envelope(conn, envelope_id)
    if envelope is None:
        return None
    receipts = conn.execute(
        f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE envelope_id = ? AND kind = 'accepted' "  # noqa: S608
        "ORDER BY recipient_id",
        (envelope_id,),
    ).fetchall()
    cursors = conn.execute(
        "SELECT recipient_id, cursor FROM inbox WHERE envelope_id = ? ORDER BY recipient_id", (envelope_id,)
    ).fetchall()
    return Acceptance(
        created=created,
        envelope=envelope,
        receipts=tuple(receipt_from_row(r) for r in receipts),
        cursors=tuple((str(r[0]), int(r[1])) for r in cursors),
    )


def _accept(
    conn: sqlite3.Connection, audit: SqliteAuditLog, new: NewEnvelope, issue: ReceiptIssuer
) -> Acceptance:
    held = conn.execute(
        "SELECT envelope_hash FROM envelopes WHERE envelope_id = ?", (new.envelope_id,)
    ).fetchone()
    if held is not None:
        if bytes(held[0]) != new.envelope_hash:
            raise Conflict(reason=f"envelope id {new.envelope_id.hex()} was already used for other bytes")
        first = _acceptance(conn, new.envelope_id, created=False)
        if first is None:
            raise AssertionError("unreachable: the envelope row was just read")
        return first
    now = new.accepted_at
    index = audit.append(conn, new.leaf, now)
    conn.execute(
        "INSERT INTO envelopes (envelope_id, envelope_hash, sender_id, sender_key_id, header, header_length, "
        "accepted_at, expires_at, accepted_index, open_recipients) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
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
        ),
    )
    conn.executemany(
        "INSERT INTO parts (envelope_id, part_no, length, digest, stored_inline, inline_data) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (new.envelope_id, p.part_no, p.length, p.digest, int(p.inline_data is not None), p.inline_data)
            for p in new.parts
        ],
    )
    cursors = []
    for recipient in sorted(new.recipients):
        cursor = int(
            conn.execute(
                "SELECT COALESCE(MAX(cursor), 0) + 1 FROM inbox WHERE recipient_id = ?", (recipient,)
            ).fetchone()[0]
        )
        conn.execute(
            "INSERT INTO inbox (recipient_id, cursor, envelope_id, state, updated_at) "
            "VALUES (?, ?, ?, 'pending', ?)",
            (recipient, cursor, new.envelope_id, now),
        )
        cursors.append((recipient, cursor))
    issued = sorted(issue(index), key=lambda r: r.recipient_id)
    if [r.recipient_id for r in issued] != sorted(new.recipients):
        raise AssertionError("one accepted receipt per recipient")
    receipts = tuple(
        _insert_receipt(
            conn,
            audit,
            sender_id=new.sender_id,
            envelope_id=new.envelope_id,
            recipient_id=receipt.recipient_id,
            kind="accepted",
            raw=receipt.raw,
            leaf=receipt.leaf,
            now=now,
        )
        for receipt in issued
    )
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
    return Acceptance(created=True, envelope=envelope, receipts=receipts, cursors=tuple(cursors))


def _record(conn: sqlite3.Connection, audit: SqliteAuditLog, new: NewReceipt) -> ReceiptOutcome:
    entry = conn.execute(
        "SELECT i.state, e.sender_id FROM inbox i JOIN envelopes e ON e.envelope_id = i.envelope_id "
        "WHERE i.envelope_id = ? AND i.recipient_id = ?",
        (new.envelope_id, new.recipient_id),
    ).fetchone()
    if entry is None:
        return ReceiptOutcome(None, False, None, None)
    state, sender_id = InboxState(entry[0]), str(entry[1])
    same = conn.execute(f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE raw = ?", (new.raw,)).fetchone()  # noqa: S608
    if same is not None:
        return ReceiptOutcome(receipt_from_row(same), True, state, state)
    if state not in new.from_states:
        return ReceiptOutcome(None, False, state, state)
    conn.execute(
        "UPDATE inbox SET state = ?, updated_at = ? WHERE envelope_id = ? AND recipient_id = ?",
        (str(new.to_state), new.recorded_at, new.envelope_id, new.recipient_id),
    )
    if state.is_open and not new.to_state.is_open:
        conn.execute(
            "UPDATE envelopes SET open_recipients = open_recipients - 1 WHERE envelope_id = ?",
            (new.envelope_id,),
        )
    record = _insert_receipt(
        conn,
        audit,
        sender_id=sender_id,
        envelope_id=new.envelope_id,
        recipient_id=new.recipient_id,
        kind=new.kind,
        raw=new.raw,
        leaf=new.leaf,
        now=new.recorded_at,
    )
    return ReceiptOutcome(record, False, state, new.to_state)


def _purge(
    conn: sqlite3.Connection, audit: SqliteAuditLog, envelope_id: bytes, now: int, leaf: bytes
) -> bool:
    row = conn.execute(
        "SELECT 1 FROM envelopes WHERE envelope_id = ? AND open_recipients = 0 AND purged_at IS NULL",
        (envelope_id,),
    ).fetchone()
    if row is None:
        return False
    audit.append(conn, leaf, now)
    conn.execute(
        "UPDATE envelopes SET header = NULL, purged_at = ? WHERE envelope_id = ?", (now, envelope_id)
    )
    conn.execute("UPDATE parts SET inline_data = NULL WHERE envelope_id = ?", (envelope_id,))
    return True


def _counts(conn: sqlite3.Connection) -> StoreCounts:
    def one(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0])

    return StoreCounts(
        agencies=one("SELECT COUNT(DISTINCT agency_id) FROM certificates"),
        certificates=one("SELECT COUNT(*) FROM certificates"),
        envelopes_stored=one("SELECT COUNT(*) FROM envelopes WHERE purged_at IS NULL"),
        open_inbox_entries=one(f"SELECT COUNT(*) FROM inbox WHERE state IN {OPEN_STATES}"),  # noqa: S608 - constant
        audit_entries=one("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log"),
    )


class SqliteDeliveryStore:
    def __init__(self, db: Database, audit: SqliteAuditLog) -> None:
        self._db = db
        self._audit = audit

    async def accept_envelope(self, new: NewEnvelope, issue: ReceiptIssuer) -> Acceptance:
        return await self._db.write(lambda conn: _accept(conn, self._audit, new, issue))

    async def acceptance(self, envelope_id: bytes) -> Acceptance | None:
        return await self._db.read(lambda conn: _acceptance(conn, envelope_id, created=False))

    async def envelope(self, envelope_id: bytes) -> EnvelopeRecord | None:
        return await self._db.read(lambda conn: _load_envelope(conn, envelope_id), one_statement=True)

    async def header(self, envelope_id: bytes) -> bytes | None:
        def job(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT header FROM envelopes WHERE envelope_id = ?", (envelope_id,)
            ).fetchone()
            return None if row is None or row[0] is None else bytes(row[0])

        return await self._db.read(job, one_statement=True)

    async def inline_part(self, envelope_id: bytes, part_no: int) -> bytes | None:
        def job(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT inline_data FROM parts WHERE envelope_id = ? AND part_no = ?", (envelope_id, part_no)
            ).fetchone()
            return None if row is None or row[0] is None else bytes(row[0])

        return await self._db.read(job, one_statement=True)

    async def inbox_entry(self, envelope_id: bytes, recipient_id: str) -> InboxEntry | None:
        return await self._db.read(
            lambda conn: _load_entry(conn, envelope_id, recipient_id), one_statement=True
        )

    async def inbox_entries(self, envelope_id: bytes) -> list[InboxEntry]:
        return await self._db.read(
            lambda conn: _entries(conn, "i.envelope_id = ? ORDER BY i.recipient_id", (envelope_id,))
        )

    async def inbox(self, recipient_id: str, after: int, limit: int) -> list[InboxEntry]:
        where = f"i.recipient_id = ? AND i.cursor > ? AND i.state IN {OPEN_STATES} ORDER BY i.cursor LIMIT ?"
        return await self._db.read(lambda conn: _entries(conn, where, (recipient_id, after, limit)))

    async def record_receipt(self, receipt: NewReceipt) -> ReceiptOutcome:
        return await self._db.write(lambda conn: _record(conn, self._audit, receipt))

    async def receipts_for(self, envelope_id: bytes) -> list[ReceiptRecord]:
        def job(conn: sqlite3.Connection) -> list[ReceiptRecord]:
            rows = conn.execute(
                f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE envelope_id = ? ORDER BY log_index",  # noqa: S608
                (envelope_id,),
            )
            return [receipt_from_row(r) for r in rows]

        return await self._db.read(job, one_statement=True)

    async def sender_feed(self, sender_id: str, after: int, limit: int) -> list[ReceiptRecord]:
        def job(conn: sqlite3.Connection) -> list[ReceiptRecord]:
            rows = conn.execute(
                f"SELECT {RECEIPT_COLUMNS} FROM receipts WHERE sender_id = ? AND seq > ? "  # noqa: S608
                "ORDER BY seq LIMIT ?",
                (sender_id, after, limit),
            )
            return [receipt_from_row(r) for r in rows]

        return await self._db.read(job, one_statement=True)

    async def expiring(self, now: int, limit: int) -> list[InboxEntry]:
        where = (
            f"e.open_recipients > 0 AND e.expires_at <= ? AND i.state IN {OPEN_STATES} "
            "ORDER BY e.expires_at, i.recipient_id LIMIT ?"
        )
        return await self._db.read(lambda conn: _entries(conn, where, (now, limit)))

    async def purgeable(self, limit: int) -> list[EnvelopeRecord]:
        def job(conn: sqlite3.Connection) -> list[EnvelopeRecord]:
            rows = conn.execute(
                f"SELECT {ENVELOPE_COLUMNS} FROM envelopes e "  # noqa: S608 - constant columns
                "WHERE e.open_recipients = 0 AND e.purged_at IS NULL ORDER BY e.accepted_at LIMIT ?",
                (limit,),
            ).fetchall()
            parts = _parts(conn, [bytes(r[0]) for r in rows])
            return [envelope_from_row(r, parts[bytes(r[0])]) for r in rows]

        return await self._db.read(job)

    async def mark_purged(self, envelope_id: bytes, now: int, leaf: bytes) -> bool:
        return await self._db.write(lambda conn: _purge(conn, self._audit, envelope_id, now, leaf))

    async def stored_hashes(self) -> set[bytes]:
        def job(conn: sqlite3.Connection) -> set[bytes]:
            rows = conn.execute("SELECT envelope_hash FROM envelopes WHERE purged_at IS NULL")
            return {bytes(r[0]) for r in rows}

        return await self._db.scan(job)

    async def counts(self) -> StoreCounts:
        return await self._db.scan(_counts)

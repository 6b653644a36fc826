"""The delivery store's audited changes as `Statement`s: one statement each, which checks and
writes at once, sent with the other changes of its kind in its batch.

Each runs inside a batch of the replica's `SequencedWriter`, which holds the audit sequencer
and sends a batch's statements of one kind in one round trip (`$1` is the change's position),
so what a statement reads (an envelope id already used, an entry's state, the last cursor or
feed seq) cannot change before it commits. A statement checks and writes at once: the caller
has already appended the change's leaves, and takes them back when the statement says the
change did not apply. Data-modifying CTEs all see the snapshot the statement started with, so
cursors and seqs are counted from it (one recipient per inbox row, feed seqs by ordinality);
the foreign keys are checked at the end of the statement, when the envelope row exists.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from broker.storage.postgresql.audit_appender import AuditAppender
from broker.storage.postgresql.database import Connection
from broker.storage.postgresql.sequencing import Statement
from broker.storage.records import (
    Acceptance,
    Change,
    ChangeKind,
    EnvelopeRecord,
    InboxState,
    IssuedReceipt,
    NewEnvelope,
    NewPart,
    NewReceipt,
    PartRecord,
    ReceiptIssuer,
    ReceiptOutcome,
    ReceiptRecord,
)
from broker.storage.rows import OPEN_STATES, RECEIPT_COLUMNS, receipt_from_row

ACCEPT = (
    "WITH held AS (SELECT envelope_hash FROM envelopes WHERE envelope_id = $2::bytea), "
    "envelope AS (INSERT INTO envelopes (envelope_id, envelope_hash, sender_id, sender_key_id, header, "
    "header_length, accepted_at, expires_at, accepted_index, open_recipients) "
    "SELECT $2::bytea, $3::bytea, $4::text, $5::bytea, $6::bytea, $7::integer, $8::bigint, $9::bigint, "
    "$10::bigint, $11::integer WHERE NOT EXISTS (SELECT 1 FROM held) RETURNING envelope_id), "
    "part AS (INSERT INTO parts (envelope_id, part_no, length, digest, stored_inline, inline_data) "
    "SELECT envelope.envelope_id, x.part_no, x.length, x.digest, x.stored_inline, x.inline_data "
    "FROM envelope, unnest($12::integer[], $13::bigint[], $14::bytea[], $15::boolean[], $16::bytea[]) "
    "AS x (part_no, length, digest, stored_inline, inline_data)), "
    "entry AS (INSERT INTO inbox (recipient_id, cursor, envelope_id, state, updated_at) "
    "SELECT r, COALESCE((SELECT MAX(i.cursor) FROM inbox i WHERE i.recipient_id = r), 0) + 1, "
    "envelope.envelope_id, 'pending', $8::bigint FROM envelope, unnest($17::text[]) AS r "
    "RETURNING recipient_id, cursor), "
    "receipt AS (INSERT INTO receipts (sender_id, seq, envelope_id, recipient_id, kind, raw, recorded_at, "
    "log_index) SELECT $4::text, f.last + x.n, envelope.envelope_id, x.recipient_id, 'accepted', x.raw, "
    "$8::bigint, x.log_index FROM envelope, "
    "unnest($18::text[], $19::bytea[], $20::bigint[]) WITH ORDINALITY "
    "AS x (recipient_id, raw, log_index, n), "
    "(SELECT COALESCE(MAX(seq), 0) AS last FROM receipts WHERE sender_id = $4::text) AS f "
    "RETURNING recipient_id, seq) "
    "SELECT $1::integer, 0, NULL::text, NULL::bigint, envelope_hash FROM held "
    "UNION ALL SELECT $1, 1, recipient_id, cursor, NULL FROM entry "
    "UNION ALL SELECT $1, 2, recipient_id, seq, NULL FROM receipt"
)
"""Store a new envelope with its parts, inbox entries and accepted receipts; or, if the id is
already used, only return the hash held: (position, 0, NULL, NULL, hash). Otherwise rows
(position, 1, recipient, cursor, NULL) per inbox entry and (position, 2, recipient, seq, NULL)
per receipt. `$1` is the change's position in its batch (`sequencing.Statement`)."""

RECORD_RECEIPT = (
    "WITH subject AS (SELECT i.state, e.sender_id FROM inbox i "  # noqa: S608 - constant fragments only
    "JOIN envelopes e ON e.envelope_id = i.envelope_id WHERE i.envelope_id = $2 AND i.recipient_id = $3), "
    f"same AS (SELECT {RECEIPT_COLUMNS} FROM receipts WHERE raw = $4), "
    "allowed AS (SELECT sender_id, state FROM subject "
    "WHERE state = ANY($5::text[]) AND NOT EXISTS (SELECT 1 FROM same)), "
    "entry AS (UPDATE inbox SET state = $6, updated_at = $7 "
    "WHERE envelope_id = $2 AND recipient_id = $3 AND EXISTS (SELECT 1 FROM allowed)), "
    "envelope AS (UPDATE envelopes SET open_recipients = open_recipients - 1 WHERE envelope_id = $2 "
    f"AND $8::boolean AND EXISTS (SELECT 1 FROM allowed WHERE state IN {OPEN_STATES})), "
    "receipt AS (INSERT INTO receipts (sender_id, seq, envelope_id, recipient_id, kind, raw, recorded_at, "
    "log_index) SELECT a.sender_id, "
    "(SELECT COALESCE(MAX(r.seq), 0) + 1 FROM receipts r WHERE r.sender_id = a.sender_id), "
    "$2, $3, $9, $4, $7, $10 FROM allowed a RETURNING seq) "
    "SELECT $1::integer, s.state, s.sender_id, (SELECT seq FROM receipt), same.* "
    "FROM subject s LEFT JOIN same ON true"
)
"""Apply a receipt's transition if the entry exists, is in one of `from_states` ($5) and these
receipt bytes were never recorded: update the entry (and the envelope's open count when the
entry closes, $8), queue the receipt to the sender's feed. One row unless the entry does not
exist: (position, state before, sender, new seq or NULL, the receipt recorded earlier with
these bytes)."""

PURGE = (
    "WITH part AS (UPDATE parts SET inline_data = NULL WHERE envelope_id = $2) "
    "UPDATE envelopes SET header = NULL, purged_at = $1 WHERE envelope_id = $2"
)


FirstAcceptance = Callable[[Connection, NewEnvelope, bytes], Awaitable[Acceptance]]
"""The first acceptance of an envelope id found used (with the hash it holds), or `Conflict`."""


def _part_columns(parts: Sequence[NewPart]) -> list[list[object]]:
    return [
        [p.part_no for p in parts],
        [p.length for p in parts],
        [p.digest for p in parts],
        [p.inline_data is not None for p in parts],
        [p.inline_data for p in parts],
    ]


class _Accept:
    """One acceptance as a `Statement`: its leaves are the acceptance's, then one per accepted
    receipt, each receipt signed with the acceptance's index (`issue`) while binding."""

    def __init__(self, new: NewEnvelope, issue: ReceiptIssuer, first: FirstAcceptance) -> None:
        self._new = new
        self._issue = issue
        self._first = first
        self._recipients = sorted(new.recipients)
        self._index = 0
        self._issued: list[IssuedReceipt] = []
        self._log_indexes: list[int] = []

    def bind(self, appender: AuditAppender) -> Sequence[object]:
        new = self._new
        self._index = appender.append(new.leaf, new.accepted_at)
        self._issued = sorted(self._issue(self._index), key=lambda r: r.recipient_id)
        if [r.recipient_id for r in self._issued] != self._recipients:
            raise AssertionError("one accepted receipt per recipient")
        self._log_indexes = [appender.append(r.leaf, new.accepted_at) for r in self._issued]
        return (
            new.envelope_id,
            new.envelope_hash,
            new.sender_id,
            new.sender_key_id,
            new.header,
            len(new.header),
            new.accepted_at,
            new.expires_at,
            self._index,
            len(new.recipients),
            *_part_columns(new.parts),
            self._recipients,
            [r.recipient_id for r in self._issued],
            [r.raw for r in self._issued],
            self._log_indexes,
        )

    async def settle(
        self, rows: Sequence[asyncpg.Record], conn: Connection, appender: AuditAppender
    ) -> tuple[Acceptance, bool]:
        new = self._new
        if rows and rows[0][1] == 0:
            return await self._first(conn, new, bytes(rows[0][4])), False
        cursor_of = {str(r[2]): int(r[3]) for r in rows if r[1] == 1}
        seq_of = {str(r[2]): int(r[3]) for r in rows if r[1] == 2}
        cursors = [(r, cursor_of[r]) for r in self._recipients]
        receipts = [
            ReceiptRecord(
                new.sender_id, seq_of[r.recipient_id], new.envelope_id, r.recipient_id, "accepted", r.raw,
                new.accepted_at, i,
            )
            for r, i in zip(self._issued, self._log_indexes, strict=True)
        ]  # fmt: skip
        changes = [Change(ChangeKind.INBOX, r, new.envelope_id, c) for r, c in cursors]
        changes += [Change(ChangeKind.RECEIPT, r.sender_id, new.envelope_id, r.seq) for r in receipts]
        appender.announce(changes)
        envelope = EnvelopeRecord(
            envelope_id=new.envelope_id,
            envelope_hash=new.envelope_hash,
            sender_id=new.sender_id,
            sender_key_id=new.sender_key_id,
            header_length=len(new.header),
            parts=tuple(
                PartRecord(p.part_no, p.length, p.digest, p.inline_data is not None) for p in new.parts
            ),
            accepted_at=new.accepted_at,
            expires_at=new.expires_at,
            accepted_index=self._index,
            purged_at=None,
        )
        return Acceptance(True, envelope, tuple(receipts), tuple(cursors)), True


class _Receipt:
    """One receipt as a `Statement`: its one leaf, kept only if the transition applied."""

    def __init__(self, new: NewReceipt) -> None:
        self._new = new
        self._log_index = 0

    def bind(self, appender: AuditAppender) -> Sequence[object]:
        new = self._new
        self._log_index = appender.append(new.leaf, new.recorded_at)
        return (
            new.envelope_id,
            new.recipient_id,
            new.raw,
            sorted(str(s) for s in new.from_states),
            str(new.to_state),
            new.recorded_at,
            not new.to_state.is_open,
            new.kind,
            self._log_index,
        )

    async def settle(
        self, rows: Sequence[asyncpg.Record], conn: Connection, appender: AuditAppender
    ) -> tuple[ReceiptOutcome, bool]:
        new = self._new
        if not rows:
            return ReceiptOutcome(None, False, None, None), False
        row = tuple(rows[0])
        state, sender_id, seq = InboxState(row[1]), str(row[2]), row[3]
        if seq is None:
            same = None if row[4] is None else receipt_from_row(row[4:])
            return ReceiptOutcome(same, same is not None, state, state), False
        appender.announce([Change(ChangeKind.RECEIPT, sender_id, new.envelope_id, int(seq))])
        record = ReceiptRecord(
            sender_id, int(seq), new.envelope_id, new.recipient_id, new.kind, new.raw, new.recorded_at,
            self._log_index,
        )  # fmt: skip
        return ReceiptOutcome(record, False, state, new.to_state), True


def accept(new: NewEnvelope, issue: ReceiptIssuer, first: FirstAcceptance) -> Statement[Acceptance]:
    change = _Accept(new, issue, first)
    return Statement(ACCEPT, 0, change.bind, change.settle)


def record_receipt(new: NewReceipt) -> Statement[ReceiptOutcome]:
    change = _Receipt(new)
    return Statement(RECORD_RECEIPT, 1, change.bind, change.settle)

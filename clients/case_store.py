"""The local case store: every case this agency works on, kept as the thread of its referral
messages in `cases.sqlite3` in the client's state directory, encrypted at rest.

Invariants:
- The store keeps messages, never states: a case's state is `protocol.referral.replay` over its
  thread in the order the messages were applied, so it always obeys the workflow rules.
- A message joins a case only through `record_sent` / `record_received`, which rebuild the state,
  `apply` the message and append it in one write transaction (BEGIN IMMEDIATE): two writers (the
  CLI and an application) never both extend the same state. Receiving the same message again
  (same bytes) changes nothing.
- Each case's row carries the case's summary (`CaseSummary`: case numbers, name, phase, open
  items), rewritten in the same transaction as every message that changes it, so `summaries`
  lists every case by decrypting one small record per case, with no replay. A row of the older
  format (schema 1, no summary) gets its summary from a full replay when it is first listed.
  Listing checks each case's message count against the rows present; the messages themselves
  are decrypted and checked whenever a case is opened or extended.
- Encrypted at rest: each record is sealed with XChaCha20-Poly1305 (libsodium through PyNaCl)
  under a random store key, with associated data naming its table and row (case, sequence number,
  message), so a record moved to another row or case does not open; each case record counts its
  messages, so a removed message shows. The store key is wrapped under a key derived from the
  agency's signing seed (`derive_subkey`, label `cb-case-store`), one wrap per signing key id.
  Lookups use keyed BLAKE2b blind indexes, so the file holds no case number, name or link id in
  clear (only envelope ids of refused messages, which the broker knows anyway).
- WAL journal with synchronous=FULL; the file is 0600 inside the 0700 state directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions

from clients.case_threads import (
    CaseSummary,
    CaseThread,
    Direction,
    RefusedMessage,
    StoredMessage,
    normal_case_ref,
    summarise,
    summary_from_record,
    summary_record,
)
from clients.local_sqlite import transaction
from keys.identity import AgencyIdentity
from protocol import codec
from protocol.errors import CaseBridgeError, Conflict, NotFound, StorageUnavailable
from protocol.primitives import Random, blake2b, derive_subkey, system_random
from protocol.referral import CaseState, Message, apply, decode_message, encode_message, replay

DATABASE_NAME = "cases.sqlite3"
SCHEMA_VERSION = 2
OLDER_SCHEMAS = (1,)
"""Schema 1 stores open: their case rows hold no summary yet (`summaries` adds it)."""
CASE_RECORD_VERSION = 2
NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
RECORD_LIMITS = codec.Limits(max_bytes=2 << 20, max_bin_len=(1 << 20) + 64)
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_HEX_PREFIX = re.compile(r"[0-9a-f]{8,31}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS cases (case_id BLOB PRIMARY KEY, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY, case_id BLOB NOT NULL, message_key BLOB NOT NULL, sealed BLOB NOT NULL,
    UNIQUE (case_id, message_key));
CREATE TABLE IF NOT EXISTS case_refs (
    ref_key BLOB NOT NULL, case_id BLOB NOT NULL, PRIMARY KEY (ref_key, case_id));
CREATE TABLE IF NOT EXISTS refused (envelope_id TEXT PRIMARY KEY, case_id BLOB, sealed BLOB NOT NULL);
"""


def _damaged(path: Path, what: str) -> StorageUnavailable:
    return StorageUnavailable(
        f"the case store {path} is damaged or was altered ({what}). Restore it from a backup.",
        reason=f"case store: {what}",
    )


class CaseStore:
    """The encrypted case store of one agency. Thread-safe (one lock around the connection)."""

    def __init__(
        self, directory: str | os.PathLike[str], identity: AgencyIdentity, *, rng: Random = system_random
    ) -> None:
        self.agency_id = identity.agency_id
        self.directory = Path(directory).absolute()
        self.path = self.directory / DATABASE_NAME
        self._rng = rng
        self._lock = threading.RLock()
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fresh = not self.path.exists()
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if fresh:
                os.chmod(self.path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
            with self._transaction() as db:
                store_key = self._store_key(db, identity)
        except sqlite3.Error as e:
            raise self._storage_error(e) from e
        except OSError as e:
            raise StorageUnavailable(
                f"cannot use the state directory {self.directory}: {e.strerror}. Check its permissions."
            ) from e
        self._record_key = derive_subkey(store_key, 1, label=b"cb-case-record")
        self._index_key = derive_subkey(store_key, 2, label=b"cb-case-index")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> CaseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- keys and sealing --------------------------------------------------------------------

    def _store_key(self, db: sqlite3.Connection, identity: AgencyIdentity) -> bytes:
        row = db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif row[0] in OLDER_SCHEMAS:
            db.execute("UPDATE meta SET value=? WHERE name='schema'", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise StorageUnavailable(
                f"{self.path} was written by another CaseBridge version (schema {row[0]}); "
                "upgrade CaseBridge."
            )
        wrap_key = derive_subkey(identity.signing_seed, 1, label=b"cb-case-store")
        ad = b"CB-CASE-STORE-KEY-v1\x00" + identity.agency_id.encode() + b"\x00" + identity.key_id
        name = "store_key:" + identity.key_id.hex()
        wrapped = db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        if wrapped is None:
            if db.execute("SELECT 1 FROM meta WHERE name LIKE 'store_key:%'").fetchone() is not None:
                raise StorageUnavailable(
                    f"the case store {self.path} belongs to another agency key; open it with the "
                    "keystore of the agency that created it."
                )
            store_key = self._rng(32)
            nonce = self._rng(NONCE_BYTES)
            sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(store_key, ad, nonce, wrap_key)
            db.execute("INSERT INTO meta VALUES (?, ?)", (name, nonce + sealed))
            return store_key
        try:
            blob = bytes(wrapped[0])
            key: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                blob[NONCE_BYTES:], ad, blob[:NONCE_BYTES], wrap_key
            )
        except nacl.exceptions.CryptoError as e:
            raise _damaged(self.path, "the store key does not open with this agency's key") from e
        return key

    def _index(self, kind: bytes, value: bytes) -> bytes:
        return blake2b(kind + b"\x00" + value, label=b"cb-case-index", size=16, key=self._index_key)

    def _case_id(self, case_link_id: bytes) -> bytes:
        return self._index(b"case", case_link_id)

    def _seal(self, value: Any, ad: bytes) -> bytes:
        plaintext = codec.encode(value, limits=RECORD_LIMITS)
        nonce = self._rng(NONCE_BYTES)
        sealed: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, b"CB-CASE-RECORD-v1\x00" + ad, nonce, self._record_key
        )
        return nonce + sealed

    def _open(self, blob: bytes, ad: bytes) -> Any:
        blob = bytes(blob)
        try:
            plaintext = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                blob[NONCE_BYTES:], b"CB-CASE-RECORD-v1\x00" + ad, blob[:NONCE_BYTES], self._record_key
            )
            return codec.decode(plaintext, limits=RECORD_LIMITS)
        except (nacl.exceptions.CryptoError, CaseBridgeError) as e:
            raise _damaged(self.path, "a record does not decrypt") from e

    @staticmethod
    def _message_ad(case_id: bytes, seq: int, message_key: bytes) -> bytes:
        return b"message\x00" + case_id + seq.to_bytes(8, "big") + message_key

    def _case_row(self, case_id: bytes, count: int, summary: CaseSummary) -> bytes:
        """The sealed case record: its version, the case link id, its message count, its summary."""
        record = [CASE_RECORD_VERSION, summary.case_link_id, count, *summary_record(summary)]
        return self._seal(record, b"case\x00" + case_id)

    def _summary_of(self, record: list[Any]) -> CaseSummary:
        try:
            return summary_from_record(record[1], record[3:], self.agency_id)
        except (ValueError, TypeError) as e:
            raise _damaged(self.path, "a case summary is not readable") from e

    # --- database plumbing -------------------------------------------------------------------

    def _storage_error(self, e: sqlite3.Error) -> CaseBridgeError:
        return StorageUnavailable(
            f"the case store {self.path} cannot be used ({e}). Check the disk and its permissions.",
            reason=f"sqlite: {e}",
        )

    def _transaction(self, *, write: bool = True) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A transaction: a write one takes the database's write lock at once (BEGIN
        IMMEDIATE); a read one sees one consistent snapshot."""
        return transaction(self._db, self._lock, self._storage_error, write=write)

    def _rows(self, db: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise self._storage_error(e) from e

    # --- reading ---------------------------------------------------------------------------------

    def _load_messages(self, db: sqlite3.Connection, case_id: bytes) -> list[StoredMessage]:
        case_row = self._rows(db, "SELECT sealed FROM cases WHERE case_id=?", (case_id,))
        if not case_row:
            return []
        count = self._open(case_row[0][0], b"case\x00" + case_id)[2]
        out = []
        rows = self._rows(
            db, "SELECT seq, message_key, sealed FROM messages WHERE case_id=? ORDER BY seq", (case_id,)
        )
        for seq, message_key, sealed in rows:
            _, direction, raw, envelope_id, recorded_at, names = self._open(
                sealed, self._message_ad(case_id, seq, bytes(message_key))
            )
            message = decode_message(raw)
            if self._index(b"message", message.message_id) != bytes(message_key):
                raise _damaged(self.path, "a message is filed under another id")
            out.append(
                StoredMessage(seq, Direction(direction), message, envelope_id, recorded_at, tuple(names))
            )
        if len(out) != count:
            raise _damaged(self.path, "a case's messages are missing")
        return out

    def _replayed(self, messages: list[StoredMessage], now: int) -> CaseState | None:
        try:
            return replay(self.agency_id, [m.message for m in messages], now=now)
        except CaseBridgeError as e:
            raise _damaged(self.path, f"a case thread no longer replays: {e.reason}") from e

    def _refusals(self, db: sqlite3.Connection, case_id: bytes | None) -> list[RefusedMessage]:
        """The refusals filed under `case_id`; with None, those tied to no stored case."""
        if case_id is None:
            sql = (
                "SELECT envelope_id, case_id, sealed FROM refused"
                " WHERE case_id IS NULL OR case_id NOT IN (SELECT case_id FROM cases)"
            )
            rows = self._rows(db, sql)
        else:
            rows = self._rows(
                db, "SELECT envelope_id, case_id, sealed FROM refused WHERE case_id=?", (case_id,)
            )
        out = []
        for envelope_id, filed_under, sealed in rows:
            ad = b"refused\x00" + envelope_id.encode() + b"\x00" + bytes(filed_under or b"")
            _, sender_id, refused_at, reason, detail, raw = self._open(sealed, ad)
            message = None if raw is None else decode_message(raw)
            link = None if message is None else message.header.case_link_id
            out.append(RefusedMessage(envelope_id, sender_id, refused_at, reason, detail, message, link))
        return sorted(out, key=lambda r: (r.refused_at, r.envelope_id))

    def _thread(self, db: sqlite3.Connection, case_id: bytes, now: int) -> CaseThread | None:
        messages = self._load_messages(db, case_id)
        state = self._replayed(messages, now)
        if state is None:
            return None
        return CaseThread(state, tuple(messages), tuple(self._refusals(db, case_id)))

    def thread(self, case_link_id: bytes, *, now: int) -> CaseThread | None:
        with self._transaction(write=False) as db:
            return self._thread(db, self._case_id(case_link_id), now)

    def threads(self, *, now: int) -> list[CaseThread]:
        with self._transaction(write=False) as db:
            ids = [bytes(r[0]) for r in self._rows(db, "SELECT case_id FROM cases")]
            found = [self._thread(db, case_id, now) for case_id in ids]
        return sorted((t for t in found if t is not None), key=lambda t: -t.last_activity)

    def _resummarise(self, db: sqlite3.Connection, case_id: bytes, now: int) -> CaseSummary | None:
        """A case's summary made again from its replayed thread, and stored in its row."""
        thread = self._thread(db, case_id, now)
        if thread is None:
            return None
        summary = summarise(thread)
        row = self._case_row(case_id, len(thread.messages), summary)
        db.execute("UPDATE cases SET sealed=? WHERE case_id=?", (row, case_id))
        return summary

    def _summaries(self, rows: list[Any], counts: dict[bytes, int]) -> tuple[list[CaseSummary], list[bytes]]:
        """The summaries in `rows` (case id, sealed record), and the ids of rows of an older format."""
        found, older = [], []
        for raw_id, sealed in rows:
            case_id = bytes(raw_id)
            record = self._open(sealed, b"case\x00" + case_id)
            if record[2] != counts.get(case_id, 0):
                raise _damaged(self.path, "a case's messages are missing")
            if record[0] == CASE_RECORD_VERSION:
                found.append(self._summary_of(record))
            else:
                older.append(case_id)
        return found, older

    def summaries(self, *, now: int) -> list[CaseSummary]:
        """Every case's summary, from the case rows alone; rows of an older format get theirs
        from a replay of their thread (once: it is stored)."""
        with self._transaction(write=False) as db:
            rows = self._rows(db, "SELECT case_id, sealed FROM cases")
            counted = self._rows(db, "SELECT case_id, COUNT(*) FROM messages GROUP BY case_id")
            found, older = self._summaries(rows, {bytes(i): n for i, n in counted})
        if older:
            with self._transaction() as db:
                found += [s for s in (self._resummarise(db, i, now) for i in older) if s is not None]
        return found

    def summary(self, case_link_id: bytes, *, now: int) -> CaseSummary | None:
        """One case's summary (None if the store holds no such case)."""
        case_id = self._case_id(case_link_id)
        with self._transaction(write=False) as db:
            rows = self._rows(db, "SELECT case_id, sealed FROM cases WHERE case_id=?", (case_id,))
            count = self._rows(db, "SELECT COUNT(*) FROM messages WHERE case_id=?", (case_id,))[0][0]
            found, older = self._summaries(rows, {case_id: count})
        if older:
            with self._transaction() as db:
                return self._resummarise(db, case_id, now)
        return found[0] if found else None

    def unlinked_refusals(self) -> list[RefusedMessage]:
        """Refused messages tied to no stored case (they did not decode, or named no case here)."""
        with self._transaction(write=False) as db:
            return self._refusals(db, None)

    def find(self, query: str, *, now: int) -> CaseThread:
        """The case named by either side's case number, its link id (32 hex digits) or a
        unique prefix of it (at least 8 hex digits)."""
        text = normal_case_ref(query)
        with self._transaction(write=False) as db:
            if _HEX_ID.fullmatch(text.lower()):
                found = self._thread(db, self._case_id(bytes.fromhex(text.lower())), now)
                if found is not None:
                    return found
            ref_key = self._index(b"ref", text.encode())
            ids = [
                bytes(r[0])
                for r in self._rows(db, "SELECT case_id FROM case_refs WHERE ref_key=?", (ref_key,))
            ]
            if not ids and _HEX_PREFIX.fullmatch(text.lower()):
                ids = [
                    bytes(case_id)
                    for case_id, sealed in self._rows(db, "SELECT case_id, sealed FROM cases")
                    if self._open(sealed, b"case\x00" + bytes(case_id))[1].hex().startswith(text.lower())
                ]
            threads = [t for t in (self._thread(db, i, now) for i in ids) if t is not None]
        if not threads:
            raise NotFound(
                f"no case {query!r} in this agency's case store; `casebridge cases list` shows them."
            )
        if len(threads) > 1:
            links = ", ".join(t.case_link_id.hex() for t in threads)
            raise Conflict(f"{query!r} names several cases ({links}); give the case link id instead.")
        return threads[0]

    # --- writing ---------------------------------------------------------------------------------

    def _append(
        self,
        db: sqlite3.Connection,
        message: Message,
        direction: Direction,
        envelope_id: str | None,
        now: int,
        attachments: tuple[str, ...],
    ) -> CaseState:
        case_id = self._case_id(message.header.case_link_id)
        messages = self._load_messages(db, case_id)
        before = self._replayed(messages, now)
        after = apply(before, message, as_sender=direction is Direction.SENT, now=now)
        seq = int(self._rows(db, "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages")[0][0])
        message_key = self._index(b"message", message.message_id)
        record = [1, str(direction), encode_message(message), envelope_id, now, list(attachments)]
        db.execute(
            "INSERT INTO messages VALUES (?, ?, ?, ?)",
            (seq, case_id, message_key, self._seal(record, self._message_ad(case_id, seq, message_key))),
        )
        stored = StoredMessage(seq, direction, message, envelope_id, now, attachments)
        thread = CaseThread(after, (*messages, stored))
        row = self._case_row(case_id, len(thread.messages), summarise(thread))
        db.execute("INSERT OR REPLACE INTO cases VALUES (?, ?)", (case_id, row))
        for ref in (after.destination_case_ref, after.origin_case_ref):
            if ref is not None:
                ref_key = self._index(b"ref", normal_case_ref(ref).encode())
                db.execute("INSERT OR IGNORE INTO case_refs VALUES (?, ?)", (ref_key, case_id))
        return after

    def record_sent(self, message: Message, *, now: int, attachments: tuple[str, ...] = ()) -> CaseState:
        """Apply `message` as its sender and add it to its case; raises the workflow's refusal
        (`InvalidTransition`, `ConsentError`, `InvalidField`) and then stores nothing."""
        with self._transaction() as db:
            return self._append(db, message, Direction.SENT, None, now, attachments)

    def record_received(
        self, message: Message, *, envelope_id: str, now: int, attachments: tuple[str, ...] = ()
    ) -> CaseState:
        """Apply `message` as its recipient and add it to its case; the same message again
        (same bytes) changes nothing. Raises the workflow's refusal and then stores nothing."""
        with self._transaction() as db:
            case_id = self._case_id(message.header.case_link_id)
            known = next(
                (m for m in self._load_messages(db, case_id) if m.message.message_id == message.message_id),
                None,
            )
            if known is not None and encode_message(known.message) == encode_message(message):
                state = self._replayed(self._load_messages(db, case_id), now)
                assert state is not None  # A case with a message has a state.
                return state
            return self._append(db, message, Direction.RECEIVED, envelope_id, now, attachments)

    def _rewrite_sent(self, message: Message, envelope_id: str | None, *, remove: bool) -> None:
        case_id = self._case_id(message.header.case_link_id)
        message_key = self._index(b"message", message.message_id)
        with self._transaction() as db:
            rows = self._rows(
                db,
                "SELECT seq, sealed FROM messages WHERE case_id=? AND message_key=?",
                (case_id, message_key),
            )
            if not rows:
                raise NotFound(f"message {message.message_id.hex()} is not in the case store.")
            seq, sealed = rows[0]
            ad = self._message_ad(case_id, seq, message_key)
            record = self._open(sealed, ad)
            if record[1] != str(Direction.SENT) or record[3] is not None:
                raise Conflict(f"message {message.message_id.hex()} was already sealed.")
            if not remove:
                record[3] = envelope_id
                db.execute("UPDATE messages SET sealed=? WHERE seq=?", (self._seal(record, ad), seq))
                return
            remaining = [m for m in self._load_messages(db, case_id) if m.seq != seq]
            db.execute("DELETE FROM messages WHERE seq=?", (seq,))
            if not remaining:
                db.execute("DELETE FROM cases WHERE case_id=?", (case_id,))
                db.execute("DELETE FROM case_refs WHERE case_id=?", (case_id,))
                return
            # Each remaining message was applied at its recording time, so it replays then.
            state = self._replayed(remaining, max(m.recorded_at for m in remaining))
            assert state is not None  # A case with a message has a state.
            thread = CaseThread(state, tuple(remaining))
            row = self._case_row(case_id, len(remaining), summarise(thread))
            db.execute("UPDATE cases SET sealed=? WHERE case_id=?", (row, case_id))

    def mark_sealed(self, message: Message, envelope_id: str) -> None:
        """Note the envelope a sent message was sealed into."""
        self._rewrite_sent(message, envelope_id, remove=False)

    def discard_unsealed(self, message: Message) -> None:
        """Take back a sent message whose sealing failed (it never left this machine)."""
        self._rewrite_sent(message, None, remove=True)

    def record_refusal(self, refused: RefusedMessage) -> None:
        """Keep a refused delivery and why (once per envelope)."""
        case_id = None if refused.case_link_id is None else self._case_id(refused.case_link_id)
        raw = None if refused.message is None else encode_message(refused.message)
        record = [1, refused.sender_id, refused.refused_at, refused.reason, refused.detail, raw]
        ad = b"refused\x00" + refused.envelope_id.encode() + b"\x00" + (case_id or b"")
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO refused VALUES (?, ?, ?)",
                (refused.envelope_id, case_id, self._seal(record, ad)),
            )

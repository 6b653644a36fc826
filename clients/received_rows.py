"""The `received` table of the client's state database, sealed at rest, and the migration from
the earlier table that held its content in clear.

Invariants:
- Clear columns hold only what the broker knows too: envelope id and hash, sender id, the
  envelope's folder (relative to the state directory), acceptance and reception times.
- Everything decrypted (the sender's display name, the content type, the body, each
  attachment's name, media type, length and file key) is one msgpack record sealed with
  XChaCha20-Poly1305 (libsodium through PyNaCl) under `received_key`, a subkey of the agency's
  signing seed (`derive_subkey`, label `cb-received`), with a random 24-byte nonce. Its
  associated data names the table, the envelope id and the other clear columns but the folder,
  so a record copied into another row, or a row whose clear columns were changed, does not open:
  `DecryptionFailed`, and nothing of it is handed over.
- Migration (state schema 1 to 2) happens once, when the state is opened with the key: each
  attachment released in clear is sealed (`clients.received_files`) next to it, then in one
  transaction every row is sealed into the new table, the old one dropped (the database
  overwrites freed pages) and the schema number raised; only after that commit are the clear
  files deleted, and then the database is vacuumed and its write-ahead log truncated.
  Interrupted before the commit, it starts again from the clear rows next time; after it, the
  receiver removes any clear `files/` folder left behind (`Receiver.discard_leftovers`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions

from clients.inbox_files import delete_tree
from clients.local_records import ReceivedEntry
from clients.received_files import (
    FILE_CHUNK_BYTES,
    FILE_KEY_BYTES,
    ReceivedFile,
    SealedFileWriter,
    discard_sealed_files,
    sealed_file_path,
)
from protocol import codec
from protocol.envelope import MAX_ATTACHMENTS, MAX_MANIFEST_BYTES
from protocol.errors import CaseBridgeError, DecryptionFailed
from protocol.primitives import Random, derive_subkey

TABLE = "received"
RECORD_VERSION = 1
NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
RECORD_LIMITS = codec.Limits(max_bytes=MAX_MANIFEST_BYTES + (1 << 20), max_bin_len=MAX_MANIFEST_BYTES)
LEGACY_FILES_FOLDER = "files"
"""Where schema 1 released attachments in clear, inside each envelope's folder."""
_AD_LABEL = b"CB-RECEIVED-v1\x00"

INSERT_ROW = (
    "INSERT OR REPLACE INTO received (envelope_id, envelope_hash, sender_id, directory, accepted_at,"
    " received_at, sealed) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
SELECT_ROW = (
    "SELECT envelope_id, envelope_hash, sender_id, directory, accepted_at, received_at, sealed"
    " FROM received WHERE envelope_id=?"
)
SELECT_ROWS = (
    "SELECT envelope_id, envelope_hash, sender_id, directory, accepted_at, received_at, sealed"
    " FROM received ORDER BY received_at, envelope_id"
)
_INSERT_MIGRATED = (
    "INSERT INTO received_sealing (envelope_id, envelope_hash, sender_id, directory, accepted_at,"
    " received_at, sealed) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def table_sql(name: str = TABLE) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {name} ("
        " envelope_id TEXT PRIMARY KEY, envelope_hash TEXT NOT NULL, sender_id TEXT NOT NULL,"
        " directory TEXT NOT NULL, accepted_at INTEGER NOT NULL, received_at INTEGER NOT NULL,"
        " sealed BLOB NOT NULL)"
    )


def received_key(signing_seed: bytes) -> bytes:
    """The key that seals this agency's `received` rows (a subkey of its signing seed)."""
    return derive_subkey(signing_seed, 1, label=b"cb-received")


def _ad(envelope_id: str, envelope_hash: str, sender_id: str, accepted_at: int, received_at: int) -> bytes:
    clear = codec.encode([TABLE, envelope_id, envelope_hash, sender_id, accepted_at, received_at])
    return _AD_LABEL + clear


def _refused(database: Path, envelope_id: str, what: str) -> DecryptionFailed:
    return DecryptionFailed(
        f"the received envelope {envelope_id} in {database} does not open with this agency's key "
        f"({what}): the state file was altered or damaged, or written under another agency key. "
        "Nothing of it is handed over; restore the state directory from a backup, or ask the "
        "sender to send the referral again.",
        reason=f"received row: {what}",
    )


def seal_row(key: bytes, rng: Random, entry: ReceivedEntry, directory: str) -> tuple[Any, ...]:
    """The table row (in `INSERT_ROW` order) holding `entry`, its content sealed."""
    files = [[f.filename, f.media_type, f.length, f.file_key] for f in entry.attachments]
    record = [RECORD_VERSION, entry.sender_name, entry.content_type, entry.body, files]
    ad = _ad(entry.envelope_id, entry.envelope_hash, entry.sender_id, entry.accepted_at, entry.received_at)
    nonce = rng(NONCE_BYTES)
    sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        codec.encode(record, limits=RECORD_LIMITS), ad, nonce, key
    )
    return (
        entry.envelope_id,
        entry.envelope_hash,
        entry.sender_id,
        directory,
        entry.accepted_at,
        entry.received_at,
        nonce + sealed,
    )


def open_row(key: bytes, row: Sequence[Any], folder: Path, database: Path) -> ReceivedEntry:
    """The entry a row (in `SELECT_ROW` order) holds; `folder` is its envelope folder, absolute.
    Raises `DecryptionFailed` for a row that was altered, moved or sealed under another key."""
    envelope_id, envelope_hash, sender_id, _, accepted_at, received_at, blob = row
    blob = bytes(blob)
    ad = _ad(envelope_id, envelope_hash, sender_id, accepted_at, received_at)
    try:
        plaintext = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            blob[NONCE_BYTES:], ad, blob[:NONCE_BYTES], key
        )
    except (nacl.exceptions.CryptoError, ValueError) as e:
        raise _refused(database, envelope_id, "the sealed record does not decrypt") from e
    try:
        items = codec.array(codec.decode(plaintext, limits=RECORD_LIMITS), "received", 5)
        codec.literal(items[0], "version", RECORD_VERSION)
        files = codec.array(items[4], "attachments", max_len=MAX_ATTACHMENTS)
        attachments = []
        for index, value in enumerate(files):
            filename, media_type, length, file_key = codec.array(value, "attachment", 4)
            attachments.append(
                ReceivedFile(
                    codec.str_(filename, "filename"),
                    codec.str_(media_type, "media_type"),
                    codec.int_(length, "length"),
                    sealed_file_path(folder, index),
                    codec.bin_(file_key, "file_key", FILE_KEY_BYTES),
                    envelope_id,
                    index,
                )
            )
        return ReceivedEntry(
            envelope_id=envelope_id,
            envelope_hash=envelope_hash,
            sender_id=sender_id,
            sender_name=codec.str_(items[1], "sender_name"),
            content_type=codec.str_(items[2], "content_type"),
            body=codec.bin_(items[3], "body", max_len=MAX_MANIFEST_BYTES),
            attachments=tuple(attachments),
            directory=folder,
            accepted_at=accepted_at,
            received_at=received_at,
        )
    except CaseBridgeError as e:
        raise _refused(database, envelope_id, "the sealed record is malformed") from e


# --- migration from schema 1 ------------------------------------------------------------------


def _seal_clear_file(source: Path, target: ReceivedFile) -> None:
    """Seal a file released in clear by schema 1; a file the application already removed stays
    missing (reading it then says so)."""
    try:
        plain = source.open("rb")
    except FileNotFoundError:
        return
    with plain, SealedFileWriter(target) as writer:
        while chunk := plain.read(FILE_CHUNK_BYTES):
            writer.write(chunk)


def migrate_clear_rows(db: sqlite3.Connection, state_dir: Path, key: bytes, rng: Random) -> list[Path]:
    """Inside a write transaction on a schema-1 database: seal every `received` row and its
    attachments into a new `received` table. Returns the clear folders to delete once the
    transaction has committed."""
    rows = db.execute(
        "SELECT envelope_id, envelope_hash, sender_id, sender_name, content_type, body, attachments,"
        " directory, accepted_at, received_at FROM received"
    ).fetchall()
    db.execute("DROP TABLE IF EXISTS received_sealing")
    db.execute(table_sql("received_sealing"))
    clear: list[Path] = []
    for row in rows:
        envelope_id, directory = row[0], row[7]
        folder = state_dir / directory
        discard_sealed_files(folder)
        attachments = []
        for index, (filename, media_type, length, path) in enumerate(json.loads(row[6])):
            target = ReceivedFile(
                filename,
                media_type,
                length,
                sealed_file_path(folder, index),
                rng(FILE_KEY_BYTES),
                envelope_id,
                index,
            )
            source = state_dir / path
            if source.is_relative_to(state_dir):
                _seal_clear_file(source, target)
                clear.append(source)
            attachments.append(target)
        clear.append(folder / LEGACY_FILES_FOLDER)
        entry = ReceivedEntry(
            envelope_id=envelope_id,
            envelope_hash=row[1],
            sender_id=row[2],
            sender_name=row[3],
            content_type=row[4],
            body=bytes(row[5]),
            attachments=tuple(attachments),
            directory=folder,
            accepted_at=row[8],
            received_at=row[9],
        )
        db.execute(_INSERT_MIGRATED, seal_row(key, rng, entry, directory))
    db.execute("DROP TABLE received")
    db.execute("ALTER TABLE received_sealing RENAME TO received")
    return clear


def delete_clear_files(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir():
            delete_tree(path)
        else:
            path.unlink(missing_ok=True)

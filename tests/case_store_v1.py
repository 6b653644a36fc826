"""The case store as CaseBridge wrote it before case rows carried summaries (schema 1), made from
a current store by sealing every case row again in the schema-1 layout: [1, case link id,
message count], under the same key and associated data. Message rows did not change.

The store key is read here exactly as `CaseStore` reads it, so a change of the key schedule or
of the record sealing in `clients/case_store.py` shows as a record that does not open. Used by
the migration tests and by `bench/desk_unlock_bench.py` (whose baseline decrypts rows with it).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import nacl.bindings as sodium

from keys.identity import AgencyIdentity
from protocol import codec
from protocol.primitives import derive_subkey

NONCE = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
RECORD_AD = b"CB-CASE-RECORD-v1\x00"
LIMITS = codec.Limits(max_bytes=2 << 20, max_bin_len=(1 << 20) + 64)


def record_key(db: sqlite3.Connection, identity: AgencyIdentity) -> bytes:
    """The key sealing every record of the store open in `db`."""
    wrap_key = derive_subkey(identity.signing_seed, 1, label=b"cb-case-store")
    ad = b"CB-CASE-STORE-KEY-v1\x00" + identity.agency_id.encode() + b"\x00" + identity.key_id
    (blob,) = db.execute(
        "SELECT value FROM meta WHERE name=?", ("store_key:" + identity.key_id.hex(),)
    ).fetchone()
    store_key = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(blob[NONCE:], ad, blob[:NONCE], wrap_key)
    return derive_subkey(store_key, 1, label=b"cb-case-record")


def open_record(key: bytes, sealed: bytes, ad: bytes) -> bytes:
    """A record's plaintext (its msgpack encoding)."""
    plaintext: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        sealed[NONCE:], RECORD_AD + ad, sealed[:NONCE], key
    )
    return plaintext


def as_schema_1(path: Path, identity: AgencyIdentity) -> int:
    """Rewrite the closed store at `path` as schema 1 wrote it; returns how many case rows."""
    db = sqlite3.connect(path)
    with contextlib.closing(db), db:
        key = record_key(db, identity)
        rows = db.execute("SELECT case_id, sealed FROM cases").fetchall()
        for case_id, sealed in rows:
            ad = b"case\x00" + case_id
            record = codec.decode(open_record(key, sealed, ad), limits=LIMITS)
            nonce = sodium.randombytes(NONCE)
            plaintext = codec.encode([1, record[1], record[2]], limits=LIMITS)
            resealed = nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
                plaintext, RECORD_AD + ad, nonce, key
            )
            db.execute("UPDATE cases SET sealed=? WHERE case_id=?", (resealed, case_id))
        db.execute("UPDATE meta SET value=1 WHERE name='schema'")
    return len(rows)

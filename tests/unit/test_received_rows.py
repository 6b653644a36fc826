"""The `received` table sealed at rest: a row opens only in its own place and under its own
agency's key, fails closed with a clear error otherwise, and holds nothing decrypted in clear."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from clients.local_records import ReceivedEntry
from clients.outbox import DATABASE_NAME, LocalState
from clients.received_files import FILE_KEY_BYTES, ReceivedFile, sealed_file_path
from clients.received_rows import received_key
from protocol.errors import DecryptionFailed, InvalidField

SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))
BODY = "ส่งต่อกรณี นางสาว สมหญิง ใจดี / ນາງ ສົມພອນ ແກ້ວມະນີ".encode()
FIRST, SECOND = "11" * 16, "22" * 16


def entry(state: LocalState, envelope_id: str, body: bytes = BODY) -> ReceivedEntry:
    folder = state.directory / "inbox" / envelope_id
    return ReceivedEntry(
        envelope_id=envelope_id,
        envelope_hash="ab" * 32,
        sender_id="TH-ATPD",
        sender_name="กองต่อต้านการค้ามนุษย์",
        content_type="application/json",
        body=body,
        attachments=(
            ReceivedFile(
                "เอกสารประกอบ.pdf",
                "application/pdf",
                12,
                sealed_file_path(folder, 0),
                os.urandom(FILE_KEY_BYTES),
                envelope_id,
                0,
            ),
        ),
        directory=folder,
        accepted_at=1_767_225_600,
        received_at=1_767_225_700,
    )


def opened(tmp_path: Path, seed: bytes = SEED) -> LocalState:
    return LocalState(tmp_path / "state", received_key=received_key(seed))


def state_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.glob(f"{DATABASE_NAME}*") if p.is_file())


def raw(state: LocalState, sql: str, params: tuple[object, ...] = ()) -> None:
    with contextlib.closing(sqlite3.connect(state.path)) as db, db:
        db.execute(sql, params)


def test_a_received_row_round_trips_and_holds_no_body_name_or_file_key_in_clear(tmp_path: Path) -> None:
    state = opened(tmp_path)
    written = entry(state, FIRST)
    state.add_received(written, b"verified receipt")
    assert state.received_entry(FIRST) == written
    assert state.received_entries() == [written]
    assert state.has_received(FIRST)
    assert not state.has_received(SECOND)
    state.close()
    on_disk = state_bytes(tmp_path / "state")
    for secret in (BODY, "สมหญิง".encode(), "เอกสารประกอบ".encode(), written.attachments[0].file_key):
        assert secret not in on_disk
    again = opened(tmp_path)
    assert again.received_entry(FIRST) == written
    again.close()


def test_a_sealed_row_swapped_with_another_envelope_s_fails_closed_naming_the_envelope(
    tmp_path: Path,
) -> None:
    state = opened(tmp_path)
    state.add_received(entry(state, FIRST), b"r1")
    state.add_received(entry(state, SECOND, "อีกเรื่องหนึ่ง".encode()), b"r2")
    raw(
        state,
        "UPDATE received SET sealed = CASE envelope_id"
        " WHEN ? THEN (SELECT sealed FROM received WHERE envelope_id = ?)"
        " ELSE (SELECT sealed FROM received WHERE envelope_id = ?) END",
        (FIRST, SECOND, FIRST),
    )
    with pytest.raises(DecryptionFailed, match=FIRST) as refused:
        state.received_entry(FIRST)
    assert "restore the state directory" in str(refused.value)
    with pytest.raises(DecryptionFailed):
        state.received_entries()


@pytest.mark.parametrize(
    ("column", "value"),
    [("sender_id", "LA-MOLSW"), ("envelope_hash", "cd" * 32), ("accepted_at", 1), ("received_at", 2)],
)
def test_a_changed_clear_column_makes_the_row_fail_closed(tmp_path: Path, column: str, value: object) -> None:
    state = opened(tmp_path)
    state.add_received(entry(state, FIRST), b"r1")
    raw(state, f"UPDATE received SET {column} = ?", (value,))  # noqa: S608 - the column is a test constant.
    with pytest.raises(DecryptionFailed, match="does not open"):
        state.received_entry(FIRST)


def test_a_flipped_byte_in_the_sealed_record_fails_closed(tmp_path: Path) -> None:
    state = opened(tmp_path)
    state.add_received(entry(state, FIRST), b"r1")
    with contextlib.closing(sqlite3.connect(state.path)) as db, db:
        (sealed,) = db.execute("SELECT sealed FROM received").fetchone()
        flipped = bytearray(sealed)
        flipped[40] ^= 1
        db.execute("UPDATE received SET sealed = ?", (bytes(flipped),))
    with pytest.raises(DecryptionFailed):
        state.received_entry(FIRST)


def test_another_agency_s_key_opens_no_row(tmp_path: Path) -> None:
    state = opened(tmp_path)
    state.add_received(entry(state, FIRST), b"r1")
    state.close()
    other = opened(tmp_path, OTHER_SEED)
    with pytest.raises(DecryptionFailed, match="another agency key"):
        other.received_entries()
    other.close()


def test_without_the_key_the_state_serves_everything_but_received_content(tmp_path: Path) -> None:
    state = opened(tmp_path)
    state.add_received(entry(state, FIRST), b"r1")
    state.close()
    keyless = LocalState(tmp_path / "state")
    assert keyless.outbox_entries() == []
    assert keyless.has_received(FIRST)
    assert keyless.signed_receipt(FIRST, "verified") == b"r1"
    with pytest.raises(InvalidField, match="received key"):
        keyless.received_entries()
    with pytest.raises(InvalidField):
        keyless.add_received(entry(keyless, SECOND), b"r2")
    keyless.close()

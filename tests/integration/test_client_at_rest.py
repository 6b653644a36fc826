"""Nothing a client decrypted is on its disk in clear: between receipt and acknowledgement the
body is sealed in the state database and the attachments are sealed files, a row or file moved
or altered fails closed, and a state directory written before sealing (schema 1, everything in
clear) is migrated when first opened, leaving no clear copy behind.

Every test runs a real client against a real broker in this process, and searches the bytes of
every file in the state directory (the database, its -wal and -shm files, the envelope folders)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from clients.desk.attachment_vault import AttachmentVault, vault_key
from clients.inbox import Delivery, save_attachments
from protocol.errors import DecryptionFailed
from tests.integration.broker_harness import RunningBroker
from tests.integration.client_harness import THAI_FILENAME, THAI_REFERRAL, document, make_client

CONTENT = document(2_500_000, seed=9)
BODY_TEXTS = ("สมชาย ใจดี", "ນາງ ສົມພອນ ແກ້ວມະນີ", "ขอความช่วยเหลือด่วน")
NEEDLES = (
    *(t.encode() for t in BODY_TEXTS),
    THAI_FILENAME.encode(),
    CONTENT[1000:1064],
    CONTENT[1_200_000:1_200_064],
    CONTENT[-64:],
)
SCHEMA_1_RECEIVED = (
    "CREATE TABLE received ("
    " envelope_id TEXT PRIMARY KEY, envelope_hash TEXT NOT NULL, sender_id TEXT NOT NULL,"
    " sender_name TEXT NOT NULL, content_type TEXT NOT NULL, body BLOB NOT NULL, attachments TEXT NOT NULL,"
    " directory TEXT NOT NULL, accepted_at INTEGER NOT NULL, received_at INTEGER NOT NULL)"
)


def traces(state: Path) -> list[tuple[str, bytes]]:
    """Each (file, needle) where a needle of the referral's plaintext shows in the state
    directory: in a file's bytes or in a file's name."""
    found = []
    for path in sorted(p for p in state.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [(str(path.relative_to(state)), n) for n in NEEDLES if n in data]
        if THAI_FILENAME in str(path):
            found.append((str(path.relative_to(state)), b"<in the file name>"))
    return found


def checkpoint(state: Path) -> None:
    """Move the write-ahead log into the database file, from a second connection."""
    with contextlib.closing(sqlite3.connect(state / "state.sqlite3")) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


async def send(broker: RunningBroker, tmp_path: Path, body: bytes = THAI_REFERRAL) -> str:
    attachment = tmp_path / THAI_FILENAME
    attachment.write_bytes(CONTENT)
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        sent = await atpd.send(["LA-MOLSW"], body, attachments=[attachment])
    return sent.envelope_id


async def receive_without_ack(broker: RunningBroker, state: Path) -> list[Delivery]:
    async with make_client(broker, "LA-MOLSW", state) as molsw:
        return await molsw.fetch_deliveries()


async def test_nothing_decrypted_is_on_disk_between_receipt_and_acknowledgement(
    broker: RunningBroker, tmp_path: Path
) -> None:
    envelope_id = await send(broker, tmp_path)
    state = tmp_path / "molsw"
    async with make_client(broker, "LA-MOLSW", state) as molsw:
        (delivery,) = await molsw.fetch_deliveries()
        assert (delivery.envelope_id, delivery.body) == (envelope_id, THAI_REFERRAL)
        assert all(text in delivery.text for text in BODY_TEXTS)
        assert traces(state) == []
        checkpoint(state)
        assert traces(state) == []
    assert traces(state) == []

    # Handed over again until acknowledged (exactly once), and the plaintext is there on request.
    async with make_client(broker, "LA-MOLSW", state) as molsw:
        (again,) = await molsw.fetch_deliveries()
        (received,) = again.attachments
        assert (received.filename, received.length) == (THAI_FILENAME, len(CONTENT))
        assert b"".join(received.open()) == CONTENT
        saved = received.save_to(tmp_path / "ที่บันทึก.pdf")
        assert saved.read_bytes() == CONTENT
        await molsw.ack(again)
        assert await molsw.fetch_deliveries() == []
        checkpoint(state)
    assert traces(state) == []
    assert not (state / "inbox" / envelope_id).exists()


def swap_sealed_rows(state: Path, first: str, second: str) -> None:
    with contextlib.closing(sqlite3.connect(state / "state.sqlite3")) as db, db:
        rows = dict(db.execute("SELECT envelope_id, sealed FROM received").fetchall())
        db.execute("UPDATE received SET sealed=? WHERE envelope_id=?", (rows[second], first))
        db.execute("UPDATE received SET sealed=? WHERE envelope_id=?", (rows[first], second))


async def test_a_sealed_row_moved_to_another_envelope_fails_closed_and_nothing_is_handed_over(
    broker: RunningBroker, tmp_path: Path
) -> None:
    first = await send(broker, tmp_path)
    second = await send(broker, tmp_path, "อีกกรณีหนึ่ง ນາງ ບົວໄຂ".encode())
    state = tmp_path / "molsw"
    assert sorted(d.envelope_id for d in await receive_without_ack(broker, state)) == sorted([first, second])
    swap_sealed_rows(state, first, second)
    async with make_client(broker, "LA-MOLSW", state) as molsw:
        with pytest.raises(DecryptionFailed, match="restore the state directory") as refused:
            await molsw.fetch_deliveries()
        assert first in str(refused.value) or second in str(refused.value)
        with pytest.raises(DecryptionFailed):
            molsw.pending_deliveries()
    # Put back, the rows open again: the swap alone was refused.
    swap_sealed_rows(state, first, second)
    async with make_client(broker, "LA-MOLSW", state) as molsw:
        deliveries = await molsw.fetch_deliveries()
        assert sorted(d.envelope_id for d in deliveries) == sorted([first, second])
        for delivery in deliveries:
            await molsw.ack(delivery)
        assert await molsw.fetch_deliveries() == []


async def test_an_altered_sealed_attachment_fails_closed_and_leaves_no_file_in_the_desk_or_the_save_folder(
    broker: RunningBroker, tmp_path: Path
) -> None:
    envelope_id = await send(broker, tmp_path)
    state = tmp_path / "molsw"
    await receive_without_ack(broker, state)
    sealed = state / "inbox" / envelope_id / "sealed-0"
    original = sealed.read_bytes()
    altered = bytearray(original)
    altered[len(altered) // 2] ^= 1
    sealed.write_bytes(bytes(altered))
    async with make_client(broker, "LA-MOLSW", state) as molsw:
        (delivery,) = await molsw.fetch_deliveries()
        assert delivery.body == THAI_REFERRAL
        with pytest.raises(DecryptionFailed, match="does not open"):
            save_attachments(delivery, tmp_path / "saved")
        assert list((tmp_path / "saved").iterdir()) == []
        vault = AttachmentVault(state, vault_key(molsw.identity.signing_seed))
        with pytest.raises(DecryptionFailed):
            vault.store(envelope_id, 0, delivery.attachments[0].open())
        assert not vault.has(envelope_id, 0)
        assert list((state / "desk-vault" / envelope_id).iterdir()) == []
        # Unaltered, the desk's vault takes it straight from the sealed stream.
        sealed.write_bytes(original)
        vault.store(envelope_id, 0, delivery.attachments[0].open())
        assert b"".join(vault.open_stream(envelope_id, 0)) == CONTENT
        await molsw.ack(delivery)


def downgrade_to_schema_1(state: Path, delivery: Delivery) -> Path:
    """Rewrite a state directory as CaseBridge wrote it before sealing (schema 1): the row in
    clear, the attachment released in clear under its name in `files/`."""
    folder = f"inbox/{delivery.envelope_id}"
    (received,) = delivery.attachments
    clear_file = state / folder / "files" / received.filename
    clear_file.parent.mkdir()
    clear_file.write_bytes(b"".join(received.open()))
    received.sealed_path.unlink()
    files = [[received.filename, received.media_type, received.length, f"{folder}/files/{received.filename}"]]
    with contextlib.closing(sqlite3.connect(state / "state.sqlite3")) as db, db:
        db.execute("DROP TABLE received")
        db.execute(SCHEMA_1_RECEIVED)
        db.execute(
            "INSERT INTO received VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                delivery.envelope_id, delivery.envelope_hash, delivery.sender_id, delivery.sender_name,
                delivery.content_type, delivery.body, json.dumps(files, ensure_ascii=False), folder,
                delivery.accepted_at, delivery.received_at,
            ),
        )  # fmt: skip
        db.execute("UPDATE meta SET value=1 WHERE name='schema'")
    return clear_file


def schema_of(state: Path) -> int:
    with contextlib.closing(sqlite3.connect(state / "state.sqlite3")) as db:
        return int(db.execute("SELECT value FROM meta WHERE name='schema'").fetchone()[0])


async def test_a_state_directory_from_before_sealing_is_migrated_and_keeps_no_clear_copy(
    broker: RunningBroker, tmp_path: Path
) -> None:
    envelope_id = await send(broker, tmp_path)
    state = tmp_path / "molsw"
    (before,) = await receive_without_ack(broker, state)
    clear_file = downgrade_to_schema_1(state, before)
    checkpoint(state)
    assert schema_of(state) == 1
    assert {n for _, n in traces(state)} == set(NEEDLES) | {b"<in the file name>"}

    async with make_client(broker, "LA-MOLSW", state) as molsw:
        assert schema_of(state) == 2
        assert not clear_file.parent.exists()
        assert traces(state) == []
        (waiting,) = molsw.pending_deliveries()
        assert (waiting.envelope_id, waiting.body, waiting.sender_name) == (
            envelope_id,
            THAI_REFERRAL,
            before.sender_name,
        )
        (received,) = waiting.attachments
        assert (received.filename, received.media_type, received.length) == (
            THAI_FILENAME,
            before.attachments[0].media_type,
            len(CONTENT),
        )
        assert b"".join(received.open()) == CONTENT
    assert traces(state) == []

    # A clear folder left by a migration interrupted after its commit goes at the next start.
    clear_file.parent.mkdir()
    clear_file.write_bytes(CONTENT)
    async with make_client(broker, "LA-MOLSW", state) as molsw:
        assert not clear_file.parent.exists()
        (delivery,) = await molsw.fetch_deliveries()
        assert delivery.envelope_id == envelope_id
        await molsw.ack(delivery)
        assert await molsw.fetch_deliveries() == []
        checkpoint(state)
    assert traces(state) == []
    assert not (state / "inbox" / envelope_id).exists()

"""Received attachments rest as sealed files: nothing of the plaintext or its name on disk, the
plaintext only through an explicit call, streamed in bounded memory, and any alteration fails
closed without leaving a partial file."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from clients.envelope_files import load_sealed_directory, open_into_sinks
from clients.received_files import (
    ABYTES,
    FILE_CHUNK_BYTES,
    FILE_KEY_BYTES,
    HEADER_BYTES,
    ReceivedFile,
    SealedFileWriter,
    discard_sealed_files,
    sealed_file_path,
)
from protocol.envelope import AttachmentInfo
from protocol.errors import DecryptionFailed, NotFound
from tests.unit.test_envelope_files import NOW, flip_byte, make_world, sealed_three

ENVELOPE = "64a1814a7169740514553a62768b9a5b"
OTHER_ENVELOPE = "0f" * 16
LAO_NAME = "ເອກະສານ.pdf"
THAI_NAME = "เอกสารประกอบ.pdf"
MIB = 1 << 20


def content(size: int, seed: int = 1) -> bytes:
    """Bytes that do not repeat within a chunk, so a misplaced chunk shows."""
    block = bytes((i * 131 + seed * 17 + i // 251) % 256 for i in range(65_521))
    return (block * (size // len(block) + 1))[:size]


def sealed(folder: Path, data: bytes, *, index: int = 0, envelope_id: str = ENVELOPE) -> ReceivedFile:
    folder.mkdir(parents=True, exist_ok=True)
    target = ReceivedFile(
        LAO_NAME, "application/pdf", len(data), sealed_file_path(folder, index), os.urandom(FILE_KEY_BYTES),
        envelope_id, index,
    )  # fmt: skip
    with SealedFileWriter(target) as writer:
        # Pieces of uneven sizes, as a decryptor hands them over.
        for start in range(0, len(data), 300_001):
            writer.write(data[start : start + 300_001])
    return target


@pytest.mark.parametrize(
    "size", [0, 1, FILE_CHUNK_BYTES - 1, FILE_CHUNK_BYTES, FILE_CHUNK_BYTES + 1, 3 * FILE_CHUNK_BYTES + 17]
)
def test_a_sealed_attachment_reads_back_whole_and_holds_no_plaintext(tmp_path: Path, size: int) -> None:
    data = content(size)
    received = sealed(tmp_path / "inbox", data)
    raw = received.sealed_path.read_bytes()
    chunks = max(1, -(-size // FILE_CHUNK_BYTES))
    assert len(raw) == HEADER_BYTES + size + chunks * ABYTES
    assert received.sealed_path.stat().st_mode & 0o777 == 0o600
    assert received.sealed_path.name == "sealed-0"
    for start in range(0, max(0, size - 32), max(1, size // 7)):
        assert data[start : start + 32] not in raw
    pieces = list(received.open())
    assert all(0 < len(p) <= FILE_CHUNK_BYTES for p in pieces)
    assert b"".join(pieces) == data


def test_save_to_and_save_into_never_replace_a_file_and_name_by_the_manifest(tmp_path: Path) -> None:
    data = content(2 * FILE_CHUNK_BYTES + 5)
    received = sealed(tmp_path / "inbox", data)
    out = tmp_path / "ที่บันทึก"
    out.mkdir()
    assert received.save_to(out / THAI_NAME) == out / THAI_NAME
    with pytest.raises(FileExistsError):
        received.save_to(out / THAI_NAME)
    first, second = received.save_into(out), received.save_into(out)
    assert (first.name, second.name) == (LAO_NAME, "ເອກະສານ (2).pdf")
    assert {p.name for p in out.iterdir()} == {THAI_NAME, LAO_NAME, "ເອກະສານ (2).pdf"}
    assert all(p.read_bytes() == data for p in out.iterdir())
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in out.iterdir())


def _chunk_at(raw: bytes, n: int) -> slice:
    start = HEADER_BYTES + n * (FILE_CHUNK_BYTES + ABYTES)
    return slice(start, start + FILE_CHUNK_BYTES + ABYTES)


def _flip(raw: bytes) -> bytes:
    changed = bytearray(raw)
    changed[HEADER_BYTES + FILE_CHUNK_BYTES + 100] ^= 1
    return bytes(changed)


def _truncate_final(raw: bytes) -> bytes:
    return raw[: _chunk_at(raw, 2).start]


def _truncate_inside(raw: bytes) -> bytes:
    return raw[:-3]


def _swap_chunks(raw: bytes) -> bytes:
    first, second = _chunk_at(raw, 0), _chunk_at(raw, 1)
    return raw[: first.start] + raw[second] + raw[first] + raw[second.stop :]


def _extend(raw: bytes) -> bytes:
    return raw + b"\x00" * 17


def _header_only(raw: bytes) -> bytes:
    return raw[:HEADER_BYTES]


@pytest.mark.parametrize(
    "alter", [_flip, _truncate_final, _truncate_inside, _swap_chunks, _extend, _header_only]
)
def test_an_altered_sealed_file_fails_closed_and_saving_it_leaves_nothing(
    tmp_path: Path, alter: object
) -> None:
    assert callable(alter)
    data = content(2 * FILE_CHUNK_BYTES + 5)
    received = sealed(tmp_path / "inbox", data)
    received.sealed_path.write_bytes(alter(received.sealed_path.read_bytes()))
    with pytest.raises(DecryptionFailed, match="does not open"):
        b"".join(received.open())
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DecryptionFailed):
        received.save_into(out)
    with pytest.raises(DecryptionFailed):
        received.save_to(out / THAI_NAME)
    assert list(out.iterdir()) == []


def test_a_sealed_file_moved_to_another_attachment_or_envelope_does_not_open(tmp_path: Path) -> None:
    first = sealed(tmp_path / "a", content(5000, seed=1))
    second = sealed(tmp_path / "b", content(5000, seed=2), index=1)
    other = sealed(tmp_path / "c", content(5000, seed=3), envelope_id=OTHER_ENVELOPE)
    # Another file's bytes under this file's key, or this file's bytes read as another position
    # or envelope (same key, other associated data): neither opens.
    first.sealed_path.write_bytes(second.sealed_path.read_bytes())
    with pytest.raises(DecryptionFailed):
        b"".join(first.open())
    moved = ReceivedFile(
        other.filename, other.media_type, other.length, other.sealed_path, other.file_key, ENVELOPE, 0
    )
    with pytest.raises(DecryptionFailed):
        b"".join(moved.open())
    renumbered = ReceivedFile(
        other.filename, other.media_type, other.length, other.sealed_path, other.file_key, OTHER_ENVELOPE, 1
    )
    with pytest.raises(DecryptionFailed):
        b"".join(renumbered.open())
    assert b"".join(other.open()) == content(5000, seed=3)


@pytest.mark.parametrize("recorded", [4999, 5001, 0])
def test_a_length_other_than_the_recorded_one_fails_closed(tmp_path: Path, recorded: int) -> None:
    received = sealed(tmp_path / "inbox", content(5000))
    claimed = ReceivedFile(
        received.filename, received.media_type, recorded, received.sealed_path, received.file_key, ENVELOPE, 0
    )
    with pytest.raises(DecryptionFailed):
        b"".join(claimed.open())


def test_an_attachment_whose_file_is_gone_says_so(tmp_path: Path) -> None:
    received = sealed(tmp_path / "inbox", content(10))
    discard_sealed_files(tmp_path / "inbox")
    assert not received.sealed_path.exists()
    with pytest.raises(NotFound, match="acknowledged"):
        next(received.open())


def test_a_writer_left_on_an_error_removes_its_file(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    target = ReceivedFile(
        THAI_NAME, "application/pdf", 10, sealed_file_path(folder, 0), os.urandom(FILE_KEY_BYTES), ENVELOPE, 0
    )

    def decrypt_then_fail() -> None:
        with SealedFileWriter(target) as writer:
            writer.write(b"0123456789")
            raise RuntimeError("the decryptor failed")

    with pytest.raises(RuntimeError):
        decrypt_then_fail()
    assert list(folder.iterdir()) == []
    # A file that exists is never overwritten: an interrupted opening's leftover goes first.
    sealed(folder, content(10))
    with pytest.raises(FileExistsError):
        SealedFileWriter(target)
    discard_sealed_files(folder)
    assert list(folder.iterdir()) == []


def test_an_envelope_failing_half_way_leaves_only_ciphertext_under_keys_never_stored(tmp_path: Path) -> None:
    world = make_world()
    sealed_dir = sealed_three(world, tmp_path)
    plaintexts = [p.read_bytes() for p in sorted((tmp_path / "src").iterdir())]
    last = sealed_dir / "part-3"
    flip_byte(last, last.stat().st_size - ABYTES - 1)
    header, parts = load_sealed_directory(sealed_dir)
    folder = tmp_path / "inbox"
    folder.mkdir()

    def seal_into(index: int, info: AttachmentInfo) -> SealedFileWriter:
        key = os.urandom(FILE_KEY_BYTES)
        path = sealed_file_path(folder, index)
        return SealedFileWriter(
            ReceivedFile(info.filename, info.media_type, info.length, path, key, ENVELOPE, index)
        )

    with pytest.raises(DecryptionFailed):
        open_into_sinks(
            header, list(parts), seal_into, trust=world.trust, sender_certificate=world.sender.raw,
            recipient_id=world.recipient_id, keys=world.recipient_keys, now=NOW + 60,
        )  # fmt: skip
    # The attachment that failed left no file; those before it are ciphertext whose keys died
    # with the call (the receiver records keys only after every check, and discards these).
    assert sorted(p.name for p in folder.iterdir()) == ["sealed-0", "sealed-1"]
    on_disk = b"".join(p.read_bytes() for p in folder.iterdir())
    assert not any(text[i : i + 32] in on_disk for text in plaintexts for i in (0, len(text) // 2))
    discard_sealed_files(folder)
    assert list(folder.iterdir()) == []


def _stream_through(folder: Path, size: int) -> tuple[int, bytes, bytes]:
    """Seal `size` bytes fed in 1 MiB pieces and read them back; returns the peak of traced
    memory and the SHA-256 of what went in and what came out."""
    folder.mkdir()
    target = ReceivedFile(
        "ວິດີໂອ.mp4", "video/mp4", size, sealed_file_path(folder, 0), os.urandom(FILE_KEY_BYTES), ENVELOPE, 0
    )
    base = content(MIB)
    into, out = hashlib.sha256(), hashlib.sha256()
    tracemalloc.start()
    try:
        with SealedFileWriter(target) as writer:
            for n in range(size // MIB):
                piece = n.to_bytes(8, "big") + base[8:]
                into.update(piece)
                writer.write(piece)
        for chunk in target.open():
            out.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, into.digest(), out.digest()


def test_a_64_mib_attachment_seals_and_reads_in_a_few_chunks_of_memory(tmp_path: Path) -> None:
    peak, into, out = _stream_through(tmp_path / "inbox", 64 * MIB)
    assert into == out
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"


@pytest.mark.slow
def test_a_1_gib_attachment_seals_and_reads_in_the_same_memory(tmp_path: Path) -> None:
    peak, into, out = _stream_through(tmp_path / "inbox", 1024 * MIB)
    assert into == out
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"

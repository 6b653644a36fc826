"""Received attachments rest in the desk's vault as ciphertext and open only whole and
unaltered; uploads are spooled to disk and discarded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.desk.attachment_vault import CHUNK_BYTES, AttachmentVault, UploadSpool, vault_key
from protocol.errors import DecryptionFailed, InvalidField

ENVELOPE = "64a1814a7169740514553a62768b9a5b"
SEED = bytes(range(32))


def content(size: int) -> bytes:
    return bytes((i * 131 + i // 251) % 256 for i in range(size))


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, 3 * CHUNK_BYTES + 17])
def test_vault_round_trip_keeps_no_plaintext(tmp_path: Path, size: int) -> None:
    source = tmp_path / "เอกสารประกอบ.pdf"
    source.write_bytes(content(size))
    vault = AttachmentVault(tmp_path, vault_key(SEED))
    vault.store(ENVELOPE, 0, source)
    stored = (tmp_path / "desk-vault" / ENVELOPE / "0").read_bytes()
    if size >= 64:
        assert content(size)[:64] not in stored
    assert b"".join(vault.open_stream(ENVELOPE, 0)) == source.read_bytes()


def _stored(tmp_path: Path) -> tuple[AttachmentVault, Path]:
    source = tmp_path / "ເອກະສານ.pdf"
    source.write_bytes(content(2 * CHUNK_BYTES + 5))
    vault = AttachmentVault(tmp_path, vault_key(SEED))
    vault.store(ENVELOPE, 1, source)
    return vault, tmp_path / "desk-vault" / ENVELOPE / "1"


def test_tampered_chunk_is_refused(tmp_path: Path) -> None:
    vault, path = _stored(tmp_path)
    data = bytearray(path.read_bytes())
    data[CHUNK_BYTES + 100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DecryptionFailed):
        b"".join(vault.open_stream(ENVELOPE, 1))


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    vault, path = _stored(tmp_path)
    path.write_bytes(path.read_bytes()[: -(5 + 17)])
    with pytest.raises(DecryptionFailed):
        b"".join(vault.open_stream(ENVELOPE, 1))


def test_file_moved_to_another_attachment_does_not_open(tmp_path: Path) -> None:
    vault, path = _stored(tmp_path)
    path.rename(path.with_name("0"))
    with pytest.raises(DecryptionFailed):
        b"".join(vault.open_stream(ENVELOPE, 0))


def test_another_agency_key_does_not_open(tmp_path: Path) -> None:
    _stored(tmp_path)
    other = AttachmentVault(tmp_path, vault_key(bytes(32)))
    with pytest.raises(DecryptionFailed):
        b"".join(other.open_stream(ENVELOPE, 1))


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[i : i + size]


async def test_upload_spool_streams_and_refuses_oversized(tmp_path: Path) -> None:
    spool = UploadSpool(tmp_path)
    path = await spool.receive(_chunks(content(300_000), 65_536), max_bytes=1 << 20)
    assert path.read_bytes() == content(300_000)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(InvalidField):
        await spool.receive(_chunks(content(300_000), 65_536), max_bytes=100_000)
    assert list(spool.root.iterdir()) == [path]
    spool.discard([path])
    assert list(spool.root.iterdir()) == []

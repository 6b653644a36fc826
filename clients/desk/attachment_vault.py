"""Files at rest for the desk: received attachments kept encrypted until a person downloads
one, and uploads spooled to disk while a message is composed.

Invariants:
- A received attachment is streamed from the client's sealed copy (`ReceivedFile.open()`)
  into the vault as ciphertext, chunk by chunk (`crypto_secretstream_xchacha20poly1305` through
  PyNaCl, 64 KiB chunks, `TAG_FINAL` on the last chunk only), never as a plaintext file, and
  only then is the delivery acknowledged, which deletes the client's sealed copy. A stream that
  fails half-way (an altered sealed copy) leaves no vault file. The vault key is derived from
  the agency's signing seed (label `cb-desk-vault`), so only the agency's keystore opens it;
  each file's associated data names its envelope and position, so a file moved to another name
  does not open.
- Decryption happens only for a download the person asked for, streamed: a truncated,
  reordered or altered file raises `DecryptionFailed` before its end is sent as complete.
- Uploads are written to `desk-uploads/` in the 0700 state directory, chunk by chunk, never
  held whole in memory, with mode 0600, and deleted once sealed or discarded (and at start).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import nacl.bindings as sodium
import nacl.exceptions

from protocol.errors import DecryptionFailed, InvalidField, NotFound
from protocol.primitives import derive_subkey

CHUNK_BYTES = 64 * 1024
ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_ENVELOPE_ID = re.compile(r"[0-9a-f]{32}")


def vault_key(signing_seed: bytes) -> bytes:
    return derive_subkey(signing_seed, 1, label=b"cb-desk-vault")


def _file_pieces(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(CHUNK_BYTES):
            yield piece


def _chunks(pieces: Iterable[bytes]) -> Iterator[tuple[bytes, bool]]:
    """`CHUNK_BYTES` chunks of the concatenated pieces, each with whether it is the last (no
    data is one empty chunk). Holds at most one chunk and one piece."""
    pending = bytearray()
    for piece in pieces:
        pending += piece
        # One full chunk stays pending, so the last one is known when the pieces end.
        while len(pending) > CHUNK_BYTES:
            yield bytes(pending[:CHUNK_BYTES]), False
            del pending[:CHUNK_BYTES]
    yield bytes(pending), True


class AttachmentVault:
    """`<state>/desk-vault/<envelope id>/<index>`: received attachments as ciphertext."""

    def __init__(self, state_dir: Path, key: bytes) -> None:
        self.root = state_dir / "desk-vault"
        self.root.mkdir(mode=0o700, exist_ok=True)
        self._key = key

    def _path(self, envelope_id: str, index: int) -> Path:
        if not _ENVELOPE_ID.fullmatch(envelope_id) or index < 0:
            raise NotFound("no such attachment.")
        return self.root / envelope_id / str(index)

    @staticmethod
    def _ad(envelope_id: str, index: int) -> bytes:
        return b"cb-desk-vault-v1\x00" + envelope_id.encode() + b"\x00" + str(index).encode()

    def has(self, envelope_id: str, index: int) -> bool:
        return self._path(envelope_id, index).is_file()

    def store(self, envelope_id: str, index: int, source: Path | Iterable[bytes]) -> None:
        """Encrypt a file, or a stream of plaintext pieces (`ReceivedFile.open()`), into the
        vault (written to a temporary name, then renamed; removed if the source fails)."""
        target = self._path(envelope_id, index)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        partial = target.with_name(f".{index}.partial")
        pieces = _file_pieces(source) if isinstance(source, Path) else source
        state = sodium.crypto_secretstream_xchacha20poly1305_state()
        header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, self._key)
        ad = self._ad(envelope_id, index)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(header)
                for chunk, last in _chunks(pieces):
                    tag = TAG_FINAL if last else TAG_MESSAGE
                    out.write(sodium.crypto_secretstream_xchacha20poly1305_push(state, chunk, ad, tag))
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)

    def open_stream(self, envelope_id: str, index: int) -> Iterator[bytes]:
        """The plaintext, chunk by chunk; raises `DecryptionFailed` on any alteration."""
        path = self._path(envelope_id, index)
        if not path.is_file():
            raise NotFound("no such attachment in this desk; it may not have been received yet.")
        ad = self._ad(envelope_id, index)
        with path.open("rb") as f:
            header = f.read(HEADER_BYTES)
            try:
                state = sodium.crypto_secretstream_xchacha20poly1305_state()
                sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, self._key)
                while True:
                    block = f.read(CHUNK_BYTES + ABYTES)
                    if not block:
                        raise DecryptionFailed(reason="desk vault: stream ends without its final chunk")
                    plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, block, ad)
                    if tag == TAG_FINAL:
                        if f.read(1):
                            raise DecryptionFailed(reason="desk vault: data after the final chunk")
                        yield plain
                        return
                    yield plain
            except (nacl.exceptions.CryptoError, ValueError) as e:
                raise DecryptionFailed(reason="desk vault: a chunk does not decrypt") from e


class UploadSpool:
    """Files picked in a compose form, on disk until their message is sealed or discarded."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "desk-uploads"
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.root)
        self.root.mkdir(mode=0o700)

    async def receive(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> Path:
        """Write an upload chunk by chunk; refuses one larger than `max_bytes`."""
        path = self.root / secrets.token_hex(16)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    written += len(chunk)
                    if written > max_bytes:
                        raise InvalidField("attachments", f"files of at most {max_bytes // (1 << 20)} MiB")
                    out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def clear(self) -> None:
        """Delete every spooled upload (the desk locked: its drafts are gone)."""
        for path in self.root.iterdir():
            path.unlink(missing_ok=True)

    def discard(self, paths: list[Path]) -> None:
        for path in paths:
            if path.parent == self.root:
                path.unlink(missing_ok=True)

"""Files at rest for the desk: received attachments kept encrypted until a person downloads
one, and uploads spooled to disk while a message is composed.

Invariants:
- A received attachment is copied out of the client's plaintext release folder into the vault
  as ciphertext, chunk by chunk (`crypto_secretstream_xchacha20poly1305` through PyNaCl, 64 KiB
  chunks, `TAG_FINAL` on the last chunk only), and only then is the delivery acknowledged, which
  deletes the client's plaintext copy. The vault key is derived from the agency's signing seed
  (label `cb-desk-vault`), so only the agency's keystore opens it; each file's associated data
  names its envelope and position, so a file moved to another name does not open.
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
from collections.abc import AsyncIterator, Iterator
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


def _chunks(path: Path) -> Iterator[tuple[bytes, bool]]:
    """The file's chunks, each with whether it is the last (an empty file is one empty chunk)."""
    with path.open("rb") as f:
        current = f.read(CHUNK_BYTES)
        while True:
            following = f.read(CHUNK_BYTES)
            yield current, not following
            if not following:
                return
            current = following


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

    def store(self, envelope_id: str, index: int, source: Path) -> None:
        """Encrypt `source` into the vault (written to a temporary name, then renamed)."""
        target = self._path(envelope_id, index)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        partial = target.with_name(f".{index}.partial")
        state = sodium.crypto_secretstream_xchacha20poly1305_state()
        header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, self._key)
        ad = self._ad(envelope_id, index)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(header)
            for chunk, last in _chunks(source):
                tag = TAG_FINAL if last else TAG_MESSAGE
                out.write(sodium.crypto_secretstream_xchacha20poly1305_push(state, chunk, ad, tag))
            out.flush()
            os.fsync(out.fileno())
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

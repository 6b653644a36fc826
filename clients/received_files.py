"""Received attachments at rest: sealed files in the state directory, opened only on request.

An envelope's attachments are decrypted once, on receipt, and each plaintext chunk goes straight
into a sealed file; the client never writes an attachment in clear. The application gets the
plaintext only through an explicit call on `ReceivedFile`: `open()` (chunks, to stream into its
own store), `save_to(path)` or `save_into(folder)`.

Invariants:
- A sealed file is `crypto_secretstream_xchacha20poly1305` (libsodium through PyNaCl) under a
  random key of its own, 1 MiB of plaintext per chunk, `TAG_FINAL` on the last chunk only (an
  empty file is one empty final chunk), associated data naming the envelope id and the
  attachment's position. The key is kept only in the envelope's sealed `received` row
  (`clients.received_rows`), so the file is unreadable without it, and once the row is deleted.
- The file is `sealed-<n>` in the envelope's folder: its name says nothing about the attachment
  (a file name is content). It is created exclusively, mode 0600, fsynced with its folder.
- Reading holds one chunk in memory whatever the file's size. A truncated, reordered, extended,
  altered or swapped file, or one whose plaintext length is not the recorded one, raises
  `DecryptionFailed`; every chunk handed out before that is authentic and in order, and the last
  one is handed out only after every check passed. `save_to` and `save_into` decrypt into a
  hidden temporary file beside the target and link it into place only when it is complete: a
  failure leaves no file behind, and an existing file is never replaced.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import nacl.bindings as sodium
import nacl.exceptions

from clients.inbox_files import copy_into, fsync_directory, place_exclusive
from protocol.errors import DecryptionFailed, NotFound

FILE_CHUNK_BYTES = 1 << 20
FILE_KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
HEADER_BYTES = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
SEALED_PREFIX = "sealed-"
_AD_LABEL = b"CB-RECEIVED-FILE-v1\x00"


def sealed_file_path(folder: Path, index: int) -> Path:
    """Where attachment `index` of the envelope whose folder is `folder` is kept sealed."""
    return folder / f"{SEALED_PREFIX}{index}"


def discard_sealed_files(folder: Path) -> None:
    """Remove an envelope's sealed files (leftovers of an opening that was interrupted: no row
    holds their keys, so they could never be read)."""
    if folder.is_dir():
        for path in folder.glob(f"{SEALED_PREFIX}*"):
            path.unlink(missing_ok=True)


def _ad(envelope_id: str, index: int) -> bytes:
    return _AD_LABEL + envelope_id.encode() + b"\x00" + index.to_bytes(4, "big")


def _altered(path: Path, what: str) -> DecryptionFailed:
    return DecryptionFailed(
        f"the received attachment {path} does not open ({what}): it was altered, damaged or moved. "
        "Nothing of it was saved; restore the state directory from a backup, or ask the sender "
        "to send it again.",
        reason=f"received file: {what}",
    )


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """One attachment of a delivery, sealed in the state directory until the delivery is
    acknowledged (acknowledging deletes it: take what you need first).

    `filename`, `media_type` and `length` come from the verified manifest. The plaintext comes
    only from `open`, `save_to` or `save_into`; each streams, whatever the file's size."""

    filename: str
    media_type: str
    length: int
    sealed_path: Path = field(repr=False)
    file_key: bytes = field(repr=False)
    envelope_id: str = field(repr=False)
    index: int = field(repr=False)

    def open(self) -> Iterator[bytes]:
        """The plaintext, chunk by chunk (at most 1 MiB each), read when iterated. Raises
        `DecryptionFailed` on any alteration, and `NotFound` once the delivery was acknowledged."""
        return _plaintext(self.sealed_path, self.file_key, _ad(self.envelope_id, self.index), self.length)

    def save_to(self, path: str | os.PathLike[str]) -> Path:
        """Write the plaintext to `path`, which must not exist (`FileExistsError`); returns it."""
        target = Path(path)
        temporary = self._decrypt_beside(target.parent)
        try:
            place_exclusive(temporary, target)
            fsync_directory(target.parent)
        finally:
            temporary.unlink(missing_ok=True)
        return target

    def save_into(self, folder: str | os.PathLike[str]) -> Path:
        """Write the plaintext into `folder` under `filename`, or its first free variant
        ("name (2).ext", ...), never replacing a file; returns where it went."""
        destination = Path(folder)
        temporary = self._decrypt_beside(destination)
        try:
            return copy_into(temporary, destination, self.filename)
        finally:
            temporary.unlink(missing_ok=True)

    def _decrypt_beside(self, folder: Path) -> Path:
        fd, name = tempfile.mkstemp(prefix=".casebridge-", suffix=".partial", dir=folder)
        temporary = Path(name)
        try:
            with os.fdopen(fd, "wb") as sink:
                for chunk in self.open():
                    sink.write(chunk)
                sink.flush()
                os.fsync(sink.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary


class SealedFileWriter:
    """Seals one attachment's plaintext into `target.sealed_path` as it arrives, chunk by chunk.

    Use it as a context manager: leaving the block normally writes the final chunk and fsyncs
    the file and its folder; leaving it on an error deletes the file."""

    def __init__(self, target: ReceivedFile) -> None:
        self._path = target.sealed_path
        self._ad = _ad(target.envelope_id, target.index)
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, target.file_key)
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._pending = bytearray()
        self.length = 0
        try:
            self._file.write(header)
        except BaseException:
            self.discard()
            raise

    def write(self, data: bytes, /) -> None:
        self._pending += data
        self.length += len(data)
        # One full chunk stays pending, so the last one can carry TAG_FINAL.
        while len(self._pending) > FILE_CHUNK_BYTES:
            chunk = bytes(self._pending[:FILE_CHUNK_BYTES])
            del self._pending[:FILE_CHUNK_BYTES]
            self._file.write(self._push(chunk, TAG_MESSAGE))

    def _push(self, chunk: bytes, tag: int) -> bytes:
        sealed: bytes = sodium.crypto_secretstream_xchacha20poly1305_push(self._state, chunk, self._ad, tag)
        return sealed

    def close(self) -> None:
        self._file.write(self._push(bytes(self._pending), TAG_FINAL))
        self._pending.clear()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        fsync_directory(self._path.parent)

    def discard(self) -> None:
        self._pending.clear()
        self._file.close()
        self._path.unlink(missing_ok=True)

    def __enter__(self) -> SealedFileWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            try:
                self.close()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()


def _plaintext(path: Path, key: bytes, ad: bytes, length: int) -> Iterator[bytes]:
    try:
        source = path.open("rb")
    except FileNotFoundError as e:
        raise NotFound(
            f"the received attachment {path} is gone: its delivery was acknowledged (or the file "
            "was removed). Save attachments before acknowledging.",
        ) from e
    with source:
        seen = 0
        try:
            state = sodium.crypto_secretstream_xchacha20poly1305_state()
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, source.read(HEADER_BYTES), key)
            while True:
                block = source.read(FILE_CHUNK_BYTES + ABYTES)
                if not block:
                    raise _altered(path, "it ends before its final chunk")
                plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, block, ad)
                seen += len(plain)
                if seen > length:
                    raise _altered(path, "longer than recorded")
                if tag == TAG_FINAL:
                    if source.read(1):
                        raise _altered(path, "data after the final chunk")
                    if seen != length:
                        raise _altered(path, "shorter than recorded")
                    if plain:
                        yield plain
                    return
                if tag != TAG_MESSAGE:
                    raise _altered(path, f"unexpected chunk tag {tag}")
                yield plain
        except (nacl.exceptions.CryptoError, ValueError) as e:
            raise _altered(path, "a chunk does not decrypt") from e

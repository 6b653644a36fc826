"""Part ciphertext as files: `<root>/<hash[:2]>/<hash>/<part_no>`, hash being the envelope hash.

Invariants:
- A part is written to a fresh file in `<root>/tmp` (O_EXCL, mode 0600), synced, then renamed
  into place and its directory synced: a crash leaves no half-written part in place.
- Files are addressed by envelope hash, which fixes every byte of every part (the header
  carries the part digests), so two writers of the same name write the same bytes and a
  rename over an existing part changes nothing.
- Reads are ranged and chunked: memory is bounded by one chunk whatever the part's size.
- File work runs in worker threads; the event loop never blocks on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from protocol.errors import StorageUnavailable

READ_CHUNK_BYTES = 256 << 10
_HEX = frozenset("0123456789abcdef")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(action: str, e: OSError) -> StorageUnavailable:
    return StorageUnavailable(reason=f"blob {action}: {type(e).__name__}: {e.strerror}")


class FileBlobWriter:
    def __init__(self, temp_dir: Path, final: Path) -> None:
        self._temp = temp_dir / f"{secrets.token_hex(12)}.part"
        self._final = final
        self._fd: int | None = None

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    async def write(self, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as e:
            raise _storage_error("write", e) from e

    def _commit(self) -> None:
        if self._fd is None:
            self._write(b"")
        if self._fd is None:
            raise AssertionError("unreachable: the file was just created")
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None
        parent = self._final.parent
        created = not parent.exists()
        parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._temp, self._final)
        _fsync_dir(parent)
        if created:
            _fsync_dir(parent.parent)
            _fsync_dir(parent.parent.parent)

    async def commit(self) -> None:
        try:
            await asyncio.to_thread(self._commit)
        except OSError as e:
            await self.abort()
            raise _storage_error("commit", e) from e

    def _abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp)

    async def abort(self) -> None:
        await asyncio.to_thread(self._abort)


class FileBlobStore:
    """Blob files under one directory (created, with its `tmp`, when opened)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._temp = root / "tmp"

    @classmethod
    async def open(cls, root: Path, *, owner: bool = True) -> FileBlobStore:
        """Open the blob directory; the `owner` (the serving broker, not an offline command
        that may run beside it) also removes temporary files a crash left behind."""
        store = cls(root)
        await asyncio.to_thread(store._prepare, owner)
        return store

    def _prepare(self, owner: bool) -> None:
        self._temp.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not owner:
            return
        for leftover in self._temp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()

    def _dir(self, envelope_hash: bytes) -> Path:
        name = envelope_hash.hex()
        return self.root / name[:2] / name

    def path(self, envelope_hash: bytes, part_no: int) -> Path:
        return self._dir(envelope_hash) / str(part_no)

    def writer(self, envelope_hash: bytes, part_no: int) -> FileBlobWriter:
        return FileBlobWriter(self._temp, self.path(envelope_hash, part_no))

    async def size(self, envelope_hash: bytes, part_no: int) -> int | None:
        try:
            return (await asyncio.to_thread(os.stat, self.path(envelope_hash, part_no))).st_size
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _storage_error("stat", e) from e

    async def read(self, envelope_hash: bytes, part_no: int, start: int, end: int) -> AsyncIterator[bytes]:
        path = self.path(envelope_hash, part_no)
        try:
            f = await asyncio.to_thread(path.open, "rb")
        except OSError as e:
            raise _storage_error("open", e) from e
        try:
            await asyncio.to_thread(f.seek, start)
            left = end - start
            while left > 0:
                chunk = await asyncio.to_thread(f.read, min(READ_CHUNK_BYTES, left))
                if not chunk:
                    raise StorageUnavailable(reason=f"blob {path.name} shorter than recorded")
                left -= len(chunk)
                yield chunk
        except OSError as e:
            raise _storage_error("read", e) from e
        finally:
            await asyncio.to_thread(f.close)

    async def delete(self, envelope_hash: bytes) -> None:
        directory = self._dir(envelope_hash)

        def remove() -> None:
            shutil.rmtree(directory, ignore_errors=True)
            if directory.parent.exists():
                _fsync_dir(directory.parent)

        await asyncio.to_thread(remove)

    async def stored_hashes(self) -> set[bytes]:
        def scan() -> set[bytes]:
            found: set[bytes] = set()
            for prefix in self.root.iterdir():
                if prefix == self._temp or not prefix.is_dir():
                    continue
                for entry in prefix.iterdir():
                    if len(entry.name) == 64 and set(entry.name) <= _HEX:
                        found.add(bytes.fromhex(entry.name))
            return found

        return await asyncio.to_thread(scan)

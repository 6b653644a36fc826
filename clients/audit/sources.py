"""Where a verification reads the log from, and the raw export directory format.

A `LogSource` gives the checkpoint note, the leaves in index order (each with the hash the log
recorded for it when the source knows one), in blocks of consecutive entries so a verifier's
per-entry work is a plain loop, and, when it can, the log's consistency proofs. Two exist: an
export directory (here) and a live broker (`clients.audit.broker_log`).

Export directory (`casebridge audit export --raw DIR`), everything a verification needs offline:
- `checkpoint`: the checkpoint signed note, with every cosignature the broker had collected;
- `entries`: every leaf from index 0, each as a uint16 big-endian length and the leaf's bytes
  (the tlog-tiles entry-bundle encoding, without the 256-entry split);
- `hashes` (when the broker served hash tiles): each leaf's hash as the log recorded it, 32 bytes
  per leaf. It only helps to name an altered leaf; nothing trusts it unless it folds to the root;
- `broker-certificate` (when the broker's directory served it): the certificate that signs its
  accepted and expired receipts, trusted only if it chains to a pinned root (for `trace`).

Invariants: files are read as streams, `READ_CHUNK` bytes at a time (bounded memory, whatever
the log's size), and written atomically; a damaged file is reported as a `source` problem, never
raised past the verifier.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

from clients.audit.atomic_output import atomic_binary
from clients.audit.policy import Problem, ProblemKind
from keys.files import read_bytes
from protocol.errors import Conflict, InvalidField
from protocol.merkle import HASH_SIZE
from protocol.note import MAX_NOTE_BYTES
from protocol.tiles import MAX_ENTRY_BYTES

CHECKPOINT_FILE = "checkpoint"
ENTRIES_FILE = "entries"
HASHES_FILE = "hashes"
BROKER_CERT_FILE = "broker-certificate"
READ_CHUNK = 1 << 15

Report = Callable[[Problem], None]
SourceEntry = tuple[bytes | None, bytes | None]
"""A leaf (None if the source lost it) and the hash the log recorded for it (None if unknown)."""


class LogSource(Protocol):
    @property
    def description(self) -> str: ...

    async def checkpoint(self) -> bytes: ...

    def entries(self, start: int, end: int, report: Report) -> AsyncIterator[list[SourceEntry]]:
        """Leaves from `start`, in blocks; a source may give more than `end` (so extra entries
        are seen)."""
        ...

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes] | None:
        """The log's own proof, or None when the source has none to give (an export)."""
        ...


def _leaf_blocks(handle: BinaryIO, report: Report) -> Iterator[list[bytes]]:
    """The leaves of an entries file, a block of up to `READ_CHUNK` bytes at a time."""
    index, rest = 0, b""
    while True:
        chunk = handle.read(READ_CHUNK)
        data = rest + chunk if rest else chunk
        at, end, leaves = 0, len(data), []
        while at + 2 <= end:
            stop = at + 2 + (data[at] << 8 | data[at + 1])
            if stop > end:
                break
            leaves.append(data[at + 2 : stop])
            at = stop
        rest = data[at:]
        if leaves:
            yield leaves
            index += len(leaves)
        if chunk:
            continue
        if len(rest) == 1:
            report(
                Problem(
                    ProblemKind.SOURCE, f"the entries file ends inside the length of entry {index}", index
                )
            )
        elif rest:
            length = int.from_bytes(rest[:2], "big")
            report(
                Problem(
                    ProblemKind.SOURCE,
                    f"the entries file ends inside entry {index} ({len(rest) - 2} of {length} bytes)",
                    index,
                )
            )
        return


def _hashes(handle: BinaryIO | None, count: int) -> list[bytes]:
    """Up to `count` more whole hashes from a hashes file (none without one)."""
    if handle is None:
        return []
    data = handle.read(count * HASH_SIZE)
    return [data[at : at + HASH_SIZE] for at in range(0, len(data) - HASH_SIZE + 1, HASH_SIZE)]


class ExportDirectory:
    """An export made by `casebridge audit export --raw`, read as a stream."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory)
        if not (self.path / CHECKPOINT_FILE).is_file() or not (self.path / ENTRIES_FILE).is_file():
            raise InvalidField(
                "--from",
                f"a directory with '{CHECKPOINT_FILE}' and '{ENTRIES_FILE}' files; {directory} is not",
            )

    @property
    def description(self) -> str:
        return f"export {self.path}"

    async def checkpoint(self) -> bytes:
        return read_bytes(self.path / CHECKPOINT_FILE, max_bytes=MAX_NOTE_BYTES)

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes] | None:
        return None

    async def entries(self, start: int, end: int, report: Report) -> AsyncIterator[list[SourceEntry]]:
        with contextlib.ExitStack() as files:
            blocks = _leaf_blocks(
                files.enter_context((self.path / ENTRIES_FILE).open("rb", buffering=0)), report
            )
            hashes: BinaryIO | None = None
            hashes_path = self.path / HASHES_FILE
            if hashes_path.is_file():
                if hashes_path.stat().st_size % HASH_SIZE:
                    report(
                        Problem(
                            ProblemKind.SOURCE,
                            f"the hashes file is not a whole number of {HASH_SIZE}-byte hashes",
                        )
                    )
                else:
                    hashes = files.enter_context(hashes_path.open("rb", buffering=READ_CHUNK))
                    hashes.seek(start * HASH_SIZE)
            skip = start
            for leaves in blocks:
                if skip >= len(leaves):
                    skip -= len(leaves)
                    continue
                if skip:
                    leaves, skip = leaves[skip:], 0
                yield list(itertools.zip_longest(leaves, _hashes(hashes, len(leaves))))
            if skip:
                return
            while digests := _hashes(hashes, READ_CHUNK // HASH_SIZE):
                yield [(None, digest) for digest in digests]


class RawExport:
    """Writes an export directory as the leaves stream by. Set `note` before it closes: the
    checkpoint is written last, after the entries and hashes are in place."""

    def __init__(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        self.path = Path(directory)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not overwrite and any((self.path / name).exists() for name in (CHECKPOINT_FILE, ENTRIES_FILE)):
            raise Conflict(f"{self.path} already holds an export; choose another directory or pass --force.")
        self._stack = contextlib.ExitStack()
        self._entries: BinaryIO | None = None
        self._hashes: BinaryIO | None = None
        self._complete_hashes = True
        self.written = 0
        self.note: bytes | None = None
        """The checkpoint note, written last when the export closes without an error."""

    def __enter__(self) -> RawExport:
        self._entries = self._stack.enter_context(atomic_binary(self.path / ENTRIES_FILE))
        self._hashes = self._stack.enter_context(atomic_binary(self.path / HASHES_FILE))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)
        if exc_type is not None:
            return
        if not self._complete_hashes:
            with contextlib.suppress(FileNotFoundError):
                (self.path / HASHES_FILE).unlink()
        if self.note is None:
            raise ValueError("set the checkpoint note before the export is closed")
        with atomic_binary(self.path / CHECKPOINT_FILE) as handle:
            handle.write(self.note)

    def write(self, leaf: bytes | None, logged_hash: bytes | None) -> None:
        if self._entries is None or self._hashes is None:
            raise ValueError("use RawExport as a context manager")
        if leaf is not None:
            if len(leaf) > MAX_ENTRY_BYTES:
                raise InvalidField("leaf", f"at most {MAX_ENTRY_BYTES} bytes")
            self._entries.write(len(leaf).to_bytes(2, "big") + leaf)
            self.written += 1
        if logged_hash is None or leaf is None:
            self._complete_hashes = False
        elif self._complete_hashes:
            self._hashes.write(logged_hash)

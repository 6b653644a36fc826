"""Small file operations for received envelopes: atomic writes, placing saved attachments.

Invariants:
- `write_small_file` leaves either no file or the whole file (temporary name, fsync, rename,
  directory fsync), with mode 0600.
- `place_exclusive` and `copy_into` never replace an existing file (`copy_into` tries "name
  (2).ext", "name (3).ext", ... when a name is taken); they hard-link when they can and copy
  otherwise, and never touch the source, so a crash while saving a delivery's files loses
  nothing (the delivery is handed over again until it is acknowledged).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

MAX_NAME_TRIES = 1000
NAME_MAX_BYTES = 255
COPY_CHUNK_BYTES = 1 << 20


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_small_file(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
        fsync_directory(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def delete_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _candidates(filename: str) -> list[str]:
    suffix = Path(filename).suffix
    if len(suffix.encode()) > NAME_MAX_BYTES // 2:
        suffix = ""
    stem = filename[: len(filename) - len(suffix)]
    names = []
    for n in range(1, MAX_NAME_TRIES + 1):
        tail = suffix if n == 1 else f" ({n}){suffix}"
        cut = stem
        while cut and len((cut + tail).encode()) > NAME_MAX_BYTES:
            cut = cut[:-1]
        name = cut + tail
        names.append(name if name.strip(".") else f"attachment{tail}")
    return names


def _copy_exclusive(source: Path, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as sink, source.open("rb") as src:
            while chunk := src.read(COPY_CHUNK_BYTES):
                sink.write(chunk)
            sink.flush()
            os.fsync(sink.fileno())
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def place_exclusive(source: Path, target: Path) -> None:
    """Link or copy `source` to `target`; `FileExistsError` if `target` exists."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        _copy_exclusive(source, target)


def copy_into(source: Path, destination: Path, filename: str) -> Path:
    """Link or copy `source` into `destination` as `filename` or its first free variant."""
    for name in _candidates(filename):
        target = destination / name
        try:
            place_exclusive(source, target)
        except FileExistsError:
            continue
        fsync_directory(destination)
        return target
    raise FileExistsError(f"no free name for {filename!r} in {destination}")

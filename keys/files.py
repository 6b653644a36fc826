"""Reading and writing the small files that keys live in: keystores and public documents.

Invariants:
- A write is atomic: the bytes go to a fresh temporary file in the target's own directory
  (created with O_EXCL and the final mode, so no other user can read it at any moment), which
  is fsynced, then moved into place, and the directory is fsynced. A crash leaves either the
  old file or the new one, never half of one; no temporary file outlives a failed write.
- Without `overwrite`, an existing file is never replaced (the move is a hard link, which
  fails if the name exists, so a racing writer cannot be clobbered either).
- A read is bounded by `max_bytes` before the content is used.
- Every failure is a `CaseBridgeError` that names the file and says what to do.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from protocol.errors import CaseBridgeError, Conflict, InputError, NotFound, TooLarge

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
MAX_FILE_BYTES = 4 << 20


class FileAccessError(InputError):
    """A file could not be read or written for a reason the operating system gave."""

    title = "File error"
    remedy = "Check the path and its permissions."


def _os_error(action: str, path: Path, e: OSError) -> CaseBridgeError:
    if isinstance(e, FileNotFoundError):
        return NotFound(f"cannot {action} {path}: no such file or directory. Check the path.")
    if isinstance(e, FileExistsError):
        return Conflict(f"{path} already exists; choose another name or pass --force to replace it.")
    return FileAccessError(f"cannot {action} {path}: {e.strerror or type(e).__name__}.")


def read_bytes(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a whole file of at most `max_bytes`."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)
    except IsADirectoryError as e:
        raise FileAccessError(f"cannot read {p}: it is a directory.") from e
    except OSError as e:
        raise _os_error("read", p, e) from e
    if len(data) > max_bytes:
        raise TooLarge(f"{p} is larger than {max_bytes} bytes; it is not a CaseBridge key file.")
    return data


def loose_permissions(path: str | os.PathLike[str]) -> int | None:
    """The group and world permission bits of `path` if any are set, else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    loose = stat.S_IMODE(mode) & 0o077
    return loose or None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: str | os.PathLike[str], data: bytes, *, mode: int = PRIVATE_MODE, overwrite: bool = False
) -> None:
    """Write `data` to `path` atomically with permission `mode` (see the module invariants)."""
    target = Path(path)
    directory = target.parent
    temp = directory / f".{target.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as e:
        raise _os_error("write", target, e) from e
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(temp, target)
        else:
            os.link(temp, target)
            os.unlink(temp)
        _fsync_directory(directory)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise _os_error("write", target, e) from e

"""Files written whole or not at all, streamed: reports, exports and state.

Invariants: the bytes go to a fresh temporary file beside the target (created with O_EXCL and
the final mode), which is fsynced and then renamed over the target, and the directory is
fsynced; on any failure the temporary file is removed and the target is untouched. Memory stays
bounded because the caller writes as it goes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO, TextIO, cast

from keys.files import FileAccessError

PRIVATE_MODE = 0o600


@contextlib.contextmanager
def _atomic(path: str | os.PathLike[str], mode: int, text: bool) -> Iterator[IO[bytes] | IO[str]]:
    target = Path(path)
    temp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as e:
        raise FileAccessError(f"cannot write {target}: {e.strerror or type(e).__name__}.") from e
    handle: IO[bytes] | IO[str] = (
        os.fdopen(fd, "w", encoding="utf-8", newline="") if text else os.fdopen(fd, "wb")
    )
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(e, OSError):
            raise FileAccessError(f"cannot write {target}: {e.strerror or type(e).__name__}.") from e
        raise


@contextlib.contextmanager
def atomic_binary(path: str | os.PathLike[str], *, mode: int = PRIVATE_MODE) -> Iterator[BinaryIO]:
    with _atomic(path, mode, text=False) as handle:
        yield cast(BinaryIO, handle)


@contextlib.contextmanager
def atomic_text(path: str | os.PathLike[str], *, mode: int = PRIVATE_MODE) -> Iterator[TextIO]:
    """A UTF-8 text file with newlines written as given (CSV writes its own)."""
    with _atomic(path, mode, text=True) as handle:
        yield cast(TextIO, handle)

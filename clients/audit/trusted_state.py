"""The last checkpoint this officer verified: the anchor every later checkpoint must extend.

One JSON file, `trusted-checkpoint.json`, in the officer's state directory. It holds the
checkpoint note as verified (with its cosignatures), its size and root, the right border of the
tree at that size (so a later run may resume from it instead of recomputing everything), the
time of the last leaf (so time order is checked across runs), and the leaves that carry
certificates and revocation lists (so `trace` can check receipts without a full pass).

Invariants:
- Written only after a verification found no problem; atomically, mode 0600, in a 0700 directory.
- On load the border must fold to the recorded root, and the recorded leaves must lie below the
  recorded size; a file that fails either is refused as damaged, never silently replaced.
- The file is the officer's own trust anchor: whoever can rewrite it can make a fork look
  consistent, so it lives with the officer's keys, not with the broker.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keys.files import PRIVATE_MODE, read_bytes, write_atomic
from protocol.errors import MalformedInput, NotFound
from protocol.merkle import HASH_SIZE, CompactRange, check_size
from protocol.primitives import equal

STATE_FILE = "trusted-checkpoint.json"
FORMAT = "casebridge-audit-trusted/v1"
MAX_STATE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class TrustedState:
    """A verified checkpoint of one log, and what a later run needs to continue from it."""

    origin: str
    size: int
    root_hash: bytes
    checkpoint: bytes
    border: tuple[bytes, ...]
    last_time: int | None
    verified_at: int
    trust_leaves: tuple[tuple[int, bytes], ...] = ()

    def compact_range(self) -> CompactRange:
        return CompactRange.from_border(self.size, self.border)

    def encode(self) -> bytes:
        document = {
            "format": FORMAT,
            "origin": self.origin,
            "size": self.size,
            "root_hash": _b64(self.root_hash),
            "checkpoint": self.checkpoint.decode("utf-8"),
            "border": [_b64(h) for h in self.border],
            "last_time": self.last_time,
            "verified_at": self.verified_at,
            "trust_leaves": [[index, _b64(leaf)] for index, leaf in self.trust_leaves],
        }
        return (json.dumps(document, ensure_ascii=False, indent=1) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, data: bytes) -> TrustedState:
        try:
            doc = json.loads(data.decode("utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise MalformedInput(reason=f"not a {FORMAT} document")
            state = cls(
                origin=_str(doc["origin"]),
                size=_int(doc["size"]),
                root_hash=_unb64(doc["root_hash"], HASH_SIZE),
                checkpoint=_str(doc["checkpoint"]).encode("utf-8"),
                border=tuple(_unb64(h, HASH_SIZE) for h in _list(doc["border"])),
                last_time=None if doc["last_time"] is None else _int(doc["last_time"]),
                verified_at=_int(doc["verified_at"]),
                trust_leaves=tuple(_trust_leaf(item) for item in _list(doc["trust_leaves"])),
            )
        except (KeyError, TypeError, ValueError, UnicodeDecodeError, binascii.Error) as e:
            raise MalformedInput(reason=f"{type(e).__name__}: {e}") from e
        state.check()
        return state

    def check(self) -> None:
        """Refuse a state whose parts do not agree (a damaged or hand-edited file)."""
        check_size(self.size, "size")
        if not equal(self.compact_range().root(), self.root_hash):
            raise MalformedInput(reason="the recorded border does not fold to the recorded root")
        indices = [index for index, _ in self.trust_leaves]
        if indices != sorted(set(indices)) or any(not 0 <= i < self.size for i in indices):
            raise MalformedInput(reason="recorded leaves are out of order or beyond the recorded size")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: Any, length: int | None = None) -> bytes:
    raw = base64.b64decode(_str(value), validate=True)
    if length is not None and len(raw) != length:
        raise ValueError(f"expected {length} bytes")
    return raw


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected text")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("expected a non-negative integer")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def _trust_leaf(item: Any) -> tuple[int, bytes]:
    pair = _list(item)
    if len(pair) != 2:
        raise ValueError("a recorded leaf is [index, base64]")
    return _int(pair[0]), _unb64(pair[1])


def state_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / STATE_FILE


def load_state(directory: str | os.PathLike[str]) -> TrustedState | None:
    """The trusted state in `directory`, or None if this officer never verified this log."""
    path = state_path(directory)
    try:
        data = read_bytes(path, max_bytes=MAX_STATE_BYTES)
    except NotFound:
        return None
    try:
        return TrustedState.parse(data)
    except MalformedInput as e:
        raise MalformedInput(
            f"the trusted state {path} is damaged ({e.reason}). Restore it from a backup; deleting it "
            "means trusting the next checkpoint blindly.",
            reason=e.reason,
        ) from e


def save_state(directory: str | os.PathLike[str], state: TrustedState) -> Path:
    """Write the state atomically (mode 0600), creating the directory (0700) if needed."""
    state.check()
    folder = Path(directory)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_path(folder)
    write_atomic(path, state.encode(), mode=PRIVATE_MODE, overwrite=True)
    return path

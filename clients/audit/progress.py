"""A plain text progress bar on stderr for long verifications.

Drawn only when stderr is a terminal or the user asked (`--progress`); redrawn only when the
shown tenth of a percent changes, so a million leaves cost at most 1001 writes. Ends with
a newline so the report that follows starts on its own line.
"""

from __future__ import annotations

import sys
from typing import TextIO

from clients.audit.verifier import Progress

BAR_WIDTH = 30


class TextProgress(Progress):
    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self._label = label
        self._stream = stream if stream is not None else sys.stderr
        self._shown: int | None = None
        self.draws = 0

    def update(self, done: int, total: int) -> None:
        permille = 1000 if total <= 0 else min(1000, done * 1000 // total)
        if permille == self._shown:
            return
        self._shown = permille
        filled = permille * BAR_WIDTH // 1000
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        self._stream.write(f"\r{self._label} [{bar}] {permille / 10:5.1f}% {done}/{total} leaves")
        self._stream.flush()
        self.draws += 1

    def close(self) -> None:
        if self._shown is not None:
            self._stream.write("\n")
            self._stream.flush()
            self._shown = None


def progress_for(label: str, *, forced: bool, stream: TextIO | None = None) -> Progress:
    """A bar when asked or when stderr is a terminal, otherwise a silent `Progress`."""
    out = stream if stream is not None else sys.stderr
    return TextProgress(label, out) if forced or out.isatty() else Progress()

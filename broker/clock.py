"""Time as the broker sees it: injected everywhere (`Clock`), so tests control expiry, replay
windows and retention. Only `SystemClock` reads the real time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> int:
        """The current time in Unix seconds."""
        ...


class SystemClock:
    def now(self) -> int:
        return int(time.time())

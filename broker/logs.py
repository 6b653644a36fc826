"""Structured JSON logs: one JSON object per line, with the request id and agency id of the
request being served bound automatically (context variables set by the web layer).

Invariants: a log line carries an event name (snake_case), the logger, level and time, and
only the extra fields given as text, numbers, booleans or None. Bytes are never written (a
stray key, ciphertext or plaintext passed by mistake is dropped and flagged, not printed).
Callers never log plaintext, keys, ciphertext or passphrases in the first place.

Each line is written (and flushed) as it is logged. The broker logs about eight lines per relayed
envelope, so making a line is kept cheap: the time text is built once per second, one JSON
encoder serves every line, and the serving process tells the logging module not to look up what
no line carries (caller, thread, process).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, TextIO

REQUEST_ID: ContextVar[str | None] = ContextVar("casebridge_request_id", default=None)
AGENCY_ID: ContextVar[str | None] = ContextVar("casebridge_agency_id", default=None)

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""
        self._encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        request_id, agency_id = REQUEST_ID.get(), AGENCY_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if agency_id is not None:
            entry["agency_id"] = agency_id
        dropped = []
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if value is None or isinstance(value, str | int | float | bool):
                entry[key] = value
            else:
                dropped.append(key)
        if dropped:
            entry["dropped_fields"] = sorted(dropped)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return self._encoder.encode(entry)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Send every `casebridge.*` record (and aiohttp's warnings) to `stream`, stderr by default,
    as JSON lines. Called once by the process that serves (the broker's command)."""
    # The JSON lines carry none of the caller's file, line, thread or process: the logging
    # module's documented switches stop it from looking them up for every record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name, logger_level in (("casebridge", level), ("aiohttp", "WARNING")):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logger_level)
        logger.propagate = False
    return handler

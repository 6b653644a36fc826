"""Parsed leaves as JSON Lines or CSV, written as the log streams by.

JSON Lines: one object per leaf (`LeafRecord.row`: hex for ids and hashes, UTF-8 text as is).
CSV: fixed columns (index, time, time_utc, kind, envelope_id, agencies, leaf_hash, details), the
details being the rest of the row as JSON, so every kind fits one table.

Invariants: the file is written atomically (a failed export leaves no half file); a CSV cell that
a spreadsheet would run as a formula (starting with = + - @, tab or CR) is prefixed with an
apostrophe; no signature, signed record or personal data is written (rows never hold them).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterator
from typing import Any, Protocol

from clients.audit.atomic_output import atomic_text
from clients.audit.leaf_records import LeafRecord
from clients.cli_output import when

FORMATS = ("jsonl", "csv", "html")
CSV_COLUMNS = ("index", "time", "time_utc", "kind", "envelope_id", "agencies", "leaf_hash", "details")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class RowWriter(Protocol):
    def write(self, record: LeafRecord) -> None: ...


def json_line(record: LeafRecord) -> str:
    return json.dumps(record.row(), ensure_ascii=False, sort_keys=True)


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_cells(record: LeafRecord) -> list[Any]:
    row = record.row()
    fixed = {
        name: row.pop(name, None)
        for name in ("index", "time", "kind", "envelope_id", "agencies", "leaf_hash")
    }
    cells = [
        fixed["index"],
        fixed["time"],
        when(fixed["time"]),
        fixed["kind"],
        fixed["envelope_id"] or "",
        " ".join(fixed["agencies"] or []),
        fixed["leaf_hash"],
        json.dumps(row, ensure_ascii=False, sort_keys=True),
    ]
    return [_cell(c) for c in cells]


class _JsonLines:
    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, record: LeafRecord) -> None:
        self._handle.write(json_line(record) + "\n")


class _Csv:
    def __init__(self, handle: Any) -> None:
        self._writer = csv.writer(handle, lineterminator="\r\n")
        self._writer.writerow(CSV_COLUMNS)

    def write(self, record: LeafRecord) -> None:
        self._writer.writerow(csv_cells(record))


@contextlib.contextmanager
def row_file(path: str | os.PathLike[str], fmt: str) -> Iterator[RowWriter]:
    """A JSON Lines or CSV file of rows, in place only when the block ends without an error."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"not a row format: {fmt}")
    with atomic_text(path, mode=0o600) as handle:
        yield _JsonLines(handle) if fmt == "jsonl" else _Csv(handle)

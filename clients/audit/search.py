"""Finding leaves: filters by agency, kind, envelope and time, and counts for reports.

Both are observers fed by the verifier while it streams the log, so a search costs one pass and
O(matches kept) memory; matches beyond `limit` are counted, not kept.

Times: `--since` and `--until` take Unix seconds, an ISO date (`2026-01-31`, UTC) or an ISO date
and time (`2026-01-31T09:30:00+07:00`; without an offset, UTC). `since` is inclusive; `until` is
inclusive too, and a bare date means the whole of that day.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from clients.audit.leaf_records import KINDS, LeafRecord
from protocol.certificate import AGENCY_ID
from protocol.errors import InvalidField

DAY_SECONDS = 86400
_UNIX = re.compile(r"[0-9]{1,12}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_time(text: str, option: str, *, end_of_day: bool = False) -> int:
    """Unix seconds from Unix seconds, an ISO date or an ISO date and time (see the module)."""
    value = text.strip()
    if _UNIX.fullmatch(value):
        return int(value)
    try:
        if _DATE.fullmatch(value):
            day = dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
            return int(day.timestamp()) + (DAY_SECONDS - 1 if end_of_day else 0)
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidField(
            option, "Unix seconds, a date such as 2026-01-31, or 2026-01-31T09:30:00+07:00"
        ) from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Which leaves to keep; an empty filter keeps every leaf."""

    agency: str | None = None
    kind: str | None = None
    since: int | None = None
    until: int | None = None
    envelope_id: bytes | None = None

    def __post_init__(self) -> None:
        if self.agency is not None and not AGENCY_ID.fullmatch(self.agency):
            raise InvalidField("--agency", "an agency id such as TH-ATPD")
        if self.kind is not None and self.kind not in KINDS:
            raise InvalidField("--kind", f"one of {', '.join(KINDS)}")
        if self.since is not None and self.until is not None and self.until < self.since:
            raise InvalidField("--until", "a time not before --since")

    def matches(self, record: LeafRecord) -> bool:
        return (
            (self.kind is None or record.kind == self.kind)
            and (self.agency is None or self.agency in record.agencies)
            and (self.since is None or record.time >= self.since)
            and (self.until is None or record.time <= self.until)
            and (self.envelope_id is None or record.envelope_id == self.envelope_id)
        )

    def describe(self) -> str:
        parts = []
        if self.agency:
            parts.append(f"agency {self.agency}")
        if self.kind:
            parts.append(f"kind {self.kind}")
        if self.envelope_id is not None:
            parts.append(f"envelope {self.envelope_id.hex()}")
        if self.since is not None:
            parts.append(f"since {dt.datetime.fromtimestamp(self.since, dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
        if self.until is not None:
            parts.append(f"until {dt.datetime.fromtimestamp(self.until, dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
        return ", ".join(parts) or "every leaf"


@dataclass
class Matches:
    """Keeps (up to `limit`) and hands on (`emit`) every leaf the filter matches."""

    search: SearchFilter
    limit: int = 10_000
    emit: Callable[[LeafRecord], None] | None = None
    kept: list[LeafRecord] = field(default_factory=list)
    count: int = 0

    def observe(self, record: LeafRecord) -> None:
        if not self.search.matches(record):
            return
        self.count += 1
        if self.emit is not None:
            self.emit(record)
        if len(self.kept) < self.limit:
            self.kept.append(record)

    @property
    def not_kept(self) -> int:
        return self.count - len(self.kept)


@dataclass
class Tally:
    """Counts of leaves by kind and by agency named, and the time span they cover."""

    by_kind: Counter[str] = field(default_factory=Counter)
    by_agency: Counter[str] = field(default_factory=Counter)
    first_time: int | None = None
    last_time: int | None = None

    def observe(self, record: LeafRecord) -> None:
        self.by_kind[str(record.kind)] += 1
        self.by_agency.update(record.agencies)
        if self.first_time is None:
            self.first_time = record.time
        self.last_time = record.time

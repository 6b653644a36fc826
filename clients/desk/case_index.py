"""The inbox's in-memory index of cases: one summary per case, kept in memory only (the case
store on disk stays encrypted), searched and paged without touching the store.

Invariants:
- A summary is made from a `CaseThread` (`summarise`) and replaced whenever its case changes
  (`CaseIndex.put`); the index never reads the store itself.
- Search is a substring match over NFC-normalised, case-folded text (both case numbers, the
  person's names in every script, the agencies, the case link id), because Thai and Lao write
  no spaces between words: a name inside a sentence is found.
- Order: cases with an overdue item first, then those waiting on this agency, then the rest;
  most recent activity first within each group. The order is computed once per change and per
  day, so a page of 10,000 cases costs a slice, not a sort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clients.case_threads import CaseThread
from protocol import codec
from protocol.referral import CasePhase, OpenItem, open_items

PAGE_SIZE = 50


def search_key(text: str) -> str:
    """Text as search compares it: NFC, then case-folded (folding keeps Thai and Lao as is)."""
    return codec.nfc(codec.nfc(text).casefold())


@dataclass(frozen=True, slots=True)
class CaseSummary:
    case_link_id: bytes
    destination_agency_id: str
    origin_agency_id: str
    destination_case_ref: str
    origin_case_ref: str | None
    name_native: str | None
    name_romanised: str | None
    phase: CasePhase
    last_activity: int
    local_is_destination: bool
    state: Any
    """The `CaseState`, to compute what waits on a given day."""

    @property
    def case_hex(self) -> str:
        return self.case_link_id.hex()

    @property
    def partner_id(self) -> str:
        return self.origin_agency_id if self.local_is_destination else self.destination_agency_id

    def items(self, today: str) -> tuple[OpenItem, ...]:
        return open_items(self.state, today)

    def haystack(self) -> str:
        parts = [
            self.destination_case_ref,
            self.origin_case_ref or "",
            self.name_native or "",
            self.name_romanised or "",
            self.destination_agency_id,
            self.origin_agency_id,
            self.case_hex,
        ]
        return search_key("\n".join(parts))


def summarise(thread: CaseThread) -> CaseSummary:
    state = thread.state
    name = thread.person_name
    return CaseSummary(
        case_link_id=state.case_link_id,
        destination_agency_id=state.destination_agency_id,
        origin_agency_id=state.origin_agency_id,
        destination_case_ref=state.destination_case_ref,
        origin_case_ref=state.origin_case_ref,
        name_native=None if name is None else name.full_native,
        name_romanised=None if name is None else name.full_romanised,
        phase=state.phase,
        last_activity=thread.last_activity,
        local_is_destination=state.local_agency_id == state.destination_agency_id,
        state=state,
    )


@dataclass(frozen=True, slots=True)
class Row:
    summary: CaseSummary
    items: tuple[OpenItem, ...]
    overdue: bool
    waiting_on_us: bool


@dataclass(frozen=True, slots=True)
class Page:
    rows: tuple[Row, ...]
    number: int
    pages: int
    total: int


class CaseIndex:
    """Summaries by case link id, with a cached attention order per day."""

    def __init__(self) -> None:
        self._cases: dict[bytes, CaseSummary] = {}
        self._haystacks: dict[bytes, str] = {}
        self._ordered: list[Row] | None = None
        self._ordered_for = ""

    def __len__(self) -> int:
        return len(self._cases)

    def put(self, summary: CaseSummary) -> None:
        self._cases[summary.case_link_id] = summary
        self._haystacks[summary.case_link_id] = summary.haystack()
        self._ordered = None

    def get(self, case_link_id: bytes) -> CaseSummary | None:
        return self._cases.get(case_link_id)

    def clear(self) -> None:
        self._cases.clear()
        self._haystacks.clear()
        self._ordered = None

    def _order(self, today: str) -> list[Row]:
        if self._ordered is None or self._ordered_for != today:
            rows = []
            for summary in self._cases.values():
                items = summary.items(today)
                local = summary.state.local_side
                rows.append(
                    Row(
                        summary,
                        items,
                        any(i.overdue for i in items),
                        any(local in i.waiting_on for i in items),
                    )
                )
            rows.sort(
                key=lambda r: (0 if r.overdue else 1 if r.waiting_on_us else 2, -r.summary.last_activity)
            )
            self._ordered, self._ordered_for = rows, today
        return self._ordered

    def page(self, today: str, *, query: str = "", number: int = 1, size: int = PAGE_SIZE) -> Page:
        """One page of the cases matching `query` (all when empty), in attention order."""
        rows = self._order(today)
        needle = search_key(query.strip())
        if needle:
            rows = [r for r in rows if needle in self._haystacks[r.summary.case_link_id]]
        pages = max(1, -(-len(rows) // size))
        number = min(max(1, number), pages)
        start = (number - 1) * size
        return Page(tuple(rows[start : start + size]), number, pages, len(rows))

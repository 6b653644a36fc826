"""The inbox's in-memory index of cases: one summary per case, kept in memory only (the case
store on disk stays encrypted), searched and paged without touching the store.

Invariants:
- A summary is the one the case store keeps sealed in the case's row (`CaseStore.summaries` at
  unlock, `CaseStore.summary` when a case changes), which is what `summarise` makes of the
  case's thread; it is replaced whenever its case changes (`CaseIndex.put`). The index never
  reads the store itself.
- Search is a substring match over NFC-normalised, case-folded text (both case numbers, the
  person's names in every script, the agencies, the case link id), because Thai and Lao write
  no spaces between words: a name inside a sentence is found.
- Order: cases with an overdue item first, then those waiting on this agency, then the rest;
  most recent activity first within each group. The order is computed once per change and per
  day, so a page of 10,000 cases costs a slice, not a sort.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from clients.case_threads import CaseSummary
from protocol import codec
from protocol.referral import OpenItem

PAGE_SIZE = 50


def search_key(text: str) -> str:
    """Text as search compares it: NFC, then case-folded (folding keeps Thai and Lao as is)."""
    return codec.nfc(codec.nfc(text).casefold())


def haystack(summary: CaseSummary) -> str:
    """What search looks in: both case numbers, the names, both agencies and the case link id."""
    parts = [
        summary.destination_case_ref,
        summary.origin_case_ref or "",
        summary.name_native or "",
        summary.name_romanised or "",
        summary.destination_agency_id,
        summary.origin_agency_id,
        summary.case_hex,
    ]
    return search_key("\n".join(parts))


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
        self._haystacks[summary.case_link_id] = haystack(summary)
        self._ordered = None

    def put_all(self, summaries: Iterable[CaseSummary]) -> None:
        for summary in summaries:
            self._cases[summary.case_link_id] = summary
            self._haystacks[summary.case_link_id] = haystack(summary)
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

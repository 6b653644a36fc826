"""The inbox index: substring search over NFC case-folded text finds names inside Thai and Lao
text written without spaces; overdue cases come first; pages of 10,000 cases are slices."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from clients.desk.case_index import CaseIndex, CaseSummary, search_key
from protocol.referral import CasePhase, Side


@dataclass(frozen=True)
class FakeState:
    """Stands in for a `CaseState` in summaries built without a case store (only the side is read)."""

    local_side: Side = Side.DESTINATION


def summary(n: int, name: str, romanised: str | None = None) -> CaseSummary:
    return CaseSummary(
        case_link_id=n.to_bytes(16, "big"),
        destination_agency_id="TH-DSDW",
        origin_agency_id="LA-MOLSW",
        destination_case_ref=f"ศคม.นค. {n}/2568",
        origin_case_ref=None,
        name_native=name,
        name_romanised=romanised,
        phase=CasePhase.REFERRED,
        last_activity=1_000_000 + n,
        local_is_destination=True,
        state=FakeState(),
    )


class PlainIndex(CaseIndex):
    """The index with no open items (they need a real case state; the order is tested below)."""

    def _order(self, today: str):  # type: ignore[no-untyped-def]
        from clients.desk.case_index import Row

        rows = [Row(s, (), False, False) for s in self._cases.values()]
        return sorted(rows, key=lambda r: -r.summary.last_activity)


def test_search_finds_a_name_inside_text_without_spaces() -> None:
    index = PlainIndex()
    index.put(summary(1, "นางสาวสมหญิงใจดี"))
    index.put(summary(2, "ນາງສົມພອນແກ້ວມະນີ", "Somphone KEOMANY"))
    assert [r.summary.name_native for r in index.page("2026-01-01", query="สมหญิง").rows] == ["นางสาวสมหญิงใจดี"]
    assert len(index.page("2026-01-01", query="ແກ້ວມະ").rows) == 1
    assert len(index.page("2026-01-01", query="keomany").rows) == 1
    assert len(index.page("2026-01-01", query="42/2568").rows) == 0
    assert len(index.page("2026-01-01", query="1/2568").rows) == 1


def test_search_matches_decomposed_input() -> None:
    decomposed = unicodedata.normalize("NFD", "ແກ້ວ")
    assert search_key(decomposed) == search_key("ແກ້ວ")
    index = PlainIndex()
    index.put(summary(1, "ນາງ ສົມພອນ ແກ້ວມະນີ"))
    assert index.page("2026-01-01", query=decomposed).total == 1


def test_ten_thousand_cases_page_by_fifty() -> None:
    index = PlainIndex()
    for n in range(10_000):
        index.put(summary(n, f"ສົມພອນ {n}"))
    first = index.page("2026-01-01", number=1)
    last = index.page("2026-01-01", number=200)
    assert (first.total, first.pages, len(first.rows)) == (10_000, 200, 50)
    assert first.rows[0].summary.last_activity == 1_000_000 + 9_999
    assert last.rows[-1].summary.last_activity == 1_000_000
    assert index.page("2026-01-01", number=999).number == 200
    assert index.page("2026-01-01", query="ສົມພອນ 9999").total == 1

"""The inbox index: substring search over NFC case-folded text finds names inside Thai and Lao
text written without spaces; overdue cases come first, then those waiting on this agency; pages
of 10,000 cases are slices."""

from __future__ import annotations

import unicodedata

from clients.case_threads import CaseStanding, CaseSummary
from clients.desk.case_index import CaseIndex, search_key
from protocol.referral import CasePhase, OpenItem, Side, WaitingKind

DEST, ORIG = Side.DESTINATION, Side.ORIGIN
QUIET = CaseStanding(DEST, ())


def summary(n: int, name: str, romanised: str | None = None, standing: CaseStanding = QUIET) -> CaseSummary:
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
        state=standing,
    )


def test_search_finds_a_name_inside_text_without_spaces() -> None:
    index = CaseIndex()
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
    index = CaseIndex()
    index.put(summary(1, "ນາງ ສົມພອນ ແກ້ວມະນີ"))
    assert index.page("2026-01-01", query=decomposed).total == 1


def test_overdue_cases_come_first_then_those_waiting_on_us_and_the_order_follows_the_day() -> None:
    answer = OpenItem(WaitingKind.ANSWER_INFO, (ORIG,), b"q" * 16, due_on="2026-01-10")
    ours = OpenItem(WaitingKind.ACKNOWLEDGE, (DEST,), b"r" * 16)
    index = CaseIndex()
    index.put(summary(1, "ສົມພອນ", standing=CaseStanding(DEST, (answer,))))
    index.put(summary(2, "สมชาย", standing=CaseStanding(DEST, (ours,))))
    index.put(summary(3, "ບົວໄລ"))
    before = index.page("2026-01-10").rows
    after = index.page("2026-01-11").rows
    assert [r.summary.name_native for r in before] == ["สมชาย", "ບົວໄລ", "ສົມພອນ"]
    assert [r.summary.name_native for r in after] == ["ສົມພອນ", "สมชาย", "ບົວໄລ"]
    assert (after[0].overdue, after[0].items[0].overdue, after[1].waiting_on_us) == (True, True, True)
    assert before[2].items == (answer,)


def test_a_case_put_again_replaces_its_line() -> None:
    index = CaseIndex()
    index.put_all(summary(n, f"ສົມພອນ {n}") for n in range(3))
    index.put(summary(1, "ນາງ ມະນີວັນ"))
    assert len(index) == 3
    assert index.page("2026-01-01", query="ສົມພອນ 1").total == 0
    assert index.page("2026-01-01", query="ມະນີວັນ").rows[0].summary.case_link_id == (1).to_bytes(16, "big")


def test_ten_thousand_cases_page_by_fifty() -> None:
    index = CaseIndex()
    index.put_all(summary(n, f"ສົມພອນ {n}") for n in range(10_000))
    first = index.page("2026-01-01", number=1)
    last = index.page("2026-01-01", number=200)
    assert (first.total, first.pages, len(first.rows)) == (10_000, 200, 50)
    assert first.rows[0].summary.last_activity == 1_000_000 + 9_999
    assert last.rows[-1].summary.last_activity == 1_000_000
    assert index.page("2026-01-01", number=999).number == 200
    assert index.page("2026-01-01", query="ສົມພອນ 9999").total == 1

"""Tracing one referral through an exported log, searching, and the exports (JSON Lines, CSV, HTML).

The log holds a real referral's life (`referral_life`): the acceptance, the broker's accepted
receipt, the recipient's delivered and verified receipts, the purge, with real signatures, so a
forged receipt or an unpinned root is caught exactly as it would be on a real log.
"""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest

from casebridge.cli import main
from clients.audit.policy import LogPolicy, ProblemKind
from clients.audit.search import parse_time
from clients.audit.sources import BROKER_CERT_FILE, ExportDirectory
from clients.audit.trace import Trace, trace_envelope
from protocol.certificate import RootCertificate
from protocol.errors import InvalidField
from tests.audit_log_fixtures import (
    LAO_NAME,
    LOG,
    T0,
    THAI_NAME,
    LogBuilder,
    Parties,
    referral_life,
    register_parties,
)

ENVELOPE = bytes.fromhex("42" * 16)


@pytest.fixture(scope="module")
def parties() -> Parties:
    return Parties.create()


def life(parties: Parties, directory: Path, *, forge_delivery: bool = False) -> Path:
    log = LogBuilder()
    register_parties(log, parties)
    log.fill(3)
    referral_life(log, parties, forge_delivery=forge_delivery)
    log.fill(2)
    export = log.export(directory)
    assert parties.broker.certificate is not None
    (export / BROKER_CERT_FILE).write_bytes(parties.broker.certificate.raw)
    return export


def trace(export: Path, roots: list[RootCertificate], envelope: bytes = ENVELOPE) -> Trace:
    broker = (export / BROKER_CERT_FILE).read_bytes()
    return asyncio.run(
        trace_envelope(
            ExportDirectory(export),
            LogPolicy(LOG.vkey),
            roots,
            envelope,
            trusted=None,
            now=T0 + 10**6,
            broker_certificate=broker,
        )
    )


def test_a_referrals_whole_life_is_traced_and_every_receipt_verifies(
    parties: Parties, tmp_path: Path
) -> None:
    result = trace(life(parties, tmp_path / "export"), parties.root_certificates)
    assert result.ok, [p.line() for p in result.all_problems]
    assert [str(s.record.kind) for s in result.steps] == [
        "envelope_accepted",
        "receipt",
        "receipt",
        "receipt",
        "envelope_purged",
    ]
    assert [s.summary.split(" ")[0] for s in result.steps[1:4]] == ["accepted", "delivered", "verified"]
    assert all("receipt signature verified" in s.proof for s in result.steps[1:4])
    assert THAI_NAME in result.steps[0].summary
    assert LAO_NAME in result.steps[0].summary


def test_a_forged_receipt_in_the_log_is_named(parties: Parties, tmp_path: Path) -> None:
    result = trace(life(parties, tmp_path / "export", forge_delivery=True), parties.root_certificates)
    assert result.verification.ok
    assert not result.ok
    (problem,) = result.problems
    assert problem.kind is ProblemKind.RECEIPT
    assert problem.message.startswith(f"leaf {problem.index} (delivered receipt for LA-MOLSW)")
    assert "bad signature" in problem.message


def test_receipts_need_the_signers_root_pinned(parties: Parties, tmp_path: Path) -> None:
    result = trace(life(parties, tmp_path / "export"), [parties.roots["TH"].certificate])
    refused = {p.message.split(" (")[1].split(" ")[0] for p in result.problems}
    assert refused == {"delivered", "verified"}


def test_an_envelope_the_log_never_saw_is_not_traced(parties: Parties, tmp_path: Path) -> None:
    result = trace(life(parties, tmp_path / "export"), parties.root_certificates, bytes(16))
    assert not result.ok
    assert [p.kind for p in result.problems] == [ProblemKind.INCLUSION]


# --- search and exports through the command ------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["audit", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_search_by_agency_and_kind_prints_matching_rows(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = life(parties, tmp_path / "export")
    status, out, err = cli(
        capsys,
        "search",
        "--from",
        str(export),
        "--log-key",
        LOG.vkey.encode(),
        "--agency",
        "LA-MOLSW",
        "--kind",
        "receipt",
        "--json",
    )
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["receipt_kind"] for r in rows] == ["accepted", "delivered", "verified"]
    assert {r["envelope_id"] for r in rows} == {ENVELOPE.hex()}
    assert "3 leaf(s) match agency LA-MOLSW, kind receipt; the log is verified" in err


def test_exports_in_json_lines_and_csv_hold_parsed_leaves_with_hex_ids(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = life(parties, tmp_path / "export")
    common = ["--from", str(export), "--log-key", LOG.vkey.encode(), "--envelope", ENVELOPE.hex()]
    assert cli(capsys, "export", *common, "--format", "jsonl", "--out", str(tmp_path / "rows.jsonl"))[0] == 0
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["kind"] for r in rows] == [
        "envelope_accepted",
        "receipt",
        "receipt",
        "receipt",
        "envelope_purged",
    ]
    assert rows[0]["envelope_hash"] == rows[-1]["envelope_hash"]
    assert "sender_signature" not in rows[0]
    assert "receipt" not in rows[1]
    assert cli(capsys, "export", *common, "--format", "csv", "--out", str(tmp_path / "rows.csv"))[0] == 0
    with (tmp_path / "rows.csv").open(encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["kind"] for r in table] == [r["kind"] for r in rows]
    assert table[0]["envelope_id"] == ENVELOPE.hex()
    assert table[0]["time_utc"].endswith(" UTC")


def test_the_html_report_is_self_contained_and_renders_thai_and_lao_names(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = life(parties, tmp_path / "export")
    report = tmp_path / "report.html"
    status, out, _ = cli(
        capsys,
        "export",
        "--from",
        str(export),
        "--log-key",
        LOG.vkey.encode(),
        "--format",
        "html",
        "--out",
        str(report),
        "--kind",
        "certificate_registered",
    )
    assert status == 0, out
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in page
    assert f'<span lang="th">{THAI_NAME}</span>' in page
    assert f'<span lang="lo">{LAO_NAME}</span>' in page
    assert "Verified: the log is consistent" in page
    for external in ("<script", "src=", "href=", "@import", "url("):
        assert external not in page


def test_the_html_trace_report_shows_each_step_and_its_proof(
    parties: Parties, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = life(parties, tmp_path / "export", forge_delivery=True)
    roots = [tmp_path / "th.cert", tmp_path / "la.cert"]
    roots[0].write_bytes(parties.roots["TH"].certificate.raw)
    roots[1].write_bytes(parties.roots["LA"].certificate.raw)
    report = tmp_path / "trace.html"
    status, _, _ = cli(
        capsys,
        "export",
        "--from",
        str(export),
        "--log-key",
        LOG.vkey.encode(),
        "--format",
        "html",
        "--out",
        str(report),
        "--envelope",
        ENVELOPE.hex(),
        "--trust",
        str(roots[0]),
        "--trust",
        str(roots[1]),
    )
    assert status == 1
    page = report.read_text(encoding="utf-8")
    assert "Verification FAILED: 1 problem(s)." in page
    assert "receipt DOES NOT verify" in page
    assert page.count("receipt signature verified") == 2


@pytest.mark.parametrize(
    ("text", "end_of_day", "expected"),
    [
        ("1767225600", False, 1767225600),
        ("2026-01-01", False, 1767225600),
        ("2026-01-01", True, 1767225600 + 86399),
        ("2026-01-01T07:00:00+07:00", False, 1767225600),
        ("2026-01-01T00:00:00Z", False, 1767225600),
        ("2026-01-01T00:00:00", False, 1767225600),
    ],
)
def test_times_are_unix_seconds_or_iso_dates(text: str, end_of_day: bool, expected: int) -> None:
    assert parse_time(text, "--since", end_of_day=end_of_day) == expected


def test_a_time_that_is_neither_is_refused() -> None:
    with pytest.raises(InvalidField):
        parse_time("yesterday", "--since")

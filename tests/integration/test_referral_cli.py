"""Typed referral messages from files and on the command line: a TOML message is checked,
completed and sent; `casebridge send --referral` names a bad field in one line before anything
is opened; `casebridge cases list|show|export` read the encrypted case store, overdue first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from pypdf import PdfReader

from clients.case_store import CaseStore
from clients.referral_drafts import build_message, read_draft
from keys.keystore import KDF_PROFILES, save_identity
from keys.lifecycle import create_agency
from protocol.referral import Referral, RequestedAction, Scope, Side
from tests import referral_fixtures as fixtures
from tests.integration.broker_harness import TEST_PASSPHRASE, BrokerProcess, RunningBroker
from tests.integration.pki import Pki
from tests.integration.test_client_cli import _enroll, _prepare, _runner
from tests.integration.test_referral_flow import LA, open_clients, receive

VALID_TOML = """
type = "referral"
case_ref = "ศคม.นค. 42/2569"
identified_on = 2025-12-28
identified_by = "ตำรวจภูธรจังหวัดหนองคาย"
requested_actions = ["verify_nationality", "repatriate"]
return_wish = "wants_to_return"
summary = "ผู้เสียหายประสงค์จะกลับบ้าน"

[person]
sex = "female"
is_child = false
date_of_birth = "2003-05-14"
languages = ["th", "lo"]

[person.name]
full_native = "ນາງ ສົມພອນ ແກ້ວມະນີ"
full_romanised = "Somphone Keomany"

[consent]
given_by = "person"
is_child = false
given_on = 2025-12-30
language = "lo"
officer = "TH-DSDW:off-0417"
legal_basis = "explicit_consent"
scopes = ["s2_verification", "s1_notify_origin"]
"""


def casebridge(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "casebridge", *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=clean | (env or {}), check=False,
    )  # fmt: skip


async def test_a_message_file_in_toml_is_checked_completed_and_sent(
    broker: RunningBroker, tmp_path: Path
) -> None:
    path = tmp_path / "ส่งต่อ.toml"
    path.write_text(VALID_TOML, encoding="utf-8")
    draft = read_draft(path, rng=os.urandom)
    async with AsyncExitStack() as stack:
        th, la = await open_clients(stack, broker, tmp_path)
        message = build_message(draft, th.messages, to=LA)
        assert isinstance(message, Referral)
        assert message.requested_actions == (RequestedAction.REPATRIATE, RequestedAction.VERIFY_NATIONALITY)
        assert message.consent.scopes == (Scope.NOTIFY_ORIGIN, Scope.VERIFICATION)
        await th.send_message(message)
        assert [d.message for d in await receive(la)] == [message]


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("buddhist-year.toml", ('"2003-05-14"', '"2546-05-14"'), "person.date_of_birth"),
        ("unknown-code.toml", ('"wants_to_return"', '"home"'), "return_wish"),
        ("nested-missing.toml", ('full_native = "ນາງ ສົມພອນ ແກ້ວມະນີ"', ""), "person.name.full_native"),
        ("list-item.toml", ('"s1_notify_origin"', '"s9_everything"'), "consent.scopes[1]"),
    ],
)
def test_send_referral_with_a_bad_field_prints_one_line_naming_it(
    tmp_path: Path, name: str, change: tuple[str, str], field: str
) -> None:
    assert change[0] in VALID_TOML
    (tmp_path / name).write_text(VALID_TOML.replace(*change), encoding="utf-8")
    done = casebridge(
        tmp_path, "send", "--referral", name, "--to", LA, "--keystore", "absent.cbks",
        "--broker", "http://127.0.0.1:9", "--state", "state", "--trust", "absent.cert",
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"casebridge: Invalid input: field '{field}': expected ")
    assert not (tmp_path / "state").exists()


def test_cases_list_shows_overdue_cases_first_and_export_writes_the_pdf(tmp_path: Path) -> None:
    identity = create_agency(
        fixtures.DESTINATION, "Department of Social Development and Welfare", fixtures.NOW
    )
    save_identity(tmp_path / "dsdw.cbks", identity, TEST_PASSPHRASE, KDF_PROFILES["interactive"])
    with CaseStore(tmp_path / "state", identity) as store:
        cases = {}
        for ref, lang in (("A 1/2568", "lo"), ("B 2/2568", "th")):
            opening = fixtures.referral(lang, header={"case_link_id": os.urandom(16), "sender_case_ref": ref})
            state = store.record_sent(opening, now=fixtures.NOW)
            store.mark_sealed(opening, os.urandom(16).hex())
            cases[ref] = state
        # Case A waits on the Lao side's acknowledgement since 2025; case B has a later question
        # from this side with an overdue due date, so it comes first.
        state = cases["B 2/2568"]
        for mtype in (fixtures.MT.ACKNOWLEDGEMENT, fixtures.MT.ACCEPTANCE):
            state = store.record_received(
                fixtures.make(state, mtype, Side.ORIGIN), envelope_id="ab" * 16, now=fixtures.NOW
            )
        store.record_sent(
            fixtures.make(state, fixtures.MT.INFO_REQUEST, Side.DESTINATION), now=fixtures.NOW - 60
        )
    common = ("--keystore", "dsdw.cbks", "--state", "state")
    env = {"CASEBRIDGE_PASSPHRASE": TEST_PASSPHRASE}

    listed = casebridge(tmp_path, "cases", "list", *common, env=env)
    assert listed.returncode == 0, listed.stderr
    cases_shown = [line for line in listed.stdout.splitlines() if not line.startswith(" ")]
    assert [line.split(" TH-DSDW ")[0] for line in cases_shown] == ["[overdue]", "[waiting on them]"]
    assert "B 2/2568" in cases_shown[0]
    assert "สมชาย ใจดี (Somchai Jaidee)" in cases_shown[0]
    assert "ສົມພອນ ແກ້ວມະນີ (Somphone Keomany)" in cases_shown[1]
    assert "LA-MLSW: answer the info request" in listed.stdout
    assert "due 2025-03-07, OVERDUE" in listed.stdout
    documents = [
        json.loads(line)
        for line in casebridge(tmp_path, "cases", "list", "--json", *common, env=env).stdout.splitlines()
    ]
    assert [(d["destination_case_ref"], d["overdue"]) for d in documents] == [
        ("B 2/2568", True),
        ("A 1/2568", False),
    ]

    shown = casebridge(tmp_path, "cases", "show", "B 2/2568", *common, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "Person › Name › Full name (own script) [PD]: สมชาย ใจดี" in shown.stdout
    assert "received Acceptance" in shown.stdout

    exported = casebridge(tmp_path, "cases", "export", "A 1/2568", "--pdf", "ກໍລະນີ.pdf", *common, env=env)
    assert exported.returncode == 0, exported.stderr
    text = unicodedata.normalize(
        "NFC", "".join(p.extract_text() for p in PdfReader(tmp_path / "ກໍລະນີ.pdf").pages)
    )
    assert "ສົມພອນ ແກ້ວມະນີ" in text
    assert "A 1/2568" in text
    again = casebridge(tmp_path, "cases", "export", "A 1/2568", "--pdf", "ກໍລະນີ.pdf", *common, env=env)
    assert again.returncode == 1
    assert "already exists" in again.stderr


async def test_send_referral_carries_a_toml_message_that_the_recipient_sees_in_its_cases(
    broker_process: Callable[..., Awaitable[BrokerProcess]], live_pki: Pki, tmp_path: Path
) -> None:
    process = await broker_process()
    keystores, roots = _prepare(live_pki, tmp_path)
    await _enroll(process, live_pki, roots, tmp_path)
    run = _runner(keystores, roots, tmp_path)
    (tmp_path / "referral.toml").write_text(VALID_TOML, encoding="utf-8")

    sent = await run(
        "TH-ATPD", process.url, "send", "--referral", "referral.toml", "--to", "LA-MOLSW", "--json"
    )
    assert sent.status == 0, sent.stderr
    (answer,) = sent.json_lines()
    assert (answer["state"], answer["message_type"], answer["phase"]) == ("accepted", "referral", "referred")
    again = await run("TH-ATPD", process.url, "send", "--referral", "referral.toml", "--to", "LA-MOLSW")
    assert again.status == 0, again.stderr  # A second referral: a new case with a new link id.

    watched = await run("LA-MOLSW", process.url, "inbox", "watch", "--once", "--save-dir", "saved", "--json")
    assert watched.status == 0, watched.stderr
    assert len(watched.json_lines()) == 2
    env = {"CASEBRIDGE_PASSPHRASE": TEST_PASSPHRASE}
    state = str(tmp_path / "state-LA-MOLSW")
    listed = casebridge(
        tmp_path, "cases", "list", "--keystore", str(keystores["LA-MOLSW"]), "--state", state, env=env
    )
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if not line.startswith(" ")]
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("[waiting on us] TH-ATPD ศคม.นค. 42/2569 / LA-MOLSW not yet set")
        assert "ນາງ ສົມພອນ ແກ້ວມະນີ (Somphone Keomany)" in line
    assert listed.stdout.count("LA-MOLSW (this agency): acknowledge (Referral") == 2
    options = ("--keystore", str(keystores["LA-MOLSW"]), "--state", state)
    ambiguous = casebridge(tmp_path, "cases", "show", "ศคม.นค. 42/2569", *options, env=env)
    assert ambiguous.returncode == 1
    assert "names several cases" in ambiguous.stderr

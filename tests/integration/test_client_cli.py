"""`casebridge send`, `casebridge inbox list|watch` and `casebridge status` as an agency runs
them: separate processes against a broker running as its own process, with the real clock."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from clients.agency import AgencyClient
from keys.keystore import KDF_PROFILES, save_identity
from tests.integration.broker_harness import CERTIFICATE_TYPE, OPERATOR, TEST_PASSPHRASE, BrokerProcess
from tests.integration.client_harness import LAO_FILENAME, document
from tests.integration.pki import Pki

THAI_TEXT = "ส่งต่อกรณี: นางสาว สมหญิง ใจดี ขอความช่วยเหลือด่วน"
AGENCIES = ("TH-ATPD", "LA-MOLSW")


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


async def _enroll(process: BrokerProcess, pki: Pki, roots: list[Path], tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        operator = process.client(pki, OPERATOR, session)
        for agency_id in AGENCIES:
            certificate = pki[agency_id].certificate
            assert certificate is not None
            reply = await operator.post("/v1/directory/certificates", certificate.raw, CERTIFICATE_TYPE)
            assert reply.status in (200, 201)
    for agency_id in AGENCIES:
        async with AgencyClient(
            pki[agency_id],
            roots=[pki.root_cert("TH"), pki.root_cert("LA")],
            broker_url=process.url,
            state_dir=tmp_path / f"enrol-{agency_id}",
        ) as client:
            assert await client.publish_encryption_keys() == 1


def _prepare(pki: Pki, tmp_path: Path) -> tuple[dict[str, Path], list[Path]]:
    keystores = {}
    for agency_id in AGENCIES:
        path = tmp_path / f"{agency_id.lower()}.cbks"
        save_identity(path, pki[agency_id], TEST_PASSPHRASE, KDF_PROFILES["interactive"])
        keystores[agency_id] = path
    return keystores, pki.write_roots(tmp_path / "roots")


def _runner(
    keystores: dict[str, Path], roots: list[Path], tmp_path: Path
) -> Callable[..., Awaitable[Result]]:
    async def run(agency_id: str, broker_url: str, *args: str, passphrase: str = TEST_PASSPHRASE) -> Result:
        common = ["--keystore", str(keystores[agency_id]), "--broker", broker_url]
        common += ["--state", str(tmp_path / f"state-{agency_id}")]
        for root in roots:
            common += ["--trust", str(root)]
        command, *rest = args
        sub = [command] if command != "inbox" else [command, rest.pop(0)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
        env["CASEBRIDGE_PASSPHRASE"] = passphrase
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "casebridge", *sub, *common, *rest,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
            env=env, cwd=tmp_path,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), err.decode())

    return run


async def test_send_inbox_and_status_commands_carry_a_referral_end_to_end(
    broker_process: Callable[..., Awaitable[BrokerProcess]], live_pki: Pki, tmp_path: Path
) -> None:
    process = await broker_process()
    keystores, roots = _prepare(live_pki, tmp_path)
    await _enroll(process, live_pki, roots, tmp_path)
    run = _runner(keystores, roots, tmp_path)
    attachment = tmp_path / LAO_FILENAME
    attachment.write_bytes(document(1_100_000, seed=7))

    sent = await run("TH-ATPD", process.url, "send", "--to", "LA-MOLSW", "--body", THAI_TEXT,
                     "--attach", str(attachment), "--json")  # fmt: skip
    assert sent.status == 0, sent.stderr
    (answer,) = sent.json_lines()
    assert answer["state"] == "accepted"
    envelope_id = str(answer["envelope_id"])

    listed = await run("LA-MOLSW", process.url, "inbox", "list", "--json")
    assert listed.status == 0, listed.stderr
    assert [(row["envelope_id"], row["sender_id"]) for row in listed.json_lines()] == [
        (envelope_id, "TH-ATPD")
    ]

    saved = tmp_path / "saved"
    watched = await run(
        "LA-MOLSW", process.url, "inbox", "watch", "--once", "--save-dir", str(saved), "--json"
    )
    assert watched.status == 0, watched.stderr
    (line,) = watched.json_lines()
    assert (line["envelope_id"], line["sender_id"]) == (envelope_id, "TH-ATPD")
    folder = saved / envelope_id
    assert (folder / "body.txt").read_text(encoding="utf-8") == THAI_TEXT
    assert (folder / LAO_FILENAME).read_bytes() == attachment.read_bytes()

    again = await run("LA-MOLSW", process.url, "inbox", "watch", "--once", "--save-dir", str(saved))
    assert (again.status, again.stdout.strip()) == (0, "Nothing new.")

    status = await run("TH-ATPD", process.url, "status", envelope_id)
    assert status.status == 0, status.stderr
    assert "LA-MOLSW: verified" in status.stdout
    assert "verified" in status.stdout.split("LA-MOLSW: verified", 1)[1]

    overview_text = await run("TH-ATPD", process.url, "status")
    assert "LA-MOLSW: verified" in overview_text.stdout
    overview = await run("TH-ATPD", process.url, "status", "--json")
    (entry,) = overview.json_lines()
    assert entry["state"] == "accepted"
    assert ["LA-MOLSW", "verified"] in [r[:2] for r in entry["receipts"]]  # type: ignore[index, union-attr]


async def test_a_send_while_the_broker_is_down_waits_and_goes_with_the_next_command(
    broker_process: Callable[..., Awaitable[BrokerProcess]], live_pki: Pki, tmp_path: Path
) -> None:
    process = await broker_process()
    keystores, roots = _prepare(live_pki, tmp_path)
    await _enroll(process, live_pki, roots, tmp_path)
    run = _runner(keystores, roots, tmp_path)
    # One command while the broker is up fills the verified directory cache.
    warm = await run("TH-ATPD", process.url, "status")
    assert warm.status == 0, warm.stderr
    await process.stop()

    queued = await run("TH-ATPD", process.url, "send", "--to", "LA-MOLSW", "--body", THAI_TEXT)
    assert queued.status == 75, queued.stderr
    assert "waits in the outbox" in queued.stdout

    restarted = await BrokerProcess.serve(process.config, process.log_file)
    try:
        flushed = await run("TH-ATPD", restarted.url, "status")
        assert flushed.status == 0, flushed.stderr
        assert "from the outbox: Sent" in flushed.stdout
        received = await run(
            "LA-MOLSW", restarted.url, "inbox", "watch", "--once", "--save-dir", "in", "--json"
        )
        (line,) = received.json_lines()
        assert line["sender_id"] == "TH-ATPD"
    finally:
        await restarted.close()


async def test_a_wrong_passphrase_is_one_plain_line_and_changes_nothing(
    broker_process: Callable[..., Awaitable[BrokerProcess]], live_pki: Pki, tmp_path: Path
) -> None:
    process = await broker_process()
    keystores, roots = _prepare(live_pki, tmp_path)
    run = _runner(keystores, roots, tmp_path)
    refused = await run("TH-ATPD", process.url, "send", "--to", "LA-MOLSW", "--body", THAI_TEXT,
                        passphrase="ผิด-wrong-passphrase")  # fmt: skip
    assert refused.status == 1
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("casebridge: Wrong passphrase:")
    assert not (tmp_path / "state-TH-ATPD").exists()

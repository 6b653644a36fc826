"""The broker as an operator runs it: the `casebridge broker` commands, a separate process, real
signals. Set-up, certification, serving, graceful stop, a crash, structured logs."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from broker.clock import SystemClock
from keys.keystore import load_agency, load_broker
from tests.integration.broker_harness import (
    ENVELOPE_TYPE,
    TEST_PASSPHRASE,
    BrokerProcess,
)
from tests.integration.pki import Pki, seal
from tests.integration.signed_http import SignedClient

ROOT_PASSPHRASE = "รหัสผ่าน-ຂອງ-root-2026"
StartProcess = Callable[..., Awaitable[BrokerProcess]]


def casebridge(command: str, *more: str, cwd: Path) -> str:
    """Run `casebridge COMMAND` (split on spaces) with `more` arguments (which may hold spaces)."""
    env = {
        **os.environ,
        "CASEBRIDGE_ROOT_PASSPHRASE": ROOT_PASSPHRASE,
        "CASEBRIDGE_BROKER_PASSPHRASE": TEST_PASSPHRASE,
        "CASEBRIDGE_PASSPHRASE": TEST_PASSPHRASE,
    }
    done = subprocess.run(
        [sys.executable, "-m", "casebridge", *command.split(), *more],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


async def test_an_operator_sets_up_certifies_serves_and_stops_a_broker(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    fast = "--kdf-profile interactive"
    for country, name in (("TH", "ศูนย์ต่อต้านการค้ามนุษย์"), ("LA", "ຄະນະກຳມະການ ຕ້ານການຄ້າມະນຸດ")):
        low = country.lower()
        casebridge(
            f"keys root create --country {country} --out {low}-root.cbks --cert-out {low}-root.cert {fast}",
            "--name",
            name,
            cwd=tmp_path,
        )
    data = tmp_path / "broker-data"
    config = data / "broker.toml"
    out = casebridge(
        f"broker init --data-dir {data} --id TH-CASEBRIDGE --root-cert th-root.cert --root-cert la-root.cert "
        f"--listen-port 0 {fast}",
        cwd=tmp_path,
    )
    assert "casebridge keys certify" in out
    certify = "keys certify --root th-root.cbks"
    casebridge(f"{certify} --request {data}/broker.csr --role broker --out broker.cert", cwd=tmp_path)
    casebridge(f"broker import-cert --config {config} --cert broker.cert", cwd=tmp_path)
    operator_create = (
        f"keys agency create --id TH-OPERATOR --out operator.cbks --request-out operator.csr {fast}"
    )
    casebridge(operator_create, "--name", "ผู้ดูแลระบบ", cwd=tmp_path)
    casebridge(f"{certify} --request operator.csr --role operator --out operator.cert", cwd=tmp_path)
    casebridge(
        "keys agency import-cert --keystore operator.cbks --cert operator.cert --root-cert th-root.cert",
        cwd=tmp_path,
    )
    registered = casebridge(f"broker register-certificate --config {config} operator.cert", cwd=tmp_path)
    assert registered.startswith("registered: certificate of TH-OPERATOR")

    process = await BrokerProcess.serve(config, tmp_path / "broker.log")
    try:
        operator = load_agency(tmp_path / "operator.cbks", TEST_PASSPHRASE).identity
        client = SignedClient(
            session, process.url, process.authority, operator.signing_key, SystemClock().now
        )
        assert (await client.get("/healthz")).status == 200
        directory = await client.get("/v1/directory")
        assert directory.status == 200
        assert len(directory.json()["roots"]) == 2
        assert await process.stop() == 0
    finally:
        await process.close()
    status = casebridge(f"broker status --config {config}", cwd=tmp_path)
    assert "agencies:              2" in status  # the operator, and the broker's own certificate
    assert "audit log entries:     6" in status  # two roots, the operator, the broker, start, stop
    lines = (tmp_path / "broker.log").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]
    assert {"broker_started", "broker_listening", "request", "broker_stopped"} <= {
        e["event"] for e in entries
    }
    broker = load_broker(data / "broker.cbks", TEST_PASSPHRASE).identity
    secrets = [TEST_PASSPHRASE, ROOT_PASSPHRASE]
    for seed in (broker.receipt_seed, broker.checkpoint_seed, operator.signing_seed):
        secrets += [seed.hex(), base64.b64encode(seed).decode()]
    assert not [line for line in lines if any(secret in line for secret in secrets)]


async def test_an_accepted_envelope_survives_a_crash(
    broker_process: StartProcess, live_pki: Pki, session: aiohttp.ClientSession
) -> None:
    process: BrokerProcess = await broker_process()
    await process.enroll(live_pki, session, "TH-ATPD", "LA-MOLSW")
    sealed = seal(live_pki["TH-ATPD"], [live_pki["LA-MOLSW"]], SystemClock().now())
    reply = await process.client(live_pki, "TH-ATPD", session).post(
        "/v1/envelopes", sealed.body, ENVELOPE_TYPE
    )
    assert reply.status == 201
    assert await process.kill() != 0
    restarted = await BrokerProcess.serve(process.config, process.log_file)
    try:
        inbox = (await restarted.client(live_pki, "LA-MOLSW", session).get("/v1/inbox")).json()
        assert [i["envelope_id"] for i in inbox["items"]] == [sealed.envelope_id.hex()]
        again = await restarted.client(live_pki, "TH-ATPD", session).post(
            "/v1/envelopes", sealed.body, ENVELOPE_TYPE
        )
        assert (again.status, again.json()) == (200, reply.json())
    finally:
        await restarted.close()
    log = process.log_file.read_text(encoding="utf-8")
    assert "envelope_accepted" in log
    assert "สมหญิง" not in log
    assert base64.b64encode(sealed.parts[0][:48]).decode() not in log
    assert sealed.parts[0][:48].hex() not in log


async def test_a_graceful_stop_finishes_the_upload_in_flight(
    broker_process: StartProcess, live_pki: Pki, session: aiohttp.ClientSession
) -> None:
    process: BrokerProcess = await broker_process()
    await process.enroll(live_pki, session, "TH-ATPD", "LA-MOLSW")
    sealed = seal(
        live_pki["TH-ATPD"],
        [live_pki["LA-MOLSW"]],
        SystemClock().now(),
        attachments=[("ເອກະສານ.pdf", b"\x07" * 200_000)],
    )
    client = process.client(live_pki, "TH-ATPD", session)
    url, headers = client.prepare("POST", "/v1/envelopes", body=sealed.body, content_type=ENVELOPE_TYPE)
    headers["Content-Length"] = str(len(sealed.body))
    first_half_sent = asyncio.Event()
    signal_sent = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield sealed.body[:100_000]
        first_half_sent.set()
        await signal_sent.wait()
        yield sealed.body[100_000:]

    upload = asyncio.create_task(
        session.post(url, data=body(), headers=headers, skip_auto_headers=("Content-Type",))
    )
    await first_half_sent.wait()
    await asyncio.sleep(0.5)  # Sequencing only: let the broker start the handler before the signal.
    process.process.send_signal(signal.SIGTERM)
    signal_sent.set()
    response = await upload
    assert response.status == 201
    assert (await response.json())["envelope_id"] == sealed.envelope_id.hex()
    assert await asyncio.wait_for(process.process.wait(), 30) == 0

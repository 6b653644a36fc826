"""The officer's tools against a real broker: verify its live log, trace a referral, export it.

In-process brokers (`broker` fixture, manual clock) drive the checkpointer by hand, and the tools
run as a library with a transport on the broker's clock; a broker process with the real clock
runs the `casebridge audit` commands end to end. A static tlog-tiles server (real tiles of a
generated log) stands in for a broker that serves a damaged entry bundle.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from broker.clock import SystemClock
from broker.web.audit_routes import AUDIT
from clients.audit.broker_log import BrokerAuditLog
from clients.audit.policy import LogPolicy, ProblemKind
from clients.audit.sources import ExportDirectory, RawExport
from clients.audit.trace import check_tlog_proof, trace_envelope
from clients.audit.verifier import verify_log
from clients.transport import BrokerTransport, RetryPolicy
from keys.keystore import KDF_PROFILES, save_identity
from protocol import auditlog
from protocol.merkle import NodeId
from protocol.note import NoteSigner
from protocol.receipt import ReceiptKind
from protocol.tiles import TILE_WIDTH, encode_entry_bundle, encode_hash_tile, entries_path, tile_path
from tests.audit_log_fixtures import LOG, T0, LogBuilder, operator_action, seed_key
from tests.integration.broker_harness import (
    CERTIFICATE_TYPE,
    ENVELOPE_TYPE,
    OPERATOR,
    RECEIPT_TYPE,
    TEST_PASSPHRASE,
    BrokerProcess,
    RunningBroker,
)
from tests.integration.pki import REFERRAL, Pki, Sealed, recipient_receipt, seal
from tests.integration.signed_http import SignedClient
from tests.integration.test_broker_receipts import post_receipt, sent

AUDITOR = "LA-AUDITOR"
QUICK = RetryPolicy(max_attempts=2, base_delay_seconds=0.01, max_delay_seconds=0.05)
PERSONAL = ("สมหญิง", "ใจดี", "ສົມພອນ", "ແກ້ວມະນີ")


def log_vkey(pki: Pki) -> str:
    return NoteSigner("casebridge.th-casebridge/audit", pki.broker_identity().checkpoint_key).vkey.encode()


async def register_auditor(broker: RunningBroker) -> None:
    cert = broker.pki[AUDITOR].certificate
    assert cert is not None
    reply = await broker.client(OPERATOR).post("/v1/directory/certificates", cert.raw, CERTIFICATE_TYPE)
    assert reply.status in (200, 201), reply.body


@pytest.fixture
async def audited(broker: RunningBroker) -> AsyncIterator[tuple[RunningBroker, BrokerTransport, Sealed]]:
    """A broker where TH-ATPD sent LA-MOLSW a referral that was delivered and verified, with a
    checkpoint over all of it, and a transport signing as the LA auditor."""
    await register_auditor(broker)
    sealed = await sent(broker, ["LA-MOLSW"])
    assert (await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.DELIVERED))[0] == 201
    assert (await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.VERIFIED))[0] == 201
    await checkpoint(broker)
    transport = BrokerTransport(
        broker.url, broker.pki[AUDITOR].signing_key, clock=broker.clock.now, retry=QUICK
    )
    try:
        yield broker, transport, sealed
    finally:
        await transport.close()


async def checkpoint(broker: RunningBroker) -> None:
    """Sign a checkpoint over every entry now (the checkpointer's own decision, forced)."""
    assert broker.app is not None
    broker.clock.advance(5)
    assert await broker.app[AUDIT].checkpointer.tick(force=True) is not None


@pytest.mark.parametrize("fetch", ["tiles", "entries"])
async def test_an_auditor_verifies_the_live_log_after_a_referral(
    audited: tuple[RunningBroker, BrokerTransport, Sealed], fetch: str
) -> None:
    broker, transport, _ = audited
    policy = LogPolicy.from_text(log_vkey(broker.pki))
    first = await verify_log(
        BrokerAuditLog(transport, fetch=fetch), policy, trusted=None, now=broker.clock.now()
    )
    assert first.ok, first.lines()
    assert first.new_state is not None
    await sent(broker, ["LA-LWU", "LA-MOLSW"])
    await checkpoint(broker)
    second = await verify_log(
        BrokerAuditLog(transport, fetch=fetch),
        policy,
        trusted=first.new_state,
        now=broker.clock.now(),
        resume=True,
    )
    assert second.ok, second.lines()
    assert second.start == first.new_state.size
    assert second.checkpoint is not None
    assert second.checkpoint.size > first.new_state.size


async def test_a_live_checkpoint_forked_from_the_trusted_one_is_caught(
    audited: tuple[RunningBroker, BrokerTransport, Sealed], tmp_path: Path
) -> None:
    broker, transport, _ = audited
    policy = LogPolicy.from_text(log_vkey(broker.pki))
    live = await verify_log(BrokerAuditLog(transport), policy, trusted=None, now=broker.clock.now())
    assert live.new_state is not None
    forged = LogBuilder()
    forged.fill(live.new_state.size)
    signer = NoteSigner(policy.origin, broker.pki.broker_identity().checkpoint_key)
    export = forged.export(tmp_path / "forged", note=forged.checkpoint(signer=signer))
    result = await verify_log(ExportDirectory(export), policy, trusted=live.new_state, now=broker.clock.now())
    assert ProblemKind.FORK in [p.kind for p in result.problems]


async def test_trace_proves_each_step_of_the_referral_with_inclusion_proofs(
    audited: tuple[RunningBroker, BrokerTransport, Sealed],
) -> None:
    broker, transport, sealed = audited
    log = BrokerAuditLog(transport)
    roots = [broker.pki.root_cert("TH"), broker.pki.root_cert("LA")]
    policy = LogPolicy.from_text(log_vkey(broker.pki))
    result = await trace_envelope(
        log,
        policy,
        roots,
        sealed.envelope_id,
        trusted=None,
        now=broker.clock.now(),
        broker_certificate=await log.broker_certificate(),
    )
    assert result.ok, [p.line() for p in result.all_problems]
    kinds = [(str(s.record.kind), s.summary.split(" ")[0]) for s in result.steps]
    assert kinds == [
        ("envelope_accepted", "accepted"),
        ("receipt", "accepted"),
        ("receipt", "delivered"),
        ("receipt", "verified"),
    ]
    assert all(s.proof.startswith("inclusion proof verified to checkpoint size") for s in result.steps)
    assert all("and in the recomputed tree" in s.proof for s in result.steps)
    assert check_tlog_proof(await log.tlog_proof(sealed.envelope_id), result, policy) is None
    other = LogBuilder()
    other.fill(3)
    assert (
        check_tlog_proof(b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + other.checkpoint(), result, policy)
        is not None
    )


async def test_raw_and_report_exports_carry_no_personal_data_and_verify_offline(
    audited: tuple[RunningBroker, BrokerTransport, Sealed], tmp_path: Path
) -> None:
    broker, transport, sealed = audited
    policy = LogPolicy.from_text(log_vkey(broker.pki))
    with RawExport(tmp_path / "raw") as raw:
        result = await verify_log(
            BrokerAuditLog(transport), policy, trusted=None, now=broker.clock.now(), sink=raw.write
        )
        raw.note = result.note
    assert result.ok
    offline = await verify_log(
        ExportDirectory(tmp_path / "raw"), policy, trusted=result.new_state, now=broker.clock.now()
    )
    assert offline.ok, offline.lines()
    assert (tmp_path / "raw" / "hashes").stat().st_size == 32 * result.checked
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    outputs = {}
    for fmt in ("html", "jsonl", "csv"):
        out = tmp_path / f"report.{fmt}"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "casebridge",
            "audit",
            "export",
            "--from",
            str(tmp_path / "raw"),
            "--log-key",
            log_vkey(broker.pki),
            "--format",
            fmt,
            "--out",
            str(out),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, (stdout, stderr)
        outputs[fmt] = out.read_text(encoding="utf-8")
    thai_name = broker.pki["TH-ATPD"].name
    assert f'<span lang="th">{thai_name}</span>' in outputs["html"]
    assert sealed.envelope_id.hex() in outputs["html"]
    for text in outputs.values():
        assert REFERRAL.decode() not in text
        for word in PERSONAL:
            assert word not in text
    rows = [json.loads(line) for line in outputs["jsonl"].splitlines()]
    assert {r["kind"] for r in rows} >= {
        "broker_started",
        "certificate_registered",
        "envelope_accepted",
        "receipt",
    }
    assert len(outputs["csv"].splitlines()) == len(rows) + 1


# --- a damaged tile, served by a static tlog-tiles server -----------------------------------------

Served = dict[str, bytes]


@pytest.fixture
async def tiles_server() -> AsyncIterator[tuple[str, LogBuilder, Served]]:
    """A static tlog-tiles server for a generated 600-leaf log; tests overwrite what it serves."""
    log = LogBuilder()
    log.fill(600)
    served: Served = {"checkpoint": log.checkpoint()}
    for bundle in range(3):
        first = bundle * TILE_WIDTH
        width = min(TILE_WIDTH, 600 - first)
        served[entries_path(bundle, width)] = encode_entry_bundle(log.leaves[first : first + width])
        nodes = [NodeId(0, i) for i in range(first, first + width)]
        served[tile_path(0, bundle, width)] = encode_hash_tile(log.tree.hashes(nodes))

    async def handler(request: web.Request) -> web.Response:
        body = served.get(request.match_info["tail"])
        return web.Response(status=404) if body is None else web.Response(body=body)

    app = web.Application()
    app.router.add_get("/v1/audit/{tail:.+}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", log, served
    finally:
        await runner.cleanup()


async def problems_from(url: str) -> list[tuple[ProblemKind, int | None]]:
    """Verify the log a tiles server serves (it ignores request signatures; any key signs)."""
    transport = BrokerTransport(url, seed_key("officer"), clock=lambda: T0, retry=QUICK)
    try:
        result = await verify_log(BrokerAuditLog(transport), LogPolicy(LOG.vkey), trusted=None, now=T0)
    finally:
        await transport.close()
    return [(p.kind, p.index) for p in result.problems]


async def test_the_tiles_server_stand_in_serves_a_log_that_verifies(
    tiles_server: tuple[str, LogBuilder, Served],
) -> None:
    assert await problems_from(tiles_server[0]) == []


async def test_a_truncated_entry_bundle_is_named_and_the_rest_still_verifies(
    tiles_server: tuple[str, LogBuilder, Served],
) -> None:
    url, _, served = tiles_server
    served["tile/entries/001"] = served["tile/entries/001"][:-3]
    problems = await problems_from(url)
    assert problems[0] == (ProblemKind.SOURCE, 256)
    assert {kind for kind, _ in problems[1:]} == {ProblemKind.MISSING}
    assert ProblemKind.ROOT not in {kind for kind, _ in problems}


async def test_a_leaf_altered_in_a_served_bundle_is_named_by_its_hash_tile(
    tiles_server: tuple[str, LogBuilder, Served],
) -> None:
    url, log, served = tiles_server
    leaves = list(log.leaves[256:512])
    leaves[44] = operator_action(auditlog.parse_leaf(leaves[44]).time, 4242)
    served["tile/entries/001"] = encode_entry_bundle(leaves)
    assert await problems_from(url) == [(ProblemKind.ALTERED, 300)]


async def test_a_damaged_hash_tile_is_named_and_the_leaves_still_verify(
    tiles_server: tuple[str, LogBuilder, Served],
) -> None:
    url, _, served = tiles_server
    served["tile/0/002.p/88"] = served["tile/0/002.p/88"][:-32]
    assert await problems_from(url) == [(ProblemKind.SOURCE, 512)]


# --- the commands end to end, against a broker process --------------------------------------------


async def run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "casebridge",
        "audit",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def covered(client: SignedClient, envelope_id: bytes, count: int) -> None:
    """Wait (bounded) until a checkpoint covers `count` leaves naming the envelope."""
    for _ in range(150):
        reply = await client.get(f"/v1/audit/envelopes/{envelope_id.hex()}")
        if reply.status == 200:
            entries = reply.json()["entries"]
            if len(entries) >= count and all(e["proof"] is not None for e in entries):
                return
        await asyncio.sleep(0.2)
    raise AssertionError("no checkpoint covered the referral")


async def test_the_audit_commands_end_to_end_against_a_broker_process(
    broker_process: Callable[..., Awaitable[BrokerProcess]], live_pki: Pki, tmp_path: Path
) -> None:
    process = await broker_process(checkpoint_interval_seconds=1)
    async with aiohttp.ClientSession() as session:
        await process.enroll(live_pki, session, "TH-ATPD", "LA-MOLSW")
        auditor_cert = live_pki[AUDITOR].certificate
        assert auditor_cert is not None
        operator = process.client(live_pki, OPERATOR, session)
        assert (
            await operator.post("/v1/directory/certificates", auditor_cert.raw, CERTIFICATE_TYPE)
        ).status == 201
        now = SystemClock().now()
        sealed = seal(live_pki["TH-ATPD"], [live_pki["LA-MOLSW"]], now)
        sender, recipient = (
            process.client(live_pki, "TH-ATPD", session),
            process.client(live_pki, "LA-MOLSW", session),
        )
        assert (await sender.post("/v1/envelopes", sealed.body, ENVELOPE_TYPE)).status == 201
        for kind in (ReceiptKind.DELIVERED, ReceiptKind.VERIFIED):
            raw = recipient_receipt(live_pki["LA-MOLSW"], sealed, kind, now)
            assert (await recipient.post("/v1/receipts", raw, RECEIPT_TYPE)).status == 201
        await covered(process.client(live_pki, AUDITOR, session), sealed.envelope_id, 4)
    keystore = tmp_path / "auditor.cbks"
    save_identity(keystore, live_pki[AUDITOR], TEST_PASSPHRASE, KDF_PROFILES["interactive"])
    roots = live_pki.write_roots(tmp_path / "roots")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    env |= {"CASEBRIDGE_PASSPHRASE": TEST_PASSPHRASE, "CASEBRIDGE_AUDIT_LOG_KEY": log_vkey(live_pki)}
    live = ["--broker", process.url, "--keystore", str(keystore), "--state", str(tmp_path / "state")]
    status, out, err = await run("verify", *live, env=env)
    assert status == 0, out + err
    assert "result: VERIFIED" in out
    trust = [arg for root in roots for arg in ("--trust", str(root))]
    proof = tmp_path / "accepted.tlog-proof"
    status, out, err = await run(
        "trace", sealed.envelope_id.hex(), *live, *trust, "--tlog-proof-out", str(proof), env=env
    )
    assert status == 0, out + err
    assert proof.read_bytes().startswith(b"c2sp.org/tlog-proof@v1\nindex ")
    assert "delivered for LA-MOLSW" in out
    assert "verified for LA-MOLSW" in out
    assert out.count("receipt signature verified") == 3
    status, out, err = await run("export", "--raw", str(tmp_path / "raw"), *live, env=env)
    assert status == 0, out + err
    offline = ["--from", str(tmp_path / "raw"), "--state", str(tmp_path / "state")]
    status, out, err = await run("verify", *offline, env=env)
    assert status == 0, out + err
    status, out, err = await run("trace", sealed.envelope_id.hex(), *offline, *trust, "--json", env=env)
    assert status == 0, out + err
    assert [s["kind"] for s in json.loads(out)["steps"]] == [
        "envelope_accepted",
        "receipt",
        "receipt",
        "receipt",
    ]

"""`casebridge audit witness` as a partner country's officer runs it: a real process on 127.0.0.1.

The broker submits its checkpoints to the witness and publishes them with the cosignatures; the
officer's verifier then requires them. A forked checkpoint, validly signed by the log key, is
refused, kept as evidence, and the witness remembers what it cosigned across a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from broker.web.audit_routes import AUDIT
from clients.audit.broker_log import BrokerAuditLog
from clients.audit.policy import LogPolicy
from clients.audit.verifier import verify_log
from clients.audit.witness import AddCheckpoint
from clients.transport import BrokerTransport
from protocol.merkle import consistency_proof
from protocol.note import NoteSigner, VerifierKey, parse_note
from tests.audit_log_fixtures import LOG, T0, LogBuilder, operator_action, seed_key
from tests.integration.broker_harness import BrokerFactory, RunningBroker
from tests.integration.pki import Pki
from tests.integration.test_audit_tools import QUICK, log_vkey, register_auditor
from tests.integration.test_broker_receipts import sent

PASSPHRASE = "ພະຍານ-witness-ทดสอบ"
NAME = "witness.la-auditor.example"


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    return env | {"CASEBRIDGE_WITNESS_PASSPHRASE": PASSPHRASE}


async def casebridge(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "casebridge",
        "audit",
        "witness",
        *args,
        env=environment(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@dataclass
class WitnessProcess:
    process: asyncio.subprocess.Process
    url: str
    vkey: VerifierKey

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)

    async def add_checkpoint(self, body: bytes) -> tuple[int, str, bytes]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/add-checkpoint", data=body) as r,
        ):
            return r.status, r.headers.get("Content-Type", ""), await r.read()


@pytest.fixture
async def witness_keystore(tmp_path: Path) -> tuple[Path, VerifierKey]:
    keystore = tmp_path / "witness.cbks"
    status, out, err = await casebridge(
        "init", "--keystore", str(keystore), "--name", NAME, "--kdf-profile", "interactive"
    )
    assert status == 0, err
    vkey = VerifierKey.parse(out.splitlines()[-1])
    assert vkey.name == NAME
    assert (keystore.stat().st_mode & 0o777) == 0o600
    return keystore, vkey


Launch = Callable[..., Awaitable[WitnessProcess]]


@pytest.fixture
async def start_witness(witness_keystore: tuple[Path, VerifierKey], tmp_path: Path) -> AsyncIterator[Launch]:
    keystore, vkey = witness_keystore
    started: list[WitnessProcess] = []

    async def launch(*logs: str) -> WitnessProcess:
        args = [
            "serve",
            "--keystore",
            str(keystore),
            "--state",
            str(tmp_path / "witness-state"),
            "--port",
            "0",
        ]
        for log in logs:
            args += ["--log", log]
        with (tmp_path / "witness.log").open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "casebridge",
                "audit",
                "witness",
                *args,
                env=environment(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
            )
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        assert line.startswith(f"witness {NAME} for "), (tmp_path / "witness.log").read_text()
        witness = WitnessProcess(process, line.split()[-1], vkey)
        started.append(witness)
        return witness

    yield launch
    for witness in started:
        with contextlib.suppress(ProcessLookupError, TimeoutError):
            await witness.stop()
        if witness.process.returncode is None:
            witness.process.kill()
            await witness.process.wait()


async def cosigned_size(broker: RunningBroker, witness: VerifierKey, *, above: int = 0) -> int:
    """The size of the broker's published checkpoint once it carries the witness's cosignature
    (and is larger than `above`); waits, bounded, while the checkpointer and witness work."""
    assert broker.app is not None
    origin = broker.app[AUDIT].origin
    for _ in range(150):
        reply = await broker.client("TH-ATPD").get("/v1/audit/checkpoint")
        note = parse_note(reply.body)
        size = int(note.text.split("\n")[1])
        if size > above and any(
            s.name == witness.name and s.key_id == witness.key_id for s in note.signatures
        ):
            assert note.text.startswith(origin + "\n")
            return size
        await asyncio.sleep(0.2)
    raise AssertionError("the broker never published a cosigned checkpoint")


async def test_the_witness_cosigns_the_checkpoints_the_broker_submits(
    broker_factory: BrokerFactory, pki: Pki, start_witness: Launch, tmp_path: Path
) -> None:
    witness = await start_witness(log_vkey(pki))
    async with broker_factory(witnesses=[f"{witness.vkey.encode()} {witness.url}"]) as broker:
        await register_auditor(broker)
        await sent(broker, ["LA-MOLSW"])
        broker.clock.advance(5)
        first = await cosigned_size(broker, witness.vkey)
        await sent(broker, ["LA-LWU"])
        broker.clock.advance(5)
        second = await cosigned_size(broker, witness.vkey, above=first)
        transport = BrokerTransport(
            broker.url, broker.pki["LA-AUDITOR"].signing_key, clock=broker.clock.now, retry=QUICK
        )
        try:
            policy = LogPolicy.from_text(log_vkey(pki), [witness.vkey.encode()], min_cosignatures=1)
            result = await verify_log(BrokerAuditLog(transport), policy, trusted=None, now=broker.clock.now())
        finally:
            await transport.close()
    assert result.ok, result.lines()
    assert result.cosigners == (NAME,)
    assert result.checkpoint is not None
    assert result.checkpoint.size >= second > first
    state = json.loads((tmp_path / "witness-state" / "witness-state.json").read_text(encoding="utf-8"))
    assert state["logs"][policy.origin]["size"] >= second


async def test_a_witness_refuses_a_fork_keeps_evidence_and_remembers_across_a_restart(
    start_witness: Launch, tmp_path: Path
) -> None:
    witness = await start_witness(LOG.vkey.encode())
    log = LogBuilder()
    log.fill(20)
    status, _, body = await witness.add_checkpoint(request(log, 0))
    assert status == 200
    assert body.decode().startswith(f"— {NAME} ")
    fork = LogBuilder()
    for n, leaf in enumerate(log.leaves):
        fork.add_raw(operator_action(T0 + n + 1, 9000) if n == 7 else leaf)
    fork.fill(10)
    assert (await witness.add_checkpoint(request(fork, 20)))[0] == 422
    same_size = LogBuilder()
    for leaf in fork.leaves[:20]:
        same_size.add_raw(leaf)
    assert (await witness.add_checkpoint(request(same_size, 20)))[0] == 409
    assert await witness.stop() == 0
    evidence = (tmp_path / "witness-state" / "evidence.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(evidence) == 2
    restarted = await start_witness(LOG.vkey.encode())
    log.fill(5)
    assert await restarted.add_checkpoint(request(log, 0)) == (409, "text/x.tlog.size", b"20\n")
    assert (await restarted.add_checkpoint(request(log, 20)))[0] == 200


async def test_a_checkpoint_signed_by_another_key_or_for_another_log_is_refused(
    start_witness: Launch,
) -> None:
    witness = await start_witness(LOG.vkey.encode())
    log = LogBuilder()
    log.fill(3)
    impostor = NoteSigner(LOG.vkey.name, seed_key("impostor"))
    assert (await witness.add_checkpoint(request(log, 0, signer=impostor)))[0] == 403
    stranger = NoteSigner("casebridge.elsewhere/audit", seed_key("elsewhere"))
    assert (await witness.add_checkpoint(request(log, 0, signer=stranger)))[0] == 404
    assert (await witness.add_checkpoint(b"not a request"))[0] == 400


def request(log: LogBuilder, old: int, *, signer: NoteSigner = LOG) -> bytes:
    size = len(log.leaves)
    proof = consistency_proof(old, size, log.tree) if 0 < old < size else []
    return AddCheckpoint(old, tuple(proof), log.checkpoint(signer=signer)).encode()

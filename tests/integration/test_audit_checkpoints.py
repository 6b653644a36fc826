"""The checkpointer's cadence (injected clock) and witnesses: a witness cosigns over HTTP and the
published checkpoint carries its cosignature; a witness that refuses or is gone never stops the
relay."""

from __future__ import annotations

import asyncio
import socket

import nacl.signing
from prometheus_client import CollectorRegistry

from broker.audit.witnesses import WitnessOutcome
from protocol.note import SIG_COSIGNATURE_V1, NoteSigner, VerifierKey
from tests.integration.audit_harness import (
    TestWitness,
    audit_of,
    auditor,
    checkpoint_now,
    fetch_checkpoint,
)
from tests.integration.broker_harness import BrokerFactory, ManualClock, RunningBroker
from tests.integration.pki import Pki
from tests.integration.storage_engines import START_TIME

ORIGIN = "casebridge.th-casebridge/audit"
WITNESS_TIME = START_TIME + 42


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def submit(broker: RunningBroker, recipient: str = "LA-MOLSW") -> None:
    reply = await broker.submit("TH-ATPD", broker.seal("TH-ATPD", [recipient]))
    assert reply.status == 201, reply.body


async def test_a_checkpoint_follows_new_entries_within_the_interval_and_comes_hourly_when_idle(
    broker_factory: BrokerFactory, clock: ManualClock
) -> None:
    async with broker_factory(checkpoint_interval_seconds=5, checkpoint_idle_seconds=3600) as broker:
        audit = audit_of(broker)
        first = await checkpoint_now(broker)
        await submit(broker)
        size = await broker.store.audit.size()
        assert size > first.size
        clock.advance(4)
        await audit.checkpointer.tick()
        assert await audit.store.latest_checkpoint() == first
        clock.advance(1)
        await audit.checkpointer.tick()
        second = await audit.store.latest_checkpoint()
        assert second is not None
        assert (second.size, second.signed_at) == (size, clock.now())

        clock.advance(3599)
        await audit.checkpointer.tick()
        assert await audit.store.latest_checkpoint() == second
        clock.advance(1)
        await audit.checkpointer.tick()
        heartbeat = await audit.store.latest_checkpoint()
        assert heartbeat is not None
        assert (heartbeat.size, heartbeat.root_hash, heartbeat.note) == (size, second.root_hash, second.note)
        assert (heartbeat.seq, heartbeat.signed_at) == (second.seq + 1, clock.now())
        assert metric(broker.registry, "casebridge_audit_checkpoint_size_entries") == size
        assert metric(broker.registry, "casebridge_audit_checkpoint_timestamp_seconds") == clock.now()


async def test_the_checkpointer_signs_on_its_own_once_the_broker_runs(broker: RunningBroker) -> None:
    for _ in range(300):
        latest = await audit_of(broker).store.latest_checkpoint()
        if latest is not None:
            break
        await asyncio.sleep(0.1)
    client = await auditor(broker)
    signed = await fetch_checkpoint(client, broker)
    assert signed.checkpoint.origin == ORIGIN == broker.settings.audit_origin
    assert signed.checkpoint.size >= 1


def witness_for(pki: Pki, name: str) -> TestWitness:
    log = VerifierKey(ORIGIN, 0x01, pki.broker_identity().checkpoint_public_key)
    return TestWitness(name, ORIGIN, log, WITNESS_TIME)


async def test_a_witness_cosigns_and_the_published_checkpoint_carries_its_cosignature(
    broker_factory: BrokerFactory, pki: Pki
) -> None:
    witness = witness_for(pki, "witness.molsw.gov.la")
    async with (
        witness.serving() as url,
        broker_factory(witnesses=[f"{witness.vkey.encode()} {url}"]) as broker,
    ):
        audit = audit_of(broker)
        first = await checkpoint_now(broker)
        results = await audit.checkpointer.witness_round(broker.session)
        assert [r.outcome for r in results] == [WitnessOutcome.COSIGNED]
        assert (witness.size, witness.root) == (first.size, first.root_hash)

        client = await auditor(broker)
        signed = await fetch_checkpoint(client, broker, cosigners=(witness.vkey,))
        assert signed.checkpoint.size == first.size
        assert [(c.key, c.timestamp) for c in signed.cosignatures] == [(witness.vkey, WITNESS_TIME)]

        await submit(broker)
        second = await checkpoint_now(broker)
        await audit.checkpointer.witness_round(broker.session)
        assert witness.size == second.size > first.size
        assert witness.requests[-1] == first.size
        signed = await fetch_checkpoint(client, broker, cosigners=(witness.vkey,))
        assert signed.checkpoint.size == second.size
        assert len(signed.cosignatures) == 1
        assert metric(broker.registry, "casebridge_audit_witness_lag_entries", witness=witness.name) == 0


async def test_a_witness_that_holds_another_size_is_resubmitted_from_the_size_it_reports(
    broker_factory: BrokerFactory, pki: Pki
) -> None:
    witness = witness_for(pki, "witness.atpd.go.th")
    witness.refuse = True
    async with (
        witness.serving() as url,
        broker_factory(witnesses=[f"{witness.vkey.encode()} {url}"]) as broker,
    ):
        audit = audit_of(broker)
        earlier = await checkpoint_now(broker)
        witness.size, witness.root, witness.refuse = earlier.size, earlier.root_hash, False
        await submit(broker)
        later = await checkpoint_now(broker)
        witness.requests.clear()
        results = await audit.checkpointer.witness_round(broker.session)
        assert [r.outcome for r in results] == [WitnessOutcome.COSIGNED]
        assert witness.requests == [0, earlier.size]
        assert witness.size == later.size
        signed = await fetch_checkpoint(broker.client("TH-ATPD"), broker, cosigners=(witness.vkey,))
        assert len(signed.cosignatures) == 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_refusing_and_unreachable_witnesses_never_stop_the_relay(
    broker_factory: BrokerFactory, pki: Pki
) -> None:
    refusing = witness_for(pki, "witness.refusing.la")
    refusing.refuse = True
    gone = NoteSigner("witness.gone.th", nacl.signing.SigningKey.generate(), SIG_COSIGNATURE_V1)
    async with refusing.serving() as url:
        witnesses = [
            f"{refusing.vkey.encode()} {url}",
            f"{gone.vkey.encode()} http://127.0.0.1:{closed_port()}",
        ]
        async with broker_factory(witnesses=witnesses, witness_timeout_seconds=2) as broker:
            await relay_beside_failing_witnesses(broker, refusing, gone.vkey)


async def relay_beside_failing_witnesses(
    broker: RunningBroker, refusing: TestWitness, gone: VerifierKey
) -> None:
    audit = audit_of(broker)
    for recipient in ("LA-MOLSW", "LA-LWU"):
        await submit(broker, recipient)
        latest = await checkpoint_now(broker)
        results = {r.witness: r.outcome for r in await audit.checkpointer.witness_round(broker.session)}
        assert results == {refusing.name: WitnessOutcome.REFUSED, gone.name: WitnessOutcome.UNREACHABLE}
    signed = await fetch_checkpoint(broker.client("LA-MOLSW"), broker, cosigners=(refusing.vkey, gone))
    assert signed.checkpoint.size == latest.size
    assert signed.cosignatures == ()
    registry = broker.registry
    lag = metric(registry, "casebridge_audit_witness_lag_entries", witness=refusing.name)
    assert lag == latest.size
    refused = "casebridge_audit_witness_submissions_total"
    assert metric(registry, refused, witness=refusing.name, outcome="refused") >= 2
    assert metric(registry, refused, witness=gone.name, outcome="unreachable") >= 2

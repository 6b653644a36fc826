"""Two `casebridge broker serve` replicas on one PostgreSQL, under concurrent submissions and
receipts through both, keep one audit log: indexes without gaps, the stored tree equal to the
one recomputed from the leaves, and `casebridge audit verify` accepts it through either replica."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from broker.clock import SystemClock
from broker.storage.postgresql import open_postgres_store
from keys.keystore import KDF_PROFILES, save_identity
from protocol.merkle import leaf_hash, root_from_leaf_hashes
from protocol.receipt import ReceiptKind
from tests.integration.broker_harness import (
    CERTIFICATE_TYPE,
    ENVELOPE_TYPE,
    OPERATOR,
    TEST_PASSPHRASE,
    BrokerProcess,
)
from tests.integration.pki import Pki, Sealed, recipient_receipt, seal
from tests.integration.storage_engines import BROKER_LOGIN, postgres_database
from tests.integration.test_audit_tools import AUDITOR, covered, log_vkey, run
from tests.postgres_server import PostgresServer

AGENCIES = ("TH-ATPD", "TH-DSDW", "LA-MOLSW", "LA-LWU")
RECEIPT_TYPE = "application/vnd.casebridge.receipt"
ENVELOPES = 16
MAX_ATTEMPTS = 300
PAUSE_SECONDS = 0.05


@pytest.fixture
async def pg() -> AsyncIterator[tuple[PostgresServer, str]]:
    server, name = await postgres_database()
    try:
        yield server, name
    finally:
        await server.drop_database(name)


async def until_known(replica: BrokerProcess, pki: Pki, agency: str, session: aiohttp.ClientSession) -> None:
    """Wait (bounded) until `replica` authenticates `agency`, registered through the other one."""
    for _ in range(MAX_ATTEMPTS):
        if (await replica.client(pki, agency, session).get("/v1/directory")).status == 200:
            return
        await asyncio.sleep(PAUSE_SECONDS)
    raise AssertionError(f"{agency} never became known at {replica.url}")


async def referral(
    sender: BrokerProcess, receiver: BrokerProcess, pki: Pki, session: aiohttp.ClientSession, sealed: Sealed
) -> None:
    """Submit through one replica, post the recipient's receipts through the other."""
    reply = await sender.client(pki, "TH-ATPD", session).post("/v1/envelopes", sealed.body, ENVELOPE_TYPE)
    assert reply.status == 201, reply.body
    recipient = receiver.client(pki, "LA-MOLSW", session)
    for kind in (ReceiptKind.DELIVERED, ReceiptKind.VERIFIED):
        raw = recipient_receipt(pki["LA-MOLSW"], sealed, kind, SystemClock().now())
        posted = await recipient.post("/v1/receipts", raw, RECEIPT_TYPE)
        assert posted.status == 201, posted.body


@pytest.mark.slow
async def test_two_replicas_under_concurrent_load_keep_one_log_that_audit_verify_accepts(
    pg: tuple[PostgresServer, str],
    broker_process: Callable[..., Awaitable[BrokerProcess]],
    live_pki: Pki,
    tmp_path: Path,
) -> None:
    server, name = pg
    a, b = [
        await broker_process(database_url=server.dsn(name, BROKER_LOGIN), checkpoint_interval_seconds=1)
        for _ in range(2)
    ]
    async with aiohttp.ClientSession() as session:
        await a.enroll(live_pki, session, *AGENCIES)
        auditor = live_pki[AUDITOR].certificate
        assert auditor is not None
        registered = await a.client(live_pki, OPERATOR, session).post(
            "/v1/directory/certificates", auditor.raw, CERTIFICATE_TYPE
        )
        assert registered.status == 201
        for agency in ("TH-ATPD", "LA-MOLSW"):
            await until_known(b, live_pki, agency, session)
        now = SystemClock().now()
        sealed = [seal(live_pki["TH-ATPD"], [live_pki["LA-MOLSW"]], now) for _ in range(ENVELOPES)]
        await asyncio.gather(
            *(referral(*((a, b) if i % 2 else (b, a)), live_pki, session, s) for i, s in enumerate(sealed))
        )
        for s in sealed:
            await covered(a.client(live_pki, AUDITOR, session), s.envelope_id, 4)

    store = await open_postgres_store(server.dsn(name, BROKER_LOGIN), now=SystemClock().now(), owner=False)
    try:
        size = await store.audit.size()
        leaves = await store.audit.checked_leaves(0, size)
        assert len(leaves) == size
        assert (await store.audit.tree_head(size)).root_hash == root_from_leaf_hashes(map(leaf_hash, leaves))
        for s in sealed:
            trace = [index for index, _ in await store.audit.envelope_leaves(s.envelope_id)]
            assert len(trace) == 4
    finally:
        await store.close()

    keystore = tmp_path / "auditor.cbks"
    save_identity(keystore, live_pki[AUDITOR], TEST_PASSPHRASE, KDF_PROFILES["interactive"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
    env |= {"CASEBRIDGE_PASSPHRASE": TEST_PASSPHRASE, "CASEBRIDGE_AUDIT_LOG_KEY": log_vkey(live_pki)}
    for replica, state in ((a, "state-a"), (b, "state-b")):
        args = ["--broker", replica.url, "--keystore", str(keystore), "--state", str(tmp_path / state)]
        status, out, err = await run("verify", *args, env=env)
        assert status == 0, out + err
        assert "result: VERIFIED" in out

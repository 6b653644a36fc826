"""Agencies publish their own encryption keys: the client does it at its first directory refresh
when the broker's directory lacks them, and `casebridge publish-keys` does it on demand (after
`keys rotate`). Against a real broker; only certificates are registered by the operator here,
never the encryption keys, so whatever the broker lists the agency published itself."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from keys import lifecycle
from keys.keystore import KDF_PROFILES, save_identity
from protocol.certificate import EncryptionKey
from tests.integration.broker_harness import (
    CERTIFICATE_TYPE,
    OPERATOR,
    TEST_PASSPHRASE,
    BrokerProcess,
    RunningBroker,
)
from tests.integration.client_harness import make_client
from tests.integration.conftest import BrokerFactory
from tests.integration.pki import Pki
from tests.integration.signed_http import SignedClient

THAI_TEXT = "ส่งต่อกรณี: นางสาว สมหญิง ใจดี"


@pytest.fixture
async def bare_broker(broker_factory: BrokerFactory) -> AsyncIterator[RunningBroker]:
    """A broker where nobody is enrolled: only the operator's certificate is registered."""
    async with broker_factory(enroll=()) as running:
        yield running


async def _register_certificates(operator: SignedClient, pki: Pki, *agency_ids: str) -> None:
    for agency_id in agency_ids:
        cert = pki[agency_id].certificate
        assert cert is not None
        reply = await operator.post("/v1/directory/certificates", cert.raw, CERTIFICATE_TYPE)
        assert reply.status in (200, 201), reply.body


async def _listed_keys(client: SignedClient, agency_id: str) -> set[bytes]:
    reply = await client.get(f"/v1/directory/agencies/{agency_id}")
    assert reply.status == 200, reply.body
    return {EncryptionKey.parse(base64.b64decode(k)).key_id for k in reply.json()["encryption_keys"]}


async def test_the_first_refresh_publishes_a_missing_key_so_partners_can_send(
    bare_broker: RunningBroker, tmp_path: Path
) -> None:
    await _register_certificates(bare_broker.client(OPERATOR), bare_broker.pki, "TH-ATPD", "LA-MOLSW")
    assert await _listed_keys(bare_broker.client("TH-ATPD"), "LA-MOLSW") == set()
    lao = make_client(bare_broker, "LA-MOLSW", tmp_path / "lao")
    thai = make_client(bare_broker, "TH-ATPD", tmp_path / "thai")
    async with lao, thai:
        await lao.refresh_directory()
        expected = {k.key_id for k in bare_broker.pki["LA-MOLSW"].encryption_keys}
        assert await _listed_keys(bare_broker.client("TH-ATPD"), "LA-MOLSW") == expected
        await thai.refresh_directory()
        result = await thai.send(["LA-MOLSW"], THAI_TEXT.encode("utf-8"))
        assert str(result.state) == "accepted"
        (delivery,) = await lao.fetch_deliveries()
        assert delivery.body.decode("utf-8") == THAI_TEXT


async def test_a_new_session_after_rotation_publishes_the_new_key(
    bare_broker: RunningBroker, tmp_path: Path
) -> None:
    await _register_certificates(bare_broker.client(OPERATOR), bare_broker.pki, "LA-MOLSW")
    async with make_client(bare_broker, "LA-MOLSW", tmp_path / "first") as first:
        await first.refresh_directory()
    old = {k.key_id for k in bare_broker.pki["LA-MOLSW"].encryption_keys}
    rotated = lifecycle.rotate_encryption_key(bare_broker.pki["LA-MOLSW"], bare_broker.clock.now())
    bare_broker.pki.agencies["LA-MOLSW"] = rotated
    async with make_client(bare_broker, "LA-MOLSW", tmp_path / "second") as second:
        await second.refresh_directory()
    listed = await _listed_keys(bare_broker.client("LA-MOLSW"), "LA-MOLSW")
    new = rotated.encryption_keys[-1].key_id
    assert new not in old
    assert listed == old | {new}


async def test_a_refused_publication_is_logged_and_the_refresh_still_succeeds(
    bare_broker: RunningBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An auditor holds encryption keys but may not register them (403): refreshing must work.
    await _register_certificates(bare_broker.client(OPERATOR), bare_broker.pki, "LA-AUDITOR")
    with caplog.at_level(logging.WARNING, logger="casebridge.client"):
        async with make_client(bare_broker, "LA-AUDITOR", tmp_path / "auditor") as auditor:
            report = await auditor.refresh_directory()
            await auditor.refresh_directory()
    assert report.certificates >= 1
    refused = [r for r in caplog.records if r.getMessage() == "encryption_key_not_published"]
    assert len(refused) == 1  # once per session, not at every refresh
    assert await _listed_keys(bare_broker.client(OPERATOR), "LA-AUDITOR") == set()


async def test_publish_keys_command_posts_the_current_keys(
    broker_process: Callable[..., Awaitable[BrokerProcess]], live_pki: Pki, tmp_path: Path
) -> None:
    process = await broker_process()
    async with aiohttp.ClientSession() as session:
        await _register_certificates(process.client(live_pki, OPERATOR, session), live_pki, "LA-MOLSW")
        keystore = tmp_path / "ລາວ.cbks"
        save_identity(keystore, live_pki["LA-MOLSW"], TEST_PASSPHRASE, KDF_PROFILES["interactive"])
        roots = live_pki.write_roots(tmp_path / "roots")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
        env["CASEBRIDGE_PASSPHRASE"] = TEST_PASSPHRASE
        command = ["publish-keys", "--keystore", str(keystore), "--broker", process.url,
                   "--state", str(tmp_path / "state"), "--json"]  # fmt: skip
        for root in roots:
            command += ["--trust", str(root)]
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "casebridge", *command, env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, err = await asyncio.wait_for(child.communicate(), 120)
        assert child.returncode == 0, err.decode()
        answer = json.loads(out.decode().strip().splitlines()[-1])
        expected = {k.key_id for k in live_pki["LA-MOLSW"].encryption_keys}
        assert answer["agency_id"] == "LA-MOLSW"
        assert {bytes.fromhex(k["key_id"]) for k in answer["published"]} == expected
        assert await _listed_keys(process.client(live_pki, "LA-MOLSW", session), "LA-MOLSW") == expected

"""What the client trusts: only its pinned national roots, never the broker's word; revocation
lists only from those roots; and time-aware checks, so what was accepted before a revocation
still verifies while nothing new goes to a revoked agency."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from clients.agency import AgencyClient
from protocol.errors import CaseBridgeError, NotFound
from protocol.receipt import ReceiptKind, RejectReason
from tests.integration.broker_harness import OPERATOR, REVOCATION_LIST_TYPE, RunningBroker
from tests.integration.client_harness import QUICK_RETRY, THAI_REFERRAL, make_client


async def test_a_client_pinning_only_its_own_root_ignores_the_broker_s_other_roots(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd", roots=[broker.pki.root_cert("TH")]) as atpd:
        report = await atpd.refresh_directory()
        assert report.refused >= 2  # the Lao agencies' certificates and keys
        assert {c.agency_id for c in atpd.directory.agencies(broker.clock.now())} == {"TH-ATPD", "TH-DSDW"}
        with pytest.raises(NotFound):
            await atpd.send(["LA-MOLSW"], THAI_REFERRAL)
        assert atpd.outbox() == []
        sent = await atpd.send(["TH-DSDW"], THAI_REFERRAL)
        assert sent.accepted[0].kind is ReceiptKind.ACCEPTED


async def test_nothing_new_goes_to_an_agency_once_its_root_revoked_it(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        await atpd.send(["TH-DSDW"], THAI_REFERRAL)
        broker.clock.advance(60)
        crl = broker.pki.revoke("TH-DSDW", broker.clock.now())
        reply = await broker.client(OPERATOR).post("/v1/directory/revocations", crl.raw, REVOCATION_LIST_TYPE)
        assert reply.status == 201, reply.body
        broker.clock.advance(1)
        await atpd.refresh_directory()
        held = atpd.directory.trust.revocation_list("TH")
        assert held is not None
        assert held.number == crl.number
        with pytest.raises(CaseBridgeError):
            await atpd.send(["TH-DSDW"], THAI_REFERRAL)


async def test_a_referral_accepted_before_its_sender_was_revoked_still_verifies(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        sent = await atpd.send(["LA-MOLSW"], THAI_REFERRAL)
    broker.clock.advance(3600)
    crl = broker.pki.revoke("TH-ATPD", broker.clock.now())
    reply = await broker.client(OPERATOR).post("/v1/directory/revocations", crl.raw, REVOCATION_LIST_TYPE)
    assert reply.status == 201, reply.body
    broker.clock.advance(60)
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        (delivery,) = await molsw.fetch_deliveries()
        assert (delivery.envelope_id, delivery.body) == (sent.envelope_id, THAI_REFERRAL)
        revoked = molsw.directory.trust.revocation_list("TH")
        assert revoked is not None
        assert revoked.revoked_at(broker.pki["TH-ATPD"].key_id) == broker.clock.now() - 60
        await molsw.ack(delivery)


async def test_a_recipient_that_cannot_open_an_envelope_rejects_it_with_a_reason_the_sender_sees(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        sent = await atpd.send(["LA-LWU"], THAI_REFERRAL)
    # LA-LWU lost the private key the envelope was sealed to (a keystore restored from an old backup).
    keyless = dataclasses.replace(broker.pki["LA-LWU"], encryption_keys=())
    async with AgencyClient(
        keyless,
        roots=[broker.pki.root_cert("TH"), broker.pki.root_cert("LA")],
        broker_url=broker.url,
        state_dir=tmp_path / "lwu",
        clock=broker.clock.now,
        retry=QUICK_RETRY,
    ) as lwu:
        assert await lwu.fetch_deliveries() == []
        assert await lwu.list_inbox() == []
        assert not lwu.is_processed(sent.envelope_id)
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        (rejected,) = [r for r in await atpd.sync_receipts() if r.kind is ReceiptKind.REJECTED]
        assert rejected.receipt.reason is RejectReason.NOT_A_RECIPIENT
        assert rejected.receipt.signer_id == "LA-LWU"
        assert (await atpd.status(sent.envelope_id)).recipients["LA-LWU"].state == "rejected"

"""The blocking facade for agency systems without an event loop. Its calls are made from worker
threads here because the broker under test runs on this test's own event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clients.outbox import OutboxState
from clients.sync import SyncAgencyClient
from protocol.errors import InvalidField
from protocol.receipt import ReceiptKind
from tests.integration.broker_harness import RunningBroker
from tests.integration.client_harness import QUICK_RETRY, THAI_FILENAME, THAI_REFERRAL, document


def _sync_client(broker: RunningBroker, agency_id: str, state_dir: Path) -> SyncAgencyClient:
    return SyncAgencyClient(
        broker.pki[agency_id],
        roots=[broker.pki.root_cert("TH"), broker.pki.root_cert("LA")],
        broker_url=broker.url,
        state_dir=state_dir,
        clock=broker.clock.now,
        retry=QUICK_RETRY,
    )


async def test_the_blocking_facade_sends_receives_acknowledges_and_follows_receipts(
    broker: RunningBroker, tmp_path: Path
) -> None:
    attachment = tmp_path / THAI_FILENAME
    attachment.write_bytes(document(1_200_000, seed=6))

    def sender_sends() -> tuple[str, OutboxState]:
        with _sync_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
            atpd.refresh_directory()
            result = atpd.send(["LA-LWU"], THAI_REFERRAL, attachments=[attachment])
            return result.envelope_id, result.state

    envelope_id, state = await asyncio.to_thread(sender_sends)
    assert state is OutboxState.ACCEPTED

    def recipient_receives() -> list[tuple[str, bytes, bytes]]:
        with _sync_client(broker, "LA-LWU", tmp_path / "lwu") as lwu:
            got = []
            for delivery in lwu.fetch_deliveries():
                got.append((delivery.envelope_id, delivery.body, b"".join(delivery.attachments[0].open())))
                with lwu.processing(delivery) as db:
                    db.execute("CREATE TABLE IF NOT EXISTS seen (envelope_id TEXT)")
                    db.execute("INSERT INTO seen VALUES (?)", (delivery.envelope_id,))
            assert lwu.fetch_deliveries() == []
            return got

    received = await asyncio.to_thread(recipient_receives)
    assert received == [(envelope_id, THAI_REFERRAL, attachment.read_bytes())]

    def sender_follows() -> tuple[set[ReceiptKind], str]:
        with _sync_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
            kinds = {r.kind for r in atpd.sync_receipts() if r.envelope_id == envelope_id}
            return kinds, atpd.status(envelope_id).recipients["LA-LWU"].state

    kinds, state_now = await asyncio.to_thread(sender_follows)
    assert kinds == {ReceiptKind.ACCEPTED, ReceiptKind.DELIVERED, ReceiptKind.VERIFIED}
    assert state_now == "verified"


async def test_a_closed_facade_refuses_further_calls(broker: RunningBroker, tmp_path: Path) -> None:
    def use_after_close() -> None:
        client = _sync_client(broker, "TH-ATPD", tmp_path / "atpd")
        client.close()
        client.close()
        with pytest.raises(InvalidField):
            client.refresh_directory()

    await asyncio.to_thread(use_after_close)

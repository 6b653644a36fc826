"""Push hints over the signed WebSocket: the recipient hears of a new envelope and the sender of
its receipts, then fetches through the ordinary endpoints."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration.broker_harness import RunningBroker
from tests.integration.client_harness import THAI_REFERRAL, make_client


async def test_recipient_and_sender_hear_of_an_envelope_and_its_receipts(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with (
        make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd,
        make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw,
        atpd.events() as sender_hints,
        molsw.events() as recipient_hints,
    ):
        await atpd.refresh_directory()
        sent = await atpd.send(["LA-MOLSW"], THAI_REFERRAL)
        hint = await asyncio.wait_for(anext(recipient_hints), 30)
        assert (hint["type"], hint["envelope_id"]) == ("inbox", sent.envelope_id)

        (delivery,) = await molsw.fetch_deliveries()
        await molsw.ack(delivery)
        heard = [await asyncio.wait_for(anext(sender_hints), 30) for _ in range(2)]
        assert {(h["type"], h["envelope_id"]) for h in heard} == {("receipt", sent.envelope_id)}
        records = await atpd.sync_receipts()
        assert {str(r.kind) for r in records} >= {"delivered", "verified"}

"""The client library end to end against a real broker: a Thai referral with a Lao-named
attachment goes from a Thai agency to Lao agencies, is verified and acknowledged, and the
receipts come back to the sender."""

from __future__ import annotations

from pathlib import Path

from clients.inbox import save_attachments
from clients.outbox import OutboxState
from protocol.receipt import ReceiptKind
from tests.integration.broker_harness import RunningBroker
from tests.integration.client_harness import LAO_FILENAME, THAI_FILENAME, THAI_REFERRAL, document, make_client


async def test_a_thai_referral_with_a_lao_attachment_arrives_verified_and_receipts_return(
    broker: RunningBroker, tmp_path: Path
) -> None:
    attachment = tmp_path / LAO_FILENAME
    content = document(2_500_000)  # three secretstream chunks
    attachment.write_bytes(content)
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        sent = await atpd.send(
            ["LA-MOLSW"], THAI_REFERRAL, content_type="application/json", attachments=[attachment]
        )
    assert sent.state is OutboxState.ACCEPTED
    (accepted,) = sent.accepted
    assert (accepted.kind, accepted.subject.recipient_id) == (ReceiptKind.ACCEPTED, "LA-MOLSW")

    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        deliveries = await molsw.fetch_deliveries()
        assert [d.envelope_id for d in deliveries] == [sent.envelope_id]
        delivery = deliveries[0]
        assert delivery.sender_id == "TH-ATPD"
        assert delivery.body == THAI_REFERRAL
        assert "สมชาย ใจดี" in delivery.text
        assert [(a.filename, a.length) for a in delivery.attachments] == [(LAO_FILENAME, len(content))]
        saved = save_attachments(delivery, tmp_path / "saved")
        assert [p.name for p in saved] == [LAO_FILENAME]
        assert saved[0].read_bytes() == content
        await molsw.ack(delivery)
        assert await molsw.list_inbox() == []

    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        records = await atpd.sync_receipts()
        kinds = sorted(str(r.kind) for r in records if r.envelope_id == sent.envelope_id)
        assert kinds == ["accepted", "delivered", "verified"]
        status = await atpd.status(sent.envelope_id)
        assert status.recipients["LA-MOLSW"].state == "verified"
        shown = [str(r.kind) for r in status.recipients["LA-MOLSW"].receipts]
        assert shown == ["accepted", "delivered", "verified"]
        assert status.recipients["LA-MOLSW"].refused_receipts == 0


async def test_each_of_several_recipients_receives_and_confirms_the_same_referral(
    broker: RunningBroker, tmp_path: Path
) -> None:
    attachment = tmp_path / THAI_FILENAME
    attachment.write_bytes(document(40_000, seed=2))
    recipients = ["LA-LWU", "LA-MOLSW", "TH-DSDW"]
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        sent = await atpd.send(recipients, THAI_REFERRAL, attachments=[attachment])
    assert sent.state is OutboxState.ACCEPTED
    assert [r.subject.recipient_id for r in sent.accepted] == recipients
    assert len({r.log_index for r in sent.accepted}) == 1

    for agency_id in recipients:
        async with make_client(broker, agency_id, tmp_path / agency_id) as client:
            (delivery,) = await client.fetch_deliveries()
            assert (delivery.envelope_id, delivery.body) == (sent.envelope_id, THAI_REFERRAL)
            assert b"".join(delivery.attachments[0].open()) == attachment.read_bytes()
            await client.ack(delivery)

    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.sync_receipts()
        verified = {r.recipient_id for r in atpd.receipts(sent.envelope_id) if r.kind is ReceiptKind.VERIFIED}
        assert verified == set(recipients)
        status = await atpd.status(sent.envelope_id)
        assert {a: s.state for a, s in status.recipients.items()} == dict.fromkeys(recipients, "verified")


async def test_an_offline_recipient_gets_only_what_arrived_while_it_was_away(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        first = await atpd.send(["LA-LWU"], "ฉบับที่ ๑".encode())
    async with make_client(broker, "LA-LWU", tmp_path / "lwu") as lwu:
        (delivery,) = await lwu.fetch_deliveries()
        assert delivery.envelope_id == first.envelope_id
        await lwu.ack(delivery)

    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        second = await atpd.send(["LA-LWU"], "ฉบับที่ ๒".encode())
        broker.clock.advance(5)
        third = await atpd.send(["LA-LWU"], "ฉบับที่ ๓ ນາງ ສົມພອນ".encode())

    async with make_client(broker, "LA-LWU", tmp_path / "lwu") as lwu:
        arrived = await lwu.fetch_deliveries()
        assert [d.envelope_id for d in arrived] == [second.envelope_id, third.envelope_id]
        assert [d.text for d in arrived] == ["ฉบับที่ ๒", "ฉบับที่ ๓ ນາງ ສົມພອນ"]
        for delivery in arrived:
            await lwu.ack(delivery)
        assert await lwu.fetch_deliveries() == []


async def test_a_sender_offline_while_receipts_arrive_catches_up_from_the_feed_once(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        sent = await atpd.send(["LA-MOLSW", "LA-LWU"], THAI_REFERRAL)
    for agency_id in ("LA-MOLSW", "LA-LWU"):
        async with make_client(broker, agency_id, tmp_path / agency_id) as client:
            for delivery in await client.fetch_deliveries():
                await client.ack(delivery)

    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        caught_up = await atpd.sync_receipts()
        assert {(r.recipient_id, r.kind) for r in caught_up if r.kind is not ReceiptKind.ACCEPTED} == {
            ("LA-LWU", ReceiptKind.DELIVERED),
            ("LA-LWU", ReceiptKind.VERIFIED),
            ("LA-MOLSW", ReceiptKind.DELIVERED),
            ("LA-MOLSW", ReceiptKind.VERIFIED),
        }
        assert all(r.receipt.signer_id == r.recipient_id for r in caught_up if r.kind is ReceiptKind.VERIFIED)
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        assert await atpd.sync_receipts() == []
        stored = {(r.recipient_id, str(r.kind)) for r in atpd.receipts(sent.envelope_id)}
        assert ("LA-MOLSW", "verified") in stored
        assert ("LA-LWU", "verified") in stored

"""Receipts back to the sender, the inbox state machine, expiry and purge, long polls and push."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp

from broker.app import drain
from broker.web.state import DRAIN
from protocol.receipt import ReceiptKind, ReceiptSubject, RejectReason, verify_receipt
from tests.integration.broker_harness import RECEIPT_TYPE, RunningBroker
from tests.integration.pki import Sealed, recipient_receipt

DAY = 86_400


async def post_receipt(
    broker: RunningBroker,
    recipient: str,
    sealed: Sealed,
    kind: ReceiptKind,
    reason: RejectReason | None = None,
) -> tuple[int, dict[str, Any]]:
    raw = recipient_receipt(broker.pki[recipient], sealed, kind, broker.clock.now(), reason=reason)
    reply = await broker.client(recipient).post("/v1/receipts", raw, RECEIPT_TYPE)
    return reply.status, reply.json()


async def sent(broker: RunningBroker, recipients: list[str], **kwargs: object) -> Sealed:
    sealed = broker.seal("TH-ATPD", recipients, **kwargs)
    assert (await broker.submit("TH-ATPD", sealed)).status == 201
    return sealed


async def test_receipts_reach_the_sender_in_order(broker: RunningBroker) -> None:
    sealed = await sent(broker, ["LA-MOLSW"])
    assert (await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.DELIVERED))[0] == 201
    broker.clock.advance(30)
    status, answer = await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.VERIFIED)
    assert (status, answer["state"], answer["recorded"]) == (201, "verified", True)
    feed = (await broker.client("TH-ATPD").get("/v1/receipts", query={"after": 0})).json()
    assert [i["kind"] for i in feed["items"]] == ["accepted", "delivered", "verified"]
    assert [i["seq"] for i in feed["items"]] == [1, 2, 3]
    assert feed["next"] == 3
    verified = base64.b64decode(feed["items"][2]["receipt"])
    recipient_cert = broker.pki["LA-MOLSW"].certificate
    assert recipient_cert is not None
    header = sealed.parsed
    subject = ReceiptSubject(header.envelope_hash, header.envelope_id, "TH-ATPD", "LA-MOLSW")
    verify_receipt(verified, signer=recipient_cert, subject=subject, kind=ReceiptKind.VERIFIED)
    resumed = (await broker.client("TH-ATPD").get("/v1/receipts", query={"after": 2})).json()
    assert [i["seq"] for i in resumed["items"]] == [3]
    assert (await broker.client("LA-MOLSW").get("/v1/receipts")).json()["items"] == []
    status_view = (await broker.client("TH-ATPD").get(f"/v1/envelopes/{header.envelope_id.hex()}")).json()
    assert status_view["recipients"]["LA-MOLSW"]["state"] == "verified"
    assert len(status_view["recipients"]["LA-MOLSW"]["receipts"]) == 3
    assert (await broker.client("LA-MOLSW").get("/v1/inbox")).json()["items"] == []


async def test_the_state_machine_accepts_repeats_and_refuses_contradictions(broker: RunningBroker) -> None:
    sealed = await sent(broker, ["LA-MOLSW"])
    lao = broker.pki["LA-MOLSW"]
    verified = recipient_receipt(lao, sealed, ReceiptKind.VERIFIED, broker.clock.now())
    client = broker.client("LA-MOLSW")
    assert (await client.post("/v1/receipts", verified, RECEIPT_TYPE)).status == 201
    again = await client.post("/v1/receipts", verified, RECEIPT_TYPE)
    assert (again.status, again.json()["recorded"]) == (200, True)
    late_delivered = await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.DELIVERED)
    assert late_delivered[0] == 200
    assert late_delivered[1]["recorded"] is False
    audit_size = await broker.store.audit.size()
    rejected = recipient_receipt(
        lao, sealed, ReceiptKind.REJECTED, broker.clock.now(), reason=RejectReason.POLICY
    )
    reply = await client.post("/v1/receipts", rejected, RECEIPT_TYPE)
    assert (reply.status, reply.problem["code"]) == (409, "conflict")
    assert await broker.store.audit.size() == audit_size
    feed = (await broker.client("TH-ATPD").get("/v1/receipts")).json()
    assert [i["kind"] for i in feed["items"]] == ["accepted", "verified"]


async def test_receipts_are_posted_only_by_their_signing_recipient(broker: RunningBroker) -> None:
    sealed = await sent(broker, ["LA-MOLSW", "LA-LWU"])
    by_lwu = recipient_receipt(broker.pki["LA-LWU"], sealed, ReceiptKind.VERIFIED, broker.clock.now())
    relayed = await broker.client("LA-MOLSW").post("/v1/receipts", by_lwu, RECEIPT_TYPE)
    assert relayed.status == 403
    outsider = recipient_receipt(broker.pki["TH-DSDW"], sealed, ReceiptKind.VERIFIED, broker.clock.now())
    reply = await broker.client("TH-DSDW").post("/v1/receipts", outsider, RECEIPT_TYPE)
    assert reply.status == 404
    forged = bytearray(by_lwu)
    forged[-1] ^= 1
    reply = await broker.client("LA-LWU").post("/v1/receipts", bytes(forged), RECEIPT_TYPE)
    assert (reply.status, reply.problem["code"]) == (422, "bad_signature")
    states = (await broker.client("TH-ATPD").get(f"/v1/envelopes/{sealed.envelope_id.hex()}")).json()
    assert {r: v["state"] for r, v in states["recipients"].items()} == {
        "LA-MOLSW": "pending",
        "LA-LWU": "pending",
    }


async def test_unverified_entries_expire_with_a_broker_receipt_then_the_ciphertext_is_purged(
    broker: RunningBroker,
) -> None:
    sealed = await sent(broker, ["LA-MOLSW", "LA-LWU"], attachments=[("ເອກະສານ.pdf", b"\x01" * 100_000)])
    await post_receipt(broker, "LA-LWU", sealed, ReceiptKind.VERIFIED)
    await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.DELIVERED)
    assert await broker.store.blobs.stored_hashes() == {sealed.parsed.envelope_hash}
    broker.clock.advance(14 * DAY - 1)
    early = await broker.sweep()
    assert (early.expired, early.purged) == (0, 0)
    broker.clock.advance(1)
    report = await broker.sweep()
    assert (report.expired, report.purged) == (1, 1)
    feed = (await broker.client("TH-ATPD").get("/v1/receipts")).json()
    last = feed["items"][-1]
    assert (last["kind"], last["recipient_id"]) == ("expired", "LA-MOLSW")
    broker_cert = broker.pki.broker_identity().certificate
    assert broker_cert is not None
    header = sealed.parsed
    expired = verify_receipt(
        base64.b64decode(last["receipt"]),
        signer=broker_cert,
        subject=ReceiptSubject(header.envelope_hash, header.envelope_id, "TH-ATPD", "LA-MOLSW"),
        kind=ReceiptKind.EXPIRED,
    )
    assert expired.time == broker.clock.now()
    lao = broker.client("LA-MOLSW")
    assert (await lao.get(f"/v1/inbox/{header.envelope_id.hex()}/parts/1")).status == 404
    assert (await lao.get(f"/v1/inbox/{header.envelope_id.hex()}/header")).status == 404
    view = (await broker.client("TH-ATPD").get(f"/v1/envelopes/{header.envelope_id.hex()}")).json()
    assert view["purged"] is True
    assert {r: v["state"] for r, v in view["recipients"].items()} == {
        "LA-MOLSW": "expired",
        "LA-LWU": "verified",
    }
    assert await broker.store.blobs.stored_hashes() == set()
    late = await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.VERIFIED)
    assert late[0] == 409
    assert (await broker.sweep()).expired == 0


async def test_an_envelope_everyone_verified_is_purged_at_the_next_sweep(broker: RunningBroker) -> None:
    sealed = await sent(broker, ["LA-MOLSW"])
    await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.VERIFIED)
    assert (await broker.sweep()).purged == 1
    assert await broker.store.delivery.header(sealed.envelope_id) is None
    leaves = await broker.store.audit.leaves(0, await broker.store.audit.size())
    assert any(b"envelope_purged" in leaf for leaf in leaves)


async def test_a_long_poll_returns_when_an_envelope_arrives(broker: RunningBroker) -> None:
    poll = asyncio.create_task(broker.client("LA-MOLSW").get("/v1/inbox", query={"wait": 30}))
    feed_poll = asyncio.create_task(broker.client("TH-ATPD").get("/v1/receipts", query={"wait": 30}))
    await asyncio.sleep(0)
    sealed = await sent(broker, ["LA-MOLSW"])
    inbox = (await poll).json()
    assert [i["envelope_id"] for i in inbox["items"]] == [sealed.envelope_id.hex()]
    feed = (await feed_poll).json()
    assert [i["kind"] for i in feed["items"]] == ["accepted"]


async def test_the_websocket_pushes_hints_to_recipient_and_sender(broker: RunningBroker) -> None:
    recipient_ws = await broker.client("LA-MOLSW").websocket()
    sender_ws = await broker.client("TH-ATPD").websocket()
    try:
        sealed = await sent(broker, ["LA-MOLSW"])
        hint = await recipient_ws.receive_json(timeout=30)
        assert hint == {"type": "inbox", "envelope_id": sealed.envelope_id.hex(), "cursor": 1}
        receipt_hint = await sender_ws.receive_json(timeout=30)
        assert receipt_hint == {"type": "receipt", "seq": 1, "envelope_id": sealed.envelope_id.hex()}
        await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.VERIFIED)
        assert (await sender_ws.receive_json(timeout=30))["seq"] == 2
    finally:
        await recipient_ws.close()
        await sender_ws.close()


async def test_a_websocket_needs_a_signed_request(broker: RunningBroker) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{broker.url}/v1/events") as response:
        assert response.status == 401


async def test_draining_wakes_long_polls_and_refuses_new_requests(broker: RunningBroker) -> None:
    assert broker.app is not None
    poll = asyncio.create_task(broker.client("LA-MOLSW").get("/v1/inbox", query={"wait": 60}))
    gate = broker.app[DRAIN]
    for _ in range(1000):
        if gate.in_flight:
            break
        await asyncio.sleep(0.01)
    assert gate.in_flight == 1
    assert await drain(broker.app, 30.0)
    assert (await poll).json()["items"] == []
    refused = await broker.client("TH-ATPD").get("/v1/inbox")
    assert (refused.status, refused.problem["code"]) == (503, "storage_unavailable")
    assert refused.headers["Retry-After"] == "1"

"""`POST /v1/receipts/batch`: several receipts in one request, each handled as if posted alone
(checked, recorded with its own audit leaf, or refused on its own), in the body's order; a body
that is not a well-formed batch is refused whole and records nothing."""

from __future__ import annotations

from typing import Any

import pytest

from broker.web.delivery_routes import MAX_BATCH_RECEIPTS, RECEIPT_BATCH_TYPE
from protocol import auditlog
from protocol.receipt import ReceiptKind, RejectReason
from tests.integration.broker_harness import RECEIPT_TYPE, RunningBroker
from tests.integration.pki import Sealed, recipient_receipt
from tests.integration.signed_http import Reply
from tests.integration.test_broker_receipts import sent


def batch(*receipts: bytes) -> bytes:
    return b"".join(len(r).to_bytes(2, "big") + r for r in receipts)


def signed(broker: RunningBroker, agency: str, sealed: Sealed, kind: ReceiptKind, **kwargs: Any) -> bytes:
    return recipient_receipt(broker.pki[agency], sealed, kind, broker.clock.now(), **kwargs)


async def post_batch(broker: RunningBroker, agency: str, body: bytes) -> Reply:
    return await broker.client(agency).post("/v1/receipts/batch", body, RECEIPT_BATCH_TYPE)


async def feed_kinds(broker: RunningBroker) -> list[tuple[str, str]]:
    feed = (await broker.client("TH-ATPD").get("/v1/receipts", query={"after": 0, "limit": 500})).json()
    return [(item["envelope_id"], item["kind"]) for item in feed["items"]]


async def test_delivered_and_verified_in_one_batch_are_recorded_in_order_with_their_audit_leaves(
    broker: RunningBroker,
) -> None:
    sender_ws = await broker.client("TH-ATPD").websocket()
    try:
        sealed = await sent(broker, ["LA-MOLSW"])
        assert (await sender_ws.receive_json(timeout=30))["seq"] == 1
        reply = await post_batch(
            broker,
            "LA-MOLSW",
            batch(
                signed(broker, "LA-MOLSW", sealed, ReceiptKind.DELIVERED),
                signed(broker, "LA-MOLSW", sealed, ReceiptKind.VERIFIED),
            ),
        )
        assert reply.status == 200, reply.body[:300]
        results = reply.json()["results"]
        assert [(r["status"], r["kind"], r["state"], r["recorded"], r["seq"]) for r in results] == [
            (201, "delivered", "delivered", True, 2),
            (201, "verified", "verified", True, 3),
        ]
        # One hint for the envelope, with the highest sequence number the batch recorded: the
        # next hint after it is the next envelope's acceptance.
        hint = await sender_ws.receive_json(timeout=30)
        assert hint == {"type": "receipt", "seq": 3, "envelope_id": sealed.envelope_id.hex()}
        following = await sent(broker, ["LA-MOLSW"])
        hint = await sender_ws.receive_json(timeout=30)
        assert hint == {"type": "receipt", "seq": 4, "envelope_id": following.envelope_id.hex()}
    finally:
        await sender_ws.close()
    envelope_id = sealed.envelope_id.hex()
    assert (await feed_kinds(broker))[:3] == [
        (envelope_id, "accepted"),
        (envelope_id, "delivered"),
        (envelope_id, "verified"),
    ]
    leaves = [leaf for _, leaf in await broker.store.audit.envelope_leaves(sealed.envelope_id)]
    kinds = [auditlog.leaf_kind(leaf) for leaf in leaves]
    assert kinds.count(auditlog.LeafKind.RECEIPT) == 3  # accepted, delivered, verified
    inbox = (await broker.client("LA-MOLSW").get("/v1/inbox")).json()["items"]
    assert [item["envelope_id"] for item in inbox] == [following.envelope_id.hex()]


async def test_each_receipt_of_a_batch_is_refused_on_its_own_and_changes_nothing(
    broker: RunningBroker,
) -> None:
    mine = await sent(broker, ["LA-MOLSW"])
    shared = await sent(broker, ["LA-MOLSW", "LA-LWU"])
    not_mine = await sent(broker, ["LA-LWU"])
    rejected_first = await sent(broker, ["LA-MOLSW"])
    policy = {"reason": RejectReason.POLICY}
    reply = await post_batch(
        broker, "LA-MOLSW", batch(signed(broker, "LA-MOLSW", rejected_first, ReceiptKind.REJECTED, **policy))
    )
    assert reply.json()["results"][0]["status"] == 201
    forged = bytearray(signed(broker, "LA-MOLSW", shared, ReceiptKind.VERIFIED))
    forged[-1] ^= 1
    audit_size = await broker.store.audit.size()
    reply = await post_batch(
        broker,
        "LA-MOLSW",
        batch(
            signed(broker, "LA-LWU", shared, ReceiptKind.VERIFIED),  # signed by another recipient
            bytes(forged),
            signed(broker, "LA-MOLSW", not_mine, ReceiptKind.VERIFIED),  # not a recipient of it
            signed(broker, "LA-MOLSW", rejected_first, ReceiptKind.VERIFIED),  # contradicts
            b"\x92\x01\x02",  # not a receipt at all
            signed(broker, "LA-MOLSW", mine, ReceiptKind.VERIFIED),
        ),
    )
    assert reply.status == 200
    results = reply.json()["results"]
    assert [(r["status"], r.get("code")) for r in results] == [
        (403, "forbidden"),
        (422, "bad_signature"),
        (404, "not_found"),
        (409, "conflict"),
        (400, "malformed_input"),
        (201, None),
    ]
    assert all("request_id" not in r for r in results)
    assert results[0]["type"] == "urn:casebridge:problem:forbidden"
    # Only the last receipt was recorded: its leaf, nothing for the refused ones.
    assert await broker.store.audit.size() == audit_size + 1
    states = {}
    for sealed in (mine, shared, not_mine, rejected_first):
        view = (await broker.client("TH-ATPD").get(f"/v1/envelopes/{sealed.envelope_id.hex()}")).json()
        states[sealed.envelope_id] = {r: v["state"] for r, v in view["recipients"].items()}
    assert states == {
        mine.envelope_id: {"LA-MOLSW": "verified"},
        shared.envelope_id: {"LA-MOLSW": "pending", "LA-LWU": "pending"},
        not_mine.envelope_id: {"LA-LWU": "pending"},
        rejected_first.envelope_id: {"LA-MOLSW": "rejected"},
    }


async def test_a_batch_posted_again_changes_nothing(broker: RunningBroker) -> None:
    sealed = await sent(broker, ["LA-MOLSW"])
    body = batch(
        signed(broker, "LA-MOLSW", sealed, ReceiptKind.DELIVERED),
        signed(broker, "LA-MOLSW", sealed, ReceiptKind.VERIFIED),
    )
    first = await post_batch(broker, "LA-MOLSW", body)
    assert [r["status"] for r in first.json()["results"]] == [201, 201]
    audit_size = await broker.store.audit.size()
    again = await post_batch(broker, "LA-MOLSW", body)
    assert [(r["status"], r["recorded"], r["seq"]) for r in again.json()["results"]] == [
        (200, True, 2),
        (200, True, 3),
    ]
    assert await broker.store.audit.size() == audit_size
    assert len(await feed_kinds(broker)) == 3


async def test_verified_before_delivered_in_a_batch_leaves_delivered_implied(broker: RunningBroker) -> None:
    sealed = await sent(broker, ["LA-MOLSW"])
    reply = await post_batch(
        broker,
        "LA-MOLSW",
        batch(
            signed(broker, "LA-MOLSW", sealed, ReceiptKind.VERIFIED),
            signed(broker, "LA-MOLSW", sealed, ReceiptKind.DELIVERED),
        ),
    )
    assert [(r["status"], r["kind"], r["recorded"]) for r in reply.json()["results"]] == [
        (201, "verified", True),
        (200, "delivered", False),
    ]
    assert [kind for _, kind in await feed_kinds(broker)] == ["accepted", "verified"]


def _receipt(broker: RunningBroker, sealed: Sealed) -> bytes:
    return signed(broker, "LA-MOLSW", sealed, ReceiptKind.DELIVERED)


@pytest.mark.parametrize(
    ("make_body", "code"),
    [
        (lambda r: b"", "malformed_input"),
        (lambda r: b"\x00", "malformed_input"),
        (lambda r: batch(r)[:-1], "malformed_input"),
        (lambda r: batch(r) + b"\x00", "malformed_input"),
        (lambda r: batch(r) + b"\x00\x00", "malformed_input"),
        (lambda r: b"\x00\x00" + batch(r), "malformed_input"),
        (lambda r: (len(r) + 1).to_bytes(2, "big") + r, "malformed_input"),
        (lambda r: batch(*[r] * (MAX_BATCH_RECEIPTS + 1)), "invalid_field"),
    ],
    ids=[
        "empty",
        "one-byte",
        "cut-short",
        "trailing-byte",
        "trailing-empty-item",
        "leading-empty-item",
        "length-past-the-end",
        "too-many",
    ],
)
async def test_a_malformed_batch_is_refused_whole_and_records_nothing(
    broker: RunningBroker, make_body: Any, code: str
) -> None:
    sealed = await sent(broker, ["LA-MOLSW"])
    audit_size = await broker.store.audit.size()
    reply = await post_batch(broker, "LA-MOLSW", make_body(_receipt(broker, sealed)))
    assert (reply.status, reply.problem["code"]) == (400, code)
    assert await broker.store.audit.size() == audit_size
    assert [kind for _, kind in await feed_kinds(broker)] == ["accepted"]


async def test_a_batch_of_the_most_receipts_allowed_is_taken(broker: RunningBroker) -> None:
    sealed = await sent(broker, ["LA-MOLSW"])
    receipt = _receipt(broker, sealed)
    reply = await post_batch(broker, "LA-MOLSW", batch(*[receipt] * MAX_BATCH_RECEIPTS))
    statuses = [r["status"] for r in reply.json()["results"]]
    assert statuses == [201] + [200] * (MAX_BATCH_RECEIPTS - 1)


async def test_a_batch_needs_its_own_content_type(broker: RunningBroker) -> None:
    sealed = await sent(broker, ["LA-MOLSW"])
    body = batch(_receipt(broker, sealed))
    reply = await broker.client("LA-MOLSW").post("/v1/receipts/batch", body, RECEIPT_TYPE)
    assert (reply.status, reply.problem["code"], reply.problem["field"]) == (
        400,
        "invalid_field",
        "Content-Type",
    )
    single = await broker.client("LA-MOLSW").post("/v1/receipts", body, RECEIPT_BATCH_TYPE)
    assert (single.status, single.problem["field"]) == (400, "Content-Type")
    assert [kind for _, kind in await feed_kinds(broker)] == ["accepted"]

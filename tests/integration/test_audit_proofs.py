"""What the broker serves from its audit log verifies, with protocol code alone, against the
checkpoint it signed: inclusion and consistency proofs, tiles, entries, one envelope's trace and
its tlog-proof; and what the log records of a referral never includes the referral."""

from __future__ import annotations

import base64
import unicodedata

from protocol import auditlog
from protocol.merkle import (
    NodeId,
    border_nodes,
    leaf_hash,
    root_from_leaf_hashes,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from protocol.note import Checkpoint, open_checkpoint
from protocol.receipt import Receipt, ReceiptKind
from protocol.tiles import (
    TILE_WIDTH,
    decode_entry_bundle,
    decode_hash_tile,
    entries_path,
    hash_from_tile,
    node_tile,
    tile_path,
)
from protocol.tlog_proof import TlogProof, verify_tlog_proof
from tests.integration.audit_harness import auditor, checkpoint_now, fetch_checkpoint, fetch_entries, log_key
from tests.integration.broker_harness import RunningBroker
from tests.integration.pki import Sealed
from tests.integration.test_broker_receipts import post_receipt

VICTIM = "สมชาย ใจดี"
BODY = f'{{"ผู้เสียหาย": "{VICTIM}", "ສະຖານທີ່": "ນະຄອນຫຼວງວຽງຈັນ", "note": "ຍິງ ອາຍຸ 17 ປີ"}}'.encode()
DOCUMENT = ("เอกสารประกอบ.pdf", "บันทึกการสัมภาษณ์ สมชาย ใจดี".encode() * 200)


async def sent(broker: RunningBroker, sender: str, recipients: list[str], **kwargs: object) -> Sealed:
    sealed = broker.seal(sender, recipients, **kwargs)
    reply = await broker.submit(sender, sealed)
    assert reply.status == 201, reply.body
    return sealed


async def test_inclusion_and_consistency_proofs_verify_against_the_signed_checkpoints(
    broker: RunningBroker,
) -> None:
    await sent(broker, "TH-ATPD", ["LA-MOLSW"])
    await checkpoint_now(broker)
    client = await auditor(broker)
    first = (await fetch_checkpoint(client, broker)).checkpoint
    sealed = await sent(broker, "TH-DSDW", ["LA-LWU", "LA-MOLSW"], attachments=[DOCUMENT])
    await post_receipt(broker, "LA-LWU", sealed, ReceiptKind.VERIFIED)
    await checkpoint_now(broker)
    second = (await fetch_checkpoint(client, broker)).checkpoint
    assert second.size > first.size

    leaves, size = await fetch_entries(client)
    assert size == second.size == len(leaves)
    assert root_of(leaves) == second.root_hash
    for index, leaf in enumerate(leaves):
        reply = await client.get("/v1/audit/proof/inclusion", query={"index": index, "size": size})
        answer = reply.json()
        assert (answer["index"], answer["size"]) == (index, size)
        assert base64.b64decode(answer["leaf_hash"]) == leaf_hash(leaf)
        proof = [base64.b64decode(h) for h in answer["proof"]]
        verify_inclusion(leaf_hash(leaf), index, size, proof, second.root_hash)
        auditlog.parse_leaf(leaf)

    for older in (1, first.size // 2, first.size):
        reply = await client.get("/v1/audit/proof/consistency", query={"from": older, "to": second.size})
        proof = [base64.b64decode(h) for h in reply.json()["proof"]]
        old_root = first.root_hash if older == first.size else root_of(leaves[:older])
        verify_consistency(older, second.size, proof, old_root, second.root_hash)


def root_of(leaves: list[bytes]) -> bytes:
    return root_from_leaf_hashes([leaf_hash(leaf) for leaf in leaves])


async def test_tiles_and_entry_bundles_rebuild_the_checkpoint_root(broker: RunningBroker) -> None:
    audit = broker.store.audit
    now = broker.clock.now()
    for n in range(300):
        action = auditlog.OperatorAction("TH-OPERATOR", "tile_test", (f"n{n}",))
        await audit.record(auditlog.encode_leaf(now, action), now)
    await checkpoint_now(broker)
    client = await auditor(broker)
    checkpoint = (await fetch_checkpoint(client, broker)).checkpoint
    size = checkpoint.size
    assert size > TILE_WIDTH

    tiles: dict[tuple[int, int], list[bytes]] = {}
    for node in border_nodes(size):
        span = node_tile(node.level, node.index)
        width = min(TILE_WIDTH, (size >> (8 * span.level)) - span.index * TILE_WIDTH)
        reply = await client.get("/v1/audit/" + tile_path(span.level, span.index, width))
        assert reply.status == 200, reply.body
        assert reply.headers["Content-Type"] == "application/octet-stream"
        tiles[(span.level, span.index)] = decode_hash_tile(reply.body, width)

    class TileReader:
        def hashes(self, nodes: list[NodeId]) -> list[bytes]:
            found = []
            for node in nodes:
                span = node_tile(node.level, node.index)
                found.append(hash_from_tile(node.level, node.index, tiles[(span.level, span.index)]))
            return found

    assert tree_root(size, TileReader()) == checkpoint.root_hash

    first_leaves = decode_hash_tile((await client.get("/v1/audit/" + tile_path(0, 0))).body, TILE_WIDTH)
    assert root_from_leaf_hashes(first_leaves) == tiles[(1, 0)][0]
    full = decode_entry_bundle((await client.get("/v1/audit/" + entries_path(0))).body, TILE_WIDTH)
    assert [leaf_hash(e) for e in full] == first_leaves
    rest = size - TILE_WIDTH
    partial = (await client.get("/v1/audit/" + entries_path(1, rest))).body
    assert [leaf_hash(e) for e in decode_entry_bundle(partial, rest)] == tiles[(0, 1)][:rest]


async def test_an_envelopes_trace_and_tlog_proof_verify_for_its_recipient(broker: RunningBroker) -> None:
    sealed = await sent(broker, "TH-ATPD", ["LA-LWU", "LA-MOLSW"])
    await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.DELIVERED)
    await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.VERIFIED)
    await checkpoint_now(broker)
    late = await post_receipt(broker, "LA-LWU", sealed, ReceiptKind.VERIFIED)
    assert late[0] == 201
    recipient = broker.client("LA-MOLSW")
    envelope_id = sealed.envelope_id.hex()

    trace = (await recipient.get(f"/v1/audit/envelopes/{envelope_id}")).json()
    checkpoint = open_trace_checkpoint(trace["checkpoint"].encode(), broker)
    assert trace["size"] == checkpoint.size
    kinds = []
    for entry in trace["entries"]:
        leaf = auditlog.parse_leaf(base64.b64decode(entry["leaf"]))
        assert auditlog.envelope_ids(leaf) == (sealed.envelope_id,)
        assert entry["kind"] == leaf.kind
        f = leaf.fields
        kinds.append(
            f"receipt:{f.receipt_kind}" if isinstance(f, auditlog.ReceiptRecorded) else str(leaf.kind)
        )
        if entry["index"] < checkpoint.size:
            proof = [base64.b64decode(h) for h in entry["proof"]]
            verify_inclusion(
                leaf_hash(leaf.raw), entry["index"], checkpoint.size, proof, checkpoint.root_hash
            )
        else:
            assert entry["proof"] is None
    assert kinds == [
        "envelope_accepted",
        "receipt:accepted",
        "receipt:accepted",
        "receipt:delivered",
        "receipt:verified",
        "receipt:verified",
    ]
    assert trace["entries"][-1]["proof"] is None

    reply = await recipient.get(f"/v1/audit/envelopes/{envelope_id}/tlog-proof")
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    proof = TlogProof.parse(reply.body)
    accepted = base64.b64decode(trace["entries"][0]["leaf"])
    verify_tlog_proof(
        proof, leaf_hash(accepted), origin=broker.settings.audit_origin, log_key=log_key(broker)
    )
    assert proof.index == trace["entries"][0]["index"]


def open_trace_checkpoint(note: bytes, broker: RunningBroker) -> Checkpoint:
    return open_checkpoint(note, origin=broker.settings.audit_origin, log_key=log_key(broker)).checkpoint


async def test_the_accepted_receipt_points_at_the_envelope_accepted_entry(broker: RunningBroker) -> None:
    sealed = await sent(broker, "TH-DSDW", ["LA-LWU", "LA-MOLSW"], attachments=[DOCUMENT])
    header = sealed.parsed
    reply = await broker.client("TH-DSDW").get("/v1/receipts")
    receipts = [Receipt.parse(base64.b64decode(item["receipt"])) for item in reply.json()["items"]]
    indexes = {r.log_index for r in receipts if r.subject.envelope_id == header.envelope_id}
    assert len(indexes) == 1
    (index,) = indexes
    assert index is not None
    leaf = auditlog.parse_leaf((await broker.store.audit.leaves(index, index + 1))[0])
    assert leaf.fields == auditlog.EnvelopeAccepted(
        envelope_id=header.envelope_id,
        envelope_hash=header.envelope_hash,
        sender_id="TH-DSDW",
        sender_key_id=header.sender_key_id,
        recipients=("LA-LWU", "LA-MOLSW"),
        header_length=len(header.raw),
        part_lengths=tuple(p.ciphertext_length for p in header.parts),
        expires_at=header.expires_at,
        sender_signature=header.signature,
    )
    assert leaf.time == broker.clock.now()


async def test_no_entry_holds_the_referral_its_attachments_or_their_ciphertext(broker: RunningBroker) -> None:
    sealed = await sent(broker, "TH-ATPD", ["LA-MOLSW"], body=BODY, attachments=[DOCUMENT])
    await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.DELIVERED)
    await post_receipt(broker, "LA-MOLSW", sealed, ReceiptKind.VERIFIED)
    assert (await broker.sweep()).purged == 1
    leaves = await broker.store.audit.leaves(0, await broker.store.audit.size())
    kinds = {auditlog.leaf_kind(leaf) for leaf in leaves}
    assert {auditlog.LeafKind.ENVELOPE_ACCEPTED, auditlog.LeafKind.ENVELOPE_PURGED} <= kinds

    secrets = [BODY, DOCUMENT[1][:64], DOCUMENT[0].encode()]
    for text in (VICTIM, "ນະຄອນຫຼວງວຽງຈັນ"):
        for form in ("NFC", "NFD"):
            secrets.append(unicodedata.normalize(form, text).encode())
    wraps = [r.wrap for r in sealed.parsed.recipients]
    ciphertext = [part[i : i + 32] for part in sealed.parts for i in range(0, len(part) - 31, 32)]
    for leaf in leaves:
        for secret in [*secrets, *wraps, *sealed.parts, *ciphertext]:
            assert secret not in leaf

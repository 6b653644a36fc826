"""Sending and receiving over real HTTP: submit, idempotency, conflicts, inboxes, downloads."""

from __future__ import annotations

import base64

from protocol.certificate import TrustStore
from protocol.envelope import EnvelopeOpener
from protocol.primitives import seeded_random
from protocol.receipt import ReceiptKind, ReceiptSubject, verify_receipt
from tests.integration.broker_harness import CERTIFICATE_TYPE, ENVELOPE_TYPE, BrokerFactory, RunningBroker
from tests.integration.pki import frame, seal

LAO_DOCUMENT = ("ເອກະສານ.pdf", bytes(range(256)) * 400)  # 100 KiB: stored as a blob file
THAI_NOTE = ("เอกสารประกอบ.pdf", "บันทึก สมชาย ใจดี".encode() * 10)  # small: kept in the database


async def test_an_envelope_is_accepted_with_one_broker_receipt_per_recipient(broker: RunningBroker) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW", "LA-LWU"], attachments=[THAI_NOTE])
    reply = await broker.submit("TH-ATPD", sealed)
    assert reply.status == 201
    answer = reply.json()
    header = sealed.parsed
    assert answer["envelope_id"] == header.envelope_id.hex()
    assert answer["envelope_hash"] == header.envelope_hash.hex()
    broker_cert = broker.pki.broker_identity().certificate
    assert broker_cert is not None
    indexes = set()
    for recipient, encoded in zip(["LA-LWU", "LA-MOLSW"], answer["accepted"], strict=True):
        subject = ReceiptSubject(header.envelope_hash, header.envelope_id, "TH-ATPD", recipient)
        receipt = verify_receipt(
            base64.b64decode(encoded), signer=broker_cert, subject=subject, kind=ReceiptKind.ACCEPTED
        )
        assert receipt.time == broker.clock.now()
        indexes.add(receipt.log_index)
    (index,) = indexes
    leaf = (await broker.store.audit.leaves(index, index + 1))[0]
    assert header.envelope_id in leaf
    assert sealed.parts[0] not in leaf


async def test_the_same_bytes_again_get_the_first_answer(broker: RunningBroker) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"], attachments=[LAO_DOCUMENT])
    first = await broker.submit("TH-ATPD", sealed)
    audit_size = await broker.store.audit.size()
    broker.clock.advance(60)
    again = await broker.submit("TH-ATPD", sealed)
    assert (first.status, again.status) == (201, 200)
    assert again.json() == first.json()
    assert await broker.store.audit.size() == audit_size
    inbox = (await broker.client("LA-MOLSW").get("/v1/inbox")).json()
    assert len(inbox["items"]) == 1


async def test_other_bytes_under_a_used_envelope_id_are_a_conflict(broker: RunningBroker) -> None:
    original = broker.seal("TH-ATPD", ["LA-MOLSW"], rng=seeded_random(b"same id"))
    forged = broker.seal("TH-ATPD", ["LA-MOLSW"], body=b'{"other": "content"}', rng=seeded_random(b"same id"))
    assert original.envelope_id == forged.envelope_id
    assert (await broker.submit("TH-ATPD", original)).status == 201
    audit_size = await broker.store.audit.size()
    reply = await broker.submit("TH-ATPD", forged)
    assert reply.status == 409
    assert reply.problem["code"] == "conflict"
    assert await broker.store.audit.size() == audit_size
    header = await broker.client("LA-MOLSW").get(f"/v1/inbox/{original.envelope_id.hex()}/header")
    assert header.body == original.header


async def test_a_recipient_downloads_and_opens_what_was_sent(broker: RunningBroker) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"], attachments=[LAO_DOCUMENT, THAI_NOTE])
    accepted = (await broker.submit("TH-ATPD", sealed)).json()
    lao = broker.client("LA-MOLSW")
    inbox = (await lao.get("/v1/inbox", query={"wait": 0})).json()
    (item,) = inbox["items"]
    assert item["envelope_id"] == sealed.envelope_id.hex()
    assert item["sender_id"] == "TH-ATPD"
    assert item["part_lengths"] == [len(p) for p in sealed.parts]
    assert item["header_length"] == len(sealed.header)
    assert inbox["next"] == item["cursor"]
    path = f"/v1/inbox/{sealed.envelope_id.hex()}"
    header = await lao.get(f"{path}/header")
    assert header.headers["Content-Type"] == "application/vnd.casebridge.envelope-header"
    assert header.body == sealed.header
    assert base64.b64decode(header.headers["CaseBridge-Accepted-Receipt"]) == base64.b64decode(
        accepted["accepted"][0]
    )
    parts = []
    for n, expected in enumerate(sealed.parts):
        reply = await lao.get(f"{path}/parts/{n}")
        assert reply.status == 200
        assert reply.headers["ETag"] == f'"{sealed.parsed.parts[n].digest.hex()}"'
        assert reply.body == expected
        parts.append(reply.body)
    identity = broker.pki["LA-MOLSW"]
    sender = broker.pki["TH-ATPD"].certificate
    assert sender is not None
    opener = EnvelopeOpener(
        header.body,
        trust=TrustStore([broker.pki.root_cert("TH"), broker.pki.root_cert("LA")]),
        sender_certificate=sender,
        recipient_id="LA-MOLSW",
        keys=identity.recipient_keys(),
        now=broker.clock.now(),
    )
    manifest = opener.open_manifest(parts[0])
    assert [a.filename for a in manifest.attachments] == ["ເອກະສານ.pdf", "เอกสารประกอบ.pdf"]
    decryptor = opener.attachment(0)
    plain = b"".join(decryptor.update(parts[1]))
    decryptor.finalize()
    assert plain == LAO_DOCUMENT[1]


async def test_downloads_resume_with_byte_ranges(broker: RunningBroker) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"], attachments=[LAO_DOCUMENT, THAI_NOTE])
    await broker.submit("TH-ATPD", sealed)
    lao = broker.client("LA-MOLSW")
    for n in (1, 2):
        path = f"/v1/inbox/{sealed.envelope_id.hex()}/parts/{n}"
        part = sealed.parts[n]
        middle = await lao.get(path, headers={"Range": "bytes=100-199"})
        assert middle.status == 206
        assert middle.body == part[100:200]
        assert middle.headers["Content-Range"] == f"bytes 100-199/{len(part)}"
        tail = await lao.get(path, headers={"Range": "bytes=250-"})
        assert (tail.status, tail.body) == (206, part[250:])
        suffix = await lao.get(path, headers={"Range": "bytes=-17"})
        assert (suffix.status, suffix.body) == (206, part[-17:])
        beyond = await lao.get(path, headers={"Range": f"bytes={len(part)}-"})
        assert beyond.status == 416
        assert beyond.headers["Content-Range"] == f"bytes */{len(part)}"
        assert beyond.problem["status"] == 416


async def test_a_range_of_thousands_of_digits_is_a_clear_400_not_a_416(broker: RunningBroker) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"], attachments=[LAO_DOCUMENT])
    await broker.submit("TH-ATPD", sealed)
    lao = broker.client("LA-MOLSW")
    path = f"/v1/inbox/{sealed.envelope_id.hex()}/parts/1"
    absurd = await lao.get(path, headers={"Range": "bytes=0-" + "9" * 5000})
    assert (absurd.status, absurd.problem["code"], absurd.problem["field"]) == (400, "invalid_field", "Range")
    whole = await lao.get(path, headers={"Range": "bytes=0-" + "9" * 19})
    assert (whole.status, whole.body) == (206, sealed.parts[1])
    beyond = await lao.get(path, headers={"Range": "bytes=" + "9" * 19 + "-"})
    assert beyond.status == 416


async def test_only_sender_and_recipients_see_an_envelope_and_recipients_only_their_entry(
    broker: RunningBroker,
) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW", "LA-LWU"])
    await broker.submit("TH-ATPD", sealed)
    path = f"/v1/envelopes/{sealed.envelope_id.hex()}"
    by_sender = (await broker.client("TH-ATPD").get(path)).json()
    assert set(by_sender["recipients"]) == {"LA-MOLSW", "LA-LWU"}
    assert by_sender["purged"] is False
    by_recipient = (await broker.client("LA-LWU").get(path)).json()
    assert set(by_recipient["recipients"]) == {"LA-LWU"}
    assert by_recipient["recipients"]["LA-LWU"]["state"] == "pending"
    outsider = await broker.client("TH-DSDW").get(path)
    assert outsider.status == 404
    never_sent = await broker.client("TH-DSDW").get(f"/v1/envelopes/{'ab' * 16}")
    assert never_sent.problem["detail"] == outsider.problem["detail"]
    for probe in (
        f"/v1/inbox/{sealed.envelope_id.hex()}/header",
        f"/v1/inbox/{sealed.envelope_id.hex()}/parts/0",
    ):
        assert (await broker.client("TH-DSDW").get(probe)).status == 404


async def test_the_sender_must_be_the_authenticated_agency(broker: RunningBroker) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"])
    reply = await broker.client("TH-DSDW").post("/v1/envelopes", sealed.body, ENVELOPE_TYPE)
    assert reply.status == 403
    assert (await broker.client("LA-MOLSW").get("/v1/inbox")).json()["items"] == []


async def test_unregistered_recipients_are_refused(broker_factory: BrokerFactory) -> None:
    async with broker_factory(enroll=("TH-ATPD",)) as broker:
        sealed = broker.seal("TH-ATPD", ["LA-MOLSW"])
        reply = await broker.submit("TH-ATPD", sealed)
        assert reply.status == 400
        assert reply.problem["field"] == "recipients"


async def test_a_part_altered_in_transit_is_refused_and_nothing_stored(broker: RunningBroker) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"], attachments=[LAO_DOCUMENT])
    altered = bytearray(sealed.parts[1])
    altered[5000] ^= 1
    reply = await broker.client("TH-ATPD").post(
        "/v1/envelopes", frame(sealed.header, [sealed.parts[0], bytes(altered)]), ENVELOPE_TYPE
    )
    assert reply.status == 400
    assert reply.problem["code"] == "malformed_input"
    assert await broker.store.delivery.envelope(sealed.envelope_id) is None
    assert await broker.store.blobs.stored_hashes() == set()


async def test_truncated_and_overlong_bodies_are_refused(broker: RunningBroker) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"])
    atpd = broker.client("TH-ATPD")
    short = await atpd.post("/v1/envelopes", sealed.body[:-10], ENVELOPE_TYPE)
    long = await atpd.post("/v1/envelopes", sealed.body + b"\x00", ENVELOPE_TYPE)
    assert (short.status, long.status) == (400, 400)
    assert await broker.store.delivery.envelope(sealed.envelope_id) is None


async def test_size_and_recipient_limits_are_enforced(broker_factory: BrokerFactory) -> None:
    async with broker_factory(
        max_envelope_bytes=64 << 10, max_part_bytes=32 << 10, max_recipients=1
    ) as broker:
        big = broker.seal("TH-ATPD", ["LA-MOLSW"], attachments=[LAO_DOCUMENT])
        reply = await broker.submit("TH-ATPD", big)
        assert reply.status == 413
        assert reply.problem["code"] == "too_large"
        two = broker.seal("TH-ATPD", ["LA-MOLSW", "LA-LWU"])
        reply = await broker.submit("TH-ATPD", two)
        assert (reply.status, reply.problem["field"]) == (400, "recipients")
        assert (await broker.store.delivery.counts()).envelopes_stored == 0


async def test_an_envelope_is_refused_without_its_content_type(broker: RunningBroker) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"])
    reply = await broker.client("TH-ATPD").post("/v1/envelopes", sealed.body, "application/octet-stream")
    assert (reply.status, reply.problem["field"]) == (400, "Content-Type")


async def test_an_envelope_signed_with_the_agencys_other_valid_key_is_accepted(broker: RunningBroker) -> None:
    renewed = broker.pki.new_agency("TH-ATPD", "กองบังคับการปราบปรามการกระทำความผิดเกี่ยวกับการค้ามนุษย์")
    assert renewed.certificate is not None
    operator = broker.client("TH-OPERATOR")
    reply = await operator.post("/v1/directory/certificates", renewed.certificate.raw, CERTIFICATE_TYPE)
    assert reply.status == 201
    sealed_with_old_key = broker.seal("TH-ATPD", ["LA-MOLSW"])
    reply = await broker.client(renewed).post("/v1/envelopes", sealed_with_old_key.body, ENVELOPE_TYPE)
    assert reply.status == 201
    unregistered = broker.pki.new_agency("TH-ATPD", "หน่วยงาน")
    sealed_with_unknown_key = seal(unregistered, [broker.pki["LA-MOLSW"]], broker.clock.now())
    reply = await broker.client("TH-ATPD").post("/v1/envelopes", sealed_with_unknown_key.body, ENVELOPE_TYPE)
    assert (reply.status, reply.problem["code"]) == (422, "untrusted_certificate")

"""Typed referral messages end to end through a real broker: a Thai agency refers a Lao woman
to the Lao agency, which acknowledges, accepts and answers a question; what the case workflow
or the consent does not allow is refused before sealing, and again on receipt when forced past
the sender; the case store survives restarts and holds nothing readable."""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest

from clients.agency import AgencyClient
from clients.case_store import DATABASE_NAME
from clients.inbox import Delivery, save_attachments
from clients.outbox import OutboxState
from protocol.errors import ConsentError, InvalidTransition
from protocol.receipt import ReceiptKind, RejectReason
from protocol.referral import (
    CONTENT_TYPE,
    Acceptance,
    Address,
    CasePhase,
    Consent,
    ConsentGiver,
    InfoRequest,
    InfoResponse,
    LegalBasis,
    Person,
    PersonName,
    Referral,
    RequestedAction,
    RequestKind,
    RequestStatus,
    ReturnWish,
    Scope,
    Sex,
    Side,
    UpdateKind,
    WaitingKind,
    encode_message,
)
from tests.integration.broker_harness import RunningBroker
from tests.integration.client_harness import LAO_FILENAME, document, make_client

TH, LA = "TH-DSDW", "LA-MOLSW"
TH_REF, LA_REF = "ศคม.นค. 42/2569", "ຮສ 117/2026"
NAME = PersonName(
    full_native="ນາງ ສົມພອນ ແກ້ວມະນີ",
    given_native="ສົມພອນ",
    family_native="ແກ້ວມະນີ",
    full_romanised="Somphone Keomany",
    aliases=("สมพร แก้วมณี",),
)
SUMMARY = "ผู้เสียหายประสงค์จะกลับบ้าน ต้องการล่ามภาษาลาว"
BASIC_SCOPES = (Scope.NOTIFY_ORIGIN, Scope.VERIFICATION, Scope.FAMILY_TRACING)


def consent(scopes: tuple[Scope, ...] = BASIC_SCOPES) -> Consent:
    return Consent(
        consent_id=os.urandom(16),
        given_by=ConsentGiver.PERSON,
        is_child=False,
        given_on="2025-12-30",
        language="lo",
        officer="TH-DSDW:off-0417",
        legal_basis=LegalBasis.EXPLICIT_CONSENT,
        scopes=scopes,
        interpreter="ບົວໄລ ສີສຸວັນ",
    )


def refer(th: AgencyClient, the_consent: Consent, **extra: object) -> Referral:
    return th.messages.referral(
        to=LA,
        case_ref=TH_REF,
        consent=the_consent,
        person=Person(name=NAME, sex=Sex.FEMALE, is_child=False, estimated_age=22, languages=("lo", "th")),
        identified_on="2025-12-28",
        identified_by="ตำรวจภูธรจังหวัดหนองคาย",
        requested_actions=(RequestedAction.VERIFY_NATIONALITY, RequestedAction.REPATRIATE),
        return_wish=ReturnWish.WANTS_TO_RETURN,
        home=Address(country="LA", province="ແຂວງສະຫວັນນະເຂດ", village="ບ້ານໜອງດູນ"),
        summary=SUMMARY,
        **extra,
    )


async def receive(client: AgencyClient) -> list[Delivery]:
    deliveries = await client.fetch_deliveries()
    for delivery in deliveries:
        await client.ack(delivery)
    return deliveries


async def open_clients(stack: AsyncExitStack, broker: RunningBroker, tmp_path: Path) -> list[AgencyClient]:
    clients = []
    for agency_id in (TH, LA):
        client = await stack.enter_async_context(make_client(broker, agency_id, tmp_path / agency_id))
        await client.refresh_directory()
        clients.append(client)
    return clients


async def referred(th: AgencyClient, la: AgencyClient, the_consent: Consent, **extra: object) -> Referral:
    """A referral sent by the Thai side and received by the Lao side."""
    message = refer(th, the_consent, **extra)
    assert (await th.send_message(message)).result.state is OutboxState.ACCEPTED
    assert [d.message for d in await receive(la)] == [message]
    return message


async def test_a_thai_referral_is_received_typed_accepted_and_a_question_answered_with_a_document(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        th, la = await open_clients(stack, broker, tmp_path)
        referral = refer(th, consent())
        sent = await th.send_message(referral)
        assert sent.result.state is OutboxState.ACCEPTED
        assert (sent.state.phase, sent.state.destination_case_ref) == (CasePhase.REFERRED, TH_REF)
        link = referral.header.case_link_id

        (delivery,) = await la.fetch_deliveries()
        assert delivery.content_type == CONTENT_TYPE
        received = delivery.message
        assert isinstance(received, Referral)
        assert received == referral
        assert received.person.name.full_native == "ນາງ ສົມພອນ ແກ້ວມະນີ"
        assert received.person.name.aliases == ("สมพร แก้วมณี",)
        await la.ack(delivery)
        (waiting,) = la.cases.find(TH_REF, now=broker.clock.now()).open_items("2026-01-01")
        assert (waiting.kind, waiting.waiting_on) == (WaitingKind.ACKNOWLEDGE, (Side.ORIGIN,))

        ack = la.messages.message(link, "acknowledgement", read_by="LA-MOLSW:off-2231", note="ໄດ້ຮັບແລ້ວ")
        assert ack.header.in_reply_to == referral.message_id
        await la.send_message(ack)
        accept = la.messages.message(TH_REF, "acceptance", case_ref=LA_REF, accepted_by="LA-MOLSW:off-2231")
        accepted = await la.send_message(accept)
        assert (accepted.state.phase, accepted.state.origin_case_ref) == (CasePhase.ACCEPTED, LA_REF)

        assert [type(d.message) for d in await receive(th)] == [type(ack), Acceptance]
        case = th.cases.find(LA_REF, now=broker.clock.now())
        assert (case.state.phase, case.state.origin_case_ref) == (CasePhase.ACCEPTED, LA_REF)

        question = th.messages.message(
            link, "info_request", questions="ขอสำเนาทะเบียนบ้านของผู้เสียหาย", due_on="2026-01-10"
        )
        assert question.header.receiver_case_ref == LA_REF
        await th.send_message(question)
        (asked,) = await receive(la)
        assert isinstance(asked.message, InfoRequest)
        (item,) = la.cases.find(LA_REF, now=broker.clock.now()).open_items("2026-01-11")
        assert (item.kind, item.due_on, item.overdue, item.waiting_on) == (
            WaitingKind.ANSWER_INFO,
            "2026-01-10",
            True,
            (Side.ORIGIN,),
        )

        scan = tmp_path / LAO_FILENAME
        scan.write_bytes(document(300_000, seed=3))
        answer = la.messages.message(
            link, "info_response", answer="ສຳເນົາສຳມະໂນຄົວຄັດຕິດມາ", attachments=(LAO_FILENAME,)
        )
        assert answer.header.in_reply_to == question.message_id
        await la.send_message(answer, attachments=[scan])
        (answered,) = await th.fetch_deliveries()
        assert isinstance(answered.message, InfoResponse)
        (saved,) = save_attachments(answered, tmp_path / "saved")
        assert saved.read_bytes() == scan.read_bytes()
        await th.ack(answered)

        th_case = th.cases.find(link.hex(), now=broker.clock.now())
        la_case = la.cases.find(link.hex(), now=broker.clock.now())
        (request,) = th_case.state.requests
        assert (request.kind, request.status) == (RequestKind.INFO, RequestStatus.ANSWERED)
        assert replace(la_case.state, local_agency_id=TH) == th_case.state
        assert [m.message.TYPE for m in th_case.messages] == [m.message.TYPE for m in la_case.messages]
        assert th_case.messages[-1].attachments == (LAO_FILENAME,)


async def test_a_transition_the_case_refuses_is_not_sealed_and_is_rejected_on_receipt_when_forced(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        th, la = await open_clients(stack, broker, tmp_path)
        referral = await referred(th, la, consent())
        link = referral.header.case_link_id
        # Only the origin side accepts a referral: the Thai side may not.
        wrong = th.messages.message(
            link, "acceptance", case_ref="ศคม.นค. 43/2569", accepted_by="TH-DSDW:off-1"
        )
        outbox_before = th.outbox()
        thread_before = th.cases.thread(link, now=broker.clock.now())
        with pytest.raises(InvalidTransition, match="acceptance is not allowed now"):
            await th.send_message(wrong)
        assert th.outbox() == outbox_before
        assert th.cases.thread(link, now=broker.clock.now()) == thread_before

        forced = await th.send([LA], encode_message(wrong), content_type=CONTENT_TYPE)
        assert forced.state is OutboxState.ACCEPTED
        assert await la.fetch_deliveries() == []
        la_case = la.cases.find(TH_REF, now=broker.clock.now())
        (refused,) = la_case.refused
        assert (refused.envelope_id, refused.reason, refused.message) == (forced.envelope_id, "policy", wrong)
        assert "acceptance is not allowed now" in refused.detail
        assert la_case.state.phase is CasePhase.REFERRED
        assert len(la_case.messages) == 1

        records = [r for r in await th.sync_receipts() if r.envelope_id == forced.envelope_id]
        (rejected,) = [r for r in records if r.kind is ReceiptKind.REJECTED]
        assert rejected.receipt.reason is RejectReason.POLICY


async def test_a_message_naming_another_sender_than_the_envelope_signer_is_refused(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        th, la = await open_clients(stack, broker, tmp_path)
        referral = await referred(th, la, consent())
        forged = th.messages.message(
            referral.header.case_link_id, "case_update", kind=UpdateKind.OTHER, summary="ให้ยกเลิกการส่งกลับ"
        )
        async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
            await atpd.refresh_directory()
            smuggled = await atpd.send([LA], encode_message(forged), content_type=CONTENT_TYPE)
        assert await la.fetch_deliveries() == []
        (refused,) = la.cases.find(TH_REF, now=broker.clock.now()).refused
        assert (refused.envelope_id, refused.sender_id, refused.reason) == (
            smuggled.envelope_id,
            "TH-ATPD",
            "policy",
        )
        assert "header.sender_agency_id" in refused.detail


async def test_a_field_outside_the_consent_is_refused_before_sealing(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        th, _ = await open_clients(stack, broker, tmp_path)
        # Health needs require scope s5_health, which this consent does not grant.
        message = refer(th, consent(), health_needs="ต้องการพบแพทย์")
        with pytest.raises(ConsentError) as refused:
            await th.send_message(message)
        assert refused.value.fields == ("health_needs",)
        assert th.outbox() == []
        assert th.cases.threads(now=broker.clock.now()) == []


async def test_a_withdrawal_blocks_later_messages_in_that_scope_on_both_sides(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        th, la = await open_clients(stack, broker, tmp_path)
        full = consent((*BASIC_SCOPES, Scope.HEALTH))
        referral = await referred(th, la, full, health_needs="ต้องการพบแพทย์")
        link = referral.header.case_link_id
        withdrawn = replace(full, consent_id=os.urandom(16), scopes=BASIC_SCOPES, given_on="2026-01-01")
        change = th.messages.message(link, "consent_change", consent=withdrawn, note="Withdraws health data.")
        await th.send_message(change)
        assert [d.message for d in await receive(la)] == [change]
        assert la.cases.find(TH_REF, now=broker.clock.now()).state.consent == withdrawn

        health = th.messages.message(link, "case_update", kind=UpdateKind.FOLLOW_UP, health_note="ดีขึ้น")
        with pytest.raises(ConsentError) as refused:
            await th.send_message(health)
        assert refused.value.fields == ("health_note",)
        forced = await th.send([LA], encode_message(health), content_type=CONTENT_TYPE)
        assert await la.fetch_deliveries() == []
        (kept,) = la.cases.find(TH_REF, now=broker.clock.now()).refused
        assert (kept.envelope_id, kept.reason) == (forced.envelope_id, "policy")
        assert "health_note needs scope s5_health" in kept.detail

        plain = th.messages.message(link, "case_update", kind=UpdateKind.FOLLOW_UP, summary="ติดตามผลแล้ว")
        assert (await th.send_message(plain)).result.state is OutboxState.ACCEPTED
        assert [d.message for d in await receive(la)] == [plain]


async def test_the_case_store_survives_a_restart_and_is_unreadable_without_the_key(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with AsyncExitStack() as stack:
        th, la = await open_clients(stack, broker, tmp_path)
        referral = await referred(th, la, consent())
        before = la.cases.find(TH_REF, now=broker.clock.now())
    async with make_client(broker, LA, tmp_path / LA) as again:
        after = again.cases.find(referral.header.case_link_id.hex(), now=broker.clock.now())
        assert after == before
        assert after.person_name == NAME
    stored = b"".join(p.read_bytes() for p in (tmp_path / LA).iterdir() if p.name.startswith(DATABASE_NAME))
    assert len(stored) > 4096
    for text in (NAME.full_native, NAME.family_native, NAME.full_romanised, "สมพร", TH_REF, SUMMARY):
        assert text is not None
        assert text.encode() not in stored
    assert referral.header.case_link_id not in stored

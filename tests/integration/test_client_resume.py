"""Interrupted work picks up where it stopped: downloads resume with Range requests, sealed
envelopes in the outbox go out after a crash or an outage with the same bytes, and a final
refusal is kept with the broker's problem details."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import socket
from pathlib import Path

import pytest

from clients.outbox import OutboxState
from protocol.errors import InvalidField
from tests.integration.broker_harness import RunningBroker
from tests.integration.client_harness import LAO_FILENAME, THAI_REFERRAL, document, make_client

ATTACHMENT_BYTES = 3_000_000


async def _send_document(broker: RunningBroker, tmp_path: Path, content: bytes) -> str:
    attachment = tmp_path / LAO_FILENAME
    attachment.write_bytes(content)
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        sent = await atpd.send(["LA-MOLSW"], THAI_REFERRAL, attachments=[attachment])
    assert sent.state is OutboxState.ACCEPTED
    return sent.envelope_id


def _partial(state: Path, envelope_id: str) -> Path:
    return state / "inbox" / envelope_id / "part-1.partial"


async def test_an_interrupted_download_resumes_with_a_range_request_and_fetches_each_byte_once(
    broker: RunningBroker, tmp_path: Path
) -> None:
    content = document(ATTACHMENT_BYTES)
    envelope_id = await _send_document(broker, tmp_path, content)
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        (item,) = await molsw.list_inbox()
        first = await molsw.download(envelope_id, max_bytes=1_000_000)
        assert not first.complete
        assert 1_000_000 <= first.fetched_bytes < first.total_bytes
        assert first.total_bytes == sum(item.part_lengths)
        assert _partial(tmp_path / "molsw", envelope_id).exists()

    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        rest = await molsw.download(envelope_id)
        assert rest.complete
        assert first.fetched_bytes + rest.fetched_bytes == rest.total_bytes
        (delivery,) = await molsw.fetch_deliveries()
        assert b"".join(delivery.attachments[0].open()) == content


async def test_a_truncated_partial_file_resumes_from_its_new_end(
    broker: RunningBroker, tmp_path: Path
) -> None:
    content = document(ATTACHMENT_BYTES, seed=3)
    envelope_id = await _send_document(broker, tmp_path, content)
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        (item,) = await molsw.list_inbox()
        await molsw.download(envelope_id, max_bytes=2_000_000)
        partial = _partial(tmp_path / "molsw", envelope_id)
        with partial.open("r+b") as f:
            f.truncate(100_000)
        rest = await molsw.download(envelope_id)
        assert rest.complete
        assert rest.fetched_bytes == item.part_lengths[1] - 100_000
        (delivery,) = await molsw.fetch_deliveries()
        assert b"".join(delivery.attachments[0].open()) == content


async def test_a_damaged_partial_file_is_fetched_again_before_the_envelope_is_opened(
    broker: RunningBroker, tmp_path: Path
) -> None:
    content = document(ATTACHMENT_BYTES, seed=4)
    envelope_id = await _send_document(broker, tmp_path, content)
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        await molsw.download(envelope_id, max_bytes=500_000)
        partial = _partial(tmp_path / "molsw", envelope_id)
        with partial.open("r+b") as f:
            f.seek(1000)
            f.write(b"\x00" * 64)
        (delivery,) = await molsw.fetch_deliveries()
        assert b"".join(delivery.attachments[0].open()) == content
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        status = await atpd.status(envelope_id)
        assert status.recipients["LA-MOLSW"].state == "verified"


async def test_an_envelope_sealed_before_a_crash_is_sent_by_the_next_client(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        entry = await atpd.enqueue(["LA-LWU"], THAI_REFERRAL)
    assert entry.state is OutboxState.PENDING
    assert (entry.directory / "header").exists()

    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        (result,) = await atpd.resume_outbox()
        assert (result.envelope_id, result.state) == (entry.envelope_id, OutboxState.ACCEPTED)
        assert atpd.outbox(OutboxState.PENDING) == []
        assert not entry.directory.exists()
    async with make_client(broker, "LA-LWU", tmp_path / "lwu") as lwu:
        (delivery,) = await lwu.fetch_deliveries()
        assert (delivery.envelope_id, delivery.body) == (entry.envelope_id, THAI_REFERRAL)


async def test_an_upload_repeated_after_a_lost_answer_gets_the_broker_s_first_answer(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        entry = await atpd.enqueue(["LA-MOLSW"], THAI_REFERRAL)
    # The state as it was when the upload went out: restoring it is a crash before the answer.
    shutil.copytree(tmp_path / "atpd", tmp_path / "atpd-before-answer")
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        (first,) = await atpd.resume_outbox()
    broker.clock.advance(120)
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd-before-answer") as again:
        (second,) = await again.resume_outbox()
    assert first.state is second.state is OutboxState.ACCEPTED
    assert [r.raw for r in second.accepted] == [r.raw for r in first.accepted]
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        assert [d.envelope_id for d in await molsw.fetch_deliveries()] == [entry.envelope_id]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_referral_sent_while_the_broker_is_unreachable_waits_sealed_and_goes_later(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
    offline = f"http://127.0.0.1:{_closed_port()}"
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd", broker_url=offline) as atpd:
        queued = await atpd.send(["LA-MOLSW"], THAI_REFERRAL)
        assert queued.state is OutboxState.PENDING
        (entry,) = atpd.outbox(OutboxState.PENDING)
        local = await atpd.status(queued.envelope_id)
        assert (local.local_only, local.outbox_state) == (True, OutboxState.PENDING)
        assert local.recipients["LA-MOLSW"].state == "pending"
        assert entry.last_error is not None
        assert "outbox" in entry.last_error
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        (result,) = await atpd.resume_outbox()
        assert (result.envelope_id, result.state) == (queued.envelope_id, OutboxState.ACCEPTED)
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        (delivery,) = await molsw.fetch_deliveries()
        assert delivery.envelope_id == queued.envelope_id


async def test_a_referral_the_broker_refuses_for_good_is_kept_as_failed_with_the_problem(
    broker: RunningBroker, tmp_path: Path
) -> None:
    # An agency certified by the Lao root but never registered at the broker.
    stranger = broker.pki.new_agency("LA-PROVINCE", "ແຂວງ ຫຼວງພະບາງ")
    assert stranger.certificate is not None
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        atpd.directory.absorb(
            {
                "certificates": [base64.b64encode(stranger.certificate.raw).decode()],
                "encryption_keys": [
                    base64.b64encode(k.statement.raw).decode() for k in stranger.encryption_keys
                ],
            },
            broker.clock.now(),
        )
        with pytest.raises(InvalidField) as refused:
            await atpd.send(["LA-PROVINCE"], THAI_REFERRAL)
        assert refused.value.status == 400
        (entry,) = atpd.outbox(OutboxState.FAILED)
        assert entry.problem is not None
        assert entry.problem["code"] == "invalid_field"
        assert await atpd.resume_outbox() == []


async def test_the_background_flusher_sends_what_waits_in_the_outbox(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
    offline = f"http://127.0.0.1:{_closed_port()}"
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd", broker_url=offline) as atpd:
        queued = await atpd.send(["LA-LWU"], THAI_REFERRAL)
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        flusher = asyncio.create_task(atpd.run_outbox_flusher(interval_seconds=0.05))

        async def until_sent() -> None:
            while atpd.outbox(OutboxState.PENDING):
                await asyncio.sleep(0.05)

        try:
            await asyncio.wait_for(until_sent(), 60)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        (entry,) = atpd.outbox()
        assert (entry.envelope_id, entry.state) == (queued.envelope_id, OutboxState.ACCEPTED)

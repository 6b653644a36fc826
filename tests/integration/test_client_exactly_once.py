"""Exactly-once handling over at-least-once transport: a delivery is handed over until the
application acknowledges it, in the same local transaction as its own bookkeeping, and never
after that."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from protocol.errors import Conflict, NotFound
from tests.integration.broker_harness import RunningBroker
from tests.integration.client_harness import LAO_FILENAME, THAI_REFERRAL, document, make_client


async def _send(broker: RunningBroker, tmp_path: Path, to: str = "LA-MOLSW", attach: bool = True) -> str:
    attachment = tmp_path / LAO_FILENAME
    attachment.write_bytes(document(300_000, seed=5))
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
        sent = await atpd.send([to], THAI_REFERRAL, attachments=[attachment] if attach else [])
    return sent.envelope_id


async def test_a_crash_between_receiving_and_acknowledging_hands_the_delivery_over_again(
    broker: RunningBroker, tmp_path: Path
) -> None:
    envelope_id = await _send(broker, tmp_path)
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        (received,) = await molsw.fetch_deliveries()
        assert received.envelope_id == envelope_id
        # The broker has the verified receipt: it no longer lists the envelope ...
        assert await molsw.list_inbox() == []
    # ... and the application never acknowledged it (the process died), so it comes again.
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        (again,) = await molsw.fetch_deliveries()
        assert (again.envelope_id, again.body) == (envelope_id, THAI_REFERRAL)
        assert b"".join(again.attachments[0].open()) == document(300_000, seed=5)
        await molsw.ack(again)
        assert molsw.is_processed(envelope_id)
        with pytest.raises(NotFound):
            next(again.attachments[0].open())
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        assert await molsw.fetch_deliveries() == []
        assert molsw.pending_deliveries() == []


async def test_the_application_s_own_writes_commit_with_the_acknowledgement_or_not_at_all(
    broker: RunningBroker, tmp_path: Path
) -> None:
    envelope_id = await _send(broker, tmp_path, attach=False)
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        with molsw.state.transaction() as db:
            db.execute("CREATE TABLE app_cases (envelope_id TEXT PRIMARY KEY, subject TEXT)")
        (delivery,) = await molsw.fetch_deliveries()

        def record_then_fail() -> None:
            with molsw.processing(delivery) as db:
                db.execute("INSERT INTO app_cases VALUES (?, ?)", (delivery.envelope_id, delivery.text))
                raise RuntimeError("the case system failed half-way")

        with pytest.raises(RuntimeError):
            record_then_fail()
        assert not molsw.is_processed(envelope_id)
        with molsw.state.transaction() as db:
            assert db.execute("SELECT count(*) FROM app_cases").fetchone() == (0,)

    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        (delivery,) = await molsw.fetch_deliveries()
        with molsw.processing(delivery) as db:
            db.execute("INSERT INTO app_cases VALUES (?, ?)", (delivery.envelope_id, delivery.text))
        assert molsw.is_processed(envelope_id)
        with molsw.state.transaction() as db:
            rows = db.execute("SELECT envelope_id, subject FROM app_cases").fetchall()
        assert rows == [(envelope_id, THAI_REFERRAL.decode())]
        assert await molsw.fetch_deliveries() == []


async def test_a_verified_receipt_whose_post_was_lost_goes_again_and_the_envelope_stays_handled(
    broker: RunningBroker, tmp_path: Path
) -> None:
    envelope_id = await _send(broker, tmp_path, attach=False)
    async with make_client(broker, "LA-MOLSW", tmp_path / "molsw") as molsw:
        (delivery,) = await molsw.fetch_deliveries()
        await molsw.ack(delivery)
        # Forget that the broker has the verified receipt, as if the post had been lost.
        with molsw.state.transaction() as db:
            db.execute("UPDATE signed_receipts SET posted=0 WHERE kind='verified'")
        assert await molsw.fetch_deliveries() == []
        assert await molsw.flush_receipts() == 0
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        status = await atpd.status(envelope_id)
        assert status.recipients["LA-MOLSW"].state == "verified"


async def test_a_second_receiver_on_the_same_state_directory_is_refused(
    broker: RunningBroker, tmp_path: Path
) -> None:
    await _send(broker, tmp_path, attach=False)
    async with (
        make_client(broker, "LA-MOLSW", tmp_path / "molsw") as first,
        make_client(broker, "LA-MOLSW", tmp_path / "molsw") as second,
    ):
        stream = first.deliveries(follow=False)
        delivery = await anext(stream)
        with pytest.raises(Conflict):
            await second.fetch_deliveries()
        await first.ack(delivery)
        await stream.aclose()
        assert await second.fetch_deliveries() == []


async def test_a_following_receiver_gets_a_referral_that_arrives_while_it_waits(
    broker: RunningBroker, tmp_path: Path
) -> None:
    async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
        await atpd.refresh_directory()
    async with make_client(broker, "LA-LWU", tmp_path / "lwu") as lwu:
        stream = lwu.deliveries(follow=True, wait_seconds=30)
        waiting = asyncio.ensure_future(anext(stream))
        async with make_client(broker, "TH-ATPD", tmp_path / "atpd") as atpd:
            sent = await atpd.send(["LA-LWU"], "มาถึงระหว่างรอ".encode())
        delivery = await asyncio.wait_for(waiting, 60)
        assert (delivery.envelope_id, delivery.text) == (sent.envelope_id, "มาถึงระหว่างรอ")
        await lwu.ack(delivery)
        await stream.aclose()


def _checkpoint(database: Path) -> None:
    """Move everything from the write-ahead log into the database file, from a second connection."""
    with contextlib.closing(sqlite3.connect(database)) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


async def test_a_body_is_sealed_in_the_state_file_while_it_waits_and_gone_once_acknowledged(
    broker: RunningBroker, tmp_path: Path
) -> None:
    await _send(broker, tmp_path, attach=False)
    state = tmp_path / "molsw"
    database = state / "state.sqlite3"
    name = "ແກ້ວມະນີ".encode()
    async with make_client(broker, "LA-MOLSW", state) as molsw:
        (delivery,) = await molsw.fetch_deliveries()
        assert name in delivery.body
        _checkpoint(database)
        # The unacknowledged row is in the database file itself now, sealed ...
        with contextlib.closing(sqlite3.connect(database)) as other:
            assert other.execute("SELECT count(*) FROM received").fetchone() == (1,)
        assert name not in database.read_bytes()
        await molsw.ack(delivery)
        _checkpoint(database)
    # ... and once acknowledged, its freed pages were overwritten: no trace in any state file.
    files = [p for p in state.rglob("state.sqlite3*") if p.is_file()]
    assert all(name not in p.read_bytes() for p in files)

"""The local case store: threads kept encrypted at rest, states rebuilt by replay, refusals
kept with their reasons, cases found by either case number, overdue cases first; each case's
sealed summary kept equal to what a replay of its thread shows, and stores written before
summaries (schema 1) opened and given theirs."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from clients.case_store import DATABASE_NAME, CaseStore
from clients.case_threads import Direction, RefusedMessage, attention_order
from keys.identity import AgencyIdentity
from keys.lifecycle import create_agency
from protocol.errors import Conflict, InvalidTransition, NotFound, StorageUnavailable
from protocol.referral import CasePhase, Message, Side, WaitingKind, apply, encode_message
from tests.referral_fixtures import (
    DEST_REF,
    DESTINATION,
    MT,
    NOW,
    ORIGIN,
    ORIGIN_REF,
    TEXT,
    fresh_id,
    make,
    referral,
)

DEST, ORIG = Side.DESTINATION, Side.ORIGIN


@pytest.fixture
def dsdw() -> AgencyIdentity:
    return create_agency(DESTINATION, "Department of Social Development and Welfare", NOW)


def _open_case(
    store: CaseStore, *, lang: str = "lo", ref: str = DEST_REF, link: bytes | None = None
) -> Message:
    """A referral sent by this agency and the origin's acknowledgement and acceptance."""
    header = {"case_link_id": link or os.urandom(16), "sender_case_ref": ref, "message_id": os.urandom(16)}
    opening = referral(lang, header=header)
    state = store.record_sent(opening, now=NOW)
    store.mark_sealed(opening, fresh_id().hex())
    for mtype in (MT.ACKNOWLEDGEMENT, MT.ACCEPTANCE):
        reply = make(state, mtype, ORIG)
        state = store.record_received(reply, envelope_id=fresh_id().hex(), now=NOW)
    return opening


def _files(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.name.startswith(DATABASE_NAME))


def test_a_case_survives_a_restart_and_replays_to_the_state_its_messages_give(
    tmp_path: Path, dsdw: AgencyIdentity
) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        opening = _open_case(store)
        before = store.thread(opening.header.case_link_id, now=NOW)
    assert before is not None
    with CaseStore(tmp_path, dsdw) as store:
        after = store.thread(opening.header.case_link_id, now=NOW)
    assert after == before
    expected = None
    for stored in after.messages:
        expected = apply(expected, stored.message, as_sender=stored.direction is Direction.SENT, now=NOW)
    assert after.state == expected
    assert (after.state.phase, after.state.origin_case_ref) == (CasePhase.ACCEPTED, ORIGIN_REF)
    assert [m.direction for m in after.messages] == [Direction.SENT, Direction.RECEIVED, Direction.RECEIVED]
    assert after.person_name is not None
    assert after.person_name.full_native == TEXT["lo"]["full"]


def test_the_store_file_holds_no_name_case_number_or_id_in_clear(
    tmp_path: Path, dsdw: AgencyIdentity
) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        lao = _open_case(store, lang="lo")
        thai = _open_case(store, lang="th", ref="ศคม.อบ. 7/2568")
        listed = store.summaries(now=NOW)
        on_disk = _files(tmp_path)
    # The case rows carry the names and both case numbers (sealed), for the inbox.
    assert {s.name_native for s in listed} == {TEXT["lo"]["full"], TEXT["th"]["full"]}
    assert {s.origin_case_ref for s in listed} == {ORIGIN_REF}
    secrets = [
        TEXT["lo"]["full"],
        TEXT["lo"]["family"],
        TEXT["lo"]["romanised"],
        TEXT["th"]["full"],
        TEXT["th"]["romanised"],
        TEXT["lo"]["province"],
        DEST_REF,
        ORIGIN_REF,
        "ศคม.อบ. 7/2568",
    ]
    assert len(on_disk) > 10_000
    for text in secrets:
        assert text.encode() not in on_disk
    for opening in (lao, thai):
        assert opening.header.case_link_id not in on_disk
        assert opening.message_id not in on_disk
        assert opening.header.case_link_id.hex().encode() not in on_disk


def test_another_agency_key_cannot_open_the_store(tmp_path: Path, dsdw: AgencyIdentity) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        _open_case(store)
    other = create_agency(DESTINATION, "Same id, another key", NOW)
    with pytest.raises(StorageUnavailable, match="belongs to another agency key"):
        CaseStore(tmp_path, other)


def test_a_stored_key_wrap_altered_on_disk_is_refused(tmp_path: Path, dsdw: AgencyIdentity) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        _open_case(store)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        (name, value) = db.execute("SELECT name, value FROM meta WHERE name LIKE 'store_key:%'").fetchone()
        db.execute("UPDATE meta SET value=? WHERE name=?", (value[:-1] + bytes([value[-1] ^ 1]), name))
    with pytest.raises(StorageUnavailable, match="damaged or was altered"):
        CaseStore(tmp_path, dsdw)


def test_a_record_moved_into_another_case_does_not_open(tmp_path: Path, dsdw: AgencyIdentity) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        first = _open_case(store)
        _open_case(store, ref="ศคม.อบ. 7/2568")
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        rows = db.execute("SELECT seq, sealed FROM messages ORDER BY seq").fetchall()
        # Swap the two referrals' records (the first row of each case).
        db.execute("UPDATE messages SET sealed=? WHERE seq=?", (rows[3][1], rows[0][0]))
        db.execute("UPDATE messages SET sealed=? WHERE seq=?", (rows[0][1], rows[3][0]))
    with CaseStore(tmp_path, dsdw) as store, pytest.raises(StorageUnavailable, match="does not decrypt"):
        store.thread(first.header.case_link_id, now=NOW)


def test_a_message_deleted_from_the_file_is_noticed(tmp_path: Path, dsdw: AgencyIdentity) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        opening = _open_case(store)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("DELETE FROM messages WHERE seq=(SELECT MAX(seq) FROM messages)")
    with CaseStore(tmp_path, dsdw) as store, pytest.raises(StorageUnavailable, match="missing"):
        store.thread(opening.header.case_link_id, now=NOW)


def test_a_message_the_case_does_not_allow_is_refused_and_not_stored(
    tmp_path: Path, dsdw: AgencyIdentity
) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        opening = _open_case(store)
        link = opening.header.case_link_id
        before = store.thread(link, now=NOW)
        assert before is not None
        # The destination side does not accept its own referral.
        wrong = make(before.state, MT.ACCEPTANCE, DEST, natural=False, in_reply_to=opening.message_id)
        with pytest.raises(InvalidTransition):
            store.record_sent(wrong, now=NOW)
        assert store.thread(link, now=NOW) == before


def test_the_same_message_received_twice_changes_nothing_but_another_under_its_id_is_refused(
    tmp_path: Path, dsdw: AgencyIdentity
) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        opening = _open_case(store)
        link = opening.header.case_link_id
        thread = store.thread(link, now=NOW)
        assert thread is not None
        update = make(thread.state, MT.CASE_UPDATE, ORIG)
        once = store.record_received(update, envelope_id="ab" * 16, now=NOW)
        again = store.record_received(update, envelope_id="cd" * 16, now=NOW)
        assert once == again
        after = store.thread(link, now=NOW)
        assert after is not None
        assert len(after.messages) == len(thread.messages) + 1
        altered = replace(update, summary="ข้อความอื่น")
        assert encode_message(altered) != encode_message(update)
        with pytest.raises(InvalidTransition, match="already part of this case"):
            store.record_received(altered, envelope_id="ef" * 16, now=NOW)


def test_a_case_is_found_by_either_case_number_or_its_link_id(tmp_path: Path, dsdw: AgencyIdentity) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        opening = _open_case(store)
        link = opening.header.case_link_id
        for query in (
            DEST_REF,
            ORIGIN_REF,
            f"  {DEST_REF.replace(' ', '   ')} ",
            link.hex(),
            link.hex()[:10],
        ):
            assert store.find(query, now=NOW).case_link_id == link
        with pytest.raises(NotFound):
            store.find("ศคม.นค. 99/2568", now=NOW)


def test_a_link_id_prefix_shared_by_two_cases_is_refused_as_ambiguous(
    tmp_path: Path, dsdw: AgencyIdentity
) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        _open_case(store, link=bytes.fromhex("aaaaaaaa" + "11" * 12))
        _open_case(store, link=bytes.fromhex("aaaaaaaa" + "22" * 12), ref="ศคม.อบ. 7/2568")
        with pytest.raises(Conflict, match="several cases"):
            store.find("aaaaaaaa", now=NOW)


def test_overdue_cases_come_first_then_those_waiting_on_this_agency(
    tmp_path: Path, dsdw: AgencyIdentity
) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        overdue = _open_case(store, ref="A 1/2568")
        thread = store.thread(overdue.header.case_link_id, now=NOW)
        assert thread is not None
        request = make(thread.state, MT.INFO_REQUEST, DEST)  # due 2025-03-07, asked of the origin
        store.record_sent(request, now=NOW)
        ours = _open_case(store, ref="B 2/2568")
        thread = store.thread(ours.header.case_link_id, now=NOW)
        assert thread is not None
        store.record_received(make(thread.state, MT.CASE_UPDATE, ORIG), envelope_id="ab" * 16, now=NOW + 60)
        quiet = _open_case(store, ref="C 3/2568")
        ordered = attention_order(store.threads(now=NOW + 60), "2025-04-01")
        assert [t.case_link_id for t in ordered] == [
            overdue.header.case_link_id,
            ours.header.case_link_id,
            quiet.header.case_link_id,
        ]
        (item,) = ordered[0].open_items("2025-04-01")
        assert (item.kind, item.due_on, item.overdue, item.waiting_on) == (
            WaitingKind.ANSWER_INFO,
            "2025-03-07",
            True,
            (ORIG,),
        )
        assert not ordered[0].open_items("2025-03-07")[0].overdue


def test_a_refusal_is_kept_with_its_reason_under_its_case_or_as_unlinked(
    tmp_path: Path, dsdw: AgencyIdentity
) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        opening = _open_case(store)
        link = opening.header.case_link_id
        thread = store.thread(link, now=NOW)
        assert thread is not None
        refused = make(thread.state, MT.DECLINE, ORIG)
        why = "decline is not allowed now (case is accepted)"
        store.record_refusal(RefusedMessage("01" * 16, ORIGIN, NOW, "policy", why, refused, link))
        store.record_refusal(RefusedMessage("02" * 16, ORIGIN, NOW, "malformed", "not canonical"))
    with CaseStore(tmp_path, dsdw) as store:
        thread = store.thread(link, now=NOW)
        assert thread is not None
        (kept,) = thread.refused
        assert (kept.reason, kept.detail, kept.message) == ("policy", why, refused)
        assert [(r.envelope_id, r.reason) for r in store.unlinked_refusals()] == [("02" * 16, "malformed")]
        assert len(thread.messages) == 3


def test_a_message_whose_sealing_failed_is_taken_back(tmp_path: Path, dsdw: AgencyIdentity) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        opening = referral("th")
        store.record_sent(opening, now=NOW)
        store.discard_unsealed(opening)
        assert store.threads(now=NOW) == []
        with pytest.raises(NotFound):
            store.find(DEST_REF, now=NOW)
        sealed = _open_case(store)
        with pytest.raises(Conflict, match="already sealed"):
            store.discard_unsealed(sealed)

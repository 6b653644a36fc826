"""Case summaries in the case store: each case's row carries its summary, always equal to what a
replay of the case's thread shows, so the desk lists every case without replaying any; the
summary is sealed like every record; a store written before summaries (schema 1) opens and gets
them when first listed; rows moved, rolled back or missing messages are noticed when listing."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from clients.case_store import DATABASE_NAME, CaseStore
from clients.case_threads import CaseSummary, summarise
from keys.identity import AgencyIdentity
from keys.lifecycle import create_agency
from protocol import codec
from protocol.errors import StorageUnavailable
from protocol.referral import CasePhase, CaseState, Message, Side, open_items
from tests.case_store_v1 import LIMITS, as_schema_1, open_record, record_key
from tests.referral_fixtures import DESTINATION, MT, NOW, ORIGIN, TEXT, fresh_id, make, referral

DEST, ORIG = Side.DESTINATION, Side.ORIGIN
DAYS = ("2025-02-01", "2025-03-07", "2025-03-08", "2025-04-01", "2026-01-01")


@pytest.fixture
def dsdw() -> AgencyIdentity:
    return create_agency(DESTINATION, "Department of Social Development and Welfare", NOW)


def _received(store: CaseStore, message: Message) -> None:
    store.record_received(message, envelope_id=fresh_id().hex(), now=NOW)


def _sent(store: CaseStore, message: Message) -> None:
    store.record_sent(message, now=NOW)
    store.mark_sealed(message, fresh_id().hex())


def _referral(store: CaseStore, lang: str, ref: str) -> bytes:
    link = os.urandom(16)
    _sent(store, referral(lang, header={"case_link_id": link, "sender_case_ref": ref}))
    return link


def _state(store: CaseStore, link: bytes) -> CaseState:
    thread = store.thread(link, now=NOW)
    assert thread is not None
    return thread.state


def _cases(store: CaseStore) -> dict[str, bytes]:
    """Cases in several phases, with requests overdue or not, on either side of the case."""
    links = {"referred": _referral(store, "th", "ศคม.นค. 1/2568")}
    for name, lang in (("accepted", "lo"), ("asked", "lo"), ("asked_before", "th"), ("declined", "en")):
        link = links[name] = _referral(store, lang, f"ศคม.นค. {len(links) + 1}/2568")
        _received(store, make(_state(store, link), MT.ACKNOWLEDGEMENT, ORIG))
        if name == "asked_before":
            _received(store, make(_state(store, link), MT.INFO_REQUEST, ORIG))  # Due 2025-03-07, of us.
        elif name == "declined":
            _received(store, make(_state(store, link), MT.DECLINE, ORIG))
        else:
            _received(store, make(_state(store, link), MT.ACCEPTANCE, ORIG))
    _sent(store, make(_state(store, links["asked"]), MT.INFO_REQUEST, DEST))
    # A case the Lao side referred to this agency: here this agency is the origin side.
    theirs = os.urandom(16)
    head = {"case_link_id": theirs, "sender_agency_id": ORIGIN, "receiver_agency_id": DESTINATION}
    _received(store, referral("lo", header=head | {"sender_case_ref": "ຮສ 9/2025"}))
    links["theirs"] = theirs
    return links


def _replayed(store: CaseStore) -> list[CaseSummary]:
    return sorted((summarise(t) for t in store.threads(now=NOW)), key=lambda s: s.case_link_id)


def _listed(store: CaseStore) -> list[CaseSummary]:
    return sorted(store.summaries(now=NOW), key=lambda s: s.case_link_id)


def test_the_summaries_show_what_a_replay_of_every_thread_shows_on_every_day(
    tmp_path: Path, dsdw: AgencyIdentity
) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        links = _cases(store)
    with CaseStore(tmp_path, dsdw) as store:
        assert _listed(store) == _replayed(store)
        for name, link in links.items():
            summary, thread = store.summary(link, now=NOW), store.thread(link, now=NOW)
            assert summary is not None
            assert thread is not None
            assert summary == summarise(thread), name
            for day in DAYS:
                assert summary.items(day) == open_items(thread.state, day), (name, day)
        asked = store.summary(links["asked"], now=NOW)
        assert asked is not None
        assert asked.phase is CasePhase.ACCEPTED
        assert [i.overdue for i in asked.items("2025-03-07")] == [False]
        assert [i.overdue for i in asked.items("2025-03-08")] == [True]
        theirs = store.summary(links["theirs"], now=NOW)
        assert theirs is not None
        assert (theirs.state.local_side, theirs.partner_id) == (ORIG, ORIGIN)
        assert theirs.name_native == TEXT["lo"]["full"]
        assert store.summary(os.urandom(16), now=NOW) is None


def test_the_summary_follows_a_message_taken_back_after_sealing_failed(
    tmp_path: Path, dsdw: AgencyIdentity
) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        link = _cases(store)["accepted"]
        before = store.summary(link, now=NOW)
        question = make(_state(store, link), MT.INFO_REQUEST, DEST)
        store.record_sent(question, now=NOW + 60)
        asking = store.summary(link, now=NOW)
        assert asking is not None
        assert asking != before
        assert asking.last_activity == NOW + 60
        assert len(asking.items("2025-04-01")) == 1
        store.discard_unsealed(question)
        assert store.summary(link, now=NOW) == before
        assert _listed(store) == _replayed(store)


def test_a_schema_1_store_opens_and_gets_its_summaries_when_first_listed(
    tmp_path: Path, dsdw: AgencyIdentity
) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        links = _cases(store)
        expected = _listed(store)
    assert as_schema_1(tmp_path / DATABASE_NAME, dsdw) == len(links)
    with CaseStore(tmp_path, dsdw) as store:
        # The older rows read as before, and a message joins a case whose row is still old.
        assert store.find("ศคม.นค. 2/2568", now=NOW).case_link_id == links["accepted"]
        _received(store, make(_state(store, links["accepted"]), MT.CASE_UPDATE, ORIG))
        assert _listed(store) == _replayed(store)
        assert [s for s in _listed(store) if s.case_link_id != links["accepted"]] == [
            s for s in expected if s.case_link_id != links["accepted"]
        ]
    db = sqlite3.connect(tmp_path / DATABASE_NAME)
    with db:
        assert db.execute("SELECT value FROM meta WHERE name='schema'").fetchone() == (2,)
        key = record_key(db, dsdw)
        rows = db.execute("SELECT case_id, sealed FROM cases").fetchall()
        versions = {codec.decode(open_record(key, s, b"case\x00" + i), limits=LIMITS)[0] for i, s in rows}
    db.close()
    assert versions == {2}
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(DATABASE_NAME))
    for text in (TEXT["lo"]["full"], TEXT["th"]["full"], TEXT["lo"]["romanised"], "ศคม.นค. 2/2568"):
        assert text.encode() not in on_disk
    for link in links.values():
        assert link not in on_disk
        assert link.hex().encode() not in on_disk


def test_a_store_from_a_newer_casebridge_is_refused(tmp_path: Path, dsdw: AgencyIdentity) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        _cases(store)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE meta SET value=3 WHERE name='schema'")
    with pytest.raises(StorageUnavailable, match="another CaseBridge version"):
        CaseStore(tmp_path, dsdw)


def _tamper(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    with sqlite3.connect(path / DATABASE_NAME) as db:
        for sql, params in statements:
            db.execute(sql, params)


def test_a_case_row_moved_to_another_case_does_not_list(tmp_path: Path, dsdw: AgencyIdentity) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        _cases(store)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        (a, sealed_a), (b, sealed_b) = db.execute("SELECT case_id, sealed FROM cases LIMIT 2").fetchall()
    _tamper(
        tmp_path,
        ("UPDATE cases SET sealed=? WHERE case_id=?", (sealed_b, a)),
        ("UPDATE cases SET sealed=? WHERE case_id=?", (sealed_a, b)),
    )
    with CaseStore(tmp_path, dsdw) as store, pytest.raises(StorageUnavailable, match="does not decrypt"):
        store.summaries(now=NOW)


def test_a_case_row_rolled_back_to_an_earlier_summary_is_noticed(
    tmp_path: Path, dsdw: AgencyIdentity
) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        link = _cases(store)["accepted"]
        with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
            earlier = db.execute("SELECT case_id, sealed FROM cases").fetchall()
        _received(store, make(_state(store, link), MT.CASE_UPDATE, ORIG))
    _tamper(tmp_path, *(("UPDATE cases SET sealed=? WHERE case_id=?", (s, i)) for i, s in earlier))
    with CaseStore(tmp_path, dsdw) as store:
        with pytest.raises(StorageUnavailable, match="messages are missing"):
            store.summaries(now=NOW)
        with pytest.raises(StorageUnavailable, match="messages are missing"):
            store.summary(link, now=NOW)


def test_a_message_deleted_from_the_file_is_noticed_when_listing(
    tmp_path: Path, dsdw: AgencyIdentity
) -> None:
    with CaseStore(tmp_path, dsdw) as store:
        _cases(store)
    _tamper(tmp_path, ("DELETE FROM messages WHERE seq=(SELECT MAX(seq) FROM messages)", ()))
    with CaseStore(tmp_path, dsdw) as store, pytest.raises(StorageUnavailable, match="messages are missing"):
        store.summaries(now=NOW)

"""A broker whose stored audit log was changed behind its back (triggers dropped, rows edited)
refuses to start, or refuses to serve what was changed; and a clean stop leaves every entry,
the stop included, under a signed checkpoint."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import nacl.signing
import pytest

from broker.audit.records import AuditLogDamaged
from broker.storage.sqlite import open_sqlite_store
from protocol import auditlog
from protocol.merkle import leaf_hash
from protocol.note import Checkpoint, NoteSigner, open_checkpoint, sign_checkpoint
from protocol.tiles import decode_hash_tile, tile_path
from tests.integration.audit_harness import auditor, checkpoint_now, log_key
from tests.integration.broker_harness import ManualClock, RunningBroker, start_broker
from tests.integration.pki import Pki

ENROLLED = ("TH-ATPD", "LA-MOLSW")


async def run_once(directory: Path, pki: Pki, clock: ManualClock, *, extra_entries: int = 0) -> None:
    """Serve a broker, send a referral, stop it (which signs a last checkpoint)."""
    async with start_broker(directory, pki, clock) as broker:
        await broker.enroll(*ENROLLED)
        now = clock.now()
        for n in range(extra_entries):
            action = auditlog.OperatorAction("TH-OPERATOR", "padding", (f"n{n}",))
            await broker.store.audit.record(auditlog.encode_leaf(now, action), now)
        sealed = broker.seal("TH-ATPD", ["LA-MOLSW"])
        assert (await broker.submit("TH-ATPD", sealed)).status == 201
        await checkpoint_now(broker)
        clock.advance(10)


def tamper(directory: Path, *statements: str, params: tuple[object, ...] = ()) -> None:
    raw = sqlite3.connect(directory / "data" / "broker.sqlite3")
    try:
        with raw:
            for statement in statements[:-1]:
                raw.execute(statement)
            raw.execute(statements[-1], params)
    finally:
        raw.close()


def last_index(directory: Path) -> int:
    raw = sqlite3.connect(directory / "data" / "broker.sqlite3")
    try:
        return int(raw.execute("SELECT MAX(idx) FROM audit_log").fetchone()[0])
    finally:
        raw.close()


async def test_a_clean_stop_leaves_every_entry_under_a_signed_checkpoint(
    tmp_path: Path, pki: Pki, clock: ManualClock
) -> None:
    await run_once(tmp_path, pki, clock)
    store = await open_sqlite_store(tmp_path / "data" / "broker.sqlite3", tmp_path / "data" / "blobs", now=0)
    try:
        latest = await store.audit.latest_checkpoint()
        size = await store.audit.size()
        last = (await store.audit.leaves(size - 1, size))[0]
    finally:
        await store.close()
    assert latest is not None
    assert latest.size == size
    assert auditlog.leaf_kind(last) is auditlog.LeafKind.BROKER_STOPPED
    origin = "casebridge.th-casebridge/audit"
    key = NoteSigner(origin, pki.broker_identity().checkpoint_key).vkey
    assert open_checkpoint(latest.note, origin=origin, log_key=key).checkpoint.size == size


@pytest.mark.parametrize(
    ("statements", "reason"),
    [
        (("DROP TRIGGER audit_log_no_update", "UPDATE audit_log SET leaf = ? WHERE idx = {last}"), "leaf"),
        (
            (
                "DROP TRIGGER audit_log_no_update",
                "UPDATE audit_log SET nodes = zeroblob(length(nodes)) "
                "WHERE idx = (SELECT idx FROM audit_log ORDER BY length(nodes) DESC, idx LIMIT 1)",
            ),
            "tree",
        ),
    ],
    ids=["rewritten-recent-entry", "rewritten-tree-node"],
)
async def test_a_broker_whose_log_was_rewritten_refuses_to_start(
    tmp_path: Path, pki: Pki, clock: ManualClock, statements: tuple[str, str], reason: str
) -> None:
    await run_once(tmp_path, pki, clock)
    forged = auditlog.encode_leaf(clock.now(), auditlog.BrokerStopped("TH-CASEBRIDGE"))
    params = (forged,) if reason == "leaf" else ()
    tamper(tmp_path, statements[0], statements[1].format(last=last_index(tmp_path) - 1), params=params)
    with pytest.raises(AuditLogDamaged, match="failed its start check"):
        async with start_broker(tmp_path, pki, clock):
            pass


async def test_a_checkpoint_not_signed_by_the_brokers_key_stops_the_broker(
    tmp_path: Path, pki: Pki, clock: ManualClock
) -> None:
    await run_once(tmp_path, pki, clock)
    store = await open_sqlite_store(tmp_path / "data" / "broker.sqlite3", tmp_path / "data" / "blobs", now=0)
    try:
        head = await store.audit.tree_head()
        impostor = NoteSigner("casebridge.th-casebridge/audit", nacl.signing.SigningKey.generate())
        note = sign_checkpoint(Checkpoint(impostor.vkey.name, head.size, head.root_hash), impostor)
        await store.audit.add_checkpoint(head.size, head.root_hash, note, clock.now())
    finally:
        await store.close()
    with pytest.raises(AuditLogDamaged, match="checkpoint key"):
        async with start_broker(tmp_path, pki, clock):
            pass


async def test_a_changed_log_origin_is_refused_with_its_remedy(
    tmp_path: Path, pki: Pki, clock: ManualClock
) -> None:
    await run_once(tmp_path, pki, clock)
    with pytest.raises(AuditLogDamaged, match="log_origin"):
        async with start_broker(tmp_path, pki, clock, log_origin="casebridge.example/other"):
            pass


async def test_an_older_rewritten_entry_is_never_served_and_its_tile_exposes_it(
    tmp_path: Path, pki: Pki, clock: ManualClock
) -> None:
    await run_once(tmp_path, pki, clock, extra_entries=300)
    forged = auditlog.encode_leaf(clock.now(), auditlog.OperatorAction("TH-OPERATOR", "padding", ("forged",)))
    tamper(
        tmp_path,
        "DROP TRIGGER audit_log_no_update",
        "UPDATE audit_log SET leaf = ? WHERE idx = 5",
        params=(forged,),
    )
    async with start_broker(tmp_path, pki, clock) as broker:
        client = await auditor(broker)
        for path, query in (
            ("/v1/audit/entries", {"start": 0, "count": 10}),
            ("/v1/audit/tile/entries/000", {}),
        ):
            refused = await client.get(path, query=query)
            assert (refused.status, refused.problem["code"]) == (503, "storage_unavailable")
        assert (await client.get("/v1/audit/entries", query={"start": 6, "count": 10})).status == 200
        tile = decode_hash_tile((await client.get("/v1/audit/" + tile_path(0, 0))).body, 256)
        assert tile[5] != leaf_hash(forged)
        await verify_served_checkpoint(broker)


async def verify_served_checkpoint(broker: RunningBroker) -> None:
    reply = await broker.client("TH-ATPD").get("/v1/audit/checkpoint")
    open_checkpoint(reply.body, origin=broker.settings.audit_origin, log_key=log_key(broker))

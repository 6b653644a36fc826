"""The backup-and-restore drill of docs/operations.md, end to end with the real scripts.

A broker process serves a database set up with deploy/postgresql/roles.sql; referrals are sent
so that some wait in inboxes; deploy/postgresql/backup.sh dumps it online as the read-only
backup role; the original database is dropped; deploy/postgresql/restore.sh restores the dump
into a NEW database and checks it (the broker's start check, then `casebridge audit verify`
over the whole log). A broker started on the restored database must still deliver every
pending envelope, byte for byte. A restored log altered afterwards must fail the check.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from broker.clock import SystemClock
from keys.keystore import KDF_PROFILES, save_identity
from protocol.merkle import leaf_hash, root_from_leaf_hashes
from protocol.note import NoteSigner
from protocol.receipt import ReceiptKind
from tests.deploy.postgres_drill import (
    APP,
    BACKUP,
    DEPLOY,
    OWNER,
    Drill,
    harden,
    prepare_database,
    run_script,
)
from tests.integration.broker_harness import (
    ENVELOPE_TYPE,
    OPERATOR,
    RECEIPT_TYPE,
    TEST_PASSPHRASE,
    BrokerProcess,
)
from tests.integration.pki import Pki, Sealed, recipient_receipt, seal
from tests.postgres_server import SUPERUSER

BACKUP_SH = DEPLOY / "postgresql" / "backup.sh"
RESTORE_SH = DEPLOY / "postgresql" / "restore.sh"
AGENCIES = ("TH-ATPD", "LA-MOLSW", "LA-LWU")
LAO_DOCUMENT = ("ເອກະສານ.pdf", bytes(range(256)) * 1200)  # 300 KiB: a blob in chunks
THAI_NOTE = ("เอกสารประกอบ.pdf", "บันทึก สมชาย ใจดี".encode() * 10)  # small: inline


@pytest.fixture
def live_pki() -> Pki:
    """Certificates valid from now: the broker processes run on the real clock."""
    return Pki.create(SystemClock().now())


@pytest.fixture
async def drill() -> AsyncIterator[tuple[Drill, list[str]]]:
    """A database made by roles.sql, and a list of databases to drop afterwards."""
    made = await prepare_database()
    databases = [made.database]
    try:
        yield made, databases
    finally:
        for name in databases:
            await made.server.drop_database(name)


async def start_broker(drill: Drill, directory: Path, pki: Pki) -> BrokerProcess:
    """`casebridge broker serve` on the drill's database as casebridge_app, migrations applied
    by casebridge_owner; then roles.sql again, as after a first start."""
    process = await BrokerProcess.start(
        directory, pki, database_url=drill.url(APP), database_owner_url=drill.url(OWNER)
    )
    await harden(drill)
    return process


async def audit_leaves(drill: Drill, database: str) -> list[bytes]:
    conn = await asyncpg.connect(drill.url(SUPERUSER, database))
    try:
        return [r["leaf"] for r in await conn.fetch("SELECT leaf FROM audit_log ORDER BY idx")]
    finally:
        await conn.close()


async def send(process: BrokerProcess, pki: Pki, session: aiohttp.ClientSession, sealed: Sealed) -> None:
    sender = process.client(pki, sealed.parsed.sender_id, session)
    reply = await sender.post("/v1/envelopes", sealed.body, ENVELOPE_TYPE)
    assert reply.status == 201, reply.body


async def backup(drill: Drill, directory: Path, *keep: Path) -> Path:
    """backup.sh as casebridge_backup; the dump file it wrote."""
    with_files = [arg for path in keep for arg in ("--with", str(path))]
    done = await run_script(
        drill.server, BACKUP, BACKUP_SH, "--dir", directory, *with_files, env={"PGDATABASE": drill.database}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (written,) = directory.glob("casebridge-*")
    assert not written.name.endswith(".partial")
    sums = subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=written, check=False)
    assert sums.returncode == 0
    return written / "database.dump"


def officer_environment(pki: Pki, directory: Path) -> dict[str, str]:
    """What restore.sh needs for `casebridge audit verify`: the operator's keystore (operators
    may read the whole log) and the log's checkpoint key, as the operator publishes it."""
    keystore = directory / "operator.cbks"
    if not keystore.exists():
        save_identity(keystore, pki[OPERATOR], TEST_PASSPHRASE, KDF_PROFILES["interactive"])
    log_key = NoteSigner("casebridge.th-casebridge/audit", pki.broker_identity().checkpoint_key).vkey
    return {
        "CASEBRIDGE_BROKER_PASSPHRASE": TEST_PASSPHRASE,
        "CASEBRIDGE_KEYSTORE": str(keystore),
        "CASEBRIDGE_PASSPHRASE": TEST_PASSPHRASE,
        "CASEBRIDGE_AUDIT_LOG_KEY": log_key.encode(),
    }


async def restore(
    drill: Drill, pki: Pki, tmp_path: Path, config: Path, *args: str | Path
) -> subprocess.CompletedProcess[str]:
    return await run_script(
        drill.server, SUPERUSER, RESTORE_SH, *args, "--config", config, env=officer_environment(pki, tmp_path)
    )


async def test_a_restored_backup_verifies_and_still_delivers_every_pending_envelope(
    drill: tuple[Drill, list[str]], tmp_path: Path, live_pki: Pki
) -> None:
    database, to_drop = drill
    process = await start_broker(database, tmp_path / "broker", live_pki)
    now = SystemClock().now()
    done = seal(live_pki["TH-ATPD"], [live_pki["LA-MOLSW"]], now)
    waiting = seal(
        live_pki["TH-ATPD"],
        [live_pki["LA-MOLSW"], live_pki["LA-LWU"]],
        now,
        attachments=[LAO_DOCUMENT, THAI_NOTE],
    )
    reply = seal(live_pki["LA-MOLSW"], [live_pki["TH-ATPD"]], now)
    try:
        async with aiohttp.ClientSession() as session:
            await process.enroll(live_pki, session, *AGENCIES)
            for sealed in (done, waiting, reply):
                await send(process, live_pki, session, sealed)
            verified = recipient_receipt(live_pki["LA-MOLSW"], done, ReceiptKind.VERIFIED, now)
            lao = process.client(live_pki, "LA-MOLSW", session)
            assert (await lao.post("/v1/receipts", verified, RECEIPT_TYPE)).status == 201
        size_at_backup = len(await audit_leaves(database, database.database))
        dump = await backup(database, tmp_path / "backups", process.settings.keystore_file, process.config)
        assert (
            dump.parent / "files" / "broker.cbks"
        ).read_bytes() == process.settings.keystore_file.read_bytes()
    finally:
        assert await process.stop() == 0
    original = await audit_leaves(database, database.database)
    await database.server.drop_database(database.database)

    restored = f"{database.database}_restored"
    to_drop.append(restored)
    checked = await restore(
        database, live_pki, tmp_path, process.config, "--dump", dump, "--database", restored
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "result: VERIFIED" in checked.stdout
    assert f"restore check of {restored}: OK" in checked.stdout

    leaves = await audit_leaves(database, restored)
    assert leaves[:size_at_backup] == original[:size_at_backup]
    conn = await asyncpg.connect(database.url(SUPERUSER, restored))
    try:
        latest = await conn.fetchrow(
            "SELECT size, root_hash FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
        )
    finally:
        await conn.close()
    assert latest is not None
    assert root_from_leaf_hashes(leaf_hash(leaf) for leaf in leaves[: latest["size"]]) == latest["root_hash"]

    env = {
        "CASEBRIDGE_DATABASE_URL": database.url(APP, restored),
        "CASEBRIDGE_DATABASE_OWNER_URL": database.url(OWNER, restored),
    }
    again = await BrokerProcess.serve(process.config, tmp_path / "restored.log", env)
    try:
        async with aiohttp.ClientSession() as session:
            expected = {"LA-MOLSW": [waiting], "LA-LWU": [waiting], "TH-ATPD": [reply]}
            for agency, envelopes in expected.items():
                client = again.client(live_pki, agency, session)
                items = (await client.get("/v1/inbox")).json()["items"]
                assert [i["envelope_id"] for i in items] == [e.envelope_id.hex() for e in envelopes]
                for sealed in envelopes:
                    path = f"/v1/inbox/{sealed.envelope_id.hex()}"
                    assert (await client.get(f"{path}/header")).body == sealed.header
                    for n, part in enumerate(sealed.parts):
                        assert (await client.get(f"{path}/parts/{n}")).body == part
                    receipt = recipient_receipt(
                        live_pki[agency], sealed, ReceiptKind.VERIFIED, SystemClock().now()
                    )
                    assert (await client.post("/v1/receipts", receipt, RECEIPT_TYPE)).status == 201
            feed = (await again.client(live_pki, "TH-ATPD", session).get("/v1/receipts")).json()["items"]
            verified_ids = sorted(
                (i["envelope_id"], i["recipient_id"]) for i in feed if i["kind"] == "verified"
            )
            assert verified_ids == sorted(
                [(done.envelope_id.hex(), "LA-MOLSW")]
                + [(waiting.envelope_id.hex(), r) for r in ("LA-MOLSW", "LA-LWU")]
            )
    finally:
        assert await again.stop() == 0


async def test_a_restored_audit_log_altered_afterwards_fails_the_restore_check(
    drill: tuple[Drill, list[str]], tmp_path: Path, live_pki: Pki
) -> None:
    database, to_drop = drill
    process = await start_broker(database, tmp_path / "broker", live_pki)
    try:
        async with aiohttp.ClientSession() as session:
            await process.enroll(live_pki, session, "TH-ATPD", "LA-MOLSW")
            await send(
                process,
                live_pki,
                session,
                seal(live_pki["TH-ATPD"], [live_pki["LA-MOLSW"]], SystemClock().now()),
            )
        dump = await backup(database, tmp_path / "backups")
    finally:
        assert await process.stop() == 0
    restored = f"{database.database}_altered"
    to_drop.append(restored)
    checked = await restore(
        database, live_pki, tmp_path, process.config, "--dump", dump, "--database", restored
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    conn = await asyncpg.connect(database.url(SUPERUSER, restored))
    try:
        accepted = await conn.fetchval("SELECT min(idx) FROM audit_envelope_leaves")
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_rewrite")
        await conn.execute(
            "UPDATE audit_log SET leaf = overlay(leaf placing '\\x00'::bytea from length(leaf)) "
            "WHERE idx = $1",
            accepted,
        )
    finally:
        await conn.close()
    checked = await restore(
        database, live_pki, tmp_path, process.config, "--check-only", "--database", restored
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "FAILED: the broker did not start on the restored data" in checked.stderr
    assert "audit log failed its start check" in checked.stderr, checked.stderr


async def test_restore_refuses_to_write_into_an_existing_database(
    drill: tuple[Drill, list[str]], tmp_path: Path, live_pki: Pki
) -> None:
    database, _ = drill
    config = tmp_path / "broker.toml"
    config.write_text('broker_id = "TH-CASEBRIDGE"\n', encoding="utf-8")
    dump = tmp_path / "database.dump"
    dump.write_bytes(b"not reached")
    checked = await restore(
        database, live_pki, tmp_path, config, "--dump", dump, "--database", database.database
    )
    assert checked.returncode == 1
    assert f"database {database.database} already exists" in checked.stderr

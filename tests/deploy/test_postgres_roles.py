"""deploy/postgresql/roles.sql on a real server: the broker's login role and the backup role
are refused every rewrite of the log tables by privilege (before any trigger), the owner by
the triggers, and the script can be run again at any time. Also the compose file's database
init script, which runs roles.sql and sets the passwords from the secrets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from broker.storage.postgresql.database import migrate
from tests.deploy.postgres_drill import (
    APP,
    BACKUP,
    DEPLOY,
    OWNER,
    ROLES_SQL,
    Drill,
    harden,
    prepare_database,
    run_script,
)
from tests.integration.storage_engines import START_TIME
from tests.postgres_server import SUPERUSER, shared_server

COMPOSE_INIT = DEPLOY / "postgresql" / "compose" / "10-casebridge-roles.sh"

REWRITES = (
    "UPDATE audit_log SET recorded_at = 0",
    "DELETE FROM audit_nodes",
    "TRUNCATE audit_checkpoints",
    "DELETE FROM receipts",
    "UPDATE certificates SET agency_id = 'TH-ATPD'",
    "DELETE FROM revocation_lists",
)


@pytest.fixture
async def migrated() -> AsyncIterator[Drill]:
    """A database made by roles.sql, migrated by its owner, then roles.sql again."""
    made = await prepare_database()
    try:
        await migrate(made.url(OWNER), START_TIME)
        await harden(made)
        yield made
    finally:
        await made.server.drop_database(made.database)


async def refusal(drill: Drill, role: str, statement: str) -> type[BaseException] | None:
    conn = await asyncpg.connect(drill.url(role))
    try:
        await conn.execute(statement)
    except asyncpg.PostgresError as e:
        return type(e)
    finally:
        await conn.close()
    return None


@pytest.mark.parametrize("statement", REWRITES)
async def test_the_broker_login_role_may_not_rewrite_a_log_table(migrated: Drill, statement: str) -> None:
    assert await refusal(migrated, APP, statement) is asyncpg.InsufficientPrivilegeError


@pytest.mark.parametrize("statement", REWRITES)
async def test_the_backup_role_may_not_rewrite_a_log_table(migrated: Drill, statement: str) -> None:
    assert await refusal(migrated, BACKUP, statement) is asyncpg.InsufficientPrivilegeError


async def test_the_owner_is_stopped_by_the_triggers(migrated: Drill) -> None:
    conn = await asyncpg.connect(migrated.url(OWNER))
    try:
        await conn.execute("INSERT INTO audit_log (idx, leaf, recorded_at) VALUES (0, '\\x00', 0)")
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute("UPDATE audit_log SET recorded_at = 1")
        with pytest.raises(asyncpg.RestrictViolationError):
            await conn.execute("TRUNCATE audit_nodes")
    finally:
        await conn.close()


async def test_the_broker_role_may_append_and_the_backup_role_may_only_read(migrated: Drill) -> None:
    app = await asyncpg.connect(migrated.url(APP))
    backup = await asyncpg.connect(migrated.url(BACKUP))
    try:
        await app.execute("INSERT INTO audit_log (idx, leaf, recorded_at) VALUES (0, '\\x01', 0)")
        assert await backup.fetchval("SELECT count(*) FROM audit_log") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await backup.execute("INSERT INTO audit_log (idx, leaf, recorded_at) VALUES (1, '\\x02', 0)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute("CREATE TABLE smuggled (x int)")
    finally:
        await app.close()
        await backup.close()


async def test_no_casebridge_role_is_privileged(migrated: Drill) -> None:
    conn = await asyncpg.connect(migrated.server.dsn())
    try:
        rows = await conn.fetch(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles "
            "WHERE rolname = ANY($1::text[])",
            ["casebridge_owner", "casebridge_broker", APP, BACKUP],
        )
        members = await conn.fetchval(
            "SELECT array_agg(m.rolname::text) FROM pg_auth_members a "
            "JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member "
            "WHERE r.rolname = 'casebridge_broker'"
        )
    finally:
        await conn.close()
    assert len(rows) == 4
    assert not any(any(row[1:]) for row in rows)
    assert APP in members


async def test_the_compose_init_script_creates_the_database_and_sets_each_password(tmp_path: Path) -> None:
    server = await asyncio.to_thread(shared_server)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for role in (OWNER, APP, BACKUP):
        (secrets / f"{role}_password").write_text(f"ລະຫັດ-{role}-รหัส\n", encoding="utf-8")
    env = {
        "POSTGRES_USER": SUPERUSER,
        "CASEBRIDGE_ROLES_SQL": str(ROLES_SQL),
        "CASEBRIDGE_SECRETS_DIR": str(secrets),
    }
    try:
        done = await run_script(server, SUPERUSER, COMPOSE_INIT, env=env)
        assert done.returncode == 0, done.stderr
        conn = await asyncpg.connect(server.dsn())
        try:
            owner = await conn.fetchval(
                "SELECT r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                "WHERE d.datname = 'casebridge'"
            )
            passwords = await conn.fetch(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1::text[])",
                [OWNER, APP, BACKUP],
            )
        finally:
            await conn.close()
        assert owner == OWNER
        assert len(passwords) == 3
        assert all(
            row["rolpassword"] and row["rolpassword"].startswith("SCRAM-SHA-256$") for row in passwords
        )
        (secrets / f"{APP}_password").unlink()
        missing = await run_script(server, SUPERUSER, COMPOSE_INIT, env=env)
        assert missing.returncode == 1
        assert f"no password for {APP}" in missing.stderr
    finally:
        await server.drop_database("casebridge")
        await server.execute("; ".join(f"ALTER ROLE {role} PASSWORD NULL" for role in (OWNER, APP, BACKUP)))

"""What the deploy/postgresql drills share: a database set up with deploy/postgresql/roles.sql on
the session's throwaway server, a broker process serving it as an operator runs it, and the
deploy scripts run as real subprocesses with libpq's environment.

- `prepare_database()` creates a database and the production roles with `roles.sql`
  (casebridge_owner, casebridge_app in casebridge_broker, casebridge_backup); `harden()` runs
  it again after the first start created the tables, as docs/operations.md says.
- `run_script(...)` runs a deploy script with PGHOST/PGPORT pointing at the throwaway server,
  the PostgreSQL client programs of that server and the venv's `casebridge` first on PATH,
  and no CASEBRIDGE_* or PG* variable inherited from the test run.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.postgres_server import SUPERUSER, PostgresServer, find_binaries, shared_server

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ROLES_SQL = DEPLOY / "postgresql" / "roles.sql"
OWNER, APP, BACKUP = "casebridge_owner", "casebridge_app", "casebridge_backup"
SCRIPT_TIMEOUT_SECONDS = 300
_numbers = itertools.count()


@dataclass(frozen=True)
class Drill:
    server: PostgresServer
    database: str

    def url(self, role: str, database: str | None = None) -> str:
        return self.server.dsn(database or self.database, role)


def script_environment(
    server: PostgresServer, user: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CASEBRIDGE_", "PG"))}
    path = [str(find_binaries()), str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")]
    env |= {
        "PATH": os.pathsep.join(path),
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGUSER": user,
    }
    return env | dict(extra or {})


async def run_script(
    server: PostgresServer, user: str, *args: str | Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command (a deploy script, psql) as `user` on the server; never raises on failure."""
    return await asyncio.to_thread(
        subprocess.run,
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_SECONDS,
        env=script_environment(server, user, env),
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def apply_roles(server: PostgresServer, database: str) -> None:
    done = await run_script(
        server, SUPERUSER, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", f"dbname={database}",
        "-d", "postgres", "-f", ROLES_SQL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


async def prepare_database() -> Drill:
    """A new database made by roles.sql (with its roles) on the session's server."""
    server = await asyncio.to_thread(shared_server)
    database = f"casebridge_drill_{next(_numbers)}_{os.getpid()}"
    await apply_roles(server, database)
    return Drill(server, database)


async def harden(drill: Drill) -> None:
    """roles.sql again, once the broker's migrations created the tables."""
    await apply_roles(drill.server, drill.database)

"""A throwaway PostgreSQL server for tests: initdb into a temporary directory, loopback only.

- The server binaries are found on PATH or in /usr/lib/postgresql/*/bin (newest first). When
  they are missing, tests that need PostgreSQL are skipped with the reason, except in CI
  (`CI=true`), where that is a failure: CI must run them.
- The server listens on 127.0.0.1 at a free port, with its unix socket inside the temporary
  directory, and trusts loopback connections (it holds only test data and lives as long as
  the test session).
- PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
  `postgres` user (or `nobody`) through `runuser`; its directory is handed to that user.
- Durability settings are relaxed (`fsync=off`): the tests check what the broker does with
  committed and refused transactions and with restarts, not the host's disks. Benchmarks start
  it with `durable=True` (`fsync=on`, `synchronous_commit=on`, full page writes), as in production.
- One server per test session (`shared_server`), stopped and removed at exit; each test gets
  its own database (`create_database`), dropped when done.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

SUPERUSER = "casebridge_admin"
SERVER_USERS = ("postgres", "nobody")
COMMAND_TIMEOUT_SECONDS = 120
START_ATTEMPTS = 3


class PostgresMissing(Exception):
    """No PostgreSQL server binaries on this machine."""


def find_binaries() -> Path:
    """The directory holding initdb and pg_ctl."""
    on_path = shutil.which("initdb")
    if on_path is not None and shutil.which("pg_ctl") is not None:
        return Path(on_path).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
        reverse=True,
    )
    for found in candidates:
        directory = Path(found).parent
        if (directory / "pg_ctl").exists():
            return directory
    raise PostgresMissing(
        "PostgreSQL server binaries (initdb, pg_ctl) are not on PATH nor in /usr/lib/postgresql/*/bin; "
        "install them (Debian: apt-get install postgresql) to run the PostgreSQL tests."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """The account to run the server as: None when not root (it runs as us)."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresMissing("running as root, and neither a 'postgres' nor a 'nobody' account exists")


@dataclass
class PostgresServer:
    """One running server. `dsn(database, user)` for connections; `restart()` as an operator."""

    binaries: Path
    root: Path
    port: int
    user: pwd.struct_passwd | None
    durable: bool = False

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.binaries / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user.pw_name, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS, cwd=self.root
        )
        if done.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}\n{log}")
        return done

    def _options(self) -> str:
        return " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.socket_dir}",
                *(
                    ("-c fsync=on", "-c synchronous_commit=on", "-c full_page_writes=on")
                    if self.durable
                    else ("-c fsync=off", "-c full_page_writes=off")
                ),
                "-c max_connections=300",
                "-c shared_buffers=64MB",
            ]
        )

    @classmethod
    def start(cls, *, durable: bool = False) -> PostgresServer:
        binaries = find_binaries()
        user = _server_user()
        root = Path(tempfile.mkdtemp(prefix="casebridge-pg-"))
        server = cls(binaries, root, _free_port(), user, durable)
        server.socket_dir.mkdir()
        if user is not None:
            for path in (root, server.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        try:
            server._run(
                "initdb", "-D", str(server.data_dir), "-U", SUPERUSER, "--auth=trust",
                "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
            )  # fmt: skip
            for attempt in range(START_ATTEMPTS):
                try:
                    server._pg_ctl_start()
                    break
                except RuntimeError:
                    if attempt == START_ATTEMPTS - 1:
                        raise
                    server.port = _free_port()
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return server

    def _pg_ctl_start(self) -> None:
        self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.log_file),
            "-o", self._options(),
        )  # fmt: skip

    def restart(self) -> None:
        """Stop the server (fast: every connection is cut) and start it again on the same port.
        (`pg_ctl restart` would leave the server attached to our output pipes.)"""
        self.stop_for_a_while()
        self.start_again()

    def stop_for_a_while(self) -> None:
        """Stop the server (fast); `start_again` brings it back on the same port."""
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data_dir))

    def start_again(self) -> None:
        self._pg_ctl_start()

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "immediate", "-D", str(self.data_dir))
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    async def execute(self, sql: str, database: str = "postgres") -> None:
        """Run statements as the superuser."""
        conn = await asyncpg.connect(self.dsn(database))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_database(self) -> str:
        """A new empty database; its name."""
        name = f"casebridge_test_{next(_database_numbers)}_{os.getpid()}"
        await self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING UTF8')
        return name

    async def drop_database(self, name: str) -> None:
        await self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_database_numbers = itertools.count()
_shared: PostgresServer | None = None
_shared_lock = threading.Lock()


def unavailable(reason: str) -> None:
    """Skip the calling test, or fail it in CI, where PostgreSQL must be present."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def shared_server() -> PostgresServer:
    """The session's server, started on first use (skips or fails the test when impossible)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            try:
                _shared = PostgresServer.start()
            except PostgresMissing as e:
                unavailable(str(e))
                raise AssertionError("unreachable") from e
            atexit.register(stop_shared_server)
        return _shared


def stop_shared_server() -> None:
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.stop()
            _shared = None

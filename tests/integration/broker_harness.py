"""Real brokers for tests, on 127.0.0.1 only.

- `start_broker(...)`: the app from `broker.app.create_app` served in this process over a real
  socket, with an injected clock (move time with `ManualClock.advance`, then `sweep()`).
- `BrokerProcess.start(...)`: `casebridge broker serve` as a separate process with the real
  clock, as an operator runs it; stop it with SIGTERM (`stop`) or kill it (`kill`) for crash tests.

Both register the bootstrap operator offline (as `casebridge broker register-certificate`
does); `RunningBroker.enroll` registers agencies over HTTP, as the operator and the agencies
would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from broker import admin
from broker.app import create_app
from broker.clock import Clock, SystemClock
from broker.service.retention import SweepReport
from broker.settings import Settings, from_values, load_settings, to_toml
from broker.storage.interfaces import Store
from broker.storage.sqlite import open_sqlite_store
from broker.web.state import HANDLERS, Handlers
from keys.identity import AgencyIdentity
from keys.keystore import KDF_PROFILES, save_identity
from tests.integration.pki import Pki, Sealed, seal
from tests.integration.signed_http import Reply, SignedClient

ENVELOPE_TYPE = "application/vnd.casebridge.envelope"
CERTIFICATE_TYPE = "application/vnd.casebridge.certificate"
ENCRYPTION_KEY_TYPE = "application/vnd.casebridge.encryption-key"
REVOCATION_LIST_TYPE = "application/vnd.casebridge.revocation-list"
RECEIPT_TYPE = "application/vnd.casebridge.receipt"
RECEIPT_BATCH_TYPE = "application/vnd.casebridge.receipt-batch"
OPERATOR = "TH-OPERATOR"
TEST_PASSPHRASE = "ทดสอบ-ລະຫັດ-passphrase"
START_TIMEOUT_SECONDS = 60.0


BrokerFactory = Callable[..., AbstractAsyncContextManager["RunningBroker"]]
"""The `broker_factory` fixture: `async with broker_factory(enroll=(...), **settings) as broker`."""


class ManualClock:
    """A clock tests move by hand (implements `broker.clock.Clock`)."""

    def __init__(self, start: int) -> None:
        self.time = start

    def now(self) -> int:
        return self.time

    def advance(self, seconds: int) -> int:
        self.time += seconds
        return self.time


def broker_settings(directory: Path, pki: Pki, port: int, **overrides: object) -> Settings:
    """Settings for a broker in `directory` (roots written there) listening on 127.0.0.1:port."""
    roots = pki.write_roots(directory / "roots")
    values: dict[str, object] = {
        "broker_id": pki.broker_identity().broker_id,
        "data_dir": str(directory / "data"),
        "root_cert_files": [str(p) for p in roots],
        "keystore_file": str(directory / "broker.cbks"),
        "listen_host": "127.0.0.1",
        "listen_port": port,
        "retention_interval_seconds": 3600,
        **overrides,
    }
    return from_values(values, base_dir=directory, environ={})


async def enroll(client_for: Callable[[str], SignedClient], pki: Pki, agency_ids: Sequence[str]) -> None:
    """As the operator, register each agency's certificate; as each agency, its encryption keys."""
    operator = client_for(OPERATOR)
    for agency_id in agency_ids:
        identity = pki[agency_id]
        assert identity.certificate is not None
        reply = await operator.post("/v1/directory/certificates", identity.certificate.raw, CERTIFICATE_TYPE)
        assert reply.status in (200, 201), reply.body
        for key in identity.encryption_keys:
            reply = await client_for(agency_id).post(
                "/v1/directory/encryption-keys", key.statement.raw, ENCRYPTION_KEY_TYPE
            )
            assert reply.status in (200, 201), reply.body


@dataclass
class RunningBroker:
    """A broker serving on 127.0.0.1, with what tests need to drive and inspect it."""

    url: str
    settings: Settings
    clock: Clock
    pki: Pki
    store: Store
    registry: CollectorRegistry
    session: aiohttp.ClientSession
    app: web.Application | None = None
    enrolled: set[str] = field(default_factory=set)

    @property
    def handlers(self) -> Handlers:
        """The app's services (retention, directory, notifier, ...); brokers served in this
        process only."""
        if self.app is None:
            raise AssertionError("this broker runs in another process")
        return self.app[HANDLERS]

    def client(self, agency: str | AgencyIdentity | None) -> SignedClient:
        """Requests signed by an agency of the PKI (by id or identity), or unsigned (None)."""
        identity = self.pki[agency] if isinstance(agency, str) else agency
        key = None if identity is None else identity.signing_key
        return SignedClient(self.session, self.url, self.settings.authority, key, self.clock.now)

    async def enroll(self, *agency_ids: str) -> None:
        """Register certificates through the operator and encryption keys through each agency."""
        await enroll(self.client, self.pki, agency_ids)
        self.enrolled.update(agency_ids)

    def seal(self, sender: str, recipients: Sequence[str], **kwargs: Any) -> Sealed:
        """Seal a referral from `sender` to `recipients` at the broker's now (see `pki.seal`)."""
        return seal(self.pki[sender], [self.pki[r] for r in recipients], self.clock.now(), **kwargs)

    async def submit(self, sender: str, sealed: Sealed) -> Reply:
        return await self.client(sender).post("/v1/envelopes", sealed.body, ENVELOPE_TYPE)

    async def sweep(self) -> SweepReport:
        return await self.handlers.retention.sweep()


@asynccontextmanager
async def start_broker(
    directory: Path,
    pki: Pki,
    clock: Clock,
    *,
    bootstrap: Sequence[str] = (OPERATOR,),
    store: Store | None = None,
    **overrides: object,
) -> AsyncIterator[RunningBroker]:
    """Serve a broker in this process on 127.0.0.1 (an ephemeral port). `store` replaces the
    default SQLite store in `directory/data` (the caller then closes it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = broker_settings(directory, pki, port, **overrides)
    own_store = store is None
    opened = store or await open_sqlite_store(settings.database_file, settings.blob_dir, now=clock.now())
    runner: web.AppRunner | None = None
    session = aiohttp.ClientSession()
    try:
        for agency_id in bootstrap:
            cert = pki[agency_id].certificate
            assert cert is not None
            await admin.register_certificate(settings, opened, cert.raw, clock.now())
        registry = CollectorRegistry()
        app = create_app(
            settings, store=opened, clock=clock, registry=registry, broker_identity=pki.broker_identity()
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        yield RunningBroker(f"http://127.0.0.1:{port}", settings, clock, pki, opened, registry, session, app)
    finally:
        await session.close()
        if runner is not None:
            await runner.cleanup()
        if own_store:
            await opened.close()
        sock.close()


@dataclass
class BrokerProcess:
    """`casebridge broker serve` in its own process (real clock, real signals)."""

    process: asyncio.subprocess.Process
    url: str
    settings: Settings
    config: Path
    log_file: Path

    @property
    def authority(self) -> str:
        return self.url.split("://", 1)[1]

    @classmethod
    async def start(
        cls, directory: Path, pki: Pki, *, bootstrap: Sequence[str] = (OPERATOR,), **overrides: object
    ) -> BrokerProcess:
        """Write a data directory (keystore, roots, settings), register the bootstrap operator
        offline, and start serving from it on an ephemeral port."""
        directory.mkdir(parents=True, exist_ok=True)
        settings = broker_settings(directory, pki, 0, **overrides)
        config = directory / "broker.toml"
        save_identity(
            settings.keystore_file, pki.broker_identity(), TEST_PASSPHRASE, KDF_PROFILES["interactive"]
        )
        table: dict[str, object] = {
            "broker_id": settings.broker_id,
            "data_dir": str(settings.data_dir),
            "root_cert_files": [str(p) for p in settings.root_cert_files],
            "keystore_file": str(settings.keystore_file),
            "listen_port": 0,
            "retention_interval_seconds": settings.retention_interval_seconds,
            **overrides,
        }
        config.write_text(to_toml(table), encoding="utf-8")
        now = SystemClock().now()
        async with admin.opened_store(settings, now) as store:
            for agency_id in bootstrap:
                cert = pki[agency_id].certificate
                assert cert is not None
                await admin.register_certificate(settings, store, cert.raw, now)
        return await cls.serve(config, directory / "broker.log")

    @classmethod
    async def serve(cls, config: Path, log_file: Path, env: Mapping[str, str] | None = None) -> BrokerProcess:
        """Start `casebridge broker serve --config CONFIG`; returns once it printed its URL."""
        environment = {**os.environ, "CASEBRIDGE_BROKER_PASSPHRASE": TEST_PASSPHRASE, **(env or {})}
        with log_file.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "casebridge", "broker", "serve", "--config", str(config),
                stdout=asyncio.subprocess.PIPE, stderr=log, env=environment,
            )  # fmt: skip
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        if not line:
            await process.wait()
            raise AssertionError(f"the broker exited ({process.returncode}): {log_file.read_text()[-3000:]}")
        return cls(process, line.decode().strip(), load_settings(config, environ={}), config, log_file)

    def client(self, pki: Pki, agency: str | None, session: aiohttp.ClientSession) -> SignedClient:
        key = None if agency is None else pki[agency].signing_key
        return SignedClient(session, self.url, self.authority, key, SystemClock().now)

    async def enroll(self, pki: Pki, session: aiohttp.ClientSession, *agency_ids: str) -> None:
        await enroll(lambda agency: self.client(pki, agency, session), pki, agency_ids)

    async def stop(self, timeout_seconds: float = 30.0) -> int:
        """SIGTERM, then wait for a graceful exit; returns the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout_seconds)

    async def kill(self) -> int:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.process.returncode is None:
            self.process.kill()
        return await self.process.wait()

    async def close(self) -> None:
        """Stop it whatever state it is in (for fixtures' teardown)."""
        with contextlib.suppress(ProcessLookupError, TimeoutError):
            await self.stop(10.0)
        await self.kill()

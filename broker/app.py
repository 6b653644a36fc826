"""The broker's aiohttp application factory.

`create_app(settings, *, store, clock, registry, broker_identity)` builds one app with no global
state: the store (opened and closed by the caller), the clock, the Prometheus registry and the
broker's unlocked identity are passed in. Startup (in `cleanup_ctx`) first checks the stored
audit log against its last checkpoint (refusing to start if they disagree) and starts the
checkpointer (`broker.audit.service`), then loads the directory,
checks the broker's own certificate against the configured roots, removes unreferenced blob
files (before anything is served), audits the start, and runs the retention task (and, on a
database shared with other replicas, follows their changes); the checkpointer and retention run
their rounds only on the replica that leads them (`broker.leadership`), the start checks on
every replica. Cleanup stops the tasks and audits the stop. Middlewares, outermost first:
request id and problem details, then authentication, limits and timeouts (`broker.web.auth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from broker.audit.service import AuditLogService
from broker.clock import Clock
from broker.leadership import CHECKPOINTER, leading
from broker.metrics import BrokerMetrics
from broker.service.context import BrokerSigner, Services
from broker.service.directory import Directory
from broker.service.notify import Notifier
from broker.service.replicas import follow_replicas
from broker.settings import Settings
from broker.storage.interfaces import Store
from broker.web import audit_routes, delivery_routes, directory_routes, events, operations
from broker.web.auth import auth_middleware
from broker.web.drain import Drain
from broker.web.problems import add_request_id, problems_middleware
from broker.web.state import DRAIN, HANDLERS, WEBSOCKETS, Handlers, OpenSockets
from keys.files import read_bytes
from keys.identity import BrokerIdentity
from protocol import auditlog
from protocol.certificate import RootCertificate, TrustStore
from protocol.errors import CaseBridgeError, ConfigError

log = logging.getLogger("casebridge.broker")


def software_version() -> str:
    try:
        return importlib.metadata.version("casebridge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def load_roots(settings: Settings) -> list[RootCertificate]:
    """The national root certificates this broker trusts (`root_cert_files`)."""
    roots = []
    for path in settings.root_cert_files:
        try:
            roots.append(RootCertificate.parse(read_bytes(path)))
        except CaseBridgeError as e:
            raise ConfigError(f"root certificate {path}: {e.detail}") from e
    return roots


def create_app(
    settings: Settings,
    *,
    store: Store,
    clock: Clock,
    registry: CollectorRegistry,
    broker_identity: BrokerIdentity,
) -> web.Application:
    if broker_identity.broker_id != settings.broker_id:
        raise ConfigError(
            f"the keystore is broker {broker_identity.broker_id} but broker_id is {settings.broker_id}; "
            "give the matching keystore_file or correct broker_id."
        )
    roots = load_roots(settings)
    services = Services(
        settings=settings,
        store=store,
        clock=clock,
        directory=Directory(roots, store.directory),
        notifier=Notifier(),
        metrics=BrokerMetrics(registry),
        signer=BrokerSigner.from_identity(broker_identity),
    )
    services.metrics.watch_certificates(
        broker=services.signer.certificate,
        roots=roots,
        agencies=services.directory.certificates,
        now=clock.now,
    )
    app = web.Application(
        middlewares=[problems_middleware, auth_middleware], client_max_size=settings.max_request_body_bytes
    )
    app[HANDLERS] = Handlers.build(services)
    app[WEBSOCKETS] = OpenSockets()
    app[DRAIN] = Drain()
    app[audit_routes.AUDIT] = AuditLogService(settings, store, clock, broker_identity, registry)
    for module in (directory_routes, delivery_routes, events, operations, audit_routes):
        module.add_routes(app)
    app.on_response_prepare.append(add_request_id)
    app.on_shutdown.append(_wake_long_polls)
    app.on_shutdown.append(events.close_websockets)
    app.cleanup_ctx.append(_audit_log)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _audit_log(app: web.Application) -> AsyncIterator[None]:
    """Before anything else: check the stored audit log (refusing to start if it disagrees with
    its last checkpoint), then run the checkpointer (signing while this replica leads it);
    after everything else: a last checkpoint."""
    s = app[HANDLERS].services
    async with (
        leading(CHECKPOINTER, s.store.shared, s.metrics.leader) as leader,
        app[audit_routes.AUDIT].running(leader),
    ):
        yield


async def _wake_long_polls(app: web.Application) -> None:
    app[HANDLERS].services.notifier.close()


async def drain(app: web.Application, timeout_seconds: float) -> bool:
    """Stop taking requests, wake long polls, close WebSockets, and wait for the requests in
    flight to finish (uploads included). True if all finished within the timeout."""
    app[DRAIN].start()
    await _wake_long_polls(app)
    await events.close_websockets(app)
    return await app[DRAIN].wait_idle(timeout_seconds)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    h = app[HANDLERS]
    s = h.services
    now = s.clock.now()
    TrustStore(s.directory.roots).verify_agency(s.signer.certificate, now)
    await s.directory.load(now)
    await s.directory.record_own_certificate(s.signer.certificate, now)
    await h.retention.sweep_orphans()
    key_id = s.signer.certificate.key_id
    audit = app[audit_routes.AUDIT]
    started = auditlog.BrokerStarted(
        s.signer.broker_id,
        key_id,
        audit.log_key.encode(),
        tuple(sorted(w.vkey.encode() for w in s.settings.witnesses)),
        software_version(),
    )
    await s.store.audit.record(auditlog.encode_leaf(now, started), now)
    counts = await s.store.delivery.counts()
    s.metrics.inbox_depth.set(counts.open_inbox_entries)
    s.metrics.audit_entries.set(counts.audit_entries)
    retention = asyncio.create_task(h.retention.run(), name="casebridge-retention")
    shared = s.store.shared
    replicas = None if shared is None else asyncio.create_task(follow_replicas(s, shared.changes()))
    log.info("broker_started", extra={"broker_id": s.signer.broker_id, "agencies": counts.agencies})
    try:
        yield
    finally:
        for task in (retention, replicas):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        stopped = s.clock.now()
        try:
            leaf = auditlog.encode_leaf(stopped, auditlog.BrokerStopped(s.signer.broker_id))
            await s.store.audit.record(leaf, stopped)
        except CaseBridgeError as e:
            log.error("broker_stop_not_audited", extra={"reason": e.reason})
        log.info("broker_stopped", extra={"broker_id": s.signer.broker_id})

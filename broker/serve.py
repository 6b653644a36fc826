"""Running the broker: bind, serve, stop gracefully on SIGTERM or SIGINT.

Invariants:
- The socket is bound before the app is built, so with `listen_port = 0` the authority clients
  sign is the port actually bound.
- Startup (directory, orphan sweep, audit entry) finishes before the listening URL is printed:
  a supervisor that waits for that one line knows the broker is serving.
- On SIGTERM or SIGINT the broker stops accepting connections, answers new requests on open
  ones with 503, wakes long polls, closes WebSockets, lets requests in flight finish (uploads
  included, up to `shutdown_timeout_seconds`), audits the stop, then closes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import ssl
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from broker.app import create_app, drain
from broker.clock import Clock
from broker.settings import Settings
from broker.storage.factory import open_store
from keys.identity import BrokerIdentity
from protocol.errors import ConfigError

log = logging.getLogger("casebridge.broker")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}. Choose another listen_port.") from e
    return sock


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"cannot load the TLS certificate or key: {e}. Check tls_cert_file and tls_key_file."
        ) from e
    return context


def _url(settings: Settings, port: int) -> str:
    host = settings.listen_host
    shown = f"[{host}]" if ":" in host else host
    return f"{settings.scheme}://{shown}:{port}"


async def serve(
    settings: Settings, identity: BrokerIdentity, clock: Clock, *, announce: Callable[[str], None] = print
) -> None:
    """Serve until SIGTERM or SIGINT; `announce` gets the listening URL once serving."""
    context = tls_context(settings)
    sock = bind(settings.listen_host, settings.listen_port)
    port = sock.getsockname()[1]
    if settings.listen_port != port:
        settings = dataclasses.replace(settings, listen_port=port)
    store = await open_store(settings, now=clock.now())
    try:
        app = create_app(
            settings, store=store, clock=clock, registry=CollectorRegistry(), broker_identity=identity
        )
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=float(settings.shutdown_timeout_seconds)
        )
        await runner.setup()
        try:
            site = web.SockSite(runner, sock, ssl_context=context)
            await site.start()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            log.info("broker_listening", extra={"url": _url(settings, port), "authority": settings.authority})
            announce(_url(settings, port))
            await stop.wait()
            log.info("broker_stopping")
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await site.stop()
            if not await drain(app, float(settings.shutdown_timeout_seconds)):
                log.warning("broker_stopped_with_requests_in_flight")
        finally:
            await runner.cleanup()
    finally:
        await store.close()
        with contextlib.suppress(OSError):
            sock.close()

"""The witness over HTTP: `POST /add-checkpoint` (c2sp.org/tlog-witness), served by aiohttp.

Invariants:
- Checking a request against the recorded state and persisting the new record happen under one
  lock, and the record is on disk (fsynced) before the cosignature is sent: two racing requests
  can never roll the witness back (the race the specification warns about).
- Bodies above `MAX_BODY_BYTES` are refused before they are read whole.
- It binds 127.0.0.1 unless told otherwise; put a TLS reverse proxy in front to publish it.
- Each answer is logged as one line (origin, status, reason); refusals of validly signed but
  inconsistent checkpoints are also kept as evidence (`witness_state`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import socket
from collections.abc import Callable
from contextlib import suppress

from aiohttp import web

from clients.audit.witness import MAX_BODY_BYTES, Witness, WitnessAnswer
from clients.audit.witness_state import WitnessState

log = logging.getLogger("casebridge.witness")
Clock = Callable[[], int]


class WitnessService:
    """One witness, its state directory and its clock; serialises every add-checkpoint."""

    def __init__(self, witness: Witness, state: WitnessState, clock: Clock) -> None:
        self.witness = witness
        self.state = state
        self.clock = clock
        self._lock = asyncio.Lock()

    async def add_checkpoint(self, body: bytes) -> WitnessAnswer:
        async with self._lock:
            now = self.clock()
            answer = self.witness.add_checkpoint(body, self.state.records, now)
            if answer.record is not None and answer.origin is not None:
                records = {**self.state.records, answer.origin: answer.record}
                await asyncio.to_thread(self.state.save, records)
            if answer.evidence:
                entry = {
                    "origin": answer.origin,
                    "reason": answer.reason,
                    "received_at": now,
                    "request": base64.b64encode(body).decode("ascii"),
                }
                await asyncio.to_thread(self.state.record_evidence, entry)
        log.info("witness_answer origin=%s status=%s reason=%s", answer.origin, answer.status, answer.reason)
        return answer


SERVICE = web.AppKey("witness_service", WitnessService)


async def add_checkpoint(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return web.Response(status=413, text="request body too large\n")
    body = await request.read()
    answer = await request.app[SERVICE].add_checkpoint(body)
    return web.Response(status=answer.status, body=answer.body, headers={"Content-Type": answer.content_type})


def create_witness_app(service: WitnessService) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SERVICE] = service
    app.router.add_post("/add-checkpoint", add_checkpoint)
    return app


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(
    service: WitnessService,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    announce: Callable[[str], None] = print,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT (or `stop` is set); `announce` gets the URL once listening."""
    sock = bind(host, port)
    runner = web.AppRunner(create_witness_app(service), access_log=None)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        shown = f"[{host}]" if ":" in host else host
        announce(f"http://{shown}:{sock.getsockname()[1]}")
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        await runner.cleanup()
        sock.close()

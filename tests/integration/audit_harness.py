"""Helpers for the audit-log tests: reach a running broker's audit log, and verify what it serves
with `protocol` alone, as an officer's verifier would (nothing here trusts the broker).

- `audit_of(broker)`: the in-process broker's `AuditLogService` (checkpointer, store).
- `auditor(broker)`: a client signing as LA-AUDITOR (registered by the operator on first use).
- `log_key(broker)`: the checkpoint verifier key, rebuilt from the broker identity's public key.
- `checkpoint_now(broker)`: sign a checkpoint over every entry appended so far.
- `fetch_checkpoint(client, broker)`: GET the checkpoint and verify it (`SignedCheckpoint`).
- `fetch_entries(client)`: every published entry through `/v1/audit/entries`.
- `TestWitness`: a minimal c2sp.org/tlog-witness served on 127.0.0.1, built on protocol.note and
  protocol.merkle, that records what it cosigned and can be told to refuse.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import nacl.signing
from aiohttp import web

from broker.audit.records import StoredCheckpoint
from broker.audit.service import AuditLogService
from broker.web.audit_routes import AUDIT
from protocol.errors import CaseBridgeError
from protocol.merkle import verify_consistency
from protocol.note import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    NoteSigner,
    SignedCheckpoint,
    VerifierKey,
    cosign_checkpoint,
    open_checkpoint,
)
from protocol.primitives import system_random
from tests.integration.broker_harness import CERTIFICATE_TYPE, OPERATOR, RunningBroker
from tests.integration.signed_http import SignedClient


def audit_of(broker: RunningBroker) -> AuditLogService:
    if broker.app is None:
        raise AssertionError("the broker runs in another process")
    return broker.app[AUDIT]


async def auditor(broker: RunningBroker) -> SignedClient:
    """Requests as LA-AUDITOR, whose certificate (role auditor) the operator registers first."""
    if "LA-AUDITOR" not in broker.enrolled:
        cert = broker.pki["LA-AUDITOR"].certificate
        assert cert is not None
        reply = await broker.client(OPERATOR).post("/v1/directory/certificates", cert.raw, CERTIFICATE_TYPE)
        assert reply.status in (200, 201), reply.body
        broker.enrolled.add("LA-AUDITOR")
    return broker.client("LA-AUDITOR")


def log_key(broker: RunningBroker) -> VerifierKey:
    public = broker.pki.broker_identity().checkpoint_public_key
    return VerifierKey(broker.settings.audit_origin, SIG_ED25519, public)


async def checkpoint_now(broker: RunningBroker) -> StoredCheckpoint:
    checkpointer = audit_of(broker).checkpointer
    await checkpointer.tick(force=True)
    latest = await checkpointer.latest()
    assert latest is not None
    assert latest.size == await broker.store.audit.size()
    return latest


async def fetch_checkpoint(
    client: SignedClient, broker: RunningBroker, cosigners: tuple[VerifierKey, ...] = ()
) -> SignedCheckpoint:
    reply = await client.get("/v1/audit/checkpoint")
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    return open_checkpoint(
        reply.body, origin=broker.settings.audit_origin, log_key=log_key(broker), cosigners=cosigners
    )


def split_entries(data: bytes) -> list[bytes]:
    entries, at = [], 0
    while at < len(data):
        end = at + 2 + int.from_bytes(data[at : at + 2], "big")
        entries.append(data[at + 2 : end])
        at = end
    assert at == len(data)
    return entries


async def fetch_entries(client: SignedClient) -> tuple[list[bytes], int]:
    """Every entry of the published tree, 4096 at a time, and the tree's size."""
    entries: list[bytes] = []
    for _ in range(64):
        reply = await client.get("/v1/audit/entries", query={"start": len(entries), "count": 4096})
        assert reply.status == 200, reply.body
        size = int(reply.headers["CaseBridge-Log-Size"])
        entries.extend(split_entries(reply.body))
        if len(entries) >= size:
            return entries, size
    raise AssertionError("the log did not end within 64 pages")


@dataclass
class TestWitness:
    """A tlog-witness for one log: checks the log's signature and consistency from the size it
    recorded, records the new checkpoint, and cosigns it at `timestamp`."""

    __test__ = False

    name: str
    log_origin: str
    log_vkey: VerifierKey
    timestamp: int
    signer: NoteSigner = field(init=False)
    size: int = 0
    root: bytes = b""
    refuse: bool = False
    requests: list[int] = field(default_factory=list)
    """The `old` size of every request received."""

    def __post_init__(self) -> None:
        key = nacl.signing.SigningKey(system_random(32))
        self.signer = NoteSigner(self.name, key, SIG_COSIGNATURE_V1)

    @property
    def vkey(self) -> VerifierKey:
        return self.signer.vkey

    def answer(self, body: bytes) -> web.Response:
        head, _, rest = body.partition(b"\n")
        old = int(head.removeprefix(b"old "))
        self.requests.append(old)
        proof_text, _, note = rest.partition(b"\n\n") if not rest.startswith(b"\n") else (b"", b"", rest[1:])
        proof = [base64.b64decode(line) for line in proof_text.split(b"\n") if line]
        if self.refuse:
            return web.Response(status=403, text="unknown log\n")
        try:
            checkpoint = open_checkpoint(note, origin=self.log_origin, log_key=self.log_vkey).checkpoint
        except CaseBridgeError:
            return web.Response(status=403, text="bad signature\n")
        if old != self.size:
            return web.Response(status=409, body=f"{self.size}\n".encode(), content_type="text/x.tlog.size")
        if checkpoint.size < old:
            return web.Response(status=400, text="checkpoint older than recorded\n")
        if old:
            try:
                verify_consistency(old, checkpoint.size, proof, self.root, checkpoint.root_hash)
            except CaseBridgeError:
                return web.Response(status=422, text="inconsistent\n")
        self.size, self.root = checkpoint.size, checkpoint.root_hash
        line = cosign_checkpoint(note, self.signer, self.timestamp).line()
        return web.Response(status=200, text=line, content_type="text/x.tlog.cosignature")

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve `POST /add-checkpoint` on 127.0.0.1; yields the base URL."""

        async def add_checkpoint(request: web.Request) -> web.Response:
            return self.answer(await request.read())

        app = web.Application()
        app.router.add_post("/add-checkpoint", add_checkpoint)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        try:
            await web.SockSite(runner, sock).start()
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            await runner.cleanup()
            sock.close()

"""The desk locks itself after idle time: on the next request, and by its watcher with no request
at all. Locking drops the decrypted case index and the drafts and closes the client; a person's
request counts as activity, the passage of time alone does not. Idle time is read from an injected
monotonic clock, moved by hand; a real keystore, real HTTP and a real broker."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from clients.desk.app import DESK, GATE, DeskSettings, create_app
from keys.keystore import KDF_PROFILES, save_identity
from protocol.errors import CaseBridgeError
from tests.integration.broker_harness import RunningBroker
from tests.integration.pki import Pki
from tests.integration.test_desk_push import HandClock

PASSPHRASE = "รหัสผ่าน ລະຫັດ idle"
IDLE_SECONDS = 2


@dataclass
class IdleDesk:
    origin: str
    app: web.Application
    http: aiohttp.ClientSession
    monotonic: HandClock
    cookie: str = ""
    csrf: str = ""

    async def get(self, path: str) -> aiohttp.ClientResponse:
        return await self.http.get(self.origin + path, headers={"Cookie": self.cookie}, allow_redirects=False)

    async def unlock(self) -> None:
        form = {"csrf": self.csrf, "passphrase": PASSPHRASE, "officer": "somchai.j"}
        reply = await self.http.post(
            self.origin + "/unlock",
            data=form,
            headers={"Cookie": self.cookie, "Origin": self.origin},
            allow_redirects=False,
        )
        assert reply.status == 303
        assert reply.headers["Location"] == "/inbox"
        assert self.app[DESK].workspace is not None


@pytest.fixture
async def desk(tmp_path: Path, pki: Pki, broker: RunningBroker) -> AsyncIterator[IdleDesk]:
    keystore = tmp_path / "TH-ATPD.cbks"
    save_identity(keystore, pki["TH-ATPD"], PASSPHRASE, KDF_PROFILES["interactive"])
    settings = DeskSettings(
        keystore=keystore,
        trust=tuple(pki.write_roots(tmp_path / "roots")),
        broker_url=broker.url,
        state_dir=tmp_path / "state",
        idle_lock_seconds=IDLE_SECONDS,
        sync_interval_seconds=3600,
    )
    monotonic = HandClock()
    app = create_app(settings, clock=broker.clock.now, monotonic=monotonic)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        reply = await http.get(f"{origin}/start?token={app[GATE].start_token}", allow_redirects=False)
        cookie = reply.headers["Set-Cookie"].split(";", 1)[0]
        page = await (await http.get(origin + "/unlock", headers={"Cookie": cookie})).text()
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match is not None
        yield IdleDesk(origin, app, http, monotonic, cookie, match.group(1))
    await runner.cleanup()


async def test_a_request_after_idle_time_finds_the_desk_locked(desk: IdleDesk) -> None:
    await desk.unlock()
    workspace = desk.app[DESK].workspace
    assert workspace is not None
    assert (await desk.get("/inbox")).status == 200

    desk.monotonic.value += IDLE_SECONDS - 0.5
    assert (await desk.get("/inbox")).status == 200, "a request within the idle time keeps it open"
    desk.monotonic.value += IDLE_SECONDS - 0.5
    assert (await desk.get("/inbox")).status == 200, "each request counts as activity"

    desk.monotonic.value += IDLE_SECONDS + 0.5
    reply = await desk.get("/inbox")
    assert reply.status == 303
    assert reply.headers["Location"] == "/unlock"
    assert desk.app[DESK].workspace is None
    assert len(workspace.index) == 0
    with pytest.raises((sqlite3.ProgrammingError, CaseBridgeError)):
        workspace.client.outbox()


async def test_the_watcher_locks_an_idle_desk_without_any_request(desk: IdleDesk) -> None:
    await desk.unlock()
    workspace = desk.app[DESK].workspace
    assert workspace is not None
    for session in desk.app[GATE].sessions.values():
        session.drafts["kept-until-lock"] = object()

    desk.monotonic.value += IDLE_SECONDS + 0.5
    async with asyncio.timeout(20):
        while desk.app[DESK].workspace is not None:
            await asyncio.sleep(0.05)

    assert len(workspace.index) == 0
    assert all(not s.drafts for s in desk.app[GATE].sessions.values())
    reply = await desk.get("/outbox")
    assert reply.status == 303
    assert reply.headers["Location"] == "/unlock"


async def test_status_checks_do_not_keep_an_idle_desk_open(desk: IdleDesk) -> None:
    await desk.unlock()
    for _ in range(3):
        desk.monotonic.value += IDLE_SECONDS * 0.6
        status = await (await desk.get("/status.json")).json()
        assert status["locked"] is (desk.app[DESK].workspace is None)
    async with asyncio.timeout(20):
        while desk.app[DESK].workspace is not None:
            await asyncio.sleep(0.05)
    assert (await (await desk.get("/status.json")).json())["locked"] is True

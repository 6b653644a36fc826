"""The desk is event-driven: the broker's push wakes its sync (no waiting for the periodic round,
set here to an hour), the listener comes back after the socket or the broker went away and then
fetches at once what arrived meanwhile, and the page follows the desk over Server-Sent Events
(`GET /events`): the status first, a change when a referral arrives, `locked` when it locks.
The stream needs the session, is not a person's activity and never holds up a shutdown.
A real keystore, real HTTP, real brokers (in this process, and `casebridge broker serve`)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from broker.web.events import close_websockets
from clients.agency import AgencyClient
from clients.desk.app import DESK, GATE, DeskSettings, create_app
from clients.desk.workspace import Workspace
from keys.keystore import KDF_PROFILES, save_identity
from tests.integration.broker_harness import BrokerProcess, RunningBroker
from tests.integration.client_harness import QUICK_RETRY, make_client
from tests.integration.pki import Pki
from tests.integration.test_referral_flow import LA, NAME, TH, consent, refer

PASSPHRASE = "รหัสผ่าน ລະຫັດ push"
HOUR = 3600
DEADLINE_SECONDS = 20
RESTART_DEADLINE_SECONDS = 90


class HandClock:
    """A monotonic clock moved by hand (the desk's idle time)."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


class SkewedClock:
    """The desk's wall clock: another clock plus an offset the test sets."""

    def __init__(self, base: Callable[[], int]) -> None:
        self.base = base
        self.offset = 0

    def __call__(self) -> int:
        return self.base() + self.offset


@dataclass
class LiveDesk:
    origin: str
    app: web.Application
    runner: web.AppRunner
    http: aiohttp.ClientSession
    cookie: str
    csrf: str
    stopped: bool = False

    @property
    def workspace(self) -> Workspace:
        workspace = self.app[DESK].workspace
        assert workspace is not None, "the desk is locked"
        return workspace

    async def post(self, path: str, form: dict[str, str]) -> aiohttp.ClientResponse:
        headers = {"Cookie": self.cookie, "Origin": self.origin}
        return await self.http.post(
            self.origin + path, data={"csrf": self.csrf, **form}, headers=headers, allow_redirects=False
        )

    async def unlock(self) -> Workspace:
        reply = await self.post("/unlock", {"passphrase": PASSPHRASE, "officer": "molsw-off-07"})
        assert (reply.status, reply.headers["Location"]) == (303, "/inbox")
        return self.workspace

    @asynccontextmanager
    async def events(self) -> AsyncIterator[EventStream]:
        async with self.http.get(self.origin + "/events", headers={"Cookie": self.cookie}) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"].startswith("text/event-stream")
            assert "connect-src 'self'" in reply.headers["Content-Security-Policy"]
            yield EventStream(reply)

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()


class EventStream:
    """The `data:` events of a text/event-stream, read line by line."""

    def __init__(self, reply: aiohttp.ClientResponse) -> None:
        self.reply = reply

    async def next(self) -> dict[str, Any] | None:
        """The next event's JSON, or None at the end of the stream."""
        data: list[str] = []
        while True:
            line = (await self.reply.content.readline()).decode()
            if not line:
                return None
            line = line.rstrip("\n")
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                value: dict[str, Any] = json.loads("\n".join(data))
                return value

    async def until(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async with asyncio.timeout(DEADLINE_SECONDS):
            while True:
                event = await self.next()
                assert event is not None, "the stream ended early"
                if wanted(event):
                    return event


@asynccontextmanager
async def running_desk(
    directory: Path,
    pki: Pki,
    broker_url: str,
    *,
    clock: Callable[[], int] | None = None,
    monotonic: Callable[[], float] | None = None,
    idle_lock_seconds: int = 900,
) -> AsyncIterator[LiveDesk]:
    """The LA-MOLSW desk on 127.0.0.1 with a session (locked), syncing on its own only hourly."""
    keystore = directory / f"{LA}.cbks"
    directory.mkdir(parents=True, exist_ok=True)
    save_identity(keystore, pki[LA], PASSPHRASE, KDF_PROFILES["interactive"])
    settings = DeskSettings(
        keystore=keystore,
        trust=tuple(pki.write_roots(directory / "roots")),
        broker_url=broker_url,
        state_dir=directory / "state",
        idle_lock_seconds=idle_lock_seconds,
        sync_interval_seconds=HOUR,
    )
    app = create_app(settings, clock=clock, monotonic=monotonic or time.monotonic)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        reply = await http.get(f"{origin}/start?token={app[GATE].start_token}", allow_redirects=False)
        cookie = reply.headers["Set-Cookie"].split(";", 1)[0]
        page = await (await http.get(origin + "/unlock", headers={"Cookie": cookie})).text()
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match is not None
        desk = LiveDesk(origin, app, runner, http, cookie, match.group(1))
        try:
            yield desk
        finally:
            await desk.stop()


async def wait_for(condition: Callable[[], bool], seconds: float = DEADLINE_SECONDS) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.05)


async def settled(workspace: Workspace) -> None:
    """Push connected and the round it woke finished: only a hint can wake the sync now."""
    await wait_for(lambda: workspace.status.push and workspace.status.rounds >= 2)


async def refer_from_thailand(client: AgencyClient) -> bytes:
    """A referral from TH-DSDW to the desk's agency, sent by its own client; its case link id."""
    await client.refresh_directory()
    message = refer(client, consent())
    await client.send_message(message)
    return message.header.case_link_id


async def test_a_pushed_hint_brings_a_referral_to_the_desk_without_the_periodic_sync(
    broker: RunningBroker, pki: Pki, tmp_path: Path
) -> None:
    async with running_desk(tmp_path / "desk", pki, broker.url, clock=broker.clock.now) as desk:
        workspace = await desk.unlock()
        await settled(workspace)
        async with make_client(broker, TH, tmp_path / "th") as thai:
            case = await refer_from_thailand(thai)
        await wait_for(lambda: workspace.index.get(case) is not None)
        summary = workspace.index.get(case)
        assert summary is not None
        assert (summary.destination_agency_id, summary.name_native) == (TH, NAME.full_native)
        assert workspace.changes >= 1


async def test_what_arrived_while_push_was_down_is_fetched_as_soon_as_it_reconnects(
    broker: RunningBroker, pki: Pki, tmp_path: Path
) -> None:
    clock = SkewedClock(broker.clock.now)
    async with running_desk(tmp_path / "desk", pki, broker.url, clock=clock) as desk:
        workspace = await desk.unlock()
        await settled(workspace)
        # The desk's signatures now fall outside the broker's window: it cannot reconnect.
        clock.offset = HOUR
        assert broker.app is not None
        await close_websockets(broker.app)
        await wait_for(lambda: not workspace.status.push)
        async with make_client(broker, TH, tmp_path / "th") as thai:
            case = await refer_from_thailand(thai)
        assert workspace.index.get(case) is None
        # No hint reached the desk; the sync round after the reconnect brings the referral.
        clock.offset = 0
        await wait_for(lambda: workspace.index.get(case) is not None)
        assert workspace.status.push


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_the_listener_reconnects_after_the_broker_restarts(
    broker_process: Any, live_pki: Pki, tmp_path: Path
) -> None:
    broker = await broker_process(listen_port=free_port())
    async with aiohttp.ClientSession() as session:
        await broker.enroll(live_pki, session, TH, LA)
    restarted: BrokerProcess | None = None
    try:
        async with running_desk(tmp_path / "desk", live_pki, broker.url) as desk:
            workspace = await desk.unlock()
            await wait_for(lambda: workspace.status.push)
            assert await broker.stop() == 0
            await wait_for(lambda: not workspace.status.push)

            restarted = await BrokerProcess.serve(broker.config, broker.log_file)
            assert restarted.url == broker.url
            await wait_for(lambda: workspace.status.push, RESTART_DEADLINE_SECONDS)
            await wait_for(lambda: workspace.status.online is True)
            thai = AgencyClient(
                live_pki[TH],
                roots=[live_pki.root_cert("TH"), live_pki.root_cert("LA")],
                broker_url=broker.url,
                state_dir=tmp_path / "th",
                retry=QUICK_RETRY,
            )
            async with thai:
                case = await refer_from_thailand(thai)
            await wait_for(lambda: workspace.index.get(case) is not None)
    finally:
        if restarted is not None:
            await restarted.close()


async def test_the_page_stream_sends_the_status_then_a_received_referral_then_locked(
    broker: RunningBroker, pki: Pki, tmp_path: Path
) -> None:
    async with running_desk(tmp_path / "desk", pki, broker.url, clock=broker.clock.now) as desk:
        workspace = await desk.unlock()
        async with desk.events() as stream:
            first = await stream.next()
            assert first is not None
            assert set(first) == {"locked", "online", "push", "pending", "changes"}
            assert first["locked"] is False
            await stream.until(lambda s: s["push"] is True and s["online"] is True)

            async with make_client(broker, TH, tmp_path / "th") as thai:
                case = await refer_from_thailand(thai)
            changed = await stream.until(lambda s: s["changes"] > first["changes"])
            assert changed["locked"] is False
            assert workspace.index.get(case) is not None
            assert "ແກ້ວມະນີ" not in json.dumps(changed, ensure_ascii=False)

            reply = await desk.post("/lock", {})
            assert (reply.status, reply.headers["Location"]) == (303, "/unlock")
            assert await stream.until(lambda s: s["locked"]) == {"locked": True}
            assert await stream.next() is None, "the stream ends once locked"

        async with desk.events() as stream:
            assert await stream.next() == {"locked": True}
            assert await stream.next() is None


async def test_the_page_stream_is_refused_without_the_session_cookie(
    broker: RunningBroker, pki: Pki, tmp_path: Path
) -> None:
    async with running_desk(tmp_path / "desk", pki, broker.url, clock=broker.clock.now) as desk:
        await desk.unlock()
        for cookie in ({}, {"Cookie": "cb_desk_session=forged"}):
            reply = await desk.http.get(desk.origin + "/events", headers=cookie, allow_redirects=False)
            assert reply.status == 403
            assert "text/event-stream" not in reply.headers.get("Content-Type", "")
            assert "data:" not in await reply.text()


async def test_an_open_page_stream_does_not_keep_an_idle_desk_unlocked(
    broker: RunningBroker, pki: Pki, tmp_path: Path
) -> None:
    monotonic = HandClock()
    async with running_desk(
        tmp_path / "desk", pki, broker.url, clock=broker.clock.now, monotonic=monotonic, idle_lock_seconds=2
    ) as desk:
        workspace = await desk.unlock()
        monotonic.value += 1.5
        async with desk.events() as stream:
            assert (await stream.until(lambda s: True))["locked"] is False
            # Counted as activity, the stream would keep the desk open another two seconds.
            monotonic.value += 1.0
            assert await stream.until(lambda s: s["locked"]) == {"locked": True}
        assert desk.app[DESK].workspace is None
        assert len(workspace.index) == 0


async def test_an_open_page_stream_does_not_hold_up_the_desk_shutting_down(
    broker: RunningBroker, pki: Pki, tmp_path: Path
) -> None:
    async with running_desk(tmp_path / "desk", pki, broker.url, clock=broker.clock.now) as desk:
        workspace = await desk.unlock()
        async with desk.events() as stream:
            assert await stream.next() is not None
            # The runner would wait 60 s for open requests; the stream must end well before.
            async with asyncio.timeout(DEADLINE_SECONDS):
                await desk.stop()
                while await stream.next() is not None:
                    pass
        assert desk.app[DESK].workspace is None
        assert workspace.closed

"""The desk's gate, attacked over real HTTP on 127.0.0.1: no start token, a wrong one, a
cross-site form post (wrong Origin, missing CSRF token), a request another site makes, a
rebound host name, an unexpected upload; and the headers every answer carries."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from clients.desk.app import GATE, DeskSettings, create_app, serve


@dataclass
class Desk:
    origin: str
    app: web.Application
    http: aiohttp.ClientSession

    async def login(self) -> tuple[str, str]:
        """Exchange the start token; returns the session cookie header and the CSRF token."""
        token = self.app[GATE].start_token
        reply = await self.http.get(f"{self.origin}/start?token={token}", allow_redirects=False)
        assert reply.status == 303
        cookie = reply.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        session = cookie.split(";", 1)[0]
        page = await self.http.get(f"{self.origin}/unlock", headers={"Cookie": session})
        match = re.search(r'name="csrf" value="([^"]+)"', await page.text())
        assert match is not None
        return session, match.group(1)


def settings(tmp_path: Path) -> DeskSettings:
    return DeskSettings(
        keystore=tmp_path / "none.cbks",
        trust=(tmp_path / "none.cert",),
        broker_url="http://127.0.0.1:9",
        state_dir=tmp_path / "state",
    )


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    app = create_app(settings(tmp_path))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        yield Desk(f"http://127.0.0.1:{port}", app, http)
    await runner.cleanup()


async def test_page_without_start_token_is_refused(desk: Desk) -> None:
    for path in ("/inbox", "/unlock", "/outbox", "/cases/" + "00" * 16):
        reply = await desk.http.get(desk.origin + path, allow_redirects=False)
        assert reply.status == 403, path


async def test_wrong_start_token_is_refused(desk: Desk) -> None:
    reply = await desk.http.get(f"{desk.origin}/start?token=guess", allow_redirects=False)
    assert reply.status == 403
    assert "Set-Cookie" not in reply.headers


async def test_cross_site_form_post_is_refused(desk: Desk) -> None:
    session, csrf = await desk.login()
    own = {"Cookie": session, "Origin": desk.origin}
    no_token = await desk.http.post(f"{desk.origin}/language", data={"language": "en"}, headers=own)
    assert no_token.status == 403
    wrong_token = await desk.http.post(
        f"{desk.origin}/language", data={"language": "en", "csrf": csrf[:-2] + "xx"}, headers=own
    )
    assert wrong_token.status == 403
    other_origin = await desk.http.post(
        f"{desk.origin}/language",
        data={"language": "en", "csrf": csrf},
        headers={"Cookie": session, "Origin": "http://evil.example"},
        allow_redirects=False,
    )
    assert other_origin.status == 403
    no_origin = await desk.http.post(
        f"{desk.origin}/language", data={"language": "en", "csrf": csrf}, headers={"Cookie": session}
    )
    assert no_origin.status == 403
    good = await desk.http.post(
        f"{desk.origin}/language", data={"language": "en", "csrf": csrf}, headers=own, allow_redirects=False
    )
    assert good.status == 303


async def test_request_from_another_site_is_refused(desk: Desk) -> None:
    session, _ = await desk.login()
    for site in ("cross-site", "same-site"):
        reply = await desk.http.get(
            f"{desk.origin}/unlock", headers={"Cookie": session, "Sec-Fetch-Site": site}
        )
        assert reply.status == 403, site
    same = await desk.http.get(
        f"{desk.origin}/unlock", headers={"Cookie": session, "Sec-Fetch-Site": "same-origin"}
    )
    assert same.status == 200


async def test_rebound_host_name_is_refused(desk: Desk) -> None:
    session, _ = await desk.login()
    port = desk.origin.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", "evil.example", f"evil.example:{port}"):
        reply = await desk.http.get(f"{desk.origin}/unlock", headers={"Cookie": session, "Host": host})
        assert reply.status == 403, host


async def test_unexpected_upload_and_upload_without_token_are_refused(desk: Desk) -> None:
    session, csrf = await desk.login()
    own = {"Cookie": session, "Origin": desk.origin}
    form = aiohttp.FormData()
    form.add_field("csrf", csrf)
    form.add_field("file", b"x", filename="a.pdf")
    assert (await desk.http.post(f"{desk.origin}/language", data=form, headers=own)).status == 403
    form = aiohttp.FormData()
    form.add_field("type", "referral")
    form.add_field("csrf", csrf)
    form.add_field("file", b"x", filename="a.pdf")
    assert (await desk.http.post(f"{desk.origin}/compose/preview", data=form, headers=own)).status == 403


async def test_every_answer_has_a_strict_content_security_policy(desk: Desk) -> None:
    session, _ = await desk.login()
    for path in ("/unlock", "/static/desk.css", "/nothing-here"):
        reply = await desk.http.get(desk.origin + path, headers={"Cookie": session})
        csp = reply.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert reply.headers["X-Frame-Options"] == "DENY"
    page = await (await desk.http.get(f"{desk.origin}/unlock", headers={"Cookie": session})).text()
    assert "<script>" not in page
    assert " on" + "click=" not in page
    assert (await desk.http.get(f"{desk.origin}/unlock", headers={"Cookie": session})).headers[
        "Cache-Control"
    ] == "no-store"


async def test_desk_serves_on_loopback_only(tmp_path: Path) -> None:
    announced: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(serve(settings(tmp_path), announce=announced.put_nowait))
    try:
        url = await asyncio.wait_for(announced.get(), 10)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/start\?token=[A-Za-z0-9_-]{40,}", url)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

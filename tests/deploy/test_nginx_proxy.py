"""deploy/nginx/casebridge.conf in front of a real broker process, over TLS on 127.0.0.1.

Signed requests pass through untouched (the broker verifies every signature and
Content-Digest behind the proxy), an envelope streams through both ways, ranged downloads and
the WebSocket push work, X-Request-Id is carried, plain HTTP is redirected, and /metrics is
refused to any address but the allowed ones (a client bound to 127.0.0.2 stands for the
outside). The deploy file is used as written; only its listening addresses, certificate and
log paths and its upstream are moved to the test's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from broker.clock import SystemClock
from tests.deploy.deploy_tools import relocated, required_tool, run_tool
from tests.deploy.postgres_drill import DEPLOY
from tests.integration.broker_harness import ENVELOPE_TYPE, BrokerProcess, enroll
from tests.integration.pki import Pki, seal
from tests.integration.signed_http import SignedClient

LAO_DOCUMENT = ("ເອກະສານ.pdf", bytes(range(256)) * 1200)
START_ATTEMPTS = 200
PAUSE_SECONDS = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proxy:
    port: int
    plain_port: int
    certificate: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certificate))


def proxy_configuration(directory: Path, broker_port: int, port: int, plain_port: int) -> Path:
    tls, logs, temp = directory / "tls", directory / "log", directory / "temp"
    for d in (tls, logs, temp):
        d.mkdir(parents=True)
    made = run_tool(
        required_tool("openssl", "openssl"), "req", "-x509", "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", tls / "privkey.pem", "-out", tls / "fullchain.pem",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    text = relocated(
        (DEPLOY / "nginx" / "casebridge.conf").read_text(encoding="utf-8"),
        {"/etc/casebridge/tls/": tls, "/var/log/nginx/": logs},
    )
    listens = {
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "listen [::]:443 ssl;": "",
        "listen 80;": f"listen 127.0.0.1:{plain_port};",
        "listen [::]:80;": "",
    }
    for old, new in listens.items():
        assert old in text
        text = text.replace(old, new)
    (directory / "casebridge.conf").write_text(text, encoding="utf-8")
    (directory / "upstream.conf").write_text(
        f"upstream casebridge_brokers {{ least_conn; server 127.0.0.1:{broker_port}; keepalive 4; }}\n"
    )
    main = directory / "nginx.conf"
    main.write_text(
        f"daemon off;\nmaster_process off;\npid {directory}/nginx.pid;\nerror_log {logs}/error.log;\n"
        "events {}\nhttp {\n"
        + "".join(
            f"    {k}_temp_path {temp}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"    include {directory}/upstream.conf;\n    include {directory}/casebridge.conf;\n}}\n",
        encoding="utf-8",
    )
    return main


@pytest.fixture
def live_pki() -> Pki:
    return Pki.create(SystemClock().now())


@pytest.fixture
async def proxied(tmp_path: Path, live_pki: Pki) -> AsyncIterator[tuple[Proxy, BrokerProcess]]:
    """A broker process whose public authority is the proxy's, behind nginx."""
    nginx = required_tool("nginx", "nginx")
    port, plain_port = free_port(), free_port()
    broker = await BrokerProcess.start(tmp_path / "broker", live_pki, public_authority=f"127.0.0.1:{port}")
    broker_port = int(broker.url.rsplit(":", 1)[1])
    config = proxy_configuration(tmp_path / "nginx", broker_port, port, plain_port)
    process = await asyncio.create_subprocess_exec(
        nginx, "-p", str(config.parent), "-e", str(config.parent / "log" / "error.log"), "-c", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(START_ATTEMPTS):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            assert process.returncode is None, "nginx exited"
            await asyncio.sleep(PAUSE_SECONDS)
        yield Proxy(port, plain_port, config.parent / "tls" / "fullchain.pem"), broker
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
        await broker.close()


def through(proxy: Proxy, pki: Pki, agency: str | None, session: aiohttp.ClientSession) -> SignedClient:
    key = None if agency is None else pki[agency].signing_key
    return SignedClient(session, proxy.url, f"127.0.0.1:{proxy.port}", key, SystemClock().now, scheme="https")


async def test_signed_requests_envelopes_and_push_pass_through_the_proxy_untouched(
    proxied: tuple[Proxy, BrokerProcess], live_pki: Pki
) -> None:
    proxy, _ = proxied
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=proxy.tls())) as session:
        await enroll(
            lambda agency: through(proxy, live_pki, agency, session), live_pki, ["TH-ATPD", "LA-MOLSW"]
        )
        lao = through(proxy, live_pki, "LA-MOLSW", session)
        socket_ = await lao.websocket()
        try:
            sealed = seal(
                live_pki["TH-ATPD"], [live_pki["LA-MOLSW"]], SystemClock().now(), attachments=[LAO_DOCUMENT]
            )
            sent = await through(proxy, live_pki, "TH-ATPD", session).post(
                "/v1/envelopes", sealed.body, ENVELOPE_TYPE
            )
            assert sent.status == 201, sent.body
            hint = json.loads((await socket_.receive(timeout=30)).data)
            assert hint["type"] == "inbox"
            assert hint["envelope_id"] == sealed.envelope_id.hex()
        finally:
            await socket_.close()
        part = f"/v1/inbox/{sealed.envelope_id.hex()}/parts/1"
        ranged = await lao.get(part, headers={"Range": "bytes=1000-250000"})
        assert ranged.status == 206
        assert ranged.body == sealed.parts[1][1000:250001]
        tagged = await lao.get("/v1/inbox", headers={"X-Request-Id": "drill-request-0001"})
        assert tagged.headers["X-Request-Id"] == "drill-request-0001"
        untagged = await lao.get("/v1/inbox")
        assert re.fullmatch(r"[0-9a-f]{32}", untagged.headers["X-Request-Id"])
        assert untagged.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_a_signature_for_another_authority_is_refused_behind_the_proxy(
    proxied: tuple[Proxy, BrokerProcess], live_pki: Pki
) -> None:
    proxy, _ = proxied
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=proxy.tls())) as session:
        wrong = SignedClient(session, proxy.url, "broker.example.org", live_pki["TH-OPERATOR"].signing_key,
                             SystemClock().now, scheme="https")  # fmt: skip
        assert (await wrong.get("/v1/directory")).status == 401
        assert (await through(proxy, live_pki, "TH-OPERATOR", session).get("/v1/directory")).status == 200


async def test_metrics_are_refused_to_addresses_outside_the_allowed_ones(
    proxied: tuple[Proxy, BrokerProcess],
) -> None:
    proxy, _ = proxied
    inside = aiohttp.TCPConnector(ssl=proxy.tls())
    outside = aiohttp.TCPConnector(ssl=proxy.tls(), local_addr=("127.0.0.2", 0))
    async with (
        aiohttp.ClientSession(connector=inside) as session,
        session.get(f"{proxy.url}/metrics") as response,
    ):
        assert response.status == 200
        assert "casebridge_certificate_expiry_timestamp_seconds" in await response.text()
    async with aiohttp.ClientSession(connector=outside) as session:
        async with session.get(f"{proxy.url}/metrics") as response:
            assert response.status == 403
        async with session.get(f"{proxy.url}/readyz") as response:
            assert response.status == 200
        async with session.get(f"{proxy.url}/anything-else") as response:
            assert response.status == 404
        async with session.get(
            f"http://127.0.0.1:{proxy.plain_port}/v1/inbox", allow_redirects=False
        ) as response:
            assert response.status == 301
            assert response.headers["Location"].startswith("https://")

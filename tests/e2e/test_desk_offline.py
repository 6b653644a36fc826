"""The Thai desk works while the broker is down: a referral written offline waits in the
outbox, visibly, and goes by itself when the broker is back; the Lao desk then receives it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.desk_harness import check_page, start_desk
from tests.e2e.test_desk_referral_flow import LAO_NAME, compose_referral, unlock, wait_for_text
from tests.integration.broker_harness import BrokerProcess
from tests.integration.pki import Pki


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_referral_written_offline_waits_in_outbox_and_goes_when_broker_returns(
    browser: Any, broker_process: Any, live_pki: Pki, tmp_path: Path
) -> None:
    broker = await broker_process(listen_port=free_port())
    async with aiohttp.ClientSession() as session:
        await broker.enroll(live_pki, session, "TH-DSDW", "LA-MOLSW")
    thai = await start_desk(tmp_path / "th", live_pki, "TH-DSDW", broker.url, language="th")
    lao = await start_desk(tmp_path / "lo", live_pki, "LA-MOLSW", broker.url, language="lo")
    document = tmp_path / "ເອກະສານ.pdf"
    document.write_bytes(b"%PDF-1.4 offline")
    restarted: BrokerProcess | None = None
    try:
        page = await (await browser.new_context()).new_page()
        await unlock(page, thai, "dsdw-off-01")
        await wait_for_text(page, f"{thai.origin}/outbox", "ออนไลน์")
        assert await broker.stop() == 0

        await compose_referral(page, document)
        await page.click('#compose button[type="submit"]')
        await page.wait_for_url("**/compose/preview")
        await page.click('form[action="/compose/send"] button')
        await page.wait_for_url("**/cases/*")
        assert "รอในกล่องขาออก" in await page.inner_text("main")
        await wait_for_text(page, f"{thai.origin}/outbox", "ออฟไลน์")
        assert "รอในกล่องขาออก" in await page.inner_text("main")
        await check_page(page, thai, "outbox-offline", "th")

        restarted = await BrokerProcess.serve(broker.config, broker.log_file)
        assert restarted.url == broker.url
        await wait_for_text(page, f"{thai.origin}/outbox", "ระบบตัวกลางรับแล้ว")
        assert "รอในกล่องขาออก" not in await page.inner_text("main")

        lao_page = await (await browser.new_context()).new_page()
        await unlock(lao_page, lao, "molsw-off-07")
        await wait_for_text(lao_page, f"{lao.origin}/inbox", LAO_NAME)
    finally:
        await thai.close()
        await lao.close()
        if restarted is not None:
            await restarted.close()

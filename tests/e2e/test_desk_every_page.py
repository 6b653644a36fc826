"""Every page of the desk, in Thai, Lao and English, in a real browser: each is screenshotted
and fails on an untranslated string or a character the desk's fonts do not cover. The Lao
agency refers a case to the Thai desk through the client library, so the case, compose,
preview and partner pages have real content in both scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from clients.agency import AgencyClient, load_pinned_roots
from clients.outbox import OutboxState
from protocol.referral import (
    Address,
    Person,
    PersonName,
    RequestedAction,
    ReturnWish,
    Scope,
    Sex,
)
from tests.e2e.desk_harness import RunningDesk, check_page, start_desk
from tests.e2e.test_desk_referral_flow import unlock, wait_for_text
from tests.integration.pki import Pki
from tests.integration.test_referral_flow import consent

TH, LA = "TH-DSDW", "LA-MOLSW"
LAO_NAME = "ທ້າວ ບຸນເຫຼືອ ພົມມະວົງ"
LANGUAGES = ("th", "lo", "en")


async def refer_from_laos(broker_url: str, pki: Pki, roots: list[Path], state: Path) -> None:
    async with AgencyClient(
        pki[LA], roots=load_pinned_roots(roots), broker_url=broker_url, state_dir=state
    ) as la:
        await la.refresh_directory()
        message = la.messages.referral(
            to=TH,
            case_ref="ຮສ 204/2026",
            consent=consent((Scope.NOTIFY_ORIGIN, Scope.VERIFICATION)),
            person=Person(
                name=PersonName(full_native=LAO_NAME, full_romanised="Bounleua Phommavong"),
                sex=Sex.MALE,
                is_child=False,
                estimated_age=31,
            ),
            identified_on="2026-11-19",
            identified_by="ຕຳຫຼວດແຂວງບໍ່ແກ້ວ",
            requested_actions=(RequestedAction.VERIFY_NATIONALITY,),
            return_wish=ReturnWish.WANTS_TO_RETURN,
            home=Address(country="TH", province="เชียงราย", village="บ้านสบรวก"),
            summary="ພົບຜູ້ເສຍຫາຍເຮັດວຽກໃນເຮືອຫາປາ ຕ້ອງການກັບບ້ານ",
        )
        assert (await la.send_message(message)).result.state is OutboxState.ACCEPTED


async def switch(page: Any, language: str) -> None:
    path = page.url.split("127.0.0.1", 1)[1].split("/", 1)[1]
    await page.click(f'form.lang button[value="{language}"]')
    await page.wait_for_url(f"**/{path}")


async def every_page(page: Any, desk: RunningDesk, case_path: str, language: str) -> None:
    origin = desk.origin
    pages = {
        "inbox": "/inbox",
        "case": f"/{case_path}",
        "compose-referral": "/compose?type=referral",
        "compose-decline": f"/{case_path}/compose?type=decline",
        "compose-verification-result": f"/{case_path}/compose?type=verification_result",
        "partners": "/partners",
        "partner": f"/partners/{LA}",
        "outbox": "/outbox",
        "missing": "/cases/" + "00" * 16,
    }
    for name, path in pages.items():
        await page.goto(origin + path)
        await check_page(page, desk, f"all-{name}", language)
    await page.goto(f"{origin}/{case_path}/compose?type=acknowledgement")
    await page.click('#compose button[type="submit"]')
    await page.wait_for_url("**/compose/preview")
    await check_page(page, desk, "all-preview", language)
    await page.click('form[action="/compose/discard"] button')
    await page.wait_for_url("**/inbox")


async def test_every_page_in_every_language(
    browser: Any, broker_process: Any, live_pki: Pki, tmp_path: Path
) -> None:
    broker = await broker_process()
    async with aiohttp.ClientSession() as session:
        await broker.enroll(live_pki, session, TH, LA)
    thai = await start_desk(tmp_path / "th", live_pki, TH, broker.url, language="th")
    try:
        await refer_from_laos(
            broker.url, live_pki, live_pki.write_roots(tmp_path / "la-roots"), tmp_path / "la"
        )
        page = await (await browser.new_context()).new_page()
        await page.goto(thai.start_url)
        for language in LANGUAGES:
            await switch(page, language)
            await check_page(page, thai, "all-unlock", language)
        await switch(page, "th")
        await unlock(page, thai, "dsdw-off-02")
        await wait_for_text(page, f"{thai.origin}/inbox", LAO_NAME)
        case_link = page.locator('a[href^="/cases/"]').first
        case_path = (await case_link.get_attribute("href")).lstrip("/")
        for language in LANGUAGES:
            await switch(page, language)
            await every_page(page, thai, case_path, language)
    finally:
        await thai.close()

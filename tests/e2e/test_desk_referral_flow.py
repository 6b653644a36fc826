"""Two desks and a real broker, in a real browser: the Thai desk refers a case in Thai with an
attachment; the Lao desk, in Lao, finds it, opens the attachment, acknowledges and accepts the
case; the Thai desk sees the receipts and the acceptance. Every page is screenshotted in the
language it is used in and checked for untranslated strings and for characters the desk's
fonts do not cover."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.desk_harness import PASSPHRASE, RunningDesk, check_page, start_desk
from tests.integration.pki import Pki

THAI_FILE = "เอกสารประกอบ.pdf"
LAO_NAME = "ນາງ ສົມພອນ ແກ້ວມະນີ"
THAI_SUMMARY = "พบผู้เสียหายทำงานในร้านอาหารที่จังหวัดหนองคาย ต้องการกลับบ้านที่แขวงสะหวันนะเขต"
MAX_WAIT_ROUNDS = 60
FAMILY = ("ນາງ ຄຳ ແກ້ວມະນີ", "ທ້າວ ບຸນມີ ແກ້ວມະນີ")
OVERRIDE_REASON = "ต้องติดตามครอบครัวก่อนส่งกลับเพื่อความปลอดภัยของผู้เสียหาย"


async def unlock(page: Any, desk: RunningDesk, officer: str) -> None:
    await page.goto(desk.start_url)
    await page.fill('[name="officer"]', officer)
    await page.fill('[name="passphrase"]', PASSPHRASE)
    await page.click('button[type="submit"].primary')
    try:
        await page.wait_for_url("**/inbox", timeout=8000)
    except Exception:
        print("DEBUG", page.url, await page.content())
        raise


async def wait_for_text(page: Any, url: str, text: str) -> None:
    """Reload `url` until `text` shows (the desk syncs every half second); bounded."""
    for _ in range(MAX_WAIT_ROUNDS):
        await page.goto(url)
        if text in await page.inner_text("main"):
            return
        await page.wait_for_timeout(500)
    raise AssertionError(f"{text!r} never showed on {url}")


async def send_previewed(page: Any) -> None:
    await page.click('#compose button[type="submit"]')
    await page.wait_for_url("**/compose/preview")
    await page.click('form[action="/compose/send"] button')
    await page.wait_for_url("**/cases/*")


async def compose_referral(page: Any, attachment: Path) -> None:
    today = dt.date.today().isoformat()
    await page.click('a[href="/compose?type=referral"]')
    await page.wait_for_selector("#compose")
    await page.select_option('[name="to"]', "LA-MOLSW")
    # Validation speaks as the person types, naming the field that is still wrong.
    await page.fill('[name="case_ref"]', "ศคม.นค. 42/2568")
    await page.wait_for_selector("#problems:not([hidden])")
    named = re.search(r"\(([a-z_]+(\.[a-z_]+)*)\)", await page.inner_text("#problems"))
    assert named is not None, "the problem names no field"
    assert await page.locator(f'.field.invalid[data-path="{named.group(1)}"]').count() == 1
    await page.fill('[name="person.name.full_native"]', LAO_NAME)
    await page.fill('[name="person.name.full_romanised"]', "Somphone Keomany")
    await page.select_option('[name="person.sex"]', "female")
    await page.select_option('[name="person.is_child"]', "no")
    await page.fill('[name="person.estimated_age"]', "24")
    await page.fill('[name="identified_on"]', today)
    await page.fill('[name="identified_by"]', "สำนักงานพัฒนาสังคม หนองคาย")
    await page.check('input[name="requested_actions"][value="verify_nationality"]')
    await page.check('input[name="requested_actions"][value="repatriate"]')
    await page.select_option('[name="return_wish"]', "wants_to_return")
    await page.select_option('[name="consent.given_by"]', "person")
    await page.select_option('[name="consent.is_child"]', "no")
    await page.fill('[name="consent.given_on"]', today)
    await page.fill('[name="consent.language"]', "lo")
    await page.select_option('[name="consent.legal_basis"]', "explicit_consent")
    await page.check('input[name="consent.scopes"][value="s1_notify_origin"]')
    await page.check('input[name="consent.scopes"][value="s2_verification"]')
    await page.fill('[name="summary"]', THAI_SUMMARY)
    await page.set_input_files("#files", str(attachment))
    await page.wait_for_selector("#problems", state="hidden")


async def request_family_tracing(page: Any, origin: str, case_path: str) -> None:
    """Two relatives in a list of records; the referral's consent (scopes 1 and 2) does not cover
    family tracing, so the desk asks for the consent to be set aside, with a reason and a basis."""
    await page.goto(f"{origin}/{case_path}/compose?type=family_assessment_request")
    await page.wait_for_selector("#compose")
    await page.fill('[name="home.country"]', "LA")
    await page.fill('[name="home.province"]', "ສະຫວັນນະເຂດ")
    await page.fill('[name="known_family[0].name.full_native"]', FAMILY[0])
    await page.select_option('[name="known_family[0].relation"]', "mother")
    await page.click('fieldset[data-repeat="known_family"] .add-row')
    await page.fill('[name="known_family[1].name.full_native"]', FAMILY[1])
    await page.select_option('[name="known_family[1].relation"]', "father")
    await page.locator("#problems", has_text="ความยินยอมไม่ครอบคลุมช่องนี้").wait_for()
    await page.click("details.override summary")
    await page.fill('[name="override.reason"]', OVERRIDE_REASON)
    await page.select_option('[name="override.legal_basis"]', "vital_interest")
    await page.wait_for_selector("#problems", state="hidden")


async def test_thai_desk_refers_and_lao_desk_accepts(
    browser: Any, broker_process: Any, live_pki: Pki, tmp_path: Path
) -> None:
    broker = await broker_process()
    async with aiohttp.ClientSession() as session:
        await broker.enroll(live_pki, session, "TH-DSDW", "LA-MOLSW")
    thai = await start_desk(tmp_path / "th", live_pki, "TH-DSDW", broker.url, language="th")
    lao = await start_desk(tmp_path / "lo", live_pki, "LA-MOLSW", broker.url, language="lo")
    document = tmp_path / THAI_FILE
    document.write_bytes(b"%PDF-1.4 " + bytes(range(256)) * 600)
    try:
        th_page = await (await browser.new_context(accept_downloads=True)).new_page()
        await th_page.goto(thai.start_url)
        await check_page(th_page, thai, "unlock", "th")
        await unlock(th_page, thai, "dsdw-off-01")
        await compose_referral(th_page, document)
        await check_page(th_page, thai, "compose", "th")
        await th_page.click('#compose button[type="submit"]')
        await th_page.wait_for_url("**/compose/preview")
        await check_page(th_page, thai, "preview", "th")
        assert THAI_FILE in await th_page.inner_text("main")
        await th_page.click('form[action="/compose/send"] button')
        await th_page.wait_for_url("**/cases/*")
        case_path = th_page.url.split("127.0.0.1", 1)[1].split("/", 1)[1]

        lo_page = await (await browser.new_context(accept_downloads=True)).new_page()
        await unlock(lo_page, lao, "molsw-off-07")
        # Search finds a name inside the text, without spaces between words.
        await wait_for_text(lo_page, f"{lao.origin}/inbox?q=ແກ້ວມະ", LAO_NAME)
        await check_page(lo_page, lao, "inbox", "lo")
        await lo_page.click(f'a[href="/{case_path}"]')
        await lo_page.wait_for_selector("article.message")
        assert THAI_SUMMARY in await lo_page.inner_text("main")
        async with lo_page.expect_download() as download_info:
            await lo_page.click("ul.files button")
        download = await download_info.value
        assert download.suggested_filename == THAI_FILE
        assert Path(await download.path()).read_bytes() == document.read_bytes()

        await lo_page.click(f'a[href="/{case_path}/compose?type=acknowledgement"]')
        assert await lo_page.input_value('[name="read_by"]') == "molsw-off-07"
        await send_previewed(lo_page)
        await lo_page.click(f'a[href="/{case_path}/compose?type=acceptance"]')
        await lo_page.fill('[name="case_ref"]', "ຮສ 117/2026")
        await lo_page.fill('[name="responsible_unit"]', "ກົມສະຫວັດດີການສັງຄົມ")
        await check_page(lo_page, lao, "compose-acceptance", "lo")
        await send_previewed(lo_page)
        assert "ຮສ 117/2026" in await lo_page.inner_text("main")
        await check_page(lo_page, lao, "case", "lo")

        # Back on the Thai desk: the broker's and the Lao agency's receipts, and the acceptance.
        await wait_for_text(th_page, f"{thai.origin}/{case_path}", "รับกรณีแล้ว")
        text = await th_page.inner_text("main")
        for shown in ("ระบบตัวกลางรับแล้ว", "ส่งถึงแล้ว", "ตรวจสอบแล้ว", "เจ้าหน้าที่ยืนยันการอ่านแล้ว", "ຮສ 117/2026"):
            assert shown in text, shown
        await check_page(th_page, thai, "case", "th")

        await request_family_tracing(th_page, thai.origin, case_path)
        await check_page(th_page, thai, "compose-family-override", "th")
        await th_page.click('#compose button[type="submit"]')
        await th_page.wait_for_url("**/compose/preview")
        shown = await th_page.inner_text("main")
        assert all(name in shown for name in FAMILY)
        assert OVERRIDE_REASON in shown
        assert "ยกเว้นความยินยอม" in shown
        await th_page.click('form[action="/compose/send"] button')
        await th_page.wait_for_url("**/cases/*")
        await wait_for_text(lo_page, f"{lao.origin}/{case_path}", FAMILY[1])
        received = await lo_page.inner_text("main")
        assert OVERRIDE_REASON in received
        assert "ຍົກເວັ້ນການຍິນຍອມ" in received
        await check_page(lo_page, lao, "case-family-override", "lo")

        await th_page.goto(f"{thai.origin}/inbox")
        await check_page(th_page, thai, "inbox", "th")
        await th_page.goto(f"{thai.origin}/partners/LA-MOLSW")
        await check_page(th_page, thai, "partner", "th")
        assert await th_page.locator("code.fpr").count() >= 3
        await th_page.goto(f"{thai.origin}/outbox")
        await check_page(th_page, thai, "outbox", "th")

        # The language switches at any time, on any page.
        await th_page.goto(f"{thai.origin}/{case_path}")
        await th_page.click('form.lang button[value="en"]')
        await th_page.wait_for_url(f"**/{case_path}")
        assert "Case accepted" in await th_page.inner_text("main")
        await check_page(th_page, thai, "case", "en")
        await th_page.goto(f"{thai.origin}/inbox")
        await check_page(th_page, thai, "inbox", "en")
        await th_page.click('form.lang button[value="lo"]')
        await th_page.wait_for_url("**/inbox")
        await check_page(th_page, thai, "inbox-thai-desk", "lo")
        async with th_page.expect_download() as pdf_info:
            await th_page.goto(f"{thai.origin}/{case_path}")
            await th_page.click('form[action$="/pdf"] button')
        pdf = await pdf_info.value
        assert Path(await pdf.path()).read_bytes().startswith(b"%PDF")
    finally:
        await thai.close()
        await lao.close()

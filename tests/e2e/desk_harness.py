"""Real desks for browser tests: each an agency's keystore (sealed with a real passphrase),
the pinned roots and its own state directory, served by `clients.desk.app` on 127.0.0.1 in
this process and talking to a real broker. Also the browser (Debian's Chromium, never a
downloaded one), screenshots, and the checks every page gets: no untranslated string and no
character the desk's fonts do not cover."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from fontTools.ttLib import TTFont

from clients.desk import labels
from clients.desk.app import FONTS, GATE, DeskSettings, create_app
from keys.keystore import KDF_PROFILES, save_identity
from tests.integration.pki import Pki

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PASSPHRASE = "รหัสผ่าน-ລະຫັດຜ່ານ-desk"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "desk"
LAO_RANGE = range(0x0E80, 0x0F00)


@dataclass
class RunningDesk:
    agency_id: str
    app: web.Application
    runner: web.AppRunner
    origin: str

    @property
    def start_url(self) -> str:
        return f"{self.origin}/start?token={self.app[GATE].start_token}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_desk(
    directory: Path, pki: Pki, agency_id: str, broker_url: str, *, language: str
) -> RunningDesk:
    directory.mkdir(parents=True, exist_ok=True)
    keystore = directory / f"{agency_id}.cbks"
    save_identity(keystore, pki[agency_id], PASSPHRASE, KDF_PROFILES["interactive"])
    settings = DeskSettings(
        keystore=keystore,
        trust=tuple(pki.write_roots(directory / "roots")),
        broker_url=broker_url,
        state_dir=directory / "state",
        language=language,
        sync_interval_seconds=0.5,
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return RunningDesk(agency_id, app, runner, f"http://127.0.0.1:{port}")


# --- checks on what a page shows ---------------------------------------------------------------

VISIBLE_TEXT_JS = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const n = walker.currentNode, el = n.parentElement;
    if (!el || el.closest('script,style,[hidden]')) continue;
    const s = getComputedStyle(el);
    if (s.display === 'none' || s.visibility === 'hidden') continue;
    const t = n.textContent.trim();
    if (t) out.push(t);
  }
  for (const el of document.querySelectorAll('[placeholder],[title],[aria-label]')) {
    for (const a of ['placeholder', 'title', 'aria-label']) {
      const v = el.getAttribute(a);
      if (v) out.push(v.trim());
    }
  }
  for (const el of document.querySelectorAll('input[type=text],input:not([type]),textarea,option:checked')) {
    if (el.value) out.push(el.value);
  }
  return out;
}"""


def english_msgids() -> set[str]:
    ids = set(labels.all_msgids())
    templates = Path(labels.__file__).parent / "templates"
    for path in templates.glob("*.html"):
        text = path.read_text(encoding="utf-8")
        ids |= set(re.findall(r'_\("([^"]+)"\)', text)) | set(re.findall(r"_\('([^']+)'\)", text))
    return ids


def untranslated(texts: list[str], msgids: set[str]) -> list[str]:
    """Texts shown exactly as an English msgid (after trimming punctuation a template adds)."""
    return sorted({t for t in texts if t.strip(" :·›()") in msgids and re.search("[A-Za-z]", t)})


class FontCoverage:
    """The characters the desk's served fonts draw: the Thai font for everything, the Lao font
    for the Lao block (as the CSS unicode-range says)."""

    def __init__(self, fonts: dict[str, Path]) -> None:
        with TTFont(fonts["thai-regular.ttf"], lazy=True) as thai:
            self.thai = set(thai.getBestCmap())
        with TTFont(fonts["lao-regular.ttf"], lazy=True) as lao:
            self.lao = {c for c in lao.getBestCmap() if c in LAO_RANGE}

    def missing(self, texts: list[str]) -> set[str]:
        out = set()
        for text in texts:
            for c in text:
                code = ord(c)
                if c.isspace() or code < 0x20:
                    continue
                if code in LAO_RANGE:
                    if code not in self.lao:
                        out.add(c)
                elif code not in self.thai:
                    out.add(c)
        return out


async def check_page(page: Any, desk: RunningDesk, name: str, language: str) -> None:
    """Save a screenshot and check the page: in Thai and Lao no English msgid shows; in every
    language every character is covered by the fonts the desk serves."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("document.fonts.ready")
    await page.screenshot(path=str(ARTIFACTS / f"{name}-{language}.png"), full_page=True)
    texts = await page.evaluate(VISIBLE_TEXT_JS)
    if language != "en":
        left = untranslated(texts, english_msgids())
        assert not left, f"{name} in {language} shows untranslated strings: {left}"
    missing = FontCoverage(desk.app[FONTS]).missing(texts)
    assert not missing, f"{name} in {language} shows characters the desk's fonts lack: {sorted(missing)}"


def require_chromium() -> None:
    import pytest

    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("/usr/bin/chromium is missing in CI: .ci/run installs Debian's chromium")
        pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)")

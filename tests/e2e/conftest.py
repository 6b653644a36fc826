"""Fixtures for the desk's browser tests: the real broker fixtures of tests/integration, and a
headless Chromium from Debian driven by Playwright (no browser is ever downloaded)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.e2e.desk_harness import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.integration.conftest import broker_process, live_pki

__all__ = ["broker_process", "browser", "live_pki"]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()

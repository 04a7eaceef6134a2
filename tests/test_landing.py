"""The landing page at "/" in real Chromium: what Invigil is, that a link from the
teacher is needed, and the privacy statement; in Dutch and English; axe-clean."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_accessibility import Audit

pytestmark = pytest.mark.browser


async def test_the_landing_page_says_what_invigil_is_in_both_languages(server: Any, page_factory: Any) -> None:
    page = await page_factory(locale="nl-NL")
    response = await page.goto(server.url + "/")
    assert response.status == 200
    assert "live toezicht" in await page.inner_text("h1")
    text = await page.inner_text("main")
    assert "link" in text and "docent" in text and "niets bewaard" in text
    await page.click("button[data-lang=en]")
    assert await page.evaluate("document.documentElement.lang") == "en"
    text = await page.inner_text("main")
    assert "You need a link" in text and "teacher" in text and "Nothing is stored" in text
    audit = Audit()
    await audit.check(page, "landing page")
    audit.assert_clean()

    await page.click("a[href='/privacy']")
    assert "Invigil and privacy" in await page.inner_text("body")
    assert page.errors == []

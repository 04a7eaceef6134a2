"""Say what is watched, in real Chromium against the real server.

The notice says that leaving the page for another tab or window is reported,
and closing or reloading the tab does not raise "opened another window or tab";
a real switch away still does.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.peers import Client
from tests.test_organiser_flow import TIMEOUT_MS
from tests.test_student_page import create_exam, desk_with_media, go_live, media_calls, student_page

pytestmark = pytest.mark.browser


def _hidden_alerts(desk: Client, mark: int) -> list[dict[str, Any]]:
    return [m for m in desk.received[mark:] if m["type"] == "alert" and m["kind"] == "page_hidden"]


async def test_the_notice_says_a_tab_switch_is_seen_and_closing_the_tab_is_not_one(
    server: Any, page_factory: Any
) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server)
        # The student is live once their media reaches a desk's media connection (media_live).
        desk, desk_media = await desk_with_media(session, server, created["surveillant_links"][0])
        page = await student_page(page_factory)
        await page.goto(created["student_link"])
        await page.wait_for_selector("#step-notice:not([hidden])", timeout=TIMEOUT_MS)
        watched = await page.inner_text("#notice-watched")
        assert "another tab or window" in watched and "surveillant gets a message" in watched
        assert await media_calls(page) == []

        page.on("dialog", lambda dialog: dialog.accept())
        await go_live(page, created["student_link"])
        await page.wait_for_selector("#live-banner:not([hidden])", timeout=TIMEOUT_MS)
        await desk.wait_for(lambda m: m["type"] == "roster" and m["students"] and m["students"][0]["connected"])

        mark = desk.mark()
        await page.reload()
        await page.wait_for_selector("#step-resume:not([hidden])", timeout=TIMEOUT_MS)
        await desk.wait_for(lambda m: m["type"] == "alert" and m["kind"] == "connection_lost", after=mark)
        assert _hidden_alerts(desk, mark) == []

        await page.click("#resume-button")
        await page.wait_for_selector("#live-banner:not([hidden])", timeout=TIMEOUT_MS)
        await desk.wait_for(
            lambda m: m["type"] == "roster" and m["students"] and m["students"][0]["connected"], after=mark
        )
        # A real switch away is still reported.
        switched = desk.mark()
        await page.evaluate(
            """() => {
              Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true });
              document.dispatchEvent(new Event('visibilitychange'));
            }"""
        )
        await desk.wait_for(lambda m: m["type"] == "alert" and m["kind"] == "page_hidden", after=switched)
        await page.evaluate(
            """() => {
              Object.defineProperty(document, 'visibilityState', { value: 'visible', configurable: true });
              document.dispatchEvent(new Event('visibilitychange'));
            }"""
        )
        await desk.wait_for(
            lambda m: m["type"] == "roster" and m["students"] and not m["students"][0]["status"]["page_hidden"],
            after=switched,
        )

        closed = desk.mark()
        await page.close(run_before_unload=True)
        await desk.wait_for(lambda m: m["type"] == "alert" and m["kind"] == "connection_lost", after=closed)
        assert _hidden_alerts(desk, closed) == []
        await desk_media.close()
        await desk.close()

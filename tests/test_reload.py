"""A reload keeps the student's place, in real Chromium against the real server.

The resume secret lives in this tab's sessionStorage while the session is live
(PRIVACY.md); after a reload one click brings camera, microphone and screen back
and the student is live again: the same place, the same surveillant, still
admitted. When the session ends, the storage is empty again.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.peers import Client
from tests.test_organiser_flow import TIMEOUT_MS
from tests.test_student_page import create_exam, desk_with_media, go_live, student_page

pytestmark = pytest.mark.browser


async def _storage_length(page: Any) -> int:
    return await page.evaluate("sessionStorage.length")


async def test_a_reload_returns_to_live_with_the_same_surveillant_and_still_admitted(
    server: Any, page_factory: Any
) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, id_check=True)
        # The student is live once their media reaches a desk's media connection (media_live).
        desk, desk_media = await desk_with_media(session, server, created["surveillant_links"][0])
        page = await student_page(page_factory)
        page.on("dialog", lambda dialog: dialog.accept())
        await go_live(page, created["student_link"])
        roster = await desk.wait_for(lambda m: m["type"] == "roster" and m["students"], timeout=15)
        student_id = roster["students"][0]["id"]
        assert (await desk.request({"type": "admit", "student_id": student_id}))["type"] == "ack"
        await page.wait_for_selector("#live-banner:not([hidden])", timeout=TIMEOUT_MS)
        await page.wait_for_selector("#media-status:empty", state="attached", timeout=TIMEOUT_MS)
        assert await _storage_length(page) == 1

        mark = desk.mark()
        await page.reload()
        await page.wait_for_selector("#step-resume:not([hidden])", timeout=TIMEOUT_MS)
        assert "Sanne" in await page.inner_text("#resume-text")
        await page.click("#resume-button")
        await page.wait_for_selector("#live-banner:not([hidden])", timeout=TIMEOUT_MS)
        await page.wait_for_selector("#media-status:empty", state="attached", timeout=TIMEOUT_MS)
        assert "Mevr. Jansen" in await page.inner_text("#live-text")
        # Admitted: the page says live, not the ID check.
        assert "ID" not in await page.inner_text("#session-heading")
        back = await desk.wait_for(
            lambda m: m["type"] == "roster" and m["students"] and m["students"][0]["connected"]
            and m["students"][0]["media"],
            after=mark, timeout=15,
        )
        assert [s["id"] for s in back["students"]] == [student_id]
        assert back["students"][0]["admitted"] is True
        assert back["queue"] == 0

        await page.click("#leave-button")
        await page.click("#leave-dialog button[value=leave]")
        await page.wait_for_selector("#step-ended:not([hidden])")
        assert await _storage_length(page) == 0
        assert page.errors == []
        await desk_media.close()
        await desk.close()

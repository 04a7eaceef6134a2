"""Oral exams in oral words, and a hand-over said aloud: real Chromium, real server.

An oral exam's pages say "examiner": the student waits for their examiner (no
empty examiner box before they are there), the examiner's desk starts "the
exam", the organiser hands out examiner links, and a finished student is thanked. In a written exam, a hand-over tells
the student who their surveillant is now.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.test_organiser_flow import TIMEOUT_MS, visible
from tests.test_organiser_flow import create_exam as create_exam_on_page
from tests.test_sfu_forwarding import add_surveillant
from tests.test_student_page import create_exam, desk_with_media, go_live, student_page

pytestmark = pytest.mark.browser


async def test_an_oral_exam_says_examiner_and_thanks_the_student(server: Any, page_factory: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, kind="oral")
        desk = await page_factory(locale="en-GB")
        await desk.goto(created["surveillant_links"][0])
        await visible(desk, "#start")
        assert await desk.inner_text("#start-form button[type=submit]") == "Start the exam"
        assert "examiners" in await desk.inner_text("#conduct-heading")
        assert "Examiner" in await desk.inner_text("header.topbar")
        assert "surveillant" not in (await desk.inner_text("#start")).lower()

        page = await student_page(page_factory)
        await page.goto(created["student_link"])
        await page.wait_for_selector("#step-notice:not([hidden])", timeout=TIMEOUT_MS)
        assert "surveillant" not in (await page.inner_text("#step-notice")).lower()
        await go_live(page, created["student_link"])
        await page.wait_for_selector("#session-heading:text-is('Waiting for your examiner')", timeout=TIMEOUT_MS)
        assert await page.is_hidden("#examiner-card")
        assert "surveillant" not in (await page.inner_text("#step-session")).lower()

        # The student is live once their media reaches a desk's media connection (media_live).
        # An oral exam's desk has one place: one student at a time.
        examiner, examiner_media = await desk_with_media(
            session, server, created["surveillant_links"][0], name="Dr. de Boer", slots=1
        )
        await visible(page, "#examiner-card")
        assert "your examiner, Dr. de Boer" in await page.inner_text("#live-text")
        roster = await examiner.wait_for(lambda m: m["type"] == "roster" and m["students"])
        await examiner.request({"type": "end_session", "student_id": roster["students"][0]["id"], "reason": ""})
        await page.wait_for_selector("#step-ended:not([hidden])", timeout=TIMEOUT_MS)
        assert await page.inner_text("#ended-heading") == "Thank you"
        assert "surveillant" not in (await page.inner_text("#step-ended")).lower()
        assert page.errors == [] and desk.errors == []
        await examiner_media.close()
        await examiner.close()


async def test_a_hand_over_tells_the_student_who_watches_now(server: Any, page_factory: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server)
        organiser, second_link = await add_surveillant(session, server, created)
        first, first_media = await desk_with_media(session, server, created["surveillant_links"][0], name="Mevr. Jansen")
        page = await student_page(page_factory)
        await go_live(page, created["student_link"])
        await page.wait_for_selector("#live-banner:not([hidden])", timeout=TIMEOUT_MS)
        assert await page.inner_text("#surveillant-changed") == ""

        second, second_media = await desk_with_media(session, server, second_link, name="Dhr. Bakker")
        roster = await first.wait_for(lambda m: m["type"] == "roster" and m["students"] and m["others"])
        reply = await first.request(
            {"type": "hand_over", "student_id": roster["students"][0]["id"], "to": roster["others"][0]["id"]}
        )
        assert reply["type"] == "ack"
        await page.wait_for_selector("#surveillant-changed:has-text('Dhr. Bakker is now your surveillant.')",
                                     timeout=TIMEOUT_MS)
        # Live again once the media reaches the new desk (media_live), in the new name.
        await page.wait_for_selector("#live-text:has-text('Dhr. Bakker')", timeout=TIMEOUT_MS)
        assert page.errors == []
        for media in (first_media, second_media):
            await media.close()
        for client in (organiser, first, second):
            await client.close()


async def test_the_organiser_page_of_an_oral_exam_says_examiner(server: Any, page_factory: Any) -> None:
    organiser = await page_factory(locale="en-GB", viewport={"width": 1200, "height": 900})
    links = await create_exam_on_page(organiser, server.creator_link, kind="oral")
    assert "Examiner link 1" in await organiser.inner_text("#links")
    assert await organiser.inner_text("#surveillants-heading") == "Examiners"
    overview = (await organiser.inner_text("#overview")).lower()
    assert "examiner" in overview and "surveillant" not in overview
    await organiser.reload()
    await visible(organiser, "#overview")
    assert await organiser.inner_text("#surveillants-heading") == "Examiners"
    assert links["surveillant"] and organiser.errors == []

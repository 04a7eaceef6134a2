"""Incident notes are not lost by surprise, in real Chromium against the real server.

The organiser's end dialog says that surveillants may hold incident notes and
offers "End in 60 seconds": the desks then say when the exam ends and offer
their notes for download, while the exam still runs; "End now" still ends it. A surveillant who joins after the announcement hears it too.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.peers import Client
from tests.test_desk_and_recovery import desk_page
from tests.test_organiser_flow import TIMEOUT_MS, visible
from tests.test_sfu_forwarding import create_exam, token

pytestmark = pytest.mark.browser


async def test_the_surveillants_are_warned_before_the_end_and_can_download_their_notes(
    server: Any, page_factory: Any
) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        desk = await desk_page(page_factory, created["surveillant_links"][0], "Mevr. Jansen")
        student = Client(session, server.url)
        await student.connect(token(created["student_link"]), name="Sanne")
        await desk.wait_for_selector(".tile[data-student] .open", timeout=TIMEOUT_MS)
        await desk.click(".tile[data-student] .open")
        await desk.fill("#incident-note", "Phone on the desk.")
        await desk.click("#incident-form button")
        await desk.wait_for_selector("#incident-result[data-kind=ok]:not(:empty)", timeout=TIMEOUT_MS)
        await desk.keyboard.press("Escape")

        organiser = await page_factory(locale="en-GB")
        await organiser.goto(created["organiser_link"])
        await visible(organiser, "#overview")
        await organiser.click("#end-exam")
        await visible(organiser, "#end-dialog")
        assert "incident notes" in await organiser.inner_text("#end-dialog")
        await organiser.click("#end-later")
        await organiser.wait_for_selector("#end-dialog", state="hidden", timeout=TIMEOUT_MS)
        assert "warned" in await organiser.inner_text("#add-result")

        await visible(desk, "#ending-banner")
        text = await desk.inner_text("#ending-text")
        assert "incident notes" in text and "60 seconds" in text
        # The exam still runs: the desk is there, and the notes can be saved from the banner.
        assert await desk.is_visible("#desk")
        async with desk.expect_download() as download_info:
            await desk.click("#ending-download")
        assert (await download_info.value).suggested_filename.endswith(".txt")

        # "End now" still ends it at once.
        await organiser.click("#end-exam")
        await visible(organiser, "#end-dialog")
        await organiser.click("#end-confirm")
        await visible(desk, "#notice")
        assert await desk.is_hidden("#ending-banner")
        assert desk.errors == [] and organiser.errors == []
        await student.close()


async def test_a_surveillant_who_joins_after_the_announcement_hears_it_too(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        organiser = Client(session, server.url)
        await organiser.connect(token(created["organiser_link"]))
        assert (await organiser.request({"type": "end_exam", "after_seconds": 60}))["type"] == "ack"
        announced = await organiser.wait_for(lambda m: m["type"] == "exam_ending")
        assert announced["seconds"] == 60
        late = Client(session, server.url)
        await late.connect(token(created["surveillant_links"][0]), name="Dhr. Bakker")
        told = await late.wait_for(lambda m: m["type"] == "exam_ending")
        assert told["at"] == announced["at"] and told["seconds"] == 60
        # A later, longer announcement does not postpone the end; "now" still ends at once.
        assert (await organiser.request({"type": "end_exam", "after_seconds": 300}))["type"] == "ack"
        await organiser.send({"type": "end_exam", "v": 1})
        await late.wait_for(lambda m: m["type"] == "exam_ended")
        assert [m["at"] for m in late.received if m["type"] == "exam_ending"] == [announced["at"]]

"""Seats in real Chromium: the desk shows a placed student without media as "not connected"
and the alert when a student's place is taken over by a second connection; a student page
whose media never comes up is released and says why."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.peers import Client
from tests.test_desk_and_recovery import desk_page, tile_of
from tests.test_organiser_flow import TIMEOUT_MS, eventually
from tests.test_sfu_forwarding import create_exam, token
from tests.test_student_page import go_live, student_page

pytestmark = pytest.mark.browser

# Test-only: a page whose peer connection never makes its offer (a device or network stuck).
NEVER_OFFERS = r"""
RTCPeerConnection.prototype.createOffer = function () { return new Promise(() => {}); };
"""


async def test_the_desk_shows_a_student_without_media_and_a_taken_over_seat(
    server: Any, page_factory: Any
) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        desk = await desk_page(page_factory, created["surveillant_links"][0], "Mevr. Jansen")
        first_tab = Client(session, server.url)
        welcome = await first_tab.connect(token(created["student_link"]), name="Sanne")
        await first_tab.wait_for(lambda m: m["type"] == "assigned")

        tile = await tile_of(desk, "Sanne")
        status = f"{tile} .status-list"

        async def says_not_connected() -> bool:
            return "Not connected" in await desk.inner_text(status)

        await eventually(says_not_connected)
        assert "disconnected" in (await desk.get_attribute(tile, "class") or "")

        other_device = Client(session, server.url)
        await other_device.connect(token(created["student_link"]), name="Sanne", resume=welcome["resume"])
        entry = "#alert-list .alert-entry[data-kind=taken_over]"
        await desk.wait_for_selector(entry, timeout=TIMEOUT_MS)
        text = await desk.inner_text(entry)
        assert "Sanne" in text and "earlier connection was closed" in text
        assert "earlier connection was closed" in await desk.inner_text("#alert-live")
        assert desk.errors == []
        for client in (first_tab, other_device):
            await client.close()


async def test_a_student_page_whose_media_never_comes_up_is_released_and_told_why(
    server_factory: Any, page_factory: Any
) -> None:
    server = await server_factory(student_media_seconds=1.0)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1)
        surveillant = Client(session, server.url)
        await surveillant.connect(token(created["surveillant_links"][0]), name="Mevr. Jansen")
        page = await student_page(page_factory)
        await page.context.add_init_script(NEVER_OFFERS)
        await go_live(page, created["student_link"])
        await page.wait_for_selector("#step-ended:not([hidden])", timeout=TIMEOUT_MS)
        assert "did not start" in await page.inner_text("#ended-heading")
        assert "next student" in await page.inner_text("#ended-text")
        roster = await surveillant.wait_for(lambda m: m["type"] == "roster" and not m["students"])
        assert roster["queue"] == 0
        await surveillant.close()

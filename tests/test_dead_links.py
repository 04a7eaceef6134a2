"""Dead links and ended seats in real Chromium: the page says so first.

A link of an ended exam, a damaged or expired link, and a personal seat whose
session a surveillant ended are refused before the notice, before any device
request (spied on mediaDevices); the desk says it before its code of conduct.
The organiser hands out numbered personal seat links; on the shared link the
desk is alerted when someone joins under the name of an ended session.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from sfu.app import REGISTRY
from sfu.links import Capability
from tests.peers import Client
from tests.test_desk_and_recovery import desk_page, tile_of
from tests.test_organiser_flow import TIMEOUT_MS
from tests.test_sfu_forwarding import create_exam, token
from tests.test_student_page import desk_with_media, go_live, media_calls, student_page

pytestmark = pytest.mark.browser


async def _end_exam(session: aiohttp.ClientSession, server: Any, created: dict[str, Any]) -> None:
    organiser = Client(session, server.url)
    await organiser.connect(token(created["organiser_link"]))
    await organiser.send({"type": "end_exam", "v": 1})
    try:
        await organiser.wait_for(lambda m: False, timeout=5)
    except ConnectionError:
        pass


async def _refused_at_once(page: Any, link: str, heading: str) -> None:
    await page.goto(link)
    await page.wait_for_selector("#step-problem:not([hidden])", timeout=TIMEOUT_MS)
    assert heading in await page.inner_text("#problem-heading")
    assert await page.is_hidden("#step-notice")
    assert await media_calls(page) == []


async def test_dead_student_links_are_refused_before_the_notice_and_any_device(
    server: Any, page_factory: Any
) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server)
        page = await student_page(page_factory)

        await _refused_at_once(page, created["student_link"][:-4] + "AAAA", "link does not work")
        assert "not valid" in await page.inner_text("#problem-text")

        capability = server.app[REGISTRY].signer.verify(token(created["student_link"]), time.time())
        expired = server.app[REGISTRY].signer.sign(
            Capability(role="student", exam=capability.exam, seat="student", expires_at=int(time.time()) - 5)
        )
        await _refused_at_once(page, f"{server.url}/join/#{expired}", "link does not work")
        assert "expired" in await page.inner_text("#problem-text")

        await _end_exam(session, server, created)
        await _refused_at_once(page, created["student_link"], "exam has ended")
        assert page.errors == []

        desk = await page_factory(locale="en-GB")
        await desk.goto(created["surveillant_links"][0])
        await desk.wait_for_selector("#notice:not([hidden])", timeout=TIMEOUT_MS)
        assert "exam has ended" in (await desk.inner_text("#notice-heading")).lower()
        assert await desk.is_hidden("#start")


async def test_an_ended_seat_cannot_come_back(server: Any, page_factory: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        organiser = await page_factory(locale="en-GB")
        await organiser.goto(created["organiser_link"])
        await organiser.wait_for_selector("#seats-form", state="visible", timeout=TIMEOUT_MS)
        await organiser.fill("#seats-count", "3")
        await organiser.click("#seats-form button[type=submit]")
        await organiser.wait_for_selector("#seats-box:not([hidden])", timeout=TIMEOUT_MS)
        seats = (await organiser.input_value("#seats-list")).split("\n")
        assert len(seats) == 3 and all("/join/#" in link for link in seats)
        assert "3 personal links" in await organiser.inner_text("#seats-result")

        desk = Client(session, server.url)
        await desk.connect(token(created["surveillant_links"][0]), name="Mevr. Jansen")
        page = await student_page(page_factory)
        await go_live(page, seats[1])
        roster = await desk.wait_for(lambda m: m["type"] == "roster" and m["students"], timeout=15)
        reply = await desk.request({"type": "end_session", "student_id": roster["students"][0]["id"], "reason": ""})
        assert reply["type"] == "ack"
        await page.wait_for_selector("#step-ended:not([hidden])", timeout=TIMEOUT_MS)

        again = await student_page(page_factory)
        await _refused_at_once(again, seats[1], "session has ended")
        assert "cannot continue" in await again.inner_text("#problem-text")
        # Another seat still works.
        other = await student_page(page_factory)
        await other.goto(seats[2])
        await other.wait_for_selector("#step-notice:not([hidden])", timeout=TIMEOUT_MS)
        assert organiser.errors == [] and again.errors == []
        await desk.close()


async def test_the_desk_is_alerted_when_someone_rejoins_the_shared_link_under_an_ended_name(
    server: Any, page_factory: Any
) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        desk = await desk_page(page_factory, created["surveillant_links"][0], "Mevr. Jansen")
        first = Client(session, server.url)
        welcome = await first.connect(token(created["student_link"]), name="Sanne")
        tile = await tile_of(desk, "Sanne")
        await desk.click(f"{tile} .open")
        await desk.click("#end-open")
        await desk.fill("#end-reason", "Phone on the desk.")
        await desk.click("#end-confirm")
        await desk.wait_for_selector(".tile", state="detached", timeout=TIMEOUT_MS)

        # The ended tab cannot take its place back with its resume...
        refused = await Client(session, server.url).connect(
            token(created["student_link"]), name="Sanne", resume=welcome["resume"]
        )
        assert refused["code"] == "session_ended"
        # ...and a fresh join under the same name is placed, but the desk is told.
        again = Client(session, server.url)
        await again.connect(token(created["student_link"]), name="sanne")
        entry = "#alert-list .alert-entry[data-kind=rejoined_after_end]"
        await desk.wait_for_selector(entry, timeout=TIMEOUT_MS)
        assert "session that was ended" in await desk.inner_text(entry)
        assert desk.errors == []
        await again.close()


async def test_a_second_tab_on_a_seat_replaces_the_first_and_the_desk_sees_it(
    server: Any, page_factory: Any
) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        organiser = Client(session, server.url)
        await organiser.connect(token(created["organiser_link"]))
        seat = (await organiser.request({"type": "seat_links", "count": 1}))["links"][0]
        # The student is live once their media reaches a desk's media connection (media_live).
        desk, desk_media = await desk_with_media(session, server, created["surveillant_links"][0], slots=2)
        first = await student_page(page_factory)
        await go_live(first, seat)
        roster = await desk.wait_for(lambda m: m["type"] == "roster" and m["students"], timeout=15)
        student_id = roster["students"][0]["id"]

        second = await student_page(page_factory)
        await go_live(second, seat)
        await first.wait_for_selector("#step-ended:not([hidden])", timeout=TIMEOUT_MS)
        assert "another window" in await first.inner_text("#ended-heading")
        await second.wait_for_selector("#live-banner:not([hidden])", timeout=TIMEOUT_MS)
        alert = await desk.wait_for(lambda m: m["type"] == "alert" and m["kind"] == "taken_over")
        assert alert["student_id"] == student_id
        latest = desk.latest("roster")
        assert latest is not None and [s["id"] for s in latest["students"]] == [student_id]
        assert first.errors == [] and second.errors == []
        await desk_media.close()
        for client in (organiser, desk):
            await client.close()

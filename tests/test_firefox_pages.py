"""Firefox ESR on both ends of the path: a Firefox student on a Chromium desk, and a Chromium
student on a Firefox desk (of an exam created on the organiser's page in Firefox). The desk's
tile plays (a size, and currentTime advancing over a second) and the student's page reaches live.

Firefox is Debian's firefox-esr over WebDriver BiDi (tests/firefox.py); its fake devices
come from prefs and its "screen" is the same animated canvas as Chromium's (tests/browser.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.browser import CANVAS_SCREEN_FUNCTION
from tests.capture_offers import join
from tests.firefox import FirefoxPage
from tests.test_desk_and_recovery import desk_page, really_plays, tile_of
from tests.test_organiser_flow import TIMEOUT_MS, eventually
from tests.test_student_page import create_exam, go_live, student_page

pytestmark = pytest.mark.browser

CANVAS_SCREEN = CANVAS_SCREEN_FUNCTION + "navigator.mediaDevices.getDisplayMedia = async () => window.__canvasScreen();"
PLAYING_SAMPLE = """(selector) => [...document.querySelectorAll(selector)]
    .map((video) => [video.videoWidth, video.currentTime])"""


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def firefox_playing(page: FirefoxPage, selector: str) -> bool:
    """Every video matching `selector` has a size and its currentTime grows over one second."""
    before = await page.evaluate(PLAYING_SAMPLE, selector)
    await asyncio.sleep(1.0)
    after = await page.evaluate(PLAYING_SAMPLE, selector)
    if not before or len(before) != len(after):
        return False
    return all(width > 0 and later > earlier for (_, earlier), (width, later) in zip(before, after))


async def firefox_desk(firefox: Any, link: str, name: str) -> FirefoxPage:
    """The surveillant's desk page in Firefox, started with the code of conduct agreed."""
    desk = await firefox.new_page(viewport={"width": 1400, "height": 1000})
    await desk.goto(link)
    await desk.wait_for_selector("#start", timeout=TIMEOUT_MS)
    await desk.fill("#display-name", name)
    await desk.click("#conduct-agree")
    await desk.click("#start-form button[type=submit]")
    await desk.wait_for_selector("#desk", timeout=TIMEOUT_MS)
    return desk


async def test_a_firefox_student_plays_on_a_chromium_desk(
    server: Any, page_factory: Any, firefox: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server)
    desk = await desk_page(page_factory, created["surveillant_links"][0], "Mevr. Jansen")
    student = await firefox.new_page(init_script=CANVAS_SCREEN)
    await join(student, created["student_link"])

    await student.wait_for_selector("#live-banner", timeout=30000)
    assert "Mevr. Jansen" in await student.inner_text("#live-text")
    tile = await tile_of(desk, "Sanne")
    await really_plays(desk, f"{tile} .tile-webcam-video")
    await really_plays(desk, f"{tile} .tile-screen-video")
    assert [error for error in await student.errors if "negotiation failed" in error] == []
    assert desk.errors == []


async def test_a_chromium_student_plays_on_a_firefox_desk(server: Any, page_factory: Any, firefox: Any) -> None:
    # The organiser's page in Firefox creates the exam.
    organiser = await firefox.new_page(viewport={"width": 1200, "height": 900})
    await organiser.goto(server.creator_link)
    await organiser.wait_for_selector("#create", timeout=TIMEOUT_MS)
    await organiser.fill("#exam-title-input", "Aardrijkskunde 3 vwo")
    await organiser.fill("#contact-input", "examenbureau@school.example")
    await organiser.click("#create-form button[type=submit]")
    await organiser.wait_for_selector("#links", timeout=TIMEOUT_MS)
    links = await organiser.evaluate("() => [...document.querySelectorAll('.link-input')].map((input) => input.value)")
    assert len(links) == 3 and all(link.startswith(server.url) for link in links), links
    assert await organiser.errors == []

    desk = await firefox_desk(firefox, links[2], "Mevr. Jansen")
    student = await student_page(page_factory)
    await go_live(student, links[1])

    await student.wait_for_selector("#live-banner:not([hidden])", timeout=30000)

    async def tile() -> str | None:
        return await desk.evaluate(
            """() => [...document.querySelectorAll('.tile[data-student]')]
                .find((node) => node.querySelector('.tile-name')?.textContent.trim() === 'Sanne')
                ?.dataset.student ?? null"""
        )

    student_id = await eventually(tile, timeout=TIMEOUT_MS / 1000)
    selector = f'.tile[data-student="{student_id}"]'
    await eventually(lambda: firefox_playing(desk, f"{selector} .tile-webcam-video"), timeout=30)
    await eventually(lambda: firefox_playing(desk, f"{selector} .tile-screen-video"), timeout=30)
    assert await desk.errors == []
    assert student.errors == []

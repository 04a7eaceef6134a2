"""Where the browser blocked the camera or the microphone, the device check shows the way to
unblock it in that browser's own settings: Chrome/Edge, Firefox, Safari on a Mac, iPhone/iPad.

Chromium pretends to be Safari through its user agent; Firefox is the real firefox-esr. The
block is a getUserMedia that rejects with NotAllowedError, as a browser does after "Block".
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.test_student_page import create_exam

pytestmark = pytest.mark.browser

BLOCKED = r"""
navigator.mediaDevices.getUserMedia = async () => {
  throw new DOMException('Permission denied', 'NotAllowedError');
};
"""
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def blocked_check(page: Any, link: str) -> dict[str, str]:
    """Go to the device check with the devices blocked; the help shown for each."""
    await page.goto(link)
    await page.fill("#student-name", "Sanne")
    await page.click("#confirm-button")
    await page.wait_for_selector("#camera-unblock", state="visible")
    await page.wait_for_selector("#microphone-unblock", state="visible")
    return {device: await page.inner_text(f"#{device}-unblock") for device in ("camera", "microphone")}


@pytest.mark.parametrize(
    ("user_agent", "camera", "microphone"),
    [
        (None, "In Chrome or Edge", "set Microphone to Allow"),
        (SAFARI_MAC, "Safari › Settings for This Website", "Privacy & Security › Microphone"),
        (SAFARI_IPHONE, "iPhone or iPad", "Settings › Safari › Microphone"),
    ],
    ids=["chrome", "safari-mac", "iphone"],
)
async def test_a_blocked_camera_and_microphone_show_this_browsers_way_to_unblock(
    server: Any, page_factory: Any, session: aiohttp.ClientSession, user_agent: str | None, camera: str, microphone: str
) -> None:
    created = await create_exam(session, server)
    options = {"locale": "en-GB"} | ({"user_agent": user_agent} if user_agent else {})
    page = await page_factory(**options)
    await page.context.add_init_script(BLOCKED)
    help_text = await blocked_check(page, created["student_link"])
    assert camera in help_text["camera"] and "Camera" in help_text["camera"]
    assert microphone in help_text["microphone"]
    assert await page.get_attribute("#camera-status", "data-state") == "problem"
    assert page.errors == []


async def test_firefox_shows_firefoxs_way_to_unblock(server: Any, firefox: Any, session: aiohttp.ClientSession) -> None:
    created = await create_exam(session, server)
    page = await firefox.new_page(init_script=BLOCKED)
    help_text = await blocked_check(page, created["student_link"])
    assert "In Firefox" in help_text["camera"] and "Permissions › Camera" in help_text["camera"]
    assert "Permissions › Microphone" in help_text["microphone"]

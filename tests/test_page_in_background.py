"""A student's page in the background: the desk covers the camera picture, which a phone's
browser pauses then, with "Page in background" instead of showing a frozen frame as live.

Real Chromium for the student page and the desk through the real server; axe checks the
desk while the cover is shown. The student page
is put in the background the way the browser does it: `document.visibilityState` turns
'hidden' and `visibilitychange` fires (then back to 'visible').
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.test_accessibility import Audit
from tests.test_desk_and_recovery import _live_student_and_desk
from tests.test_organiser_flow import TIMEOUT_MS, visible

pytestmark = pytest.mark.browser

VISIBILITY = """(state) => {
    Object.defineProperty(document, 'visibilityState', { value: state, configurable: true });
    Object.defineProperty(document, 'hidden', { value: state === 'hidden', configurable: true });
    document.dispatchEvent(new Event('visibilitychange'));
}"""

# Where the cover of `video` is, against the video's own box, what is on top at the video's
# centre, and what the surrounding tile or dialog is described by.
COVER_OF = """(selector) => {
    const video = document.querySelector(selector);
    video.scrollIntoView({ block: 'center' });
    const cover = video.parentElement.querySelector('.page-background');
    if (!cover) return null;
    const v = video.getBoundingClientRect();
    const c = cover.getBoundingClientRect();
    const top = document.elementFromPoint(v.left + v.width / 2, v.top + v.height / 2);
    const holder = video.closest('article, dialog');
    const described = (holder.getAttribute('aria-describedby') ?? '').split(/\\s+/)
      .map((id) => document.getElementById(id)?.textContent ?? '').join(' ');
    return {
      videoArea: v.width * v.height,
      covers: c.left <= v.left + 0.5 && c.top <= v.top + 0.5 && c.right >= v.right - 0.5 && c.bottom >= v.bottom - 0.5,
      onTop: cover.contains(top),
      text: cover.innerText,
      described,
    };
}"""


def assert_covered(cover: dict[str, Any] | None) -> None:
    assert cover is not None, "no cover over the camera picture"
    assert cover["videoArea"] > 0
    assert cover["covers"], cover
    assert cover["onTop"], cover
    assert "Page in background" in cover["text"] and "frozen" in cover["text"]
    assert "Page in background" in cover["described"], cover


async def test_the_desk_covers_the_camera_of_a_page_in_the_background_and_uncovers_it_after(
    server: Any, page_factory: Any
) -> None:
    async with aiohttp.ClientSession() as session:
        desk, student, tile = await _live_student_and_desk(page_factory, session, server)
    webcam = f"{tile} .tile-webcam-video"
    assert await desk.evaluate(COVER_OF, webcam) is None

    await student.evaluate(VISIBILITY, "hidden")
    await visible(desk, f"{tile} .tile-webcam .page-background")
    assert_covered(await desk.evaluate(COVER_OF, webcam))
    audit = Audit()
    await audit.check(desk, "desk tile of a page in the background")

    # The large view covers its camera picture too.
    await desk.click(f"{tile} .open")
    await visible(desk, "#focus-dialog")
    await visible(desk, "#focus-dialog .big-webcam .page-background")
    assert_covered(await desk.evaluate(COVER_OF, "#focus-webcam"))
    await audit.check(desk, "desk large view of a page in the background")
    audit.assert_clean()

    # Back in front: both covers go, and so do the descriptions.
    await student.evaluate(VISIBILITY, "visible")
    await desk.wait_for_selector(".page-background", state="detached", timeout=TIMEOUT_MS)
    assert await desk.evaluate(COVER_OF, "#focus-webcam") is None
    assert await desk.evaluate(COVER_OF, webcam) is None
    assert await desk.get_attribute("#focus-dialog", "aria-describedby") is None
    assert await desk.get_attribute(f"{tile} article", "aria-describedby") is None

    for page in (desk, student):
        assert page.errors == [], page.errors

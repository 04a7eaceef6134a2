"""The desk fits the cap, in real Chromium against the real server.

Every tile of the default cap (8) is inside the viewport at 1366×768 without
scrolling, and in the student view the actions are reachable while the videos
stay in sight.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.peers import Client
from tests.test_desk_and_recovery import tile_of
from tests.test_organiser_flow import TIMEOUT_MS, surveillant_starts, visible
from tests.test_sfu_forwarding import create_exam, token

pytestmark = pytest.mark.browser

NAMES = ("Sanne", "Piet", "Ayla", "Daan", "Noor", "Milan", "Eva", "Lucas")

OUTSIDE = """() => {
  const box = (node) => node.getBoundingClientRect();
  return [...document.querySelectorAll('.tile[data-student]')].filter((tile) => {
    const b = box(tile);
    return b.top < 0 || b.left < 0 || b.bottom > innerHeight || b.right > innerWidth;
  }).map((tile) => tile.querySelector('.tile-name').textContent);
}"""


async def test_eight_tiles_are_visible_at_1366_by_768(server: Any, page_factory: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=8)
        desk = await page_factory(locale="en-GB", viewport={"width": 1366, "height": 768})
        await surveillant_starts(desk, created["surveillant_links"][0], "Mevr. Jansen")
        students = []
        for name in NAMES:
            student = Client(session, server.url)
            await student.connect(token(created["student_link"]), name=name)
            students.append(student)
        for name in NAMES:
            await tile_of(desk, name)
        await desk.evaluate("() => window.scrollTo(0, 0)")
        assert await desk.evaluate(OUTSIDE) == []
        assert await desk.evaluate("() => document.scrollingElement.scrollTop") == 0

        # In the student view, the actions are reachable without scrolling the videos away.
        await desk.click(f"{await tile_of(desk, 'Sanne')} .open")
        await visible(desk, "#focus-dialog")
        for action in ("#handover-form button", "#end-open", "#incident-note", "#message-text"):
            await desk.eval_on_selector(action, "node => node.scrollIntoView({ block: 'nearest' })")
            in_sight = await desk.evaluate(
                """(selector) => {
                  const inside = (node) => { const b = node.getBoundingClientRect();
                    return b.top >= 0 && b.bottom <= innerHeight && b.height > 0; };
                  const webcam = document.querySelector('.big-webcam');
                  const screen = document.querySelector('.big-screen');
                  const seen = (node) => { const b = node.getBoundingClientRect();
                    return b.bottom > 40 && b.top < innerHeight - 40; };
                  return [inside(document.querySelector(selector)), seen(webcam), seen(screen)];
                }""",
                action,
            )
            assert in_sight == [True, True, True], (action, in_sight)
        assert desk.errors == []
        for student in students:
            await student.close()

"""The surveillant hears one room, not eight: in real Chromium against the real server.

By default only the student in the student view plays, at full volume, and the
others are muted (their sound meter still shows speech); each tile has its own
mute and volume, and "Listen to all" plays everyone. The output level read here
is what each tile's <audio> element plays at (0 when muted, else its volume).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.peers import Client
from tests.test_desk_and_recovery import desk_page, tile_of
from tests.test_organiser_flow import TIMEOUT_MS, eventually, visible
from tests.test_sfu_forwarding import create_exam, token

pytestmark = pytest.mark.browser


async def _levels_become(desk: Any, expected: dict[str, float]) -> None:
    async def reached() -> bool:
        levels = await desk.evaluate(OUTPUT_LEVELS)
        return levels.keys() == expected.keys() and all(
            abs(levels[name] - value) < 1e-6 for name, value in expected.items()
        )

    try:
        await eventually(reached, timeout=10)
    except TimeoutError:
        raise AssertionError(f"levels {await desk.evaluate(OUTPUT_LEVELS)} never became {expected}") from None

OUTPUT_LEVELS = """() => Object.fromEntries([...document.querySelectorAll('.tile[data-student]')].map(
  (tile) => [tile.querySelector('.tile-name').textContent.trim(),
             (() => { const audio = tile.querySelector('audio'); return audio.muted ? 0 : audio.volume; })()]))"""


async def test_by_default_only_the_focused_student_is_audible(server: Any, page_factory: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=3)
        desk = await desk_page(page_factory, created["surveillant_links"][0], "Mevr. Jansen")
        students = []
        for name in ("Sanne", "Piet", "Ayla"):
            student = Client(session, server.url)
            await student.connect(token(created["student_link"]), name=name)
            students.append(student)
        for name in ("Sanne", "Piet", "Ayla"):
            await tile_of(desk, name)

        await _levels_become(desk, {"Sanne": 0, "Piet": 0, "Ayla": 0})
        piet = await tile_of(desk, "Piet")
        await desk.click(f"{piet} .open")
        await visible(desk, "#focus-dialog")
        await _levels_become(desk, {"Sanne": 0, "Piet": 1, "Ayla": 0})
        await desk.keyboard.press("Escape")
        await desk.wait_for_selector("#focus-dialog", state="hidden", timeout=TIMEOUT_MS)
        await _levels_become(desk, {"Sanne": 0, "Piet": 0, "Ayla": 0})

        # Each tile has its own mute and volume, named for screen readers.
        sanne = await tile_of(desk, "Sanne")
        assert await desk.get_attribute(f"{sanne} .mute", "aria-label") == "Mute Sanne"
        assert await desk.get_attribute(f"{sanne} .mute", "aria-pressed") == "true"
        await desk.click(f"{sanne} .mute")
        await _levels_become(desk, {"Sanne": 1, "Piet": 0, "Ayla": 0})
        await desk.fill(f"{sanne} .volume", "40")
        await _levels_become(desk, {"Sanne": 0.4, "Piet": 0, "Ayla": 0})

        # "Listen to all" is one clear option.
        await desk.check("#listen-all")
        await _levels_become(desk, {"Sanne": 1, "Piet": 1, "Ayla": 1})
        assert desk.errors == []
        for student in students:
            await student.close()

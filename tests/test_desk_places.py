"""A desk in real Chromium negotiates every cap the organiser may set, also when it changes.

The desk's offer has three m-lines per place: at 50 places Chromium's is about
160,000 characters. Students are aiortc bots (tests/peers.py) sending VP8 and
Opus through the real server; the desk's peer connections are recorded
test-side on `window.__pcs`, as in test_desk_and_recovery.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from sfu.links import CAP_MAX
from tests.peers import Client, StudentPeer
from tests.test_desk_and_recovery import RECORD_PCS, really_plays, tile_of
from tests.test_organiser_flow import TIMEOUT_MS, eventually, surveillant_starts
from tests.test_sfu_forwarding import create_exam, join_student, token

pytestmark = pytest.mark.browser

# The desk's current peer connection: its state, and how many of its transceivers were negotiated.
DESK_MEDIA = r"""
() => {
  const pc = window.__pcs[window.__pcs.length - 1];
  if (!pc) return null;
  const transceivers = pc.getTransceivers();
  return {
    state: pc.connectionState,
    transceivers: transceivers.length,
    negotiated: transceivers.filter((t) => t.mid !== null && t.currentDirection !== null
      && t.currentDirection !== 'stopped' && t.currentDirection !== 'inactive').length,
    offers: window.__pcs.length,
  };
}
"""


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def bots() -> Any:
    """Students and sockets a test opens, closed at its end."""
    opened: list[Any] = []
    yield opened
    for thing in reversed(opened):
        await thing.close()


async def open_desk(page_factory: Any, link: str) -> Any:
    desk = await page_factory(locale="en-GB", viewport={"width": 1400, "height": 1000})
    await desk.context.add_init_script(RECORD_PCS)
    await surveillant_starts(desk, link, "Mevr. Jansen")
    return desk


async def connected_with_places(desk: Any, places: int) -> dict[str, Any]:
    """Wait until the desk's current peer connection is connected with `places` places negotiated."""
    async def check() -> dict[str, Any] | None:
        media = await desk.evaluate(DESK_MEDIA)
        wanted = 3 * places + 2
        if media and media["state"] == "connected" and media["transceivers"] == media["negotiated"] == wanted:
            return media
        return None
    media = await eventually(check, timeout=60)
    await desk.wait_for_selector(f"#desk-count:has-text('of {places} places')", timeout=TIMEOUT_MS)
    await desk.wait_for_selector("#media-state[data-state=connected]", timeout=TIMEOUT_MS)
    return media


async def student_bot(session: aiohttp.ClientSession, server: Any, created: dict[str, Any], name: str,
                      bots: list[Any]) -> tuple[Client, StudentPeer]:
    client, peer = await join_student(session, server, created, name)
    bots += [client, peer]
    return client, peer


async def test_a_desk_with_a_cap_of_50_negotiates_in_chromium_and_plays_a_student(
    server: Any, page_factory: Any, session: aiohttp.ClientSession, bots: list[Any]
) -> None:
    created = await create_exam(session, server, cap=CAP_MAX)
    desk = await open_desk(page_factory, created["surveillant_links"][0])
    await connected_with_places(desk, CAP_MAX)

    await student_bot(session, server, created, "Anna", bots)
    tile = await tile_of(desk, "Anna")
    await really_plays(desk, f"{tile} .tile-webcam-video")
    await really_plays(desk, f"{tile} .tile-screen-video")
    media = await desk.evaluate(DESK_MEDIA)
    assert media["offers"] == 1, "one negotiation: no failure, no reconnect"
    assert desk.errors == [], desk.errors


async def test_raising_the_cap_to_50_mid_exam_gives_the_desk_its_places(
    server: Any, page_factory: Any, session: aiohttp.ClientSession, bots: list[Any]
) -> None:
    created = await create_exam(session, server, cap=1)
    desk = await open_desk(page_factory, created["surveillant_links"][0])
    await connected_with_places(desk, 1)
    await student_bot(session, server, created, "Anna", bots)
    waiting, _ = await student_bot(session, server, created, "Bram", bots)
    await waiting.wait_for(lambda m: m["type"] == "queue")
    await really_plays(desk, f"{await tile_of(desk, 'Anna')} .tile-webcam-video")

    organiser = Client(session, server.url)
    bots.append(organiser)
    assert (await organiser.connect(token(created["organiser_link"])))["type"] == "welcome"
    assert (await organiser.request({"type": "set_cap", "cap": CAP_MAX}))["type"] == "ack"

    # The queued student takes the second place, which only the renegotiated desk has.
    await waiting.wait_for(lambda m: m["type"] == "assigned")
    media = await connected_with_places(desk, CAP_MAX)
    assert media["offers"] == 2, "one renegotiation for the new cap"
    for name in ("Anna", "Bram"):
        tile = await tile_of(desk, name)
        await really_plays(desk, f"{tile} .tile-webcam-video")
    assert desk.errors == [], desk.errors

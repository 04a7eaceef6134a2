"""The surveillant's desk with several real student pages, the cap, talk-back, and recovery.

Real Chromium pages throughout, fake devices, the student's "screen" an animated
canvas (the helpers of test_student_page and test_organiser_flow). Videos count
as playing only when they have a size and their currentTime advances over a
second. Talk-back is measured in the student pages' own RTCPeerConnection stats,
recorded test-side on `window.__pcs`. Recovery: the test drops the socket and the
peer connection, or only the peer connection (whose close() fires no event).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.test_organiser_flow import TIMEOUT_MS, create_exam as organiser_creates_exam
from tests.test_organiser_flow import eventually, surveillant_starts, visible
from tests.test_student_page import create_exam, go_live, student_page

pytestmark = pytest.mark.browser

# Test-only: every RTCPeerConnection the page creates, kept on window.__pcs.
RECORD_PCS = r"""
(() => {
  window.__pcs = [];
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
})();
"""

# The talk-back receiver is the fourth transceiver (docs/PROTOCOL.md order); its inbound-rtp bytes,
# summed over every peer connection the page has had.
TALK_BACK_BYTES = r"""
async () => {
  let total = 0;
  for (const pc of window.__pcs) {
    const transceiver = pc.getTransceivers()[3];
    if (!transceiver || transceiver.receiver.track.kind !== 'audio') continue;
    let stats;
    try { stats = await transceiver.receiver.getStats(); } catch { continue; }
    for (const report of stats.values()) {
      if (report.type === 'inbound-rtp' && report.kind === 'audio') total += report.bytesReceived ?? 0;
    }
  }
  return total;
}
"""


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def recorded_student(page_factory: Any) -> Any:
    """A student page with the canvas screen, the socket spy and the peer-connection recorder."""
    page = await student_page(page_factory)
    await page.context.add_init_script(RECORD_PCS)
    return page


async def desk_page(page_factory: Any, link: str, name: str) -> Any:
    desk = await page_factory(locale="en-GB", viewport={"width": 1400, "height": 1000})
    await surveillant_starts(desk, link, name)
    return desk


async def live_with(page: Any, surveillant: str) -> None:
    await visible(page, "#live-banner")
    await page.wait_for_selector("#media-status:empty", state="attached", timeout=TIMEOUT_MS)
    assert surveillant in await page.inner_text("#live-text")


async def tile_of(desk: Any, name: str) -> str:
    """The selector of the desk's tile for the student called `name`, once it is there."""
    async def find() -> str | None:
        return await desk.evaluate(
            """(name) => {
                const tile = [...document.querySelectorAll('.tile[data-student]')]
                  .find((node) => node.querySelector('.tile-name')?.textContent.trim() === name);
                return tile ? tile.dataset.student : null;
            }""",
            name,
        )
    student_id = await eventually(find, timeout=TIMEOUT_MS / 1000)
    return f'.tile[data-student="{student_id}"]'


async def playing(page: Any, selector: str) -> bool:
    """Every video matching `selector` has a size and its currentTime grows over one second."""
    sample = "videos => videos.map((video) => [video.videoWidth, video.currentTime])"
    before = await page.eval_on_selector_all(selector, sample)
    await asyncio.sleep(1.0)
    after = await page.eval_on_selector_all(selector, sample)
    if not before or len(before) != len(after):
        return False
    return all(width > 0 and later > earlier for (_, earlier), (width, later) in zip(before, after))


async def really_plays(page: Any, selector: str, timeout: float = 30.0) -> None:
    await eventually(lambda: playing(page, selector), timeout=timeout)


async def talk_back_bytes(page: Any) -> int:
    return await page.evaluate(TALK_BACK_BYTES)


async def test_three_students_play_live_on_one_desk(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server)
    desk = await desk_page(page_factory, created["surveillant_links"][0], "Mevr. Jansen")
    names = ["Anna", "Bram", "Chloë"]
    students = []
    for name in names:
        page = await student_page(page_factory)
        await go_live(page, created["student_link"], name)
        students.append(page)
    for page in students:
        await live_with(page, "Mevr. Jansen")

    await desk.wait_for_selector(".tile[data-student]:nth-child(3)", timeout=TIMEOUT_MS)
    assert await desk.locator(".tile[data-student]").count() == 3
    assert sorted(await desk.eval_on_selector_all(".tile .tile-name", "nodes => nodes.map((n) => n.textContent)")) \
        == sorted(names)
    for name in names:
        tile = await tile_of(desk, name)
        await really_plays(desk, f"{tile} .tile-webcam-video")
        await really_plays(desk, f"{tile} .tile-screen-video")
    # And all six at once, sampled together.
    assert await playing(desk, ".tile .tile-webcam-video, .tile .tile-screen-video")
    assert await desk.locator(".tile video").count() >= 6

    for page in (desk, *students):
        assert page.errors == [], page.errors


async def test_a_desk_at_the_cap_takes_no_more_and_a_new_surveillant_drains_the_queue(
    server: Any, page_factory: Any
) -> None:
    organiser = await page_factory(locale="en-GB", viewport={"width": 1200, "height": 900})
    links = await organiser_creates_exam(organiser, server.creator_link)
    await organiser.fill("#cap-change", "2")
    await organiser.click("#cap-form button[type=submit]")
    await organiser.wait_for_selector("#cap-result[data-kind=ok]:not(:empty)", timeout=TIMEOUT_MS)
    first = await desk_page(page_factory, links["surveillant"], "Mevr. Jansen")

    students = {}
    for name in ("Anna", "Bram"):
        students[name] = await student_page(page_factory)
        await go_live(students[name], links["student"], name)
        await live_with(students[name], "Mevr. Jansen")
    third = await student_page(page_factory)
    await go_live(third, links["student"], "Chloë")

    # The third waits, number 1 in the queue; the desk stays at two tiles.
    await third.wait_for_selector("#session-text:has-text('number 1 in the queue')", timeout=TIMEOUT_MS)
    assert await third.is_hidden("#live-banner")
    assert "Waiting for a surveillant" in await third.inner_text("#session-heading")
    await first.wait_for_selector(".tile[data-student]:nth-child(2)", timeout=TIMEOUT_MS)
    await asyncio.sleep(1.0)  # time enough for a wrong third tile to show up
    assert await first.locator(".tile[data-student]").count() == 2

    # The organiser sees the queue and is prompted to add a surveillant.
    await organiser.wait_for_selector('#queue-length[data-count="1"]', timeout=TIMEOUT_MS)
    await visible(organiser, "#queue-prompt")
    assert "surveillant" in (await organiser.inner_text("#queue-prompt-text")).lower()

    # Adding a surveillant, whose desk opens: the queue drains to them.
    await organiser.click("#queue-prompt [data-action=add-surveillant]")
    await organiser.wait_for_selector(".link-row:nth-child(4) .link-input", timeout=TIMEOUT_MS)
    second_link = await organiser.input_value(".link-row:nth-child(4) .link-input")
    second = await desk_page(page_factory, second_link, "Dhr. Bakker")
    await live_with(third, "Dhr. Bakker")
    assert "Mevr. Jansen" not in await third.inner_text("#live-text")
    tile = await tile_of(second, "Chloë")
    await really_plays(second, f"{tile} .tile-webcam-video")
    await organiser.wait_for_selector('#queue-length[data-count="0"]', timeout=TIMEOUT_MS)
    await organiser.wait_for_selector("#queue-prompt", state="hidden", timeout=TIMEOUT_MS)
    assert await first.locator(".tile[data-student]").count() == 2
    assert await second.locator(".tile[data-student]").count() == 1

    for page in (organiser, first, second, third, *students.values()):
        assert page.errors == [], page.errors


async def test_talk_back_reaches_only_the_student_talked_to(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server)
    desk = await desk_page(page_factory, created["surveillant_links"][0], "Mevr. Jansen")
    anna = await recorded_student(page_factory)
    await go_live(anna, created["student_link"], "Anna")
    bram = await recorded_student(page_factory)
    await go_live(bram, created["student_link"], "Bram")
    for page in (anna, bram):
        await live_with(page, "Mevr. Jansen")
    tile = await tile_of(desk, "Anna")
    await tile_of(desk, "Bram")
    await really_plays(desk, f"{tile} .tile-webcam-video")

    quiet = (await talk_back_bytes(anna), await talk_back_bytes(bram))

    # The desk talks to Anna with the toggle in her large view.
    await desk.click(f"{tile} .open")
    await visible(desk, "#focus-dialog")
    await desk.click("#talk-toggle")
    await desk.wait_for_selector("#talk-toggle[aria-pressed=true]", timeout=TIMEOUT_MS)
    await desk.wait_for_selector("#talk-result[data-kind=ok]:not(:empty)", timeout=TIMEOUT_MS)
    await eventually(lambda: _text(anna, "#talking"))
    assert "Mevr. Jansen" in await anna.inner_text("#talking")

    async def anna_hears() -> bool:
        return await talk_back_bytes(anna) > quiet[0] + 5_000
    await eventually(anna_hears, timeout=20.0)
    await asyncio.sleep(2.0)
    heard = await talk_back_bytes(anna)
    assert heard > quiet[0] + 5_000
    assert await talk_back_bytes(bram) - quiet[1] < 1_000, "Bram hears what is meant for Anna"
    assert await bram.is_hidden("#talking")

    # The toggle off: Anna's talk-back stops growing (a small tail in flight aside).
    await desk.click("#talk-toggle")
    await desk.wait_for_selector("#talk-toggle[aria-pressed=false]", timeout=TIMEOUT_MS)
    await eventually(lambda: _no_text(anna, "#talking"))
    await asyncio.sleep(1.0)
    stopped = await talk_back_bytes(anna)
    await asyncio.sleep(2.0)
    assert await talk_back_bytes(anna) - stopped < 1_000, "talk-back still flows after the toggle went off"
    assert await talk_back_bytes(bram) - quiet[1] < 1_000

    for page in (desk, anna, bram):
        assert page.errors == [], page.errors


async def _text(page: Any, selector: str) -> bool:
    return bool((await page.inner_text(selector)).strip())


async def _no_text(page: Any, selector: str) -> bool:
    return not await _text(page, selector)


async def _live_student_and_desk(page_factory: Any, session: aiohttp.ClientSession, server: Any) -> tuple[Any, Any, str]:
    created = await create_exam(session, server)
    desk = await desk_page(page_factory, created["surveillant_links"][0], "Mevr. Jansen")
    student = await recorded_student(page_factory)
    await go_live(student, created["student_link"], "Sanne")
    await live_with(student, "Mevr. Jansen")
    tile = await tile_of(desk, "Sanne")
    await really_plays(desk, f"{tile} .tile-webcam-video")
    return desk, student, tile


async def test_dropping_socket_and_peer_connection_recovers_to_live_with_the_same_surveillant(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    desk, student, tile = await _live_student_and_desk(page_factory, session, server)
    before = await student.evaluate("window.__pcs.length")

    await student.evaluate("() => { window.__pcs.at(-1).close(); window.__dropSockets(); }")
    await student.wait_for_selector("#connection-banner:not([hidden])", timeout=TIMEOUT_MS)
    await student.wait_for_selector("#connection-banner", state="hidden", timeout=TIMEOUT_MS)
    await live_with(student, "Mevr. Jansen")
    assert await student.evaluate("window.__pcs.length") > before, "no new peer connection"
    assert await student.evaluate("window.__pcs.at(-1).connectionState") == "connected"

    # The same tile (the same place) plays again on the desk.
    assert await tile_of(desk, "Sanne") == tile
    await really_plays(desk, f"{tile} .tile-webcam-video")
    await really_plays(desk, f"{tile} .tile-screen-video")
    assert await desk.locator(".tile[data-student]").count() == 1

    for page in (desk, student):
        assert page.errors == [], page.errors


async def test_a_closed_peer_connection_alone_is_noticed_and_media_comes_back(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    desk, student, tile = await _live_student_and_desk(page_factory, session, server)
    before = await student.evaluate("window.__pcs.length")

    # close() fires no event: the page must notice by itself; the socket stays up.
    await student.evaluate("window.__pcs.at(-1).close()")

    async def renegotiated() -> bool:
        return await student.evaluate(
            "(before) => window.__pcs.length > before && window.__pcs.at(-1).connectionState === 'connected'",
            before,
        )
    await eventually(renegotiated, timeout=20.0)
    await live_with(student, "Mevr. Jansen")
    assert await student.is_hidden("#connection-banner")

    # Media reaches the desk again: the same tile's videos advance.
    assert await tile_of(desk, "Sanne") == tile
    await really_plays(desk, f"{tile} .tile-webcam-video")
    await really_plays(desk, f"{tile} .tile-screen-video")

    for page in (desk, student):
        assert page.errors == [], page.errors

"""The student's LIVE banner tells the truth (real Chromium, real server, an aiortc desk).

The banner appears only after the server's `media_live`, which comes once the student's
tracks reach the SFU and are forwarded to the surveillant's connected desk. When the server
refuses the page's offer, the banner never appears: the page says that picture and sound
could not be connected, retries, and names the organiser's contact.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.test_student_page import CONTACT, create_exam, desk_with_media, eventually, go_live, student_page

pytestmark = pytest.mark.browser

# Before the page's scripts: every message in and every time the banner shows, in order, and
# (with window.__breakOffers) offers made unacceptable on the way out, as a broken browser would.
LIVE_SPY = r"""
(() => {
  window.__events = [];
  window.__offers = 0;
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (event) => {
        try { window.__events.push(JSON.parse(event.data).type); } catch (error) { /* not JSON */ }
      });
    }
    send(data) {
      try {
        const message = JSON.parse(data);
        if (message.type === 'offer') {
          window.__offers += 1;
          if (window.__breakOffers) {
            message.sdp = message.sdp.split('\r\n').filter((line) => !line.startsWith('a=fingerprint')).join('\r\n');
            data = JSON.stringify(message);
          }
        }
      } catch (error) { /* not JSON */ }
      return super.send(data);
    }
  };
  new MutationObserver(() => {
    const banner = document.getElementById('live-banner');
    if (banner && !banner.hidden && window.__events.at(-1) !== 'BANNER') window.__events.push('BANNER');
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ['hidden'] });
})();
"""


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def test_the_live_banner_comes_only_after_the_server_says_media_is_forwarded(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server)
    desk, desk_media = await desk_with_media(session, server, created["surveillant_links"][0])
    page = await student_page(page_factory)
    await page.context.add_init_script(LIVE_SPY)
    await go_live(page, created["student_link"])

    await page.wait_for_selector("#live-banner:not([hidden])", timeout=20000)
    events = await page.evaluate("window.__events")
    assert "media_live" in events and events.index("media_live") < events.index("BANNER"), events
    assert events.index("assigned") < events.index("media_live")
    assert "Mevr. Jansen" in await page.inner_text("#live-text")
    assert await page.inner_text("#session-heading") == "You are live"
    # What made it true: every track of the student reached the desk.
    async def desk_got_every_track() -> bool:
        packets = []
        for transceiver in desk_media.pc.getTransceivers()[:3]:  # slot 0: webcam, screen, microphone
            stats = await transceiver.receiver.getStats()
            packets.append(sum(item.packetsReceived for item in stats.values() if item.type == "inbound-rtp"))
        return all(count > 0 for count in packets)

    await eventually(desk_got_every_track)
    assert page.errors == []
    await desk_media.close()
    await desk.close()


async def test_the_live_banner_never_appears_when_the_server_refuses_the_offer(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server)
    desk, desk_media = await desk_with_media(session, server, created["surveillant_links"][0])
    page = await student_page(page_factory)
    await page.context.add_init_script("window.__breakOffers = true;" + LIVE_SPY)
    await go_live(page, created["student_link"])

    # Placed with the surveillant, but every offer is refused: the page retries and says so.
    await page.wait_for_selector("#media-status[data-i18n='student.media_failed']", timeout=20000)
    assert CONTACT in await page.inner_text("#media-status")
    await eventually(lambda: page.evaluate("window.__offers >= 3"), timeout=30)
    events = await page.evaluate("window.__events")
    assert "assigned" in events
    assert "BANNER" not in events and "media_live" not in events
    assert not await page.is_visible("#live-banner")
    assert await page.inner_text("#session-heading") == "Connecting…"
    await desk_media.close()
    await desk.close()

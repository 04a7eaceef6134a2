"""The grid's screen thumbnail is readable and the connection badge tells the truth,
in real Chromium against the real server.

The screen thumbnail is sent at 360 lines and at most 2 frames a second (the
student's page picks the scale from its own capture size); the badge is judged
on loss and delay, never on frame rate, so a student on localhost with a still
picture is "Connection good", while real loss or jitter makes it fair or poor.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.test_desk_and_recovery import desk_page, tile_of
from tests.test_organiser_flow import TIMEOUT_MS, eventually
from tests.test_sfu_forwarding import create_exam
from tests.test_student_page import go_live, student_page

pytestmark = pytest.mark.browser

# Test-only: what each video sender is asked to send (lines and frame rate).
ENCODING_SPY = r"""
(() => {
  window.__encodings = [];
  const setParameters = RTCRtpSender.prototype.setParameters;
  RTCRtpSender.prototype.setParameters = function (parameters) {
    const height = this.track?.getSettings?.().height;
    for (const encoding of parameters.encodings ?? []) {
      window.__encodings.push({ height, scale: encoding.scaleResolutionDownBy ?? 1, fps: encoding.maxFramerate });
    }
    return setParameters.call(this, parameters);
  };
})();
"""


async def test_the_screen_thumbnail_is_360_lines_and_the_badge_says_good_on_localhost(
    server: Any, page_factory: Any
) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=8)
        desk = await desk_page(page_factory, created["surveillant_links"][0], "Mevr. Jansen")
        page = await student_page(page_factory)
        await page.context.add_init_script(ENCODING_SPY)
        await go_live(page, created["student_link"])
        await page.wait_for_selector("#live-banner:not([hidden])", timeout=TIMEOUT_MS)

        async def screen_thumbnail() -> list[dict[str, Any]]:
            return [e for e in await page.evaluate("window.__encodings") if e["fps"] == 2]

        asked = await eventually(screen_thumbnail)
        lines = [round(e["height"] / e["scale"]) for e in asked]
        assert lines[-1] == 360, asked

        tile = await tile_of(desk, "Sanne")

        async def badge() -> str:
            text = await desk.inner_text(f"{tile} .status-list")
            return "Connection good" if "Connection good" in text and "Not connected" not in text else ""

        await eventually(badge, timeout=20)
        assert page.errors == [] and desk.errors == []


async def test_the_badge_follows_loss_and_jitter_not_frame_rate(server: Any, page_factory: Any) -> None:
    page = await page_factory(locale="en-GB")
    await page.goto(server.url + "/desk/")
    verdicts = await page.evaluate(
        """async () => {
          const { assessQuality } = await import('/desk/static/quality.js');
          const tracks = (packets, lost, fps) => ({
            webcam: { packets, packets_lost: lost, frames_per_second: fps, ms_since_last_packet: 20 },
            microphone: { packets: packets / 2, packets_lost: 0, ms_since_last_packet: 20 },
          });
          const run = (steps, jitter = null) => {
            let previous;
            for (const step of steps) previous = assessQuality({}, step, previous, jitter);
            return previous.quality;
          };
          const still = [tracks(100, 0, 1), tracks(200, 0, 1), tracks(300, 0, 0.5), tracks(400, 0, 1)];
          const lossy = [tracks(100, 0, 10), tracks(190, 25, 10), tracks(280, 50, 10), tracks(370, 75, 10)];
          const stalled = { webcam: { packets: 5, packets_lost: 0, ms_since_last_packet: 5000 } };
          return {
            still: run(still),
            lossy: run(lossy),
            jittery: run(still, 150),
            wobbly: run(still, 60),
            stalled: run([stalled]),
          };
        }"""
    )
    assert verdicts == {"still": "good", "lossy": "poor", "jittery": "poor", "wobbly": "fair", "stalled": "none"}

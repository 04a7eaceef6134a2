"""The browser set-up itself: Chromium starts, loads a page and gets fake media.

If these fail, every other browser test is meaningless; if they skip in CI, CI
is not testing the pages at all (so there they fail instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.browser import CHROMIUM, require_chromium, serve_html

pytestmark = pytest.mark.browser

SMOKE_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>smoke</title><link rel="icon" href="data:,"></head>
<body>
<h1>browser smoke test</h1>
<video id="camera" autoplay muted playsinline></video>
<script>
window.openMedia = async () => {
  const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  const video = document.getElementById("camera");
  video.srcObject = stream;
  await new Promise((resolve) => {
    const check = () => video.videoWidth > 0 && video.currentTime > 0 ? resolve() : setTimeout(check, 50);
    check();
  });
  return {
    tracks: stream.getTracks().map((track) => [track.kind, track.readyState]),
    width: video.videoWidth,
    height: video.videoHeight,
  };
};
// How tests feed a "screen" that emits frames headless: an animated canvas.
window.canvasFrames = async () => {
  const canvas = document.createElement("canvas");
  canvas.width = 320; canvas.height = 180;
  const context = canvas.getContext("2d");
  let tick = 0;
  const timer = setInterval(() => { context.fillStyle = `hsl(${tick++ * 10} 80% 50%)`; context.fillRect(0, 0, 320, 180); }, 40);
  const track = canvas.captureStream(25).getVideoTracks()[0];
  const video = document.createElement("video");
  video.muted = true;
  video.srcObject = new MediaStream([track]);
  await video.play();
  await new Promise((resolve) => setTimeout(resolve, 500));
  clearInterval(timer);
  return video.getVideoPlaybackQuality().totalVideoFrames;
};
</script>
</body>
</html>
"""


@pytest.fixture
async def smoke_url() -> AsyncIterator[str]:
    """A tiny page served by plain aiohttp, not by Invigil."""
    async with serve_html(SMOKE_PAGE) as url:
        yield url


async def test_chromium_loads_a_page_and_gets_fake_camera_and_microphone(
    page_factory, smoke_url: str
) -> None:
    page = await page_factory()
    response = await page.goto(smoke_url)
    assert response is not None and response.status == 200
    assert await page.title() == "smoke"
    media = await page.evaluate("window.openMedia()")
    assert sorted(media["tracks"]) == [["audio", "live"], ["video", "live"]]
    assert media["width"] > 0 and media["height"] > 0
    assert page.errors == []


async def test_an_animated_canvas_gives_a_screen_track_with_frames(page_factory, smoke_url: str) -> None:
    page = await page_factory()
    await page.goto(smoke_url)
    assert await page.evaluate("window.canvasFrames()") > 0
    assert page.errors == []


async def test_each_participant_gets_its_own_context(page_factory, smoke_url: str) -> None:
    first, second = await page_factory(), await page_factory()
    assert first.context is not second.context
    await first.goto(smoke_url)
    await second.goto(smoke_url)
    await first.evaluate("window.sessionStorage.setItem('who', 'first')")
    assert await second.evaluate("window.sessionStorage.getItem('who')") is None


async def test_page_errors_are_collected(page_factory, smoke_url: str) -> None:
    page = await page_factory()
    await page.goto(smoke_url)
    await page.evaluate("console.error('seen by the test')")
    await page.evaluate("setTimeout(() => { throw new Error('uncaught on purpose'); }, 0)")
    async with asyncio.timeout(10):
        while not any("uncaught on purpose" in error for error in page.errors):
            await asyncio.sleep(0.05)
    assert "console.error: seen by the test" in page.errors


def test_missing_chromium_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI"):
        require_chromium(str(tmp_path / "no-chromium"))


def test_missing_chromium_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        require_chromium(str(tmp_path / "no-chromium"))


def test_the_system_chromium_is_the_one_used() -> None:
    assert CHROMIUM == "/usr/bin/chromium"

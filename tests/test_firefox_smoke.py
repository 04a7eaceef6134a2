"""The Firefox set-up itself: Debian's firefox-esr starts over WebDriver BiDi, loads a page,
gets fake media and writes a WebRTC offer.

If these fail, every Firefox test is meaningless; if they skip in CI, CI is not testing
Firefox at all (so there they fail instead).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.browser import serve_html
from tests.firefox import FIREFOX, require_firefox

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>firefox smoke</title></head>
<body><p id="greeting">hallo</p></body></html>
"""


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    """A tiny page served by plain aiohttp on the loopback (a secure context for media)."""
    async with serve_html(PAGE) as url:
        yield url


async def test_firefox_loads_a_page_and_gets_fake_camera_and_microphone(firefox, page_url: str) -> None:
    assert firefox.version.startswith("firefox/")
    page = await firefox.new_page()
    assert await page.goto(page_url) == 200
    assert await page.evaluate("document.title") == "firefox smoke"
    assert await page.inner_text("#greeting") == "hallo"
    tracks = await page.evaluate(
        """async () => {
            const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
            const video = document.createElement('video');
            video.muted = true;
            video.srcObject = stream;
            await video.play();
            while (!(video.videoWidth > 0 && video.currentTime > 0)) await new Promise((r) => setTimeout(r, 50));
            return stream.getTracks().map((track) => [track.kind, track.readyState]).sort();
        }"""
    )
    assert tracks == [["audio", "live"], ["video", "live"]]
    assert await page.errors == []


async def test_each_firefox_page_has_its_own_context(firefox, page_url: str) -> None:
    first, second = await firefox.new_page(), await firefox.new_page()
    await first.goto(page_url)
    await second.goto(page_url)
    await first.evaluate("window.sessionStorage.setItem('who', 'first')")
    assert await second.evaluate("window.sessionStorage.getItem('who')") is None


async def test_an_init_script_runs_before_the_page(firefox, page_url: str) -> None:
    page = await firefox.new_page(init_script="window.__early = document.readyState;")
    await page.goto(page_url)
    assert await page.evaluate("window.__early") == "loading"


def test_missing_firefox_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI"):
        require_firefox(str(tmp_path / "no-firefox"))
    with pytest.raises(pytest.fail.Exception, match="puppeteer-core"):
        require_firefox(FIREFOX, tmp_path)


def test_missing_firefox_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="firefox-esr"):
        require_firefox(str(tmp_path / "no-firefox"))

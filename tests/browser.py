"""A real headless Chromium for tests: Debian's /usr/bin/chromium driven by Playwright.

Fake camera and microphone, no permission prompts, no network of its own. Where
Chromium is missing, browser tests skip on a developer's machine and fail in CI
(env CI set): in CI they must never pass by not running.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",  # we run as root in CI
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-quic",
)
INSTALL_HINT = "apt-get install chromium"


def require_chromium(path: str = CHROMIUM) -> None:
    """Fail (in CI) or skip (elsewhere) the calling test when Chromium is not at `path`."""
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return
    if in_ci():
        pytest.fail(
            f"{path} is missing: browser tests must run in CI ({INSTALL_HINT} in .ci/run)",
            pytrace=False,
        )
    pytest.skip(f"{path} is missing; {INSTALL_HINT} to run the browser tests")


def in_ci() -> bool:
    """True where env CI says so (CI=true, CI=1, …), as CI systems set it."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@asynccontextmanager
async def launch_chromium(*extra_args: str) -> AsyncIterator[Browser]:
    """A headless Chromium with a fresh temporary profile, closed on exit."""
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_ARGS, *extra_args],
        )
        try:
            yield browser
        finally:
            await browser.close()


# Test-only: a "whole screen" share made from an animated canvas, because headless
# Chromium's getDisplayMedia is static. Defines window.__canvasScreen() -> MediaStream.
CANVAS_SCREEN_FUNCTION = r"""
window.__canvasScreen = () => {
  const canvas = document.createElement('canvas');
  canvas.width = 640;
  canvas.height = 360;
  const context = canvas.getContext('2d');
  let tick = 0;
  setInterval(() => {
    context.fillStyle = `hsl(${(tick += 9) % 360} 55% 55%)`;
    context.fillRect(0, 0, 640, 360);
  }, 50);
  const stream = canvas.captureStream(15);
  const track = stream.getVideoTracks()[0];
  const settings = track.getSettings.bind(track);
  track.getSettings = () => ({ ...settings(), displaySurface: 'monitor' });
  return stream;
};
"""


@asynccontextmanager
async def serve_html(html: str) -> AsyncIterator[str]:
    """Serve one page of `html` with plain aiohttp (not Invigil) on the loopback, a secure
    context for media; yields its URL."""
    from aiohttp import web

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()

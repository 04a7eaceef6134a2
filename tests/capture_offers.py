"""Capture the student offers that real browsers write, as fixtures for tests/test_offers.py.

    .venv/bin/python -m tests.capture_offers [chromium] [firefox]

Runs the real server and the real student page in Debian's Chromium and Firefox ESR (fake
devices; the screen is an animated canvas), goes from link to join, and records the `offer`
the page sends on its WebSocket. Each offer is written to tests/fixtures/offers/<browser>.sdp
with a header of `#` lines saying where and how it was captured (tests strip them). Safari's
offers cannot be captured here: those fixtures are copied by hand and say where from.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.browser import CANVAS_SCREEN_FUNCTION, launch_chromium
from tests.firefox import launch_firefox
from tests.peers import Client

OFFERS = Path(__file__).resolve().parent / "fixtures" / "offers"

# Before the page's scripts: the screen is an animated canvas, and every offer sent is kept.
OFFER_SPY = CANVAS_SCREEN_FUNCTION + r"""
(() => {
  window.__offers = [];
  navigator.mediaDevices.getDisplayMedia = async () => window.__canvasScreen();
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try {
      const message = JSON.parse(data);
      if (message.type === 'offer') window.__offers.push(message.sdp);
    } catch (error) { /* not ours */ }
    return send.call(this, data);
  };
})();
"""


async def student_link(session: aiohttp.ClientSession, url: str, creator_link: str, kind: str = "written") -> str:
    """A fresh exam's student link."""
    organiser = Client(session, url)
    await organiser.connect(creator_link.split("#", 1)[1])
    created = await organiser.request(
        {
            "type": "create_exam",
            "title": "Offer capture",
            "kind": kind,
            "cap": 4,
            "note": "",
            "contact": "examenbureau@school.example",
            "ends_at": int(time.time()) + 3600,
            "id_check": False,
        }
    )
    await organiser.close()
    return str(created["student_link"])


async def join(page: Any, link: str) -> None:
    """From the link to the session step (Playwright and tests/firefox.py pages alike)."""
    await page.goto(link)
    await page.fill("#student-name", "Sanne")
    await page.click("#confirm-button")
    await page.wait_for_selector("#camera-status[data-state=ok]")
    await page.click("#screen-share")
    await page.wait_for_selector("#screen-status[data-state=ok]")
    await page.click("#join-button")


async def first_offer(page: Any) -> str:
    """The first offer the page sent."""
    async with asyncio.timeout(30):
        while not (offers := await page.evaluate("window.__offers")):
            await asyncio.sleep(0.2)
    return str(offers[0])


async def serve() -> tuple[web.AppRunner, str, str]:
    """The real app on a free loopback port: its runner, URL and creator link."""
    from sfu.app import creator_link, make_app
    from sfu.config import ServerConfig

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = make_app(ServerConfig(secret=b"capture-secret-0123456789abcdef", public_url=url))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner, url, creator_link(app)


def write(name: str, version: str, sdp: str) -> Path:
    """Write one captured offer with its header."""
    header = (
        f"# The student page's offer as {version} wrote it, captured by tests/capture_offers.py\n"
        "# (the real page against the real server; fake camera and microphone, canvas screen).\n"
    )
    path = OFFERS / f"{name}.sdp"
    path.write_text(header + sdp.replace("\r\n", "\n"))
    return path


async def main(browsers: list[str]) -> None:
    OFFERS.mkdir(parents=True, exist_ok=True)
    runner, url, creator = await serve()
    try:
        async with aiohttp.ClientSession() as session:
            if "chromium" in browsers:
                async with launch_chromium() as chromium:
                    context = await chromium.new_context(locale="en-GB")
                    await context.add_init_script(OFFER_SPY)
                    page = await context.new_page()
                    await join(page, await student_link(session, url, creator))
                    print(write("chromium", f"Chromium {chromium.version}", await first_offer(page)))
            if "firefox" in browsers:
                async with launch_firefox() as firefox:
                    page = await firefox.new_page(init_script=OFFER_SPY)
                    await join(page, await student_link(session, url, creator))
                    version = firefox.version.replace("firefox/", "Firefox ESR ")
                    print(write("firefox", version, await first_offer(page)))
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["chromium", "firefox"]))
    print(json.dumps({"written": sys.argv[1:] or ["chromium", "firefox"]}))

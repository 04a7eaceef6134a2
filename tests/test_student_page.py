"""The student's page in a real Chromium against the real server.

The notice comes before any device request, the Dutch and English catalogues
match, and the page reaches live with a surveillant, hears from them, raises a
hand, recovers from a dropped socket and stops every track when it leaves.
The "screen" is an animated canvas: headless screen capture may give no frames.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser import CANVAS_SCREEN_FUNCTION
from tests.peers import Client, SurveillantPeer

pytestmark = pytest.mark.browser

STUDENT_STATIC = Path(__file__).resolve().parent.parent / "student_join" / "static"
NOTE = "Geen webcam? Maak de toets op school, dinsdag om 14:00 in lokaal B12."
CONTACT = "examenbureau@school.example"

# Test-only instrumentation, injected before the page's own scripts run: records
# every device request, and gives getDisplayMedia an animated canvas.
MEDIA_SPY = CANVAS_SCREEN_FUNCTION + r"""
(() => {
  window.__mediaCalls = [];
  window.__tracks = [];
  window.__qualities = [];
  const devices = navigator.mediaDevices;
  const getUserMedia = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    window.__mediaCalls.push('getUserMedia');
    const stream = await getUserMedia(constraints);
    window.__tracks.push(...stream.getTracks());
    return stream;
  };
  devices.getDisplayMedia = async () => {
    window.__mediaCalls.push('getDisplayMedia');
    const stream = window.__canvasScreen();
    const track = stream.getVideoTracks()[0];
    window.__tracks.push(track);
    return stream;
  };
  const setParameters = RTCRtpSender.prototype.setParameters;
  RTCRtpSender.prototype.setParameters = function (parameters) {
    window.__qualities.push(parameters.encodings.map((encoding) => encoding.maxBitrate));
    return setParameters.call(this, parameters);
  };
  window.__recorders = 0;
  const Recorder = window.MediaRecorder;
  window.MediaRecorder = class extends Recorder {
    constructor(...args) { super(...args); window.__recorders += 1; }
  };
  const sockets = [];
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) { super(...args); sockets.push(this); }
  };
  window.__dropSockets = () => sockets.forEach((socket) => socket.close(4999));
})();
"""


async def create_exam(
    session: aiohttp.ClientSession, server: Any, kind: str = "written", id_check: bool = False
) -> dict[str, Any]:
    organiser = Client(session, server.url)
    await organiser.connect(server.creator_link.split("#", 1)[1])
    created = await organiser.request(
        {
            "type": "create_exam",
            "title": "Biologie 4 havo",
            "kind": kind,
            "cap": 4,
            "note": NOTE,
            "contact": CONTACT,
            "ends_at": int(time.time()) + 3600,
            "id_check": id_check,
        }
    )
    await organiser.close()
    assert created["type"] == "exam_created", created
    return created


async def student_page(page_factory: Any, locale: str = "en-GB") -> Any:
    page = await page_factory(locale=locale, viewport={"width": 1100, "height": 900})
    await page.context.add_init_script(MEDIA_SPY)
    return page


async def media_calls(page: Any) -> list[str]:
    return await page.evaluate("window.__mediaCalls")


async def eventually(check: Any, timeout: float = 15.0) -> Any:
    """Poll an async check until it returns something truthy (CSP forbids wait_for_function)."""
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.1)
    return result


NAMED_ROLES = {"button", "textbox", "link", "checkbox", "radio", "combobox", "meter", "progressbar", "dialog"}


async def unnamed_controls(page: Any) -> list[str]:
    """Controls in Chromium's accessibility tree that a screen reader could not name."""
    cdp = await page.context.new_cdp_session(page)
    try:
        tree = await cdp.send("Accessibility.getFullAXTree")
    finally:
        await cdp.detach()
    unnamed = []
    for node in tree["nodes"]:
        role = node.get("role", {}).get("value")
        if node.get("ignored") or role not in NAMED_ROLES:
            continue
        if not str(node.get("name", {}).get("value", "")).strip():
            unnamed.append(role)
    return unnamed


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def test_notice_comes_first_and_nothing_is_requested_before_confirmation(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server)
    page = await student_page(page_factory)
    await page.goto(created["student_link"])

    await page.wait_for_selector("#step-notice:not([hidden])")
    assert CONTACT in await page.inner_text("#notice-contact")
    assert await unnamed_controls(page) == []
    await asyncio.sleep(1.0)  # give an eager page every chance to misbehave
    assert await media_calls(page) == []

    # Another way: the organiser's note, and still no device asked.
    await page.click("#other-way-button")
    await page.wait_for_selector("#step-alternative:not([hidden])")
    assert NOTE in await page.inner_text("#alternative-note")
    assert await media_calls(page) == []
    await page.click("#alternative-back")

    # Confirming without a name asks again and requests nothing.
    await page.click("#confirm-button")
    await page.wait_for_selector("#student-name-error:not([hidden])")
    assert await media_calls(page) == []

    await page.fill("#student-name", "Sanne")
    await page.click("#confirm-button")
    await page.wait_for_selector("#step-check:not([hidden])")
    assert await page.evaluate("document.activeElement.id") == "check-heading"
    await page.wait_for_selector("#camera-status[data-state=ok]")
    assert await media_calls(page) == ["getUserMedia"]
    await page.click("#screen-share")
    await page.wait_for_selector("#screen-status[data-state=ok]")
    assert await media_calls(page) == ["getUserMedia", "getDisplayMedia"]
    assert await page.is_enabled("#join-button")
    assert await unnamed_controls(page) == []
    assert page.errors == []


async def test_catalogues_have_the_same_keys_in_dutch_and_english(
    server: Any, page_factory: Any
) -> None:
    page = await page_factory()
    await page.goto(server.url + "/join/")
    catalogues = await page.evaluate(
        """async () => {
            const result = {};
            for (const name of ['common', 'student', 'desk']) {
              const module = await import(`/common/catalogue/${name}.js`);
              result[name] = module.default;
            }
            return result;
        }"""
    )
    for name, catalogue in catalogues.items():
        assert set(catalogue) == {"nl", "en"}, name
        dutch, english = catalogue["nl"], catalogue["en"]
        assert sorted(set(dutch) ^ set(english)) == [], f"{name}.js: keys in one language only"
        for key in dutch:
            assert dutch[key].strip() and english[key].strip(), f"{name}.js: {key} is empty"
            placeholders = (set(re.findall(r"\{(\w+)\}", dutch[key])), set(re.findall(r"\{(\w+)\}", english[key])))
            assert placeholders[0] == placeholders[1], f"{name}.js: {key} has other placeholders"

    # Every key the student page names exists.
    known = set(catalogues["common"]["en"]) | set(catalogues["student"]["en"])
    html = (STUDENT_STATIC / "index.html").read_text(encoding="utf-8")
    script = (STUDENT_STATIC / "student.js").read_text(encoding="utf-8")
    devices = (STUDENT_STATIC / "devices.js").read_text(encoding="utf-8")
    used = set(re.findall(r'data-i18n(?:-[a-z-]+)?="([\w.]+)"', html))
    used |= set(re.findall(r"'((?:student|common)\.[a-z_]+)'", script + devices))
    assert used, "no catalogue keys found in the page"
    assert sorted(used - known) == []
    assert page.errors == []


async def test_language_follows_the_browser_and_can_be_switched(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server)
    page = await student_page(page_factory, locale="nl-NL")
    await page.goto(created["student_link"])
    await page.wait_for_selector("#step-notice:not([hidden])")
    assert await page.get_attribute("html", "lang") == "nl"
    assert await page.inner_text("#notice-heading") == "Lees dit voordat je begint"
    await page.click("[data-lang=en]")
    assert await page.get_attribute("html", "lang") == "en"
    assert await page.inner_text("#notice-heading") == "Please read this before you start"
    assert await page.get_attribute("[data-lang=en]", "aria-pressed") == "true"
    assert page.errors == []


async def desk_with_media(
    session: aiohttp.ClientSession, server: Any, link: str, name: str = "Mevr. Jansen", slots: int = 4
) -> tuple[Client, SurveillantPeer]:
    """A surveillant's desk (aiortc) with its media connection (`slots`: the exam's cap), which
    the student's media is forwarded to."""
    desk = Client(session, server.url)
    assert (await desk.connect(link.split("#", 1)[1], name=name))["type"] == "welcome"
    media = SurveillantPeer(slots)
    await media.connect(desk)
    return desk, media


async def go_live(page: Any, link: str, name: str = "Sanne") -> None:
    await page.goto(link)
    await page.fill("#student-name", name)
    await page.click("#confirm-button")
    await page.wait_for_selector("#camera-status[data-state=ok]")
    await page.click("#screen-share")
    await page.wait_for_selector("#screen-status[data-state=ok]")
    await page.click("#join-button")
    await page.wait_for_selector("#step-session:not([hidden])")


async def test_the_whole_path_to_live_and_out_again(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server)
    desk, desk_media = await desk_with_media(session, server, created["surveillant_links"][0])

    page = await student_page(page_factory)
    await go_live(page, created["student_link"])

    await page.wait_for_selector("#live-banner:not([hidden])", timeout=15000)
    assert "Mevr. Jansen" in await page.inner_text("#live-text")
    await page.wait_for_selector("#media-status:empty", state="attached", timeout=20000)
    roster = await desk.wait_for(lambda m: m["type"] == "roster" and m["students"], timeout=10)
    student = roster["students"][0]
    assert student["name"] == "Sanne"
    await desk.wait_for(
        lambda m: m["type"] == "roster" and m["students"]
        and all(m["students"][0]["status"][key] for key in ("camera", "microphone", "screen")),
        timeout=10,
    )

    # The surveillant's focus reaches the encoder; a message and talk-back reach the student.
    assert (await desk.request({"type": "focus", "student_id": student["id"]}))["type"] == "ack"
    await eventually(lambda: page.evaluate("window.__qualities.length >= 2"))
    await desk.request({"type": "message", "student_id": student["id"], "text": "Hoi Sanne, alles goed?"})
    await page.wait_for_selector("#message-list .message")
    assert "Hoi Sanne, alles goed?" in await page.inner_text("#message-list")
    await desk.request({"type": "talk", "student_id": student["id"], "on": True})
    await page.wait_for_selector("#talking:not([hidden])")
    assert "Mevr. Jansen" in await page.inner_text("#talking")
    assert await unnamed_controls(page) == []

    # Raising a hand reaches the surveillant.
    mark = desk.mark()
    await page.click("#hand-button")
    await desk.wait_for(lambda m: m["type"] == "alert" and m["kind"] == "hand_raised", after=mark)

    # Switching tabs and stopping the screen share go live to the surveillant.
    mark = desk.mark()
    await page.evaluate(
        """() => {
            Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true });
            document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    await desk.wait_for(lambda m: m["type"] == "alert" and m["kind"] == "page_hidden", after=mark)
    await page.evaluate(
        """() => {
            const screen = window.__tracks.find((track) => track.kind === 'video' && !track.label.startsWith('fake'));
            screen.stop();
            screen.dispatchEvent(new Event('ended'));  // what the browser's "Stop sharing" fires
        }"""
    )
    await desk.wait_for(lambda m: m["type"] == "alert" and m["kind"] == "screen_stopped", after=mark)
    await page.wait_for_selector("#screen-stopped:not([hidden])")
    await page.click("#screen-again")
    await page.wait_for_selector("#screen-stopped", state="hidden")
    await desk.wait_for(
        lambda m: m["type"] == "roster" and m["students"] and m["students"][0]["status"]["screen"], after=mark
    )

    # Leaving stops every track and keeps nothing.
    await page.click("#leave-button")
    await page.click("#leave-dialog button[value=leave]")
    await page.wait_for_selector("#step-ended:not([hidden])")
    await desk.wait_for(lambda m: m["type"] == "alert" and m["kind"] == "left")
    states = await page.evaluate("window.__tracks.map((track) => track.readyState)")
    assert len(states) >= 3 and set(states) == {"ended"}
    assert not await page.is_visible("#live-banner")
    kept = await page.evaluate(
        "async () => [localStorage.length, sessionStorage.length, document.cookie,"
        " (await indexedDB.databases()).length, window.__recorders]"
    )
    assert kept == [0, 0, "", 0, 0]
    assert page.errors == []
    await desk_media.close()
    await desk.close()


async def test_a_dropped_socket_recovers_to_live_with_the_same_surveillant(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server)
    desk, desk_media = await desk_with_media(session, server, created["surveillant_links"][0])

    page = await student_page(page_factory)
    await go_live(page, created["student_link"])
    await page.wait_for_selector("#live-banner:not([hidden])", timeout=15000)
    await page.wait_for_selector("#media-status:empty", state="attached", timeout=20000)
    first = (await desk.wait_for(lambda m: m["type"] == "roster" and m["students"]))["students"][0]["id"]

    await page.evaluate("window.__dropSockets()")
    await page.wait_for_selector("#connection-banner:not([hidden])")
    await page.wait_for_selector("#connection-banner", state="hidden", timeout=15000)
    await page.wait_for_selector("#media-status:empty", state="attached", timeout=20000)
    assert await page.is_visible("#live-banner")
    assert "Mevr. Jansen" in await page.inner_text("#live-text")
    roster = await desk.wait_for(
        lambda m: m["type"] == "roster" and m["students"] and m["students"][0]["connected"], timeout=10
    )
    assert roster["students"][0]["id"] == first
    assert page.errors == []
    await desk_media.close()
    await desk.close()


async def test_a_session_ended_by_the_surveillant_stops_everything_and_says_why(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server)
    desk, desk_media = await desk_with_media(session, server, created["surveillant_links"][0])
    page = await student_page(page_factory, locale="nl-NL")
    await go_live(page, created["student_link"])
    await page.wait_for_selector("#live-banner:not([hidden])", timeout=15000)
    student = (await desk.wait_for(lambda m: m["type"] == "roster" and m["students"]))["students"][0]

    reason = "De toets is voor jou klaar. Goed gedaan!"
    await desk.request({"type": "end_session", "student_id": student["id"], "reason": reason})
    await page.wait_for_selector("#step-ended:not([hidden])")
    assert await page.inner_text("#ended-heading") == "Je sessie is beëindigd"
    assert reason in await page.inner_text("#ended-reason")
    assert not await page.is_visible("#live-banner")
    states = await page.evaluate("window.__tracks.map((track) => track.readyState)")
    assert len(states) >= 3 and set(states) == {"ended"}
    assert page.errors == []
    await desk_media.close()
    await desk.close()


async def test_the_upload_check_counts_and_drops_filler_bytes(server: Any, session: aiohttp.ClientSession) -> None:
    async with session.post(server.url + "/join/upload-check", data=bytes(300_000)) as response:
        assert response.status == 200
        assert await response.json() == {"bytes": 300_000}
    async with session.post(server.url + "/join/upload-check", data=bytes(3 * 1024 * 1024)) as response:
        assert response.status == 413


async def test_the_keyboard_alone_gets_through_the_notice(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server)
    page = await student_page(page_factory)
    await page.goto(created["student_link"])
    await page.wait_for_selector("#step-notice:not([hidden])")
    visited = []
    for _ in range(12):
        await page.keyboard.press("Tab")
        visited.append(await page.evaluate("document.activeElement.id || document.activeElement.textContent"))
        if visited[-1] == "student-name":
            break
    assert visited[-1] == "student-name", visited
    await page.keyboard.type("Sanne")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#step-check:not([hidden])")
    assert await page.evaluate("document.activeElement.id") == "check-heading"
    assert page.errors == []


async def test_upload_check_is_rate_limited_per_address(server) -> None:
    """Here an allowance of 12; the real numbers (a class of 200) are tested in test_join_limits.py."""
    import aiohttp

    from sfu.rate_limit import Allowance
    from student_join.routes import UPLOAD_LIMITER
    from tests.test_join_limits import student_app

    allowed = 12
    student_app(server)[UPLOAD_LIMITER].addresses.allowance = Allowance(burst=allowed, rate=1e-6)
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(allowed + 2):
            async with session.post(server.url + "/join/upload-check", data=b"x" * 1024) as response:
                statuses.append(response.status)
        assert statuses[:allowed] == [200] * allowed
        assert statuses[-1] == 429

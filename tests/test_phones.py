"""Phones and tablets: no screen sharing (iOS has no getDisplayMedia), a small touch screen.

An exam says whether the screen is required (default: written yes, oral no). Without the
requirement, a student whose browser cannot share the screen takes the exam with camera and
microphone: the server accepts an offer without the screen m-line. With it, the notice says
"needs a computer" before any device is asked for, and offers the other way. The student
page fits 360×640, upright and on its side (checked at each step of the phone tests). Real
Chromium (getDisplayMedia deleted by an init script) and aiortc desks through the real server.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection

from sfu.app import REGISTRY
from tests.peers import Client, MovingPicture, StudentPeer, Tone, _prefer
from tests.test_sfu_forwarding import token
from tests.test_student_page import (
    CONTACT,
    create_exam,
    desk_with_media,
    eventually,
    media_calls,
    student_page,
)

pytestmark = pytest.mark.browser

# After the media spy: this browser has no screen sharing at all, as on iOS.
NO_SCREEN_SHARING = "delete navigator.mediaDevices.getDisplayMedia; delete MediaDevices.prototype.getDisplayMedia;"
PHONE = {"width": 360, "height": 640}
PHONE_ON_ITS_SIDE = {"width": 640, "height": 360}


class PhoneStudentPeer(StudentPeer):
    """A student's connection without a screen: webcam and microphone out, voice and camera in."""

    def __init__(self) -> None:  # noqa: D107 (same tracks as StudentPeer, less the screen)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.webcam = MovingPicture(320, 180, 15)
        self.microphone = Tone()
        self._tasks = []
        for track in (self.webcam, self.microphone):
            _prefer(self.pc.addTransceiver(track, direction="sendonly"), track.kind)
        for kind in ("audio", "video"):
            _prefer(self.pc.addTransceiver(kind, direction="recvonly"), kind)

    async def connect(self, client: Client) -> dict[str, Any]:
        from tests.peers import _gathered
        from aiortc import RTCSessionDescription

        answer = await client.request({"type": "offer", "sdp": await _gathered(self.pc)})
        if answer["type"] == "answer":
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        return answer


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def phone_page(page_factory: Any, viewport: dict[str, int] = PHONE) -> Any:
    page = await student_page(page_factory)
    await page.set_viewport_size(viewport)
    await page.context.add_init_script(NO_SCREEN_SHARING)
    return page


async def fits(page: Any) -> bool:
    """Nothing sticks out sideways: no horizontal scrolling on the small screen."""
    return await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.mark.parametrize(("kind", "accepted"), [("oral", True), ("written", False)])
async def test_an_offer_without_the_screen_is_accepted_only_where_the_screen_is_not_required(
    server: Any, session: aiohttp.ClientSession, kind: str, accepted: bool
) -> None:
    created = await create_exam(session, server, kind=kind)
    assert created["exam"]["screen_required"] is (kind == "written")
    client = Client(session, server.url)
    assert (await client.connect(token(created["student_link"]), name="Sanne"))["type"] == "welcome"
    peer = PhoneStudentPeer()
    try:
        answer = await peer.connect(client)
        if accepted:
            assert answer["type"] == "answer", answer
            assert answer["sdp"].count("\nm=") == 4
        else:
            assert answer["type"] == "error" and answer["code"] == "media_failed", answer
    finally:
        await peer.close()
        await client.close()


async def test_a_written_exam_on_a_phone_says_it_needs_a_computer_before_asking_for_anything(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server, kind="written")
    page = await phone_page(page_factory)
    await page.goto(created["student_link"])
    await page.wait_for_selector("#step-notice:not([hidden])")
    await page.wait_for_selector("#needs-computer:not([hidden])")
    assert "needs a computer" in await page.inner_text("#needs-computer")
    assert not await page.is_visible("#notice-form")
    assert await media_calls(page) == []
    assert await fits(page)

    # The other way is offered, with the organiser's note and contact.
    await page.click("#other-way-button")
    await page.wait_for_selector("#step-alternative:not([hidden])")
    assert CONTACT in await page.inner_text("#step-alternative")
    assert await media_calls(page) == []
    assert page.errors == []


async def test_an_oral_exam_on_a_phone_goes_live_with_camera_and_microphone(
    server: Any, page_factory: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server, kind="oral")
    desk, desk_media = await desk_with_media(session, server, created["surveillant_links"][0], slots=1)
    page = await phone_page(page_factory)
    await page.goto(created["student_link"])
    await page.wait_for_selector("#step-notice:not([hidden])")
    assert not await page.is_visible("#needs-computer")
    assert await fits(page)
    await page.fill("#student-name", "Sanne")
    await page.click("#confirm-button")
    await page.wait_for_selector("#camera-status[data-state=ok]")
    assert not await page.is_visible("#screen-card")
    assert await fits(page)
    await page.click("#join-button")
    await page.wait_for_selector("#live-banner:not([hidden])", timeout=20000)
    assert "getDisplayMedia" not in await media_calls(page)
    assert await fits(page)
    await page.set_viewport_size(PHONE_ON_ITS_SIDE)
    assert await fits(page)
    assert await page.is_visible("#live-banner")

    async def desk_gets_camera_and_microphone() -> bool:
        counts = []
        for transceiver in desk_media.pc.getTransceivers()[:3]:
            stats = await transceiver.receiver.getStats()
            counts.append(sum(item.packetsReceived for item in stats.values() if item.type == "inbound-rtp"))
        return counts[0] > 0 and counts[2] > 0 and counts[1] == 0  # webcam, (no screen), microphone

    await eventually(desk_gets_camera_and_microphone)
    assert not await page.is_visible("#screen-stopped")
    assert page.errors == []
    await desk_media.close()
    await desk.close()


async def test_the_organiser_sets_whether_the_screen_is_required(server: Any, page_factory: Any) -> None:
    organiser = await page_factory(locale="en-GB", viewport={"width": 1200, "height": 900})
    await organiser.goto(server.creator_link)
    await organiser.wait_for_selector("#create", state="visible")
    assert await organiser.is_checked("#screen-required-input")  # written: required by default
    await organiser.check("#kind-oral")
    assert not await organiser.is_checked("#screen-required-input")  # oral: not by default
    await organiser.check("#kind-written")
    assert await organiser.is_checked("#screen-required-input")
    assert "whole screen" in await organiser.inner_text("label[for=screen-required-input]")

    # A written exam that phones may join anyway: the choice is carried in the signed links.
    await organiser.uncheck("#screen-required-input")
    await organiser.fill("#exam-title-input", "Economie 4 havo")
    await organiser.fill("#contact-input", CONTACT)
    await organiser.click("#create-form button[type=submit]")
    await organiser.wait_for_selector("#links", state="visible")
    student_link = (await organiser.eval_on_selector_all(".link-input", "inputs => inputs.map((i) => i.value)"))[1]
    settings = server.app[REGISTRY].signer.verify(urlsplit(student_link).fragment, time.time()).exam
    assert settings is not None and settings.kind == "written" and settings.screen_required is False
    assert organiser.errors == []

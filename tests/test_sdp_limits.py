"""How large an offer may be: a desk's grows with its exam's cap, a student's stays small.

A desk offers three m-lines per place, so at the largest cap its offer is about three
times the 60,000 characters a student may send (Chromium 156: 159,192 characters at
50 places). The unit tests check the limits in sfu/messages.py; the others go through
the real server with aiortc peers: a cap-50 desk negotiates and receives a student, and
an oversized offer from a student, a small-cap desk or a socket that has not said hello
is answered `too_large` on a socket that stays open.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from sfu.links import CAP_MAX
from sfu.messages import (
    LARGEST_FRAME_BYTES,
    SDP_MAX,
    ProtocolError,
    offer_frame_limit,
    parse_client_message,
    sdp_limit,
)
from tests.peers import Client, StudentPeer, SurveillantPeer, wait_until
from tests.test_sfu_forwarding import create_exam, join_student, token

MEASURED_DESK_OFFERS = {
    "Chromium 156": {1: 5_724, 8: 27_624, 19: 62_053, 20: 65_188, 50: 159_188},
    "Firefox 153": {1: 6_400, 8: 28_675, 20: 66_875, 50: 181_210},
}
"""Characters in a desk's offer by places (desk.js's transceivers, VP8 and Opus only)."""
CHROMIUM_DESK_OFFER_AT_50 = MEASURED_DESK_OFFERS["Chromium 156"][50]


def sdp_of(characters: int) -> str:
    """An SDP-like text of exactly `characters` characters, in lines as long as a browser's."""
    line = "a=rtcp-fb:96 nack pli x" + "x" * 15 + "\r\n"
    head = "v=0\r\n"
    body = line * ((characters - len(head)) // len(line))
    return head + body + "a=" + "y" * (characters - len(head) - len(body) - 4) + "\r\n"


def offer_frame(sdp: str) -> str:
    return json.dumps({"type": "offer", "v": 1, "id": 7, "sdp": sdp})


def refusal(raw: str, role: Any, sdp_max: int) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(raw, role, sdp_max)
    return caught.value.code


# -- the limits ------------------------------------------------------------------


def test_a_desk_may_offer_what_browsers_offer_at_its_cap() -> None:
    for browser, sizes in MEASURED_DESK_OFFERS.items():
        for cap, characters in sizes.items():
            sdp = sdp_of(characters)
            frame = offer_frame(sdp)
            sdp_max = sdp_limit("surveillant", cap)
            assert parse_client_message(frame, "surveillant", sdp_max)["sdp"] == sdp, (browser, cap)
            assert len(frame.encode()) <= offer_frame_limit(sdp_max) <= LARGEST_FRAME_BYTES


def test_a_desk_offer_is_held_to_its_own_cap() -> None:
    frame = offer_frame(sdp_of(CHROMIUM_DESK_OFFER_AT_50))
    assert refusal(frame, "surveillant", sdp_limit("surveillant", 8)) == "too_large"
    assert sdp_limit("surveillant", 8) < sdp_limit("surveillant", 20) < sdp_limit("surveillant", CAP_MAX)


def test_a_students_offer_limit_does_not_grow_with_the_cap() -> None:
    frame = offer_frame(sdp_of(150_000))
    for cap in (1, 8, CAP_MAX):
        assert sdp_limit("student", cap) == SDP_MAX
        assert refusal(frame, "student", sdp_limit("student", cap)) == "too_large"
    assert sdp_limit(None, CAP_MAX) == SDP_MAX
    assert refusal(frame, None, sdp_limit(None, CAP_MAX)) == "too_large"


# -- through the server ------------------------------------------------------------


async def refused_as_too_large(client: Client, message: dict[str, Any]) -> bool:
    """Send `message`; True once the server answers `too_large` (a frame refused unread names no id)."""
    mark = client.mark()
    await client.send({"v": 1, **message})
    reply = await client.wait_for(lambda m: m["type"] in ("error", "answer"), after=mark)
    return reply.get("code") == "too_large"


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def test_a_desk_at_cap_50_negotiates_and_receives_a_student(server: Any, session: aiohttp.ClientSession) -> None:
    created = await create_exam(session, server, cap=CAP_MAX)
    desk_client = Client(session, server.url)
    welcome = await desk_client.connect(token(created["surveillant_links"][0]), name="Mevr. Jansen")
    assert welcome["cap"] == CAP_MAX
    desk = SurveillantPeer(CAP_MAX)
    student_client: Client | None = None
    student: StudentPeer | None = None
    try:
        await desk.connect(desk_client)  # asserts the answer
        assert len(desk.pc.getTransceivers()) == 3 * CAP_MAX + 2
        student_client, student = await join_student(session, server, created, "Anna")
        await wait_until(lambda: desk.received[0]["webcam"].frames >= 5, timeout=30)
        await wait_until(lambda: desk.received[0]["microphone"].frames >= 5, timeout=30)
    finally:
        for peer in (student, desk):
            if peer is not None:
                await peer.close()
        for client in (student_client, desk_client):
            if client is not None:
                await client.close()


async def test_an_oversized_offer_is_too_large_and_the_socket_stays_open(
    server: Any, session: aiohttp.ClientSession
) -> None:
    created = await create_exam(session, server, cap=8)
    big_offer = {"type": "offer", "sdp": sdp_of(150_000)}

    # Before hello: any socket, no link at all.
    async with session.ws_connect(server.url.replace("http", "ws", 1) + "/ws", max_msg_size=1 << 20) as stranger:
        await stranger.send_str(json.dumps({"v": 1, "id": 1, **big_offer}))
        reply = await stranger.receive_json(timeout=10)
        assert (reply["type"], reply["code"]) == ("error", "too_large"), reply
        assert not stranger.closed

    student = Client(session, server.url)
    desk = Client(session, server.url)
    try:
        assert (await student.connect(token(created["student_link"]), name="Anna"))["type"] == "welcome"
        assert await refused_as_too_large(student, big_offer)
        assert (await student.request({"type": "hand", "raised": True}))["type"] == "ack"

        # A desk at cap 8 may offer more than a student, but not a cap-50 desk's offer.
        assert (await desk.connect(token(created["surveillant_links"][0]), name="Dhr. Bakker"))["type"] == "welcome"
        assert await refused_as_too_large(desk, big_offer)
        assert (await desk.request({"type": "focus", "student_id": None}))["type"] == "ack"
        for client in (student, desk):
            assert client.closed_code is None
    finally:
        for client in (student, desk):
            await client.close()

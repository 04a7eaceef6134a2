"""Offers as browsers really write them are answered, and packets flow on every route.

Each fixture in tests/fixtures/offers/ is a student offer from one browser: Chromium and
Firefox ESR captured from the real student page (tests/capture_offers.py), Safari on macOS
and on iOS written after public Safari offers (each file's header says where from). Each is
answered by the real MediaPeer (aiortc), and RTP packets with the offer's own SSRCs and the
negotiated payload types go through `_receive_media` to a surveillant's legs: through the
native lane and on the Python path alone. RTX, `a=ssrc-group:FID`, H264 or VP9 before VP8,
extmap variants (`/recvonly`, ids 1 to 14), `a=bundle-only`, other mids, `{uuid}` msids and
re-offers are all in there. The iOS offer has no screen m-line (no getDisplayMedia there) and
is answered with the layout of an exam without `screen_required`.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Any

import pytest

from load_tests.hot_path import srtp_session as _session
from sfu.forward import Leg
from sfu.peer import MediaPeer, check_offer, student_layout, surveillant_layout
from sfu.rtp_header import extension_block
from sfu.srtp import DatagramBuffer
from aiortc.sdp import SessionDescription
from tests.test_lane import Wire, _connected, lanes

OFFERS = Path(__file__).resolve().parent / "fixtures" / "offers"
BROWSERS = ["chromium", "firefox", "safari_macos", "ios_safari"]
KEY_IN = os.urandom(44)
KEY_OUT = os.urandom(44)
PACKETS = 40
NO_SCREEN = {"ios_safari"}
"""Fixtures from a device without screen sharing: camera and microphone only (four m-lines)."""


def layout(name: str) -> list[Any]:
    return student_layout(screen=name not in NO_SCREEN)


def received(name: str) -> list[str]:
    """The tracks the SFU receives from this browser, in m-line order."""
    return [spec.name for spec in layout(name) if spec.receives]


def offer(name: str) -> str:
    """A fixture's SDP without its `#` header, with the CRLF line ends browsers send."""
    lines = [line for line in (OFFERS / f"{name}.sdp").read_text().splitlines() if not line.startswith("#")]
    return "\r\n".join(lines) + "\r\n"


def header(name: str) -> str:
    return "".join(line for line in (OFFERS / f"{name}.sdp").read_text().splitlines() if line.startswith("#"))


def with_other_mids(sdp: str, mids: list[str]) -> str:
    """The offer with its mids renamed, in the m-lines and in the BUNDLE group."""
    old = SessionDescription.parse(sdp)
    renamed = dict(zip((section.rtp.muxId for section in old.media), mids))
    sdp = re.sub(r"a=mid:(\S+)", lambda m: f"a=mid:{renamed[m.group(1)]}", sdp)
    return re.sub(r"a=group:BUNDLE [^\r\n]+", "a=group:BUNDLE " + " ".join(mids), sdp)


def without_ssrc_lines(sdp: str) -> str:
    """The offer without a=ssrc and a=ssrc-group lines: routes are learnt from the mid extension."""
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(("a=ssrc:", "a=ssrc-group:")))


def rtx_ssrcs(sdp: str) -> set[int]:
    return {int(ssrc) for ssrc in re.findall(r"a=ssrc-group:FID \d+ (\d+)", sdp)}


def packet(publication: Any, ssrc: int, sequence: int, mid: str, mid_id: int | None, payload_type: int) -> bytes:
    """One RTP packet as a browser sends it: the mid extension, a VP8 keyframe start or Opus bytes."""
    extension = mid_id is not None
    first = 0x80 | (0x10 if extension else 0)
    data = struct.pack("!BBHII", first, 0x80 | payload_type, sequence, sequence * 3000, ssrc)
    if extension:
        data += extension_block([(mid_id, mid.encode())])
    body = b"\x10\x00" + bytes(300) if publication.kind == "video" else bytes(range(160))
    return data + body


class Routes:
    """A negotiated student peer whose three publications feed one surveillant's legs."""

    def __init__(self, student: MediaPeer, tracks: list[str]) -> None:
        self.student = student
        self.tracks = tracks
        self.surveillant = MediaPeer("surveillant", surveillant_layout(1), ice_servers=())
        _connected(self.student, KEY_IN, os.urandom(44))
        self.wire: Wire = _connected(self.surveillant, os.urandom(44), KEY_OUT)
        self.legs: dict[int, str] = {}
        for index, name in enumerate(tracks):
            publication = student.publications[name]
            ssrc = 0x1000 + index
            leg = Leg(self.surveillant, publication.kind, ssrc, publication.payload_type, str(index), None, None)
            leg.attach(publication)
            self.legs[ssrc] = name

    def feed(self, sdp: str) -> dict[str, int]:
        """Send PACKETS packets per track (and as many on each RTX SSRC); what each leg delivered."""
        sender = _session(KEY_IN, inbound=False)
        description = SessionDescription.parse(sdp)
        rtx = rtx_ssrcs(sdp)
        buffer = DatagramBuffer(2048)
        for index, name in enumerate(self.tracks):
            publication = self.student.publications[name]
            section = description.media[index]
            offered = [info.ssrc for info in section.ssrc if info.ssrc not in rtx]
            ssrc = offered[0] if offered else 0xABC000 + index
            mid = self.student.transceivers[name].mid
            streams = [(ssrc, publication.payload_type)] + [(extra, 97) for extra in rtx if any(
                info.ssrc == extra for info in section.ssrc)]
            for sequence in range(1000, 1000 + PACKETS):
                for stream_ssrc, payload_type in streams:
                    datagram = sender.protect(
                        packet(publication, stream_ssrc, sequence, mid, self.student._mid_id, payload_type)
                    )
                    buffer.memory[: len(datagram)] = datagram
                    self.student._receive_media(buffer, len(datagram))
        delivered = dict.fromkeys(self.tracks, 0)
        receiver = _session(KEY_OUT, inbound=True)
        for datagram in self.wire.sent:
            plain = receiver.unprotect(datagram)
            delivered[self.legs[struct.unpack_from("!I", plain, 8)[0]]] += 1
        return delivered


async def answered(sdp: str, name: str) -> tuple[MediaPeer, SessionDescription]:
    student = MediaPeer("student", layout(name), ice_servers=())
    answer = await student.answer(sdp)
    return student, SessionDescription.parse(answer)


@pytest.mark.parametrize("name", BROWSERS)
def test_each_fixture_says_where_it_comes_from(name: str) -> None:
    text = header(name)
    if name in ("chromium", "firefox"):
        assert "captured by tests/capture_offers.py" in text
    else:
        assert "NOT captured" in text and "Safari" in text
    check_offer(offer(name), layout(name))


def offers_vp8_rtx(section: Any) -> bool:
    """Whether an offer's media section has an RTX codec whose apt is one of its VP8 payload types."""
    vp8 = {str(codec.payloadType) for codec in section.rtp.codecs if codec.name.lower() == "vp8"}
    return any(
        codec.name.lower() == "rtx" and str(codec.parameters.get("apt")) in vp8 for codec in section.rtp.codecs
    )


@pytest.mark.parametrize("name", BROWSERS)
async def test_a_browsers_offer_is_answered_on_its_own_mids_and_payload_types(name: str) -> None:
    sdp = offer(name)
    student, answer = await answered(sdp, name)
    try:
        remote = SessionDescription.parse(sdp)
        assert [section.rtp.muxId for section in answer.media] == [section.rtp.muxId for section in remote.media]
        tracks = received(name)
        assert [section.direction for section in answer.media] == ["recvonly"] * len(tracks) + ["sendonly"] * 2
        # VP8 or Opus only, plus VP8's RTX on the video the student sends where the offer has it
        # (the SFU NACKs uplink losses and takes the retransmissions: upstream repair).
        wanted_codecs = [
            [{"video": "vp8", "audio": "opus"}[spec.kind]]
            + (["rtx"] if spec.receives and spec.kind == "video" and offers_vp8_rtx(remote.media[index]) else [])
            for index, spec in enumerate(layout(name))
        ]
        assert [[codec.name.lower() for codec in section.rtp.codecs] for section in answer.media] == wanted_codecs
        for index, name_ in enumerate(tracks):
            offered = {codec.name.lower(): codec.payloadType for codec in remote.media[index].rtp.codecs}
            assert student.publications[name_].payload_type == offered[{"video": "vp8", "audio": "opus"}[
                remote.media[index].kind]]
        assert any(group.semantic == "BUNDLE" for group in answer.group)
    finally:
        await student.close()


@pytest.mark.parametrize("native", [True, False], ids=["lane", "python"])
@pytest.mark.parametrize("name", BROWSERS)
async def test_packets_flow_on_every_route_of_a_browsers_offer(name: str, native: bool) -> None:
    sdp = offer(name)
    with lanes(native):
        student, _ = await answered(sdp, name)
        routes = Routes(student, received(name))
        try:
            delivered = routes.feed(sdp)
            # Every primary packet reaches its leg once (RTX and unknown SSRCs go nowhere).
            assert delivered == dict.fromkeys(received(name), PACKETS)
            if native:
                from sfu.lane import Lane
                if Lane is not None:
                    assert all(student.publications[track].lane is not None for track in received(name))
        finally:
            await student.close()
            await routes.surveillant.close()


@pytest.mark.parametrize("name", BROWSERS)
async def test_other_mids_and_no_ssrc_lines_route_by_the_mid_extension(name: str) -> None:
    mids = ["cam", "scr", "mic", "talk", "exam"][: len(layout(name))]
    sdp = without_ssrc_lines(with_other_mids(offer(name), mids))
    student, answer = await answered(sdp, name)
    routes = Routes(student, received(name))
    try:
        assert [section.rtp.muxId for section in answer.media] == mids
        assert routes.feed(sdp) == dict.fromkeys(received(name), PACKETS)
    finally:
        await student.close()
        await routes.surveillant.close()


@pytest.mark.parametrize("name", BROWSERS)
async def test_a_re_offer_from_the_same_browser_is_answered_too(name: str) -> None:
    first = offer(name)
    # A re-offer: the same session id with its version raised (RFC 3264 §8), new ICE credentials.
    again = re.sub(r"^(o=\S+ \d+) (\d+)", lambda m: f"{m.group(1)} {int(m.group(2)) + 1}", first, flags=re.M)
    again = re.sub(r"a=ice-ufrag:\S+", "a=ice-ufrag:R3of", again)
    for sdp in (first, again):
        student, _ = await answered(sdp, name)
        try:
            assert all(student.publications[track].ssrc is not None for track in received(name))
        finally:
            await student.close()

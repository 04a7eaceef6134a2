"""Forwarding without a network: header parsing and rewriting, legs, publications, keyframe limits."""

from __future__ import annotations

import struct

from aiortc.rtp import RtpPacket

from sfu.forward import HISTORY_SIZE, Leg
from sfu.keyframes import KeyframeLimiter
from sfu.publication import Publication
from sfu.rtp_header import audio_level, extension_block, extension_value, parse, vp8_keyframe_start

VP8_KEY_START = bytes([0x90, 0x80, 0x12, 0x34]) + bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A])  # X, I(15-bit), S; P=0
VP8_DELTA_START = bytes([0x90, 0x80, 0x12, 0x35]) + bytes([0x11, 0x02, 0x00])  # P=1
VP8_CONTINUATION = bytes([0x80, 0x80, 0x12, 0x35]) + b"\x55" * 20  # S=0


def rtp(sequence: int, timestamp: int, payload: bytes, marker: bool = False, payload_type: int = 96,
        ssrc: int = 0x1111, extensions: bytes = b"", padding: int = 0) -> bytes:
    first = 0x80 | (0x10 if extensions else 0) | (0x20 if padding else 0)
    packet = struct.pack("!BBHII", first, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc)
    packet += extensions + payload
    if padding:
        packet += b"\x00" * (padding - 1) + bytes([padding])
    return packet


class Sink:
    """Sends in the clear: what a leg hands to its sink, as the subscriber would decrypt it."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_rtp(self, header: bytearray, payload: memoryview) -> bytes:
        packet = bytes(header) + bytes(payload)
        self.sent.append(packet)
        return packet

    def resend_rtp(self, packet: bytes) -> None:
        self.sent.append(packet)

    def outbound_srtp(self) -> None:
        return None


class Publisher:
    def __init__(self) -> None:
        self.requests: list[int] = []

    def __call__(self, ssrc: int) -> None:
        self.requests.append(ssrc)


def publication(kind: str = "video", payload_type: int = 96) -> tuple[Publication, Publisher]:
    publisher = Publisher()
    pub = Publication("webcam", kind, payload_type, audio_level_id=None, request_keyframe=publisher)
    pub.ssrc = 0x1111
    return pub, publisher


def test_parse_skips_csrcs_extensions_and_padding() -> None:
    extensions = extension_block([(1, b"0"), (3, b"\x01\x02\x03")])
    packet = rtp(7, 9000, b"payload", marker=True, extensions=extensions, padding=4)
    view = parse(packet)
    assert view is not None
    assert (view.marker, view.payload_type, view.sequence, view.timestamp) == (True, 96, 7, 9000)
    assert packet[view.payload_start : view.payload_end] == b"payload"
    assert extension_value(packet, 3) == b"\x01\x02\x03"
    assert extension_value(packet, 1) == b"0"
    assert extension_value(packet, 5) is None


def test_parse_refuses_garbage_and_padding_only() -> None:
    assert parse(b"") is None
    assert parse(b"\x00" * 40) is None  # version 0
    assert parse(rtp(1, 1, b"", padding=8)) is None
    assert parse(bytes([0x9F]) + b"\x60" + b"\x00" * 10) is None  # CSRCs and extension beyond the end


def test_vp8_keyframe_detection() -> None:
    assert vp8_keyframe_start(VP8_KEY_START[4:])
    assert not vp8_keyframe_start(VP8_DELTA_START[4:])
    assert not vp8_keyframe_start(VP8_CONTINUATION[4:])
    assert not vp8_keyframe_start(b"")
    assert audio_level(b"\x85") == 5


def test_rewritten_header_parses_with_aiortc() -> None:
    sink = Sink()
    leg = Leg(sink, "video", ssrc=0xABCDEF01, payload_type=120, mid="3", mid_id=1, abs_send_time_id=3)
    pub, _ = publication()
    leg.attach(pub)
    pub.receive(rtp(1000, 5000, VP8_KEY_START, marker=True))
    (out,) = sink.sent
    from aiortc.rtp import HeaderExtensionsMap
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(
                    id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                ),
            ]
        )
    )
    parsed = RtpPacket.parse(out, extensions_map)
    assert parsed.ssrc == 0xABCDEF01
    assert parsed.payload_type == 120
    assert parsed.marker == 1
    assert parsed.payload == VP8_KEY_START
    assert parsed.extensions.mid == "3"
    assert parsed.extensions.abs_send_time is not None


def test_video_leg_starts_at_a_keyframe_and_asks_for_one() -> None:
    sink = Sink()
    leg = Leg(sink, "video", ssrc=1, payload_type=96, mid=None, mid_id=None, abs_send_time_id=None)
    pub, publisher = publication()
    leg.attach(pub)
    assert publisher.requests == [0x1111]  # a new watcher asks for a keyframe at once
    pub.receive(rtp(10, 100, VP8_DELTA_START))
    pub.receive(rtp(11, 100, VP8_CONTINUATION, marker=True))
    assert sink.sent == []
    pub.receive(rtp(12, 200, VP8_KEY_START))
    pub.receive(rtp(13, 200, VP8_CONTINUATION, marker=True))
    assert len(sink.sent) == 2
    assert [parse(p).sequence for p in sink.sent] == [1, 2]


def test_keyframe_requests_are_limited_to_two_a_second() -> None:
    limiter = KeyframeLimiter()
    assert limiter.allow(10.0)
    assert not limiter.allow(10.2)
    assert not limiter.allow(10.49)
    assert limiter.allow(10.5)
    assert limiter.sent == 2


def test_an_unrepaired_uplink_gap_asks_for_a_keyframe() -> None:
    pub, publisher = publication()
    pub.keyframes = KeyframeLimiter(interval=0.0)
    pub.receive(rtp(1, 100, VP8_KEY_START))
    pub.receive(rtp(2, 100, VP8_CONTINUATION, marker=True))
    assert publisher.requests == []
    pub.receive(rtp(5, 200, VP8_DELTA_START))  # 3 and 4 never came
    assert publisher.requests == [0x1111]
    assert pub.stats.lost == 2


def test_hand_over_keeps_the_leg_continuous() -> None:
    sink = Sink()
    leg = Leg(sink, "audio", ssrc=9, payload_type=111, mid=None, mid_id=None, abs_send_time_id=None)
    first, _ = publication("audio", 111)
    second, _ = publication("audio", 111)
    leg.attach(first)
    for i in range(3):
        first.receive(rtp(500 + i, 48000 + 960 * i, b"opus", payload_type=111))
    leg.attach(second)
    assert first.leg is None and second.leg is leg
    first.receive(rtp(503, 50880, b"lost", payload_type=111))  # no longer forwarded
    second.receive(rtp(9000, 123456, b"opus", payload_type=111))
    sequences = [parse(p).sequence for p in sink.sent]
    timestamps = [parse(p).timestamp for p in sink.sent]
    assert len(sink.sent) == 4
    assert sequences[3] == (sequences[2] + 1) & 0xFFFF
    assert timestamps[3] > timestamps[2]


def test_other_payload_types_are_not_forwarded() -> None:
    sink = Sink()
    leg = Leg(sink, "audio", ssrc=9, payload_type=111, mid=None, mid_id=None, abs_send_time_id=None)
    pub, _ = publication("audio", 111)
    leg.attach(pub)
    pub.receive(rtp(1, 1, b"red", payload_type=63))
    assert sink.sent == []


def test_nack_retransmits_from_a_bounded_history() -> None:
    sink = Sink()
    leg = Leg(sink, "audio", ssrc=9, payload_type=111, mid=None, mid_id=None, abs_send_time_id=None)
    pub, _ = publication("audio", 111)
    leg.attach(pub)
    for i in range(HISTORY_SIZE + 10):
        pub.receive(rtp(i, i * 960, bytes([i % 256]), payload_type=111))
    sent = list(sink.sent)
    first_out = parse(sent[0]).sequence
    last_out = parse(sent[-1]).sequence
    leg.retransmit([last_out, first_out])  # the first fell out of the history
    assert sink.sent[len(sent):] == [sent[-1]]
    assert leg.retransmitted == 1


def test_nobody_watching_means_nothing_is_kept() -> None:
    pub, _ = publication("audio", 111)
    for i in range(10_000):
        pub.receive(rtp(i & 0xFFFF, i * 960, b"x" * 100, payload_type=111))
    assert pub.leg is None
    assert pub.stats.packets == 10_000
    assert not [name for name in vars(pub) if isinstance(getattr(pub, name), (list, dict)) and getattr(pub, name)]

"""The pure parts of the load test (load_tests/): the frame-id trailer that
travels at the end of each VP8 frame, and that such a frame still decodes.
No servers, no sockets, no timing."""

from __future__ import annotations

import av
import numpy as np
import pytest
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

from load_tests.media import (
    MAGIC,
    TRACK_SCREEN,
    TRAILER_SIZE,
    VP8_CHUNK,
    add_trailer,
    encode_vp8,
    make_tag,
    pad_for_trailer,
    read_trailer,
    rtp_payload_bounds,
    rtp_trailer,
    split_tag,
)


def _extensions_map() -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(
            id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    ]))
    return m


def _rtp_packets(frame: bytes, picture_id: int = 4321) -> list[bytes]:
    """The frame as aiortc's sender puts it on the wire (decrypted)."""
    ext = _extensions_map()
    payloads = Vp8Encoder._packetize(frame, picture_id)
    out = []
    for i, payload in enumerate(payloads):
        packet = RtpPacket(payload_type=96, sequence_number=100 + i, timestamp=9000, ssrc=1234)
        packet.payload = payload
        packet.marker = 1 if i == len(payloads) - 1 else 0
        packet.extensions.mid = "0"
        packet.extensions.abs_send_time = 0x123456
        out.append(packet.serialize(ext))
    return out


def test_trailer_round_trip() -> None:
    tag = make_tag(37, TRACK_SCREEN)
    assert split_tag(tag) == (37, TRACK_SCREEN)
    data = add_trailer(pad_for_trailer(b"\x10\x02\x00vp8 frame bytes"), 0xDEADBEEF, tag)
    assert data[-TRAILER_SIZE:-8] == MAGIC
    assert read_trailer(data) == (0xDEADBEEF, tag)
    assert read_trailer(data[:-1]) is None
    assert read_trailer(b"short") is None
    assert read_trailer(b"\x00" * 40) is None


@pytest.mark.parametrize("length", [1, 11, 12, 500, VP8_CHUNK - 12, VP8_CHUNK - 11,
                                    VP8_CHUNK - 1, VP8_CHUNK, VP8_CHUNK + 1, VP8_CHUNK + 5,
                                    2 * VP8_CHUNK - 12, 2 * VP8_CHUNK - 3, 3 * VP8_CHUNK + 7,
                                    7777])
def test_trailer_lands_whole_in_the_marker_packet(length: int) -> None:
    frame = bytes((i * 7) & 0xFF for i in range(length))
    wire = add_trailer(pad_for_trailer(frame), 77, make_tag(3, 0))
    packets = _rtp_packets(wire)
    # only the last packet (marker) carries it, whole, and it survives depayloading
    assert rtp_trailer(packets[-1]) == (77, make_tag(3, 0))
    assert all(rtp_trailer(p) is None for p in packets[:-1])
    start, end = rtp_payload_bounds(packets[-1])
    assert read_trailer(vp8_depayload(packets[-1][start:end])) == (77, make_tag(3, 0))
    rebuilt = b"".join(vp8_depayload(p[slice(*rtp_payload_bounds(p))]) for p in packets)
    assert rebuilt == wire


def test_rtp_trailer_ignores_rtcp_and_non_marker_packets() -> None:
    wire = add_trailer(pad_for_trailer(b"x" * 100), 5, 6)
    packet = _rtp_packets(wire)[-1]
    no_marker = packet[:1] + bytes([packet[1] & 0x7F]) + packet[2:]
    assert rtp_trailer(no_marker) is None
    rtcp = bytes([0x80, 200]) + packet[2:]  # an SR-looking header
    assert rtp_trailer(rtcp) is None
    # RTP padding after the trailer is skipped
    padded = bytes([packet[0] | 0x20]) + packet[1:] + b"\x00\x00\x00\x04"
    assert rtp_trailer(padded) == (5, 6)


def _decode(frames: list[bytes]) -> list[np.ndarray]:
    decoder = av.CodecContext.create("vp8", "r")
    images = []
    for data in frames:
        for frame in decoder.decode(av.Packet(data)):
            images.append(frame.to_ndarray(format="yuv420p"))
    return images


def test_vp8_frames_with_trailer_decode_like_the_originals() -> None:
    encoded = encode_vp8(160, 96, 15, 150, seconds=0.6, keyframe_seconds=0.3, kind="webcam")
    assert encoded[0][1], "first frame must be a keyframe"
    assert any(key for _, key in encoded[1:]) and not all(key for _, key in encoded)
    plain = [data for data, _ in encoded]
    tagged = [add_trailer(pad_for_trailer(data), i, make_tag(0, 0))
              for i, data in enumerate(plain)]
    assert all(len(t) >= len(p) + TRAILER_SIZE for p, t in zip(plain, tagged))
    reference = _decode(plain)
    decoded = _decode(tagged)
    assert len(decoded) == len(reference) == len(plain)
    for ref, got in zip(reference, decoded):
        assert np.array_equal(ref, got)

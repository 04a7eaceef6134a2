"""The native lane (sfu/_lane.c) forwards and counts exactly what the Python path does.

Two copies of the same route (a student's publication, a surveillant's leg, real
SRTP sessions with the same keys) are fed the same protected datagrams through
`MediaPeer._receive_media`: one with lanes, one on the Python path only. What
leaves, what the counters say and what the history keeps must be the same, for
random packets: gaps, reordering, wrong payload types, CSRCs, extensions,
padding, empty and oversized payloads.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from load_tests.hot_path import srtp_session as _session  # AES-256-GCM, as aiortc negotiates with Chromium
import sfu.lane
import sfu.srtp
from sfu.forward import HISTORY_SIZE, Leg
from sfu.peer import MediaPeer, student_layout, surveillant_layout
from sfu.publication import Publication
from sfu.rtp_header import extension_block
from sfu.srtp import DatagramBuffer, FastSrtp

KEY_IN = os.urandom(44)
KEY_OUT = os.urandom(44)
SSRC_IN = 0x11223344
SSRC_OUT = 0x55667788
PAYLOAD_TYPE = {"video": 96, "audio": 111}
MID_ID, AUDIO_LEVEL_ID, ABS_SEND_TIME_ID = 1, 2, 3


class Wire:
    """The nominated ICE pair's transport: keeps what is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, address: Any) -> None:
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def _connected(peer: MediaPeer, key_in: bytes, key_out: bytes) -> Wire:
    wire = Wire()
    peer._rx = FastSrtp(_session(key_in, inbound=True))
    peer._tx = FastSrtp(_session(key_out, inbound=False))
    pair = SimpleNamespace(protocol=SimpleNamespace(transport=wire), remote_addr=("192.0.2.1", 9))
    peer._connection = SimpleNamespace(_nominated={1: pair})
    return wire


@contextmanager
def lanes(enabled: bool) -> Iterator[None]:
    saved = sfu.lane.ENABLED
    sfu.lane.ENABLED = enabled
    try:
        yield
    finally:
        sfu.lane.ENABLED = saved


def run_route(kind: str, datagrams: list[bytes], enabled: bool) -> dict[str, Any]:
    """Feed `datagrams` to a fresh route; return everything both paths must agree on."""
    with lanes(enabled):
        student = MediaPeer("student", student_layout(), ice_servers=())
        surveillant = MediaPeer("surveillant", surveillant_layout(1), ice_servers=())
        _connected(student, KEY_IN, os.urandom(44))
        wire = _connected(surveillant, os.urandom(44), KEY_OUT)
        publication = Publication("webcam", kind, PAYLOAD_TYPE[kind], AUDIO_LEVEL_ID if kind == "audio" else None,
                                  student.send_pli)
        student.publications["webcam"] = publication
        student._learn(SSRC_IN, publication)
        leg = Leg(surveillant, kind, SSRC_OUT, 100 + PAYLOAD_TYPE[kind] % 10, "0", MID_ID,
                  ABS_SEND_TIME_ID if kind == "video" else None)
        leg.attach(publication)
        python_path = 0
        receive = publication.receive

        def counted(packet: Any) -> None:
            nonlocal python_path
            python_path += 1
            receive(packet)

        publication.receive = counted  # type: ignore[method-assign]
        buffer = DatagramBuffer(2048)
        for datagram in datagrams:
            buffer.memory[: len(datagram)] = datagram
            student._receive_media(buffer, len(datagram))
        lane_opened = publication.lane is not None

    subscriber = _session(KEY_OUT, inbound=True)
    delivered = [_masked(leg, subscriber.unprotect(packet)) for packet in wire.sent]
    stats = publication.stats
    return {
        "delivered": delivered,
        "stats": (stats.packets, stats.bytes, stats.frames, stats.lost, stats.expected_sequence, stats.audio_level),
        "leg": (leg.started, leg.packets_sent, leg._last_sequence, leg._last_timestamp),
        "history": [None if packet is None else packet[:4] for packet in leg._history],
        "received": student.packets_received,
        "python_path": python_path,
        "lane_opened": lane_opened,
    }


def _masked(leg: Leg, packet: bytes) -> bytes:
    """The packet with its abs-send-time value (the wall clock at sending) zeroed."""
    at = leg._abs_send_time_at
    if at is None:
        return packet
    return packet[: at + 1] + b"\x00\x00\x00" + packet[at + 4 :]


def rtp(kind: str, sequence: int, timestamp: int, marker: bool, payload_type: int, csrcs: int,
        extensions: bool, padding: int, payload_size: int, keyframe: bool, level: int) -> bytes:
    first = 0x80 | csrcs | (0x10 if extensions else 0) | (0x20 if padding else 0)
    header = struct.pack("!BBHII", first, (0x80 if marker else 0) | payload_type, sequence, timestamp, SSRC_IN)
    header += bytes(4 * csrcs)
    if extensions:
        elements = [(MID_ID, b"0")] + ([(AUDIO_LEVEL_ID, bytes([0x80 | level]))] if kind == "audio" else [])
        header += extension_block(elements)
    if kind == "video" and payload_size:
        # VP8 payload descriptor: S=1 starts a partition; a keyframe's first payload byte has P=0.
        payload = (b"\x10\x00" if keyframe else b"\x00\x01") + bytes(payload_size - 1)
    else:
        payload = bytes(range(256)) * (payload_size // 256) + bytes(payload_size % 256)
    tail = bytes(padding - 1) + bytes([padding]) if padding else b""
    return header + payload + tail


packet_specs = st.lists(
    st.tuples(
        st.sampled_from([1] * 12 + [0, 2, 3, 0xFFFF, 0x8000, 40000]),  # sequence step: mostly in order
        st.booleans(),  # marker
        st.sampled_from(["right"] * 12 + ["wrong"]),  # payload type
        st.integers(0, 2),  # CSRCs
        st.booleans(),  # header extensions
        st.sampled_from([0] * 6 + [1, 4]),  # padding
        st.sampled_from([0, 1, 2, 100, 1000, 1100, 1200, 1440, 1460]),  # payload size
        st.booleans(),  # a keyframe start (video)
        st.integers(0, 127),  # audio level
    ),
    min_size=1,
    max_size=80,
)


def protected(kind: str, specs: list[tuple[Any, ...]]) -> list[bytes]:
    sender = _session(KEY_IN, inbound=False)
    sequence, datagrams = 1000, []
    for step, marker, payload_type, csrcs, extensions, padding, size, keyframe, level in specs:
        sequence = (sequence + step) & 0xFFFF
        pt = PAYLOAD_TYPE[kind] + (0 if payload_type == "right" else 1)
        packet = rtp(kind, sequence, sequence * 960, marker, pt, csrcs, extensions, padding, size, keyframe, level)
        try:
            datagrams.append(sender.protect(packet))
        except (pylibsrtp.Error, ValueError):
            continue  # longer than libsrtp takes: a browser never sends it
    return datagrams


def test_the_native_lane_is_built() -> None:
    """`make install` compiles sfu/_lane.c (setup.py); without it every packet takes the Python path."""
    assert sfu.lane.Lane is not None, "sfu/_lane.c was not compiled: is a C compiler installed?"
    assert sfu.srtp.PROTECT_ADDRESS is not None, "pylibsrtp's libsrtp no longer has the signature sfu/_lane.c calls"
    assert sfu.lane.ENABLED or os.environ.get("INVIGIL_NATIVE_LANES") == "0"


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["video", "audio"]), specs=packet_specs)
def test_the_lane_and_the_python_path_agree_on_random_packets(kind: str, specs: list[tuple[Any, ...]]) -> None:
    datagrams = protected(kind, specs)
    native = run_route(kind, datagrams, enabled=True)
    python = run_route(kind, datagrams, enabled=False)
    for key in ("delivered", "stats", "leg", "history", "received"):
        assert native[key] == python[key], key
    assert python["python_path"] == python["received"] and not python["lane_opened"]


def test_in_order_packets_go_the_native_way_after_the_first() -> None:
    in_order = [(1, i % 3 == 2, "right", 0, True, 0, 1100, i == 0, 30) for i in range(300)]
    for kind in ("video", "audio"):
        native = run_route(kind, protected(kind, in_order), enabled=True)
        python = run_route(kind, protected(kind, in_order), enabled=False)
        assert native["delivered"] == python["delivered"] and len(native["delivered"]) == 300
        assert native["lane_opened"]
        # The first packet starts the leg in Python; for audio, every fifth reads the level there too.
        assert native["python_path"] == (1 if kind == "video" else 1 + 300 // 5), kind


class AudioRoute:
    """A student's audio publications (one SSRC each) and a surveillant's audio leg fed by the first."""

    def __init__(self, sources: int) -> None:
        self.student = MediaPeer("student", student_layout(), ice_servers=())
        surveillant = MediaPeer("surveillant", surveillant_layout(1), ice_servers=())
        _connected(self.student, KEY_IN, os.urandom(44))
        self.wire = _connected(surveillant, os.urandom(44), KEY_OUT)
        self.publications = [Publication(f"track{i}", "audio", 111, None, self.student.send_pli) for i in range(sources)]
        for index, publication in enumerate(self.publications):
            self.student._learn(SSRC_IN + index, publication)
        self.leg = Leg(surveillant, "audio", SSRC_OUT, 111, None, None, None)
        self.leg.attach(self.publications[0])
        self._sender = _session(KEY_IN, inbound=False)
        self._buffer = DatagramBuffer(2048)

    def send(self, sequence: int, source: int = 0) -> None:
        """One Opus packet of publication `source`, protected, through the student's receive path."""
        packet = struct.pack("!BBHII", 0x80, 111, sequence, sequence * 960, SSRC_IN + source) + b"opus"
        datagram = self._sender.protect(packet)
        self._buffer.memory[: len(datagram)] = datagram
        self.student._receive_media(self._buffer, len(datagram))

    def delivered_sequences(self) -> list[int]:
        subscriber = _session(KEY_OUT, inbound=True)
        return [struct.unpack_from("!H", subscriber.unprotect(packet), 2)[0] for packet in self.wire.sent]


def test_a_hand_over_closes_the_lane_and_the_sequence_stays_continuous() -> None:
    with lanes(True):
        route = AudioRoute(sources=2)
        first, second = route.publications
        for sequence in range(1, 6):
            route.send(sequence)
        assert first.lane is not None
        route.leg.attach(second)
        assert first.lane is None and second.lane is None
        for sequence in range(500, 505):
            route.send(sequence, source=1)
            route.send(sequence + 10)  # the old source is no longer forwarded
        assert second.lane is not None
    assert route.delivered_sequences() == list(range(1, 11))


def test_a_lane_that_fails_closes_and_the_python_path_takes_over() -> None:
    with lanes(True):
        route = AudioRoute(sources=1)
        (publication,) = route.publications
        route.send(1)
        route.send(2)
        assert publication.lane is not None
        history = route.leg._history
        del history[:]  # a bug somewhere else, as the lane would meet it
        with pytest.raises(IndexError):
            route.send(3)
        assert publication.lane is None
        history.extend([None] * HISTORY_SIZE)
        route.send(4)  # the Python path forwards, and a new lane opens
        assert publication.lane is not None
        route.send(5)
    assert route.delivered_sequences() == [1, 2, 4, 5] and route.leg.packets_sent == 5

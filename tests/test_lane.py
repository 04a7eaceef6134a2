"""The native lane (sfu/_lane.c) and the reader in C (sfu/_reader.c) forward and count
exactly what the Python path does.

Copies of the same route (a student's publication, a surveillant's leg, real SRTP
sessions with the same keys) are fed the same protected datagrams: through
`MediaPeer._receive_media` with lanes and on the Python path only, and by UDP
through the reader in C, which runs the lanes and sends on its own. What
leaves, what the counters say and what the history keeps must be the same, for
random packets: gaps, reordering, wrong payload types, CSRCs, extensions,
padding, empty and oversized payloads.
"""

from __future__ import annotations

import asyncio
import os
import socket
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
import sfu.media_socket
from sfu.media_socket import MediaDatagramTransport, adopt
from sfu.forward import HISTORY_SIZE, Leg
from sfu.peer import MediaPeer, student_layout, surveillant_layout
from sfu.publication import Publication
from sfu.rtp_header import extension_block
from sfu.srtp import DatagramBuffer, FastSrtp

try:
    import sfu._lane
except ImportError:  # built without a C compiler: test_the_native_lane_is_built says so
    pass

KEY_IN = os.urandom(44)
KEY_OUT = os.urandom(44)
SSRC_IN = 0x11223344
SSRC_OUT = 0x55667788
PAYLOAD_TYPE = {"video": 96, "audio": 111}
MID_ID, AUDIO_LEVEL_ID, ABS_SEND_TIME_ID = 1, 2, 3
RTX_SSRC, RTX_PAYLOAD_TYPE = 0x99AABBCC, 97


class Wire:
    """The nominated ICE pair's transport: keeps what is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, address: Any) -> None:
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def _connected(peer: MediaPeer, key_in: bytes, key_out: bytes, transport: Any = None,
               remote: tuple[str, int] = ("192.0.2.1", 9)) -> Any:
    """Give `peer` SRTP sessions and a nominated pair on `transport` (a Wire if None); return the transport."""
    transport = Wire() if transport is None else transport
    peer._rx = FastSrtp(_session(key_in, inbound=True))
    peer._tx = FastSrtp(_session(key_out, inbound=False))
    pair = SimpleNamespace(protocol=SimpleNamespace(transport=transport), remote_addr=remote)
    peer._connection = SimpleNamespace(_nominated={1: pair})
    return transport


@contextmanager
def lanes(enabled: bool) -> Iterator[None]:
    """Lanes and the reader in C on or off (both, as INVIGIL_NATIVE_LANES switches them)."""
    saved = sfu.lane.ENABLED, sfu.media_socket.NATIVE
    sfu.lane.ENABLED = sfu.media_socket.NATIVE = enabled
    try:
        yield
    finally:
        sfu.lane.ENABLED, sfu.media_socket.NATIVE = saved


class Route:
    """A student's publication and a surveillant's leg fed by it, with real SRTP sessions."""

    def __init__(self, kind: str, outbound: Any = None, remote: tuple[str, int] = ("192.0.2.1", 9)) -> None:
        self.kind = kind
        self.student = MediaPeer("student", student_layout(), ice_servers=())
        surveillant = MediaPeer("surveillant", surveillant_layout(1), ice_servers=())
        _connected(self.student, KEY_IN, os.urandom(44))
        self.wire = _connected(surveillant, os.urandom(44), KEY_OUT, outbound, remote)
        self.publication = Publication("webcam", kind, PAYLOAD_TYPE[kind], AUDIO_LEVEL_ID if kind == "audio" else None,
                                       self.student.send_pli, self.student.send_nack)
        self.student.publications["webcam"] = self.publication
        self.student._learn(SSRC_IN, self.publication)
        if kind == "video":  # retransmissions with RTX, as _learn_rtx routes them from the offer
            self.publication.rtx_payload_type = RTX_PAYLOAD_TYPE
            self.student._by_ssrc[RTX_SSRC] = self.publication
            self.student._inbox.route(RTX_SSRC, self.publication)
        self.leg = Leg(surveillant, kind, SSRC_OUT, 100 + PAYLOAD_TYPE[kind] % 10, "0", MID_ID,
                       ABS_SEND_TIME_ID if kind == "video" else None)
        self.leg.attach(self.publication)
        self.python_path = 0
        self.levels: list[int | None] = []  # the audio level after each datagram
        receive = self.publication.receive

        def counted(packet: Any) -> None:
            self.python_path += 1
            receive(packet)

        self.publication.receive = counted  # type: ignore[method-assign]

    def outcome(self, sent: list[bytes], lane_opened: bool) -> dict[str, Any]:
        """Everything both paths must agree on, given the datagrams that left."""
        subscriber = _session(KEY_OUT, inbound=True)
        stats, leg = self.publication.stats, self.leg
        return {
            "delivered": [_opened(subscriber, leg, packet) for packet in sent],
            "stats": (stats.packets, stats.bytes, stats.frames, stats.lost, stats.expected_sequence, stats.audio_level),
            "leg": (leg.started, leg.packets_sent, leg._last_sequence, leg._last_timestamp),
            "history": [None if packet is None else packet[:4] for packet in leg._history],
            "nacked": [] if self.publication.nacks is None else sorted(self.publication.nacks.missing),
            "received": self.student.packets_received,
            "levels": self.levels,
            "python_path": self.python_path,
            "lane_opened": lane_opened,
        }


def run_route(kind: str, datagrams: list[bytes], enabled: bool) -> dict[str, Any]:
    """Feed `datagrams` to a fresh route through `_receive_media`, as PythonReader does."""
    with lanes(enabled):
        route = Route(kind)
        buffer = DatagramBuffer(2048)
        for datagram in datagrams:
            buffer.memory[: len(datagram)] = datagram
            route.student._receive_media(buffer, len(datagram))
            route.levels.append(route.publication.stats.audio_level)
        return route.outcome(route.wire.sent, route.publication.lane is not None)


class _Endpoint(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport


async def adopted_endpoint() -> Any:
    """An ICE-like protocol on a real UDP socket, adopted by the loop's MediaPoller."""
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(_Endpoint, local_addr=("127.0.0.1", 0))
    assert isinstance(adopt(protocol), MediaDatagramTransport)
    return protocol


def plain_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.setblocking(False)
    return sock


def drained(sock: socket.socket) -> list[bytes]:
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(2048))
        except BlockingIOError:
            return datagrams


class ReaderRoute(Route):
    """A Route on real sockets, read by the reader in C: datagrams go in by UDP, one turn each."""

    def __init__(self, kind: str, inbound: Any, outbound: Any, receiver: socket.socket) -> None:
        super().__init__(kind, outbound.transport, receiver.getsockname())
        self.student._hook(inbound)
        self.inbound = inbound.transport
        self._address = inbound.transport.get_extra_info("sockname")
        self._poller = inbound.transport._poller
        self._sender = plain_socket()
        self.stranger = plain_socket()
        self.inbound.permit(self._sender.getsockname())  # as aioice's check of the student's pair would

    def feed(self, datagram: bytes, sender: socket.socket | None = None) -> None:
        (sender or self._sender).sendto(datagram, self._address)  # loopback: queued on the socket at once
        assert self._poller.turn()
        self.levels.append(self.publication.stats.audio_level)

    def close(self) -> None:
        self._sender.close()
        self.stranger.close()


async def run_route_through_reader(kind: str, datagrams: list[bytes]) -> dict[str, Any]:
    """Feed `datagrams` to a fresh route by UDP, through the reader in C, its lanes and Destination."""
    with lanes(True):
        inbound, outbound, receiver = await adopted_endpoint(), await adopted_endpoint(), plain_socket()
        assert isinstance(inbound.transport.reader_socket, sfu._lane.MediaSocket)
        route = ReaderRoute(kind, inbound, outbound, receiver)
        sent = []
        for datagram in datagrams:
            route.feed(datagram)
            sent += drained(receiver)
        result = route.outcome(sent, route.publication.lane is not None)
        route.close()
        inbound.transport.close()
        outbound.transport.close()
        receiver.close()
        return result


def _opened(subscriber: Any, leg: Leg, packet: bytes) -> bytes:
    """What the subscriber decrypts (masked), or a marker where its libsrtp refuses the packet
    (a numbering jump it takes for a replay)."""
    try:
        return _masked(leg, subscriber.unprotect(packet))
    except pylibsrtp.Error:
        return b"refused"


def _masked(leg: Leg, packet: bytes) -> bytes:
    """The packet with its abs-send-time value (the wall clock at sending) zeroed."""
    at = leg._abs_send_time_at
    if at is None:
        return packet
    return packet[: at + 1] + b"\x00\x00\x00" + packet[at + 4 :]


def rtp(kind: str, sequence: int, timestamp: int, marker: bool, payload_type: int, csrcs: int,
        extensions: bool | bytes, padding: int, payload_size: int, keyframe: bool, level: int) -> bytes:
    first = 0x80 | csrcs | (0x10 if extensions else 0) | (0x20 if padding else 0)
    header = struct.pack("!BBHII", first, (0x80 if marker else 0) | payload_type, sequence, timestamp, SSRC_IN)
    header += bytes(4 * csrcs)
    if isinstance(extensions, bytes):  # any one-byte-header block: ids, lengths and padding as they come
        body = extensions + bytes(-len(extensions) % 4)
        header += struct.pack("!HH", 0xBEDE, len(body) // 4) + body
    elif extensions:
        elements = [(MID_ID, b"0")] + ([(AUDIO_LEVEL_ID, bytes([0x80 | level]))] if kind == "audio" else [])
        header += extension_block(elements)
    if kind == "video" and payload_size:
        # VP8 payload descriptor: S=1 starts a partition; a keyframe's first payload byte has P=0.
        payload = (b"\x10\x00" if keyframe else b"\x00\x01") + bytes(payload_size - 1)
    else:
        payload = bytes(range(256)) * (payload_size // 256) + bytes(payload_size % 256)
    tail = bytes(padding - 1) + bytes([padding]) if padding else b""
    return header + payload + tail


extension_elements = st.lists(
    st.tuples(st.sampled_from([0, MID_ID, AUDIO_LEVEL_ID, AUDIO_LEVEL_ID, 7, 15]), st.integers(1, 4), st.integers(0, 255)),
    max_size=4,
).map(lambda elements: b"".join(
    b"\x00" if element == 0 else bytes([element << 4 | (length - 1), value]) + bytes(length - 1)
    for element, length, value in elements
))
"""One-byte-header extension bodies as a sender might write them: padding bytes, the ids we
know and others, the reserved id 15, values of 1 to 4 bytes."""

packet_specs = st.lists(
    st.tuples(
        st.sampled_from([1] * 12 + [0, 2, 3, 0xFFFF, 0x8000, 40000]),  # sequence step: mostly in order
        st.booleans(),  # marker
        st.sampled_from(["right"] * 12 + ["wrong"]),  # payload type
        st.integers(0, 2),  # CSRCs
        st.one_of(st.booleans(), extension_elements),  # header extensions: none, ours, or any elements
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


needs_extension = pytest.mark.skipif(
    sfu.lane.Lane is None, reason="sfu/_lane.c was not compiled: test_the_native_lane_is_built reports it"
)


def test_the_native_lane_is_built() -> None:
    """`make install` compiles sfu/_lane.c (setup.py); without it every packet takes the Python path."""
    assert sfu.lane.Lane is not None, "sfu/_lane.c was not compiled: is a C compiler installed?"
    assert sfu.media_socket.NativeReader is not None, "sfu/_reader.c was not compiled with it"
    assert sfu.srtp.PROTECT_ADDRESS is not None, "pylibsrtp's libsrtp no longer has the signature sfu/_lane.c calls"
    assert sfu.lane.ENABLED or os.environ.get("INVIGIL_NATIVE_LANES") == "0"


@needs_extension
@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["video", "audio"]), specs=packet_specs)
def test_the_lane_and_the_python_path_agree_on_random_packets(kind: str, specs: list[tuple[Any, ...]]) -> None:
    datagrams = protected(kind, specs)
    native = run_route(kind, datagrams, enabled=True)
    python = run_route(kind, datagrams, enabled=False)
    for key in ("delivered", "stats", "levels", "leg", "history", "received", "nacked"):
        assert native[key] == python[key], key
    assert python["python_path"] == python["received"] and not python["lane_opened"]


@needs_extension
@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["video", "audio"]), specs=packet_specs)
def test_the_reader_in_c_and_the_python_path_agree_on_random_packets(kind: str, specs: list[tuple[Any, ...]]) -> None:
    datagrams = protected(kind, specs)
    native = asyncio.run(run_route_through_reader(kind, datagrams))
    python = run_route(kind, datagrams, enabled=False)
    for key in ("delivered", "stats", "levels", "leg", "history", "received", "nacked"):
        assert native[key] == python[key], key


@needs_extension
@pytest.mark.parametrize("body", [
    b"\x10\x30\x20\x85",  # mid, then the level: 5
    b"\x00\x00\x20\x85",  # padding bytes first
    b"\x73\x00\x00\x00\x11\x20\x85",  # a 4-byte element first (its last byte looks like a header)
    b"\xf0\x00\x20\x85",  # the reserved id 15 ends the block: no level
    b"\x10\x30",  # no level element
])
def test_the_lane_reads_audio_levels_as_the_python_path_does(body: bytes) -> None:
    datagrams = protected("audio", [(1, False, "right", 0, body, 0, 50, False, 0)] * 20)
    native, python = run_route("audio", datagrams, enabled=True), run_route("audio", datagrams, enabled=False)
    assert native["levels"] == python["levels"] and native["python_path"] == 1
    assert set(python["levels"][4:]) == ({5} if body.endswith(b"\x85") and body[0] != 0xF0 else {None})


@needs_extension
def test_in_order_packets_go_the_native_way_after_the_first() -> None:
    in_order = [(1, i % 3 == 2, "right", 0, True, 0, 1100, i == 0, 30) for i in range(300)]
    for kind in ("video", "audio"):
        datagrams = protected(kind, in_order)
        python = run_route(kind, datagrams, enabled=False)
        for native in (run_route(kind, datagrams, enabled=True), asyncio.run(run_route_through_reader(kind, datagrams))):
            assert native["delivered"] == python["delivered"] and len(native["delivered"]) == 300
            assert native["lane_opened"]
            # The first packet starts the leg in Python; the lane does the rest, audio levels included.
            assert native["python_path"] == 1, kind
            assert native["stats"] == python["stats"]


@needs_extension
async def test_the_reader_in_c_follows_a_new_ice_pair_and_stops_at_a_closed_socket() -> None:
    with lanes(True):
        inbound, outbound, receiver = await adopted_endpoint(), await adopted_endpoint(), plain_socket()
        route = ReaderRoute("video", inbound, outbound, receiver)
        in_order = [(1, False, "right", 0, True, 0, 100, i == 0, 0) for i in range(30)]
        datagrams = protected("video", in_order)
        for datagram in datagrams[:10]:
            route.feed(datagram)
        assert len(drained(receiver)) == 10 and route.python_path == 1
        # ICE nominates another pair (another local socket, another remote address).
        other_outbound, other_receiver = await adopted_endpoint(), plain_socket()
        route.wire = other_outbound.transport
        nominated = route.leg.sink._connection._nominated
        nominated[1] = SimpleNamespace(protocol=other_outbound, remote_addr=other_receiver.getsockname())
        for datagram in datagrams[10:20]:
            route.feed(datagram)
        assert drained(receiver) == [] and len(drained(other_receiver)) == 10
        assert route.python_path == 1  # the lane kept forwarding; only the destination changed
        other_outbound.transport.close()
        for datagram in datagrams[20:]:
            route.feed(datagram)  # no socket to send on: dropped, without an error
        assert drained(other_receiver) == [] and route.leg.packets_sent == 30
        route.close()
        for closable in (inbound.transport, outbound.transport, receiver, other_receiver):
            closable.close()


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


@needs_extension
@settings(max_examples=15, deadline=None)
@given(junk=st.lists(st.tuples(st.integers(0x80, 0xBF), st.binary(min_size=0, max_size=1500)), min_size=1, max_size=40))
def test_forged_datagrams_on_a_steady_route_change_nothing(junk: list[tuple[int, bytes]]) -> None:
    """Datagrams that look like RTP of the route (its SSRC) but fail SRTP authentication, of any
    length, interleaved with the real ones: the reader in C drops them, and the route forwards
    and counts exactly what it would without them."""
    in_order = [(1, False, "right", 0, True, 0, 300, i == 0, 0) for i in range(len(junk) + 1)]
    datagrams = protected("video", in_order)
    forged = [bytes([first, 96]) + b"\x00" * 6 + struct.pack("!I", SSRC_IN) + body for first, body in junk]
    mixed = [datagrams[0]] + [d for pair in zip(forged, datagrams[1:]) for d in pair]
    with_junk = asyncio.run(run_route_through_reader("video", mixed))
    clean = run_route("video", datagrams, enabled=False)
    for key in ("delivered", "stats", "leg", "history", "received"):
        assert with_junk[key] == clean[key], key


@needs_extension
async def test_a_steady_route_takes_nothing_from_a_stranger_not_even_its_own_packets() -> None:
    """The student's own SRTP packets, sent from an address no checked ICE pair has: the reader
    in C drops and counts them before any lane sees them; from the checked address the same
    packets then go through as on the Python path."""
    with lanes(True):
        inbound, outbound, receiver = await adopted_endpoint(), await adopted_endpoint(), plain_socket()
        route = ReaderRoute("video", inbound, outbound, receiver)
        datagrams = protected("video", [(1, False, "right", 0, True, 0, 300, i == 0, 0) for i in range(20)])
        for datagram in datagrams[:10]:
            route.feed(datagram)
        for datagram in datagrams[10:]:
            route.feed(datagram, sender=route.stranger)
        assert route.inbound.strangers_dropped == 10 and route.student.packets_received == 10
        assert len(drained(receiver)) == 10 and route.leg.packets_sent == 10
        for datagram in datagrams[10:]:
            route.feed(datagram)
        result = route.outcome(drained(receiver), route.publication.lane is not None)
        route.close()
        for closable in (inbound.transport, outbound.transport, receiver):
            closable.close()
    python = run_route("video", datagrams, enabled=False)
    assert result["delivered"] == python["delivered"][10:] and result["stats"] == python["stats"]
    assert result["received"] == 20 and result["lane_opened"] and result["python_path"] == 1


class Taker:
    """Stands in for a MediaDatagramTransport under a bare reader: keeps what it is handed."""

    def __init__(self, sock: socket.socket, buffer: DatagramBuffer) -> None:
        self._sock = sock
        self._buffer = buffer
        self.taken: list[tuple[bytes, tuple[Any, ...]]] = []

    def _received(self, size: int, address: Any) -> None:
        self.taken.append((bytes(self._buffer.memory[:size]), address))

    def _socket_error(self, number: int) -> None:
        raise AssertionError(f"socket error {number}")


def read_with(reader_type: Any, events: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Run `events` (permit a sender, or send a datagram from one) through a bare reader."""
    buffer = DatagramBuffer(2048)
    reader = reader_type(buffer, 64, lambda error: None)
    sock = plain_socket()
    taker = Taker(sock, buffer)
    media_socket = reader.register(sock.fileno(), socket.AF_INET, taker)
    senders = [plain_socket() for _ in range(3)]
    names = {sender.getsockname(): index for index, sender in enumerate(senders)}
    for event in events:
        if event[0] == "permit":
            media_socket.permit(senders[event[1]].getsockname())
        else:
            _, index, first, size = event
            senders[index].sendto(bytes([first]) + bytes(size), sock.getsockname())
            reader.turn()
    result = {
        "taken": [(data, names[address]) for data, address in taker.taken],
        "strangers_dropped": media_socket.strangers_dropped,
        "permitted": [names[address] for address in media_socket.permitted],
    }
    reader.close()
    for closable in (sock, *senders):
        closable.close()
    return result


reader_events = st.lists(
    st.one_of(
        st.tuples(st.just("permit"), st.integers(0, 2)),
        st.tuples(st.just("send"), st.integers(0, 2), st.sampled_from([0, 1, 3, 4, 20, 21, 22, 63, 64, 127, 128, 191, 192, 255]),
                  st.integers(0, 40)),
    ),
    max_size=40,
)


@needs_extension
@settings(max_examples=60, deadline=None)
@given(events=reader_events)
def test_the_readers_agree_on_whom_they_read_from(events: list[tuple[Any, ...]]) -> None:
    """The reader in C and PythonReader take, drop and count the same datagrams: STUN from
    anyone, the rest only from a permitted sender."""
    from sfu.python_reader import PythonReader

    native = read_with(sfu.media_socket.NativeReader, events)
    python = read_with(PythonReader, events)
    assert native == python
    sent = [event for event in events if event[0] == "send"]
    assert len(python["taken"]) + python["strangers_dropped"] == len(sent)


@needs_extension
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


@needs_extension
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


repairs = st.tuples(
    st.integers(20, 120),  # packets the publisher sends in order
    st.lists(st.integers(1, 119), max_size=12),  # of which the uplink loses these (never the first)
    st.lists(st.tuples(st.integers(0, 11), st.integers(0, 30), st.booleans()), max_size=16),
    # (which loss, how many packets later, RTX or plain): the retransmissions, some twice, some never
)


def repaired(spec: tuple[int, list[int], list[tuple[int, int, bool]]]) -> list[bytes]:
    """A video stream from a keyframe on, with uplink losses and their retransmissions."""
    count, lost, answers = spec
    lost = sorted({index for index in lost if index < count})
    sender = _session(KEY_IN, inbound=False)
    plain = [rtp("video", 2000 + i, 90 * (i // 4), i % 4 == 3, PAYLOAD_TYPE["video"], 0, True, 0, 200 + i, i == 0, 0)
             for i in range(count)]
    later: dict[int, list[bytes]] = {}
    rtx_sequence = 7000
    for which, after, rtx in answers:
        if not lost:
            break
        index = lost[which % len(lost)]
        packet = plain[index]
        if rtx:  # RFC 4588: own SSRC, payload type and sequence; the original sequence first in the payload
            start = 12 + 4 + 4 * ((packet[14] << 8) | packet[15])
            packet = struct.pack("!BBHII", packet[0], (packet[1] & 0x80) | RTX_PAYLOAD_TYPE, rtx_sequence,
                                 90 * (index // 4), RTX_SSRC) + packet[12:start] + packet[2:4] + packet[start:]
            rtx_sequence += 1
        later.setdefault(min(index + 1 + after, count), []).append(packet)
    order = []
    for i in range(count + 1):
        order += later.get(i, [])
        if i < count and i not in lost:
            order.append(plain[i])
    return [sender.protect(packet) for packet in order]


@needs_extension
@settings(max_examples=40, deadline=None)
@given(spec=repairs)
def test_the_lane_and_the_readers_agree_on_losses_and_their_repairs(spec: Any) -> None:
    datagrams = repaired(spec)
    python = run_route("video", datagrams, enabled=False)
    for native in (run_route("video", datagrams, enabled=True), asyncio.run(run_route_through_reader("video", datagrams))):
        for key in ("delivered", "stats", "leg", "history", "received", "nacked"):
            assert native[key] == python[key], key


@needs_extension
def test_a_repaired_stream_reaches_the_subscriber_whole_and_in_place() -> None:
    lost = [5, 6, 40]
    answers = [(0, 3, True), (1, 0, False), (2, 10, True), (0, 12, False)]  # 5 by RTX and again plainly
    datagrams = repaired((60, lost, answers))
    for outcome in (run_route("video", datagrams, enabled=True), asyncio.run(run_route_through_reader("video", datagrams))):
        sequences = [int.from_bytes(packet[2:4], "big") for packet in outcome["delivered"]]
        assert sorted(sequences) == list(range(1, 61))  # every packet once, the repairs late
        assert sequences.index(6) > sequences.index(7) and outcome["stats"][3] == 0  # nothing lost
        assert outcome["nacked"] == [] and outcome["lane_opened"]
        assert outcome["leg"][2] == 60  # the leg's last sequence stays the newest

"""The SFU's own reader for ICE host sockets (sfu/media_socket.py), on real UDP sockets,
with the reader in C (sfu/_reader.c) and its reference in Python (sfu/python_reader.py)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from sfu import media_socket
from sfu.media_socket import ROUNDS_PER_TURN, MediaDatagramTransport, adopt
from sfu.srtp import DatagramBuffer

pytestmark = pytest.mark.skipif(not hasattr(__import__("select"), "epoll"), reason="the MediaPoller needs epoll")


@pytest.fixture(autouse=True, params=["reader in C", "PythonReader"])
def reader(request: Any, monkeypatch: Any) -> str:
    """Every test runs on both readers: the one in C (sfu/_reader.c) and its reference in Python."""
    if request.param == "reader in C":
        if media_socket.NativeReader is None:
            pytest.skip("sfu/_reader.c was not compiled: test_lane.py::test_the_native_lane_is_built reports it")
        monkeypatch.setattr(media_socket, "NATIVE", True)
    else:
        monkeypatch.setattr(media_socket, "NATIVE", False)
    return request.param

RTP_LIKE = b"\x80\x60" + bytes(30)
STUN_LIKE = b"\x00\x01" + bytes(30)


def copies_into(received: list[bytes]) -> Any:
    """A media handler that keeps a copy of each datagram (the reader's buffer is reused)."""

    def handler(datagram: DatagramBuffer, size: int) -> None:
        received.append(bytes(datagram.memory[:size]))

    return handler


class Recorder(asyncio.DatagramProtocol):
    """Stands in for aioice's StunProtocol: keeps what it is given."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.datagrams: list[tuple[bytes, tuple[Any, ...]]] = []
        self.errors: list[Exception] = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.datagrams.append((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def adopted(host: str = "127.0.0.1") -> tuple[Recorder, MediaDatagramTransport]:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(Recorder, local_addr=(host, 0))
    transport = adopt(protocol)
    assert isinstance(transport, MediaDatagramTransport)
    assert protocol.transport is transport
    return protocol, transport


async def until(condition: Any, seconds: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def client(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def checked_client(transport: MediaDatagramTransport) -> socket.socket:
    """A socket the transport reads everything from, as if aioice had checked a pair with it."""
    sock = client()
    transport.permit(sock.getsockname())
    return sock


def poke(transport: MediaDatagramTransport) -> None:
    """Send the transport one RTP-like datagram, from a checked socket closed at once."""
    with checked_client(transport) as sender:
        sender.sendto(RTP_LIKE, transport.get_extra_info("sockname"))


async def test_the_socket_keeps_its_port_and_non_media_reaches_the_protocol_with_the_sender_address() -> None:
    protocol, transport = await adopted()
    port = transport.get_extra_info("sockname")[1]
    sender = checked_client(transport)
    sender.sendto(STUN_LIKE, ("127.0.0.1", port))
    sender.sendto(RTP_LIKE, ("127.0.0.1", port))  # no media handler yet: the protocol gets it too
    await until(lambda: len(protocol.datagrams) == 2)
    assert protocol.datagrams == [(STUN_LIKE, sender.getsockname()), (RTP_LIKE, sender.getsockname())]
    transport.close()
    await protocol.lost
    sender.close()


async def test_ipv6_senders_are_named_as_asyncio_names_them() -> None:
    try:
        protocol, transport = await adopted("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    sender = client(socket.AF_INET6, "::1")
    sender.sendto(STUN_LIKE, transport.get_extra_info("sockname")[:2])
    await until(lambda: protocol.datagrams)
    data, address = protocol.datagrams[0]
    assert data == STUN_LIKE and address[:2] == sender.getsockname()[:2] and len(address) == 4
    transport.close()
    sender.close()


async def test_media_goes_to_the_handler_and_only_media() -> None:
    protocol, transport = await adopted()
    media: list[bytes] = []
    transport.media_handler = copies_into(media)
    sender = checked_client(transport)
    address = transport.get_extra_info("sockname")
    for datagram in (RTP_LIKE, STUN_LIKE, b"\x16\xfe\xfd" + bytes(20), b"\xbf" + bytes(20), b"\xc0" + bytes(20)):
        sender.sendto(datagram, address)
    await until(lambda: len(media) + len(protocol.datagrams) == 5)
    assert media == [RTP_LIKE, b"\xbf" + bytes(20)]  # RFC 7983: 128-191 is RTP/RTCP
    assert [data[:1] for data, _ in protocol.datagrams] == [b"\x00", b"\x16", b"\xc0"]
    transport.close()
    sender.close()


DTLS_ALERT = b"\x15\xfe\xfd" + bytes(8) + b"\x00\x02\x02\x28"  # epoch 0: anyone can forge it
NOT_STUN = [DTLS_ALERT, b"\x16\xfe\xfd" + bytes(40), RTP_LIKE, b"\xbf" + bytes(20), b"\x04", b"\x40" + bytes(9),
            b"\xc0" + bytes(20), b"\xff" * 30]
"""A datagram of every kind RFC 7983 names, and of none, whose first byte says it is not STUN."""


async def test_before_any_pair_is_checked_only_stun_is_read_and_the_rest_is_counted() -> None:
    protocol, transport = await adopted()
    media: list[bytes] = []
    transport.media_handler = copies_into(media)
    stranger = client()
    address = transport.get_extra_info("sockname")
    for datagram in [STUN_LIKE, *NOT_STUN, b"\x03" + bytes(19)]:
        stranger.sendto(datagram, address)
    await until(lambda: len(protocol.datagrams) == 2)
    await until(lambda: transport.strangers_dropped == len(NOT_STUN))
    assert [data for data, _ in protocol.datagrams] == [STUN_LIKE, b"\x03" + bytes(19)]
    assert media == [] and transport.reader_socket.permitted == []
    transport.close()
    stranger.close()


async def test_a_checked_sender_is_read_and_strangers_still_are_not() -> None:
    protocol, transport = await adopted()
    media: list[bytes] = []
    transport.media_handler = copies_into(media)
    checked, stranger = client(), client()
    transport.permit(checked.getsockname())
    address = transport.get_extra_info("sockname")
    for datagram in NOT_STUN:
        stranger.sendto(datagram, address)
        checked.sendto(datagram, address)
    stranger.sendto(STUN_LIKE, address)
    await until(lambda: len(media) + len(protocol.datagrams) == len(NOT_STUN) + 1)
    await until(lambda: transport.strangers_dropped == len(NOT_STUN))
    assert media == [RTP_LIKE, b"\xbf" + bytes(20)]
    assert [(data, sender == checked.getsockname()) for data, sender in protocol.datagrams] == [
        (DTLS_ALERT, True), (b"\x16\xfe\xfd" + bytes(40), True), (b"\x04", True), (b"\x40" + bytes(9), True),
        (b"\xc0" + bytes(20), True), (b"\xff" * 30, True), (STUN_LIKE, False),
    ]
    transport.close()
    checked.close()
    stranger.close()


async def test_permit_takes_numeric_addresses_of_the_socket_family_and_keeps_the_newest_sixteen() -> None:
    protocol, transport = await adopted()
    for wrong in [("localhost", 5000), ("::1", 5000), ("127.0.0.1", 70000), ("127.0.0.1", -1), ("1.2.3", 5)]:
        with pytest.raises(ValueError):
            transport.permit(wrong)
    assert transport.reader_socket.permitted == []
    transport.permit(("192.0.2.1", 5000))
    transport.permit(("192.0.2.1", 5000))  # once is enough
    assert transport.reader_socket.permitted == [("192.0.2.1", 5000)]
    for port in range(1, 17):
        transport.permit(("192.0.2.2", port))
    assert transport.reader_socket.permitted == [("192.0.2.2", port) for port in range(1, 17)]
    transport.close()


async def test_an_ipv6_sender_is_matched_however_its_address_is_written() -> None:
    try:
        protocol, transport = await adopted("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    checked = client(socket.AF_INET6, "::1")
    transport.permit(("0:0:0:0:0:0:0:1", checked.getsockname()[1]))
    assert transport.reader_socket.permitted == [("::1", checked.getsockname()[1])]
    with pytest.raises(ValueError):
        transport.permit(("127.0.0.1", 5000))
    stranger = client(socket.AF_INET6, "::1")
    stranger.sendto(DTLS_ALERT, transport.get_extra_info("sockname")[:2])
    checked.sendto(DTLS_ALERT, transport.get_extra_info("sockname")[:2])
    await until(lambda: protocol.datagrams and transport.strangers_dropped == 1)
    assert [(data, sender[:2]) for data, sender in protocol.datagrams] == [(DTLS_ALERT, checked.getsockname()[:2])]
    transport.close()
    checked.close()
    stranger.close()


async def test_a_handler_that_fails_on_one_datagram_does_not_stop_the_reader(caplog: Any) -> None:
    protocol, transport = await adopted()
    seen: list[bytes] = []

    def handler(datagram: DatagramBuffer, size: int) -> None:
        seen.append(bytes(datagram.memory[:size]))
        if len(seen) == 1:
            raise ValueError("a bug in the hot path, from 192.0.2.77")

    transport.media_handler = handler
    sender = checked_client(transport)
    for index in range(3):
        sender.sendto(bytes([0x80, index]) + bytes(10), transport.get_extra_info("sockname"))
    await until(lambda: len(seen) == 3)
    assert "a datagram could not be handled: ValueError at" in caplog.text
    assert "192.0.2.77" not in caplog.text  # what the error says is not logged
    sender.sendto(bytes([0x80, 9]) + bytes(10), transport.get_extra_info("sockname"))
    await until(lambda: len(seen) == 4)  # later turns still run
    transport.close()
    sender.close()


async def test_a_datagram_too_long_for_webrtc_is_dropped() -> None:
    protocol, transport = await adopted()
    sender = client()
    sender.sendto(b"\x00" * media_socket.DATAGRAM_SIZE, transport.get_extra_info("sockname"))
    sender.sendto(STUN_LIKE, transport.get_extra_info("sockname"))
    await until(lambda: protocol.datagrams)
    await asyncio.sleep(0.02)
    assert protocol.datagrams == [(STUN_LIKE, sender.getsockname())]
    transport.close()
    sender.close()


async def test_a_flooding_socket_cannot_hold_one_turn_and_others_are_still_read() -> None:
    flooded, flooded_transport = await adopted()
    quiet, quiet_transport = await adopted()
    sender = client()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    flooded_transport._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    poller = flooded_transport._poller
    assert quiet_transport._poller is poller
    # Queue everything first (loopback delivers within sendto), then run exactly one
    # turn by hand, without letting the loop run one of its own.
    for _ in range(3 * ROUNDS_PER_TURN):
        sender.sendto(STUN_LIKE, flooded_transport.get_extra_info("sockname"))
    sender.sendto(STUN_LIKE, quiet_transport.get_extra_info("sockname"))
    assert poller.turn()
    assert len(flooded.datagrams) <= ROUNDS_PER_TURN
    assert len(quiet.datagrams) == 1
    await until(lambda: len(flooded.datagrams) == 3 * ROUNDS_PER_TURN)  # the rest comes in later turns
    flooded_transport.close()
    quiet_transport.close()
    sender.close()


async def test_sends_during_a_turn_leave_at_its_end_in_order_and_others_at_once() -> None:
    protocol, transport = await adopted()
    receiver = client()
    receiver.settimeout(1.0)
    destination = receiver.getsockname()
    transport.sendto(b"now", destination)
    assert receiver.recv(100) == b"now"

    def echo(datagram: DatagramBuffer, size: int) -> None:
        transport.sendto(bytes(datagram.memory[:size]), destination)
        receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            receiver.recv(100)  # held back until the turn ends
        receiver.setblocking(True)

    transport.media_handler = echo
    sender = checked_client(transport)
    for index in range(5):
        sender.sendto(bytes([0x80, index]) + bytes(10), transport.get_extra_info("sockname"))
    received = [await asyncio.get_running_loop().run_in_executor(None, receiver.recv, 100) for _ in range(5)]
    assert [data[1] for data in received] == [0, 1, 2, 3, 4]
    transport.close()
    sender.close()
    receiver.close()


async def test_a_turn_holds_at_most_max_queued_sends_per_socket_and_counts_the_rest() -> None:
    protocol, transport = await adopted()
    receiver = client()
    destination = receiver.getsockname()

    def burst(datagram: DatagramBuffer, size: int) -> None:
        for _ in range(media_socket.MAX_QUEUED + 10):
            transport.sendto(b"x", destination)

    transport.media_handler = burst
    poke(transport)
    await until(lambda: transport.sends_dropped > 0)
    assert transport.sends_dropped == 10
    transport.close()
    receiver.close()


async def test_a_send_that_fails_is_reported_and_the_rest_of_the_turn_still_leaves() -> None:
    protocol, transport = await adopted()
    receiver = client()
    receiver.settimeout(1.0)

    def sends(datagram: DatagramBuffer, size: int) -> None:
        transport.sendto(b"first", receiver.getsockname())
        transport.sendto(b"nowhere", ("127.0.0.1", 0))  # the kernel refuses port 0 (EINVAL)
        transport.sendto(b"last", receiver.getsockname())

    transport.media_handler = sends
    poke(transport)
    assert await asyncio.get_running_loop().run_in_executor(None, receiver.recv, 100) == b"first"
    assert await asyncio.get_running_loop().run_in_executor(None, receiver.recv, 100) == b"last"
    assert len(protocol.errors) == 1 and isinstance(protocol.errors[0], OSError)
    assert protocol.errors[0].errno == 22
    transport.close()
    receiver.close()


async def test_a_host_name_is_still_sent_to_though_the_reader_holds_only_numeric_addresses() -> None:
    protocol, transport = await adopted()
    receiver = client()
    receiver.settimeout(1.0)
    transport.sendto(b"by name", ("localhost", receiver.getsockname()[1]))
    assert await asyncio.get_running_loop().run_in_executor(None, receiver.recv, 100) == b"by name"
    transport.close()
    receiver.close()


async def test_closing_tells_the_protocol_stops_sending_and_the_last_socket_closes_the_poller() -> None:
    loop = asyncio.get_running_loop()
    first, first_transport = await adopted()
    second, second_transport = await adopted()
    poller = first_transport._poller
    assert media_socket._pollers[loop] is poller
    first_transport.close()
    assert await first.lost is None
    assert first_transport.is_closing()
    first_transport.sendto(b"nothing", ("127.0.0.1", 9))  # ignored, no error
    assert media_socket._pollers[loop] is poller
    second_transport.close()
    await second.lost
    assert loop not in media_socket._pollers
    assert poller.reader.closed


async def test_adopt_declines_what_it_cannot_take() -> None:
    protocol, transport = await adopted()
    assert adopt(protocol) is None  # already adopted
    transport.close()


# --- one shared port for every peer (`--media-port`, sfu/shared_port.py) -------------------------


def stun_message(kind: int, transaction: bytes, username: bytes | None = None) -> bytes:
    """A STUN message of type `kind` with an optional USERNAME attribute (padded to 4 bytes)."""
    attributes = b""
    if username is not None:
        attributes = b"\x00\x06" + len(username).to_bytes(2, "big") + username + bytes(-len(username) % 4)
    return kind.to_bytes(2, "big") + len(attributes).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + transaction + attributes


async def on_shared_port(media_port: int, ufrag: str) -> tuple[Recorder, MediaDatagramTransport]:
    """A Recorder bound as aioice binds a host socket, then made an endpoint of the shared media port."""
    from types import SimpleNamespace

    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    protocol.local_candidate = SimpleNamespace(port=protocol.transport.get_extra_info("sockname")[1])
    transport = adopt(protocol, media_port, ufrag)
    assert isinstance(transport, MediaDatagramTransport) and protocol.transport is transport
    assert protocol.local_candidate.port == media_port
    return protocol, transport


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_shared_port_routes_stun_by_username_and_transaction_and_the_rest_by_checked_sender() -> None:
    media_port = free_udp_port()
    first, first_transport = await on_shared_port(media_port, "first1")
    second, second_transport = await on_shared_port(media_port, "second")
    shared = first_transport.port
    assert shared is second_transport.port
    assert first_transport.get_extra_info("sockname") == second_transport.get_extra_info("sockname") == ("127.0.0.1", media_port)
    with pytest.raises(ValueError):
        await on_shared_port(media_port, "second")  # one session per username fragment
    sender = client()
    server = ("127.0.0.1", media_port)

    # STUN requests: by the first half of USERNAME; an unknown one reaches nobody.
    sender.sendto(stun_message(0x0001, b"A" * 12, b"second:theirs"), server)
    sender.sendto(stun_message(0x0001, b"B" * 12, b"first1:theirs"), server)
    sender.sendto(stun_message(0x0001, b"C" * 12, b"nobody:theirs"), server)
    await until(lambda: len(first.datagrams) == 1 and len(second.datagrams) == 1 and shared.stun_unrouted == 1)
    assert second.datagrams[0][0][8:20] == b"A" * 12 and first.datagrams[0][0][8:20] == b"B" * 12

    # A response goes to whoever sent the request with its transaction ID.
    second_transport.sendto(stun_message(0x0001, b"T" * 12, b"theirs:second"), sender.getsockname())
    data, source = sender.recvfrom(2048)
    assert source == server and data[8:20] == b"T" * 12
    sender.sendto(stun_message(0x0101, b"T" * 12), server)
    await until(lambda: len(second.datagrams) == 2)
    assert second.datagrams[1][0][:2] == b"\x01\x01" and len(first.datagrams) == 1

    # Everything else: only from a checked sender, to the endpoint that checked it (the newest).
    first_media: list[bytes] = []
    second_media: list[bytes] = []
    first_transport.media_handler = copies_into(first_media)
    second_transport.media_handler = copies_into(second_media)
    sender.sendto(RTP_LIKE, server)
    await until(lambda: shared.strangers_dropped == 1)
    first_transport.permit(sender.getsockname())
    sender.sendto(RTP_LIKE, server)
    await until(lambda: len(first_media) == 1)
    second_transport.permit(sender.getsockname())
    sender.sendto(RTP_LIKE + b"2", server)
    await until(lambda: len(second_media) == 1)
    assert second_media == [RTP_LIKE + b"2"] and len(first_media) == 1

    # An endpoint that closes is read for no more; the port and the other endpoint go on.
    other = client()
    first_transport.permit(other.getsockname())
    other.sendto(RTP_LIKE, server)
    await until(lambda: len(first_media) == 2)
    first_transport.close()
    await first.lost
    other.sendto(RTP_LIKE, server)
    sender.sendto(RTP_LIKE + b"3", server)
    await until(lambda: len(second_media) == 2 and shared.strangers_dropped == 2)
    assert len(first_media) == 2
    second_transport.close()
    await second.lost
    for sock in (sender, other):
        sock.close()


async def test_the_last_endpoint_closes_the_shared_port_and_a_new_one_binds_it_again() -> None:
    media_port = free_udp_port()
    protocol, transport = await on_shared_port(media_port, "alone1")
    transport.close()
    await protocol.lost
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", media_port))  # released
    protocol, transport = await on_shared_port(media_port, "alone1")
    transport.close()
    await protocol.lost


async def test_a_shared_port_reads_a_round_for_each_sender_it_reads_for() -> None:
    media_port = free_udp_port()
    peers = [await on_shared_port(media_port, f"peer{n:02d}") for n in range(3)]
    received: list[bytes] = []
    senders = []
    for _, transport in peers:
        transport.media_handler = copies_into(received)
        sender = client()
        transport.permit(sender.getsockname())
        senders.append(sender)
    shared = peers[0][1].port
    poller = peers[0][1]._poller
    burst = ROUNDS_PER_TURN + 10
    # Queue everything first (loopback delivers within sendto), then run exactly one
    # turn by hand, without letting the loop run one of its own.
    for sender in senders:
        for _ in range(burst):
            sender.sendto(RTP_LIKE, ("127.0.0.1", media_port))
    assert poller.turn()
    # One socket, three senders: a turn reads three rounds' worth, as three sockets would have given.
    assert len(received) == 3 * ROUNDS_PER_TURN
    await until(lambda: len(received) == 3 * burst)
    assert shared.strangers_dropped == 0
    for protocol, transport in peers:
        transport.close()
        await protocol.lost
    for sender in senders:
        sender.close()

"""The SFU's own reader for its ICE host sockets: coalesced wake-ups, reads in rounds.

With the event loop's datagram transport, the process wakes for almost every
packet and reads each socket until it says EAGAIN. At 5,000 packets a second
that is most of what forwarding costs. Here every media socket of a loop sits
in one private epoll; when any of them has data the loop waits READ_INTERVAL
more, so that packets gather, then reads them in rounds: one datagram from each
ready socket, ask the epoll again, until nothing is left (or a round limit).
No read ever fails with EAGAIN, and a socket with a burst (a keyframe) is
emptied in the same turn. Media (first byte 128-191: RTP and RTCP, RFC 7983)
goes to the socket's media handler, in the poller's one DatagramBuffer where
SRTP decrypts it in place (valid until the next read); anything else (STUN,
DTLS) goes to the ICE protocol as before, as bytes with the sender's address.
What is sent during a turn leaves at its end, one burst per socket.

Only STUN is read from anyone. Every other datagram is read only from the remote end
of a checked ICE pair of the socket's connection (`permit`, called by sfu/peer.py as
aioice checks pairs) and otherwise dropped and counted (`strangers_dropped`), never
logged: aioice would queue a stranger's datagram for DTLS, and one forged alert would
end the participant's handshake.

The turn itself is the reader's: sfu/_reader.c where the extension is built,
which also forwards every packet of a steady route through its lane without
entering Python, else sfu/python_reader.py, the reference.

Measured here: one `recvfrom` costs about 2 µs, a `recvmmsg` holding one
datagram about 2.5 µs plus its bookkeeping, and at 40 students most sockets
hold one datagram per turn, so batching reads would not pay; sends are many
per socket and turn, so the reader in C sends them with one `sendmmsg`.

The cost is at most READ_INTERVAL (5 ms) of added delay per packet, far below
what a browser's jitter buffer holds anyway.

Linux only (epoll); elsewhere `adopt` declines and the loop's own transport
keeps the socket.

With a media port (`--media-port`), `adopt` does not keep the ICE socket aioice
bound: the component becomes an endpoint of the loop's shared port on that host
address (sfu/shared_port.py), and its candidate names the media port.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import traceback
from collections.abc import Callable
from typing import Any

from .log_summary import LogSummary
from .python_reader import MAX_QUEUED, PythonReader
from .shared_port import SharedPort
from .srtp import DatagramBuffer

try:
    from ._lane import MediaSocket
    from ._lane import Reader as NativeReader
except ImportError:  # built without a C compiler: PythonReader reads
    NativeReader = None

logger = logging.getLogger(__name__)

__all__ = ["MAX_QUEUED", "MediaDatagramTransport", "MediaPoller", "adopt"]

READ_INTERVAL = 0.005
"""Seconds between the reader's turns while packets flow (and after the first one wakes it).

Longer turns mean fewer wake-ups of this process and of the receivers (sends leave
in one burst per turn) but more delay. Measured at 40 students / 5 surveillants,
three alternating 30 s runs each: 2 ms cost 42-47 µs CPU per forwarded packet with
3.5-3.8 ms latency p95, 5 ms cost 33-43 µs with 7.2-7.4 ms p95 (target: 50 ms)."""

ROUNDS_PER_TURN = 64
"""Datagrams read from one socket per turn at most: a flooding peer cannot keep the loop to itself."""

DATAGRAM_SIZE = 2048
"""Room per datagram; WebRTC keeps packets below ~1,300 bytes, longer ones are dropped."""

MediaHandler = Callable[[DatagramBuffer, int], None]

NATIVE = NativeReader is not None and os.environ.get("INVIGIL_NATIVE_LANES", "1") != "0"
"""Whether new pollers use the reader in C (sfu/_reader.c), which also runs the lanes;
else PythonReader, the reference. INVIGIL_NATIVE_LANES=0 turns both off."""


_failures = LogSummary(logger, "a datagram could not be handled", level=logging.ERROR)


def _log_failure(error: BaseException) -> None:
    """One datagram failed: count what and where, since the message may quote the datagram or an address.

    Anyone can send malformed datagrams (STUN with a wrong attribute length), so
    they are summarised (sfu/log_summary.py) rather than logged one by one.
    """
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else "native code"
    _failures.count(f"{type(error).__name__} at {where}")


class MediaPoller:
    """Every adopted socket of one event loop behind one private epoll, read in coalesced batches.

    Idle, the loop watches the private epoll. Once something arrives the poller
    switches to reading every READ_INTERVAL, for as long as each turn finds data,
    so that under load the loop's own epoll is never touched again. Packets sent
    while a turn is read go out together at its end, one burst per socket. The
    reading itself is the reader's: in C where the extension is built, else PythonReader.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transports: set[MediaDatagramTransport] = set()
        self._ports: dict[tuple[str, int], SharedPort] = {}
        self._watching = True
        self._timer: asyncio.TimerHandle | None = None
        self.buffer = DatagramBuffer(DATAGRAM_SIZE)
        reader_type: Any = NativeReader if NATIVE else PythonReader
        self.reader = reader_type(self.buffer, ROUNDS_PER_TURN, _log_failure)
        self._loop.add_reader(self.reader.fileno(), self._on_ready)

    def register(self, transport: MediaDatagramTransport) -> Any:
        """Start reading `transport`'s socket (or, on a shared port, reading for it); returns the
        reader's socket, which sends for it."""
        if transport.port is not None:
            reader_socket = self.reader.attach(transport.port.reader_socket, transport)
        else:
            sock = transport._sock
            reader_socket = self.reader.register(sock.fileno(), sock.family, transport)
        self._transports.add(transport)
        return reader_socket

    def unregister(self, transport: MediaDatagramTransport) -> None:
        """Stop reading for `transport`; the last one closes the poller (and its shared ports)."""
        if transport not in self._transports:
            return
        self._transports.discard(transport)
        self.reader.unregister(transport.reader_socket)
        if not self._transports:
            self.close()

    def shared_port(self, host: str, port: int) -> SharedPort:
        """The shared socket on (`host`, `port`), bound on first use. OSError if it cannot be bound."""
        shared = self._ports.get((host, port))
        if shared is None:
            shared = self._ports[(host, port)] = SharedPort(self, host, port)
        return shared

    def close(self) -> None:
        """Stop watching and release the epoll."""
        if _pollers.get(self._loop) is self:
            del _pollers[self._loop]
        if self.reader.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watching and not self._loop.is_closed():
            self._loop.remove_reader(self.reader.fileno())
        self._watching = False
        self.reader.close()
        for shared in self._ports.values():
            shared.close()
        self._ports.clear()

    def _on_ready(self) -> None:
        # Stop watching, so the loop neither spins on the ready epoll nor wakes per packet.
        self._loop.remove_reader(self.reader.fileno())
        self._watching = False
        self._timer = self._loop.call_later(READ_INTERVAL, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.reader.closed:
            return
        if self.turn():
            if not self.reader.closed:
                self._timer = self._loop.call_later(READ_INTERVAL, self._on_timer)
        elif not self.reader.closed:
            self._watching = True
            self._loop.add_reader(self.reader.fileno(), self._on_ready)

    def turn(self) -> bool:
        """Read every ready socket in rounds, then send what was held back meanwhile.

        Returns False if no socket was ready.
        """
        return self.reader.turn()


_pollers: dict[asyncio.AbstractEventLoop, MediaPoller] = {}


def open_transports() -> list[MediaDatagramTransport]:
    """Every media transport the readers of this process hold (the census counts their drops)."""
    return [transport for poller in list(_pollers.values()) for transport in list(poller._transports)]


def _poller_for(loop: asyncio.AbstractEventLoop) -> MediaPoller:
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = MediaPoller(loop)
    return poller


class MediaDatagramTransport(asyncio.DatagramTransport):
    """A UDP socket read by the loop's MediaPoller; sends go through the poller's reader.

    A send the kernel cannot take at once (EAGAIN) is dropped, not queued: this is
    real-time media, and a late packet is worth less than the memory it would hold.
    """

    def __init__(
        self,
        poller: MediaPoller,
        sock: socket.socket,
        protocol: asyncio.DatagramProtocol,
        port: SharedPort | None = None,
    ) -> None:
        super().__init__()
        self._poller = poller
        self._sock = sock
        self.port = port
        """The shared port this transport is an endpoint of, whose socket `sock` is; None if it owns `sock`."""
        self._protocol = protocol
        self._closing = False
        self.fileno = sock.fileno()
        self.media_handler: MediaHandler | None = None
        self._buffer = poller.buffer
        self.reader_socket = poller.register(self)

    @property
    def native_socket(self) -> Any:
        """The reader's socket if it is the one in C (sfu._lane.MediaSocket), which lanes send on; else None."""
        return self.reader_socket if NativeReader is not None and isinstance(self.reader_socket, MediaSocket) else None

    @property
    def inbox(self) -> Any:
        """The Inbox of the peer this socket serves, where the reader in C finds its lanes."""
        return self.reader_socket.inbox

    @inbox.setter
    def inbox(self, inbox: Any) -> None:
        self.reader_socket.inbox = inbox

    @property
    def sends_dropped(self) -> int:
        """Datagrams dropped because the socket's buffer (or a turn's queue) was full."""
        return self.reader_socket.sends_dropped

    @property
    def strangers_dropped(self) -> int:
        """Non-STUN datagrams dropped because no checked ICE pair has their sender's address."""
        return self.reader_socket.strangers_dropped

    def permit(self, address: tuple[Any, ...]) -> None:
        """Read non-STUN datagrams from `address` (host, port), the remote end of a checked ICE pair.

        ValueError if it is not a numeric address of the socket's family.
        """
        host = address[0].split("%", 1)[0] if isinstance(address[0], str) else address[0]
        self.reader_socket.permit((host, address[1]))

    # -- called by the reader ------------------------------------------------------

    def _received(self, size: int, address: Any) -> None:
        """A datagram no lane took, in the poller's buffer: media to the handler, the rest to the protocol."""
        buffer = self._buffer
        handler = self.media_handler
        try:
            if handler is not None and 127 < buffer.memory[0] < 192:
                handler(buffer, size)
            elif not self._closing:
                self._protocol.datagram_received(bytes(buffer.memory[:size]), address)
        except Exception as error:
            # One datagram must not stop the reader for every exam on this loop.
            _log_failure(error)

    def _socket_error(self, number: int) -> None:
        """The socket failed to receive or send (not EAGAIN): the protocol hears of it."""
        if not self._closing:
            self._protocol.error_received(OSError(number, os.strerror(number)))

    # -- asyncio.DatagramTransport -----------------------------------------------------

    def sendto(self, data: Any, addr: Any = None) -> None:
        """Send one datagram (at the end of the poller's turn if one is being read).

        Dropped if the socket buffer is full.
        """
        if self._closing:
            return
        if self.port is not None:
            self.port.sent(data, self)
        try:
            self.reader_socket.sendto(data, addr)
        except ValueError:
            # Not an address the reader in C can hold (a scoped IPv6 name): send it now.
            self._send_now(data, addr)
        except OSError as error:
            self._protocol.error_received(error)

    def _send_now(self, data: Any, addr: Any) -> None:
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as error:
            self._protocol.error_received(error)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """`socket` and `sockname` as asyncio's own transports give them."""
        if name == "socket":
            return self._sock
        if name == "sockname":
            return self._sock.getsockname() if not self._closing else default
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading, close the socket, and tell the protocol (on the next loop turn)."""
        if self._closing:
            return
        self._closing = True
        self.media_handler = None
        if self.port is not None:
            self.port.leave(self)
        self._poller.unregister(self)
        if self.port is None:
            self._sock.close()
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_write_buffer_size(self) -> int:
        return 0


def adopt(protocol: Any, media_port: int | None = None, ufrag: str | None = None) -> MediaDatagramTransport | None:
    """Move a just-bound ICE protocol's socket from the loop's transport to the MediaPoller.

    Call it before any peer knows the socket's port: datagrams the old transport
    might still read would be lost. Returns None (and changes nothing) where this
    reader cannot run.

    With `media_port`, the protocol's own socket is closed instead and it becomes an
    endpoint of the shared port on its host address and `media_port`, for STUN
    requests to ICE username fragment `ufrag`; its local candidate names that port.
    OSError if the shared port cannot be bound, ValueError if `ufrag` is in use there.
    """
    old = protocol.transport
    if not hasattr(select, "epoll") or isinstance(old, MediaDatagramTransport):
        return None
    original = old.get_extra_info("socket") if old is not None else None
    if original is None:
        return None
    if media_port is not None:
        poller = _poller_for(asyncio.get_running_loop())
        shared = poller.shared_port(original.getsockname()[0], media_port)
        if shared.in_use(ufrag or ""):
            raise ValueError("ICE username fragment in use on the media port")
        old.set_protocol(asyncio.DatagramProtocol())
        old.close()
        transport = MediaDatagramTransport(poller, shared._sock, protocol, port=shared)
        shared.join(ufrag or "", transport)
        protocol.connection_made(transport)
        protocol.local_candidate.port = media_port
        return transport
    sock = socket.socket(fileno=os.dup(original.fileno()))
    sock.setblocking(False)
    old.set_protocol(asyncio.DatagramProtocol())
    old.close()
    transport = MediaDatagramTransport(_poller_for(asyncio.get_running_loop()), sock, protocol)
    protocol.connection_made(transport)
    return transport

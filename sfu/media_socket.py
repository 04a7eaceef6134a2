"""The SFU's own reader for its ICE host sockets: coalesced wake-ups, batched reads.

With the event loop's datagram transport, the process wakes for almost every
packet, reads each socket until it says EAGAIN and formats the sender's
address as text for every datagram. At 5,000 packets a second that is most of
what forwarding costs. Here every media socket of a loop sits in one private
epoll; when any of them has data the loop waits READ_INTERVAL more, so that
packets gather, then reads each ready socket with one `recvmmsg` call. Media
(first byte 128-191: RTP and RTCP) goes to the socket's media handler without
an address; anything else (STUN, DTLS) goes to the ICE protocol as before.

The cost is at most READ_INTERVAL of added delay per packet, far below what a
browser's jitter buffer holds anyway.

Linux only (epoll, recvmmsg); elsewhere `adopt` declines and the loop's own
transport keeps the socket.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import socket
import sys
from collections.abc import Callable
from typing import Any

import cffi

logger = logging.getLogger(__name__)

READ_INTERVAL = 0.002
"""Seconds the reader lets packets gather after the first one wakes it."""

BATCH = 64
"""Datagrams read from one socket per `recvmmsg` call."""

BATCHES_PER_TURN = 4
"""`recvmmsg` calls per socket per turn: a flooding peer cannot keep the loop to itself."""

DATAGRAM_SIZE = 2048
"""Room per datagram; WebRTC keeps packets below ~1,300 bytes, longer ones are dropped."""

_SOCKADDR_SIZE = 128
_MSG_DONTWAIT = 0x40

_ffi = cffi.FFI()
_ffi.cdef(
    """
    struct iovec { void *iov_base; size_t iov_len; };
    struct msghdr {
        void *msg_name; unsigned int msg_namelen;
        struct iovec *msg_iov; size_t msg_iovlen;
        void *msg_control; size_t msg_controllen;
        int msg_flags;
    };
    struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
    int recvmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout);
    """
)
_libc: Any = _ffi.dlopen(None) if sys.platform == "linux" else None

MediaHandler = Callable[[bytes], None]


class _ReadBuffers:
    """One preallocated `recvmmsg` vector; a loop reads one socket at a time, so one set serves all."""

    def __init__(self) -> None:
        self.messages = _ffi.new("struct mmsghdr[]", BATCH)
        self.iovecs = _ffi.new("struct iovec[]", BATCH)
        self.data = _ffi.new("char[]", BATCH * DATAGRAM_SIZE)
        self.names = _ffi.new("char[]", BATCH * _SOCKADDR_SIZE)
        self.data_view = _ffi.buffer(self.data)
        self.names_view = _ffi.buffer(self.names)
        for index in range(BATCH):
            self.iovecs[index].iov_base = self.data + index * DATAGRAM_SIZE
            self.iovecs[index].iov_len = DATAGRAM_SIZE
            header = self.messages[index].msg_hdr
            header.msg_iov = self.iovecs + index
            header.msg_iovlen = 1
            header.msg_name = self.names + index * _SOCKADDR_SIZE
            header.msg_namelen = _SOCKADDR_SIZE
        self._pristine = bytes(_ffi.buffer(self.messages))
        # msg_len of message i, read as a plain int without building a struct view per packet.
        self.lengths = _ffi.cast("unsigned int *", self.messages)
        self.length_stride = _ffi.sizeof("struct mmsghdr") // 4
        self.length_offset = _ffi.offsetof("struct mmsghdr", "msg_len") // 4

    def rearm(self, count: int) -> None:
        """Undo what the kernel wrote into the first `count` headers (address room, lengths)."""
        _ffi.memmove(self.messages, self._pristine, count * _ffi.sizeof("struct mmsghdr"))

    def name_length(self, index: int) -> int:
        """How many address bytes the kernel wrote for message `index`."""
        return int(self.messages[index].msg_hdr.msg_namelen)


def sockaddr_to_address(raw: bytes) -> tuple[Any, ...]:
    """A raw sockaddr_in/sockaddr_in6 as the (host, port[, flowinfo, scope_id]) tuple asyncio gives."""
    family = int.from_bytes(raw[0:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6:
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        return (host, port, int.from_bytes(raw[4:8], "big"), int.from_bytes(raw[24:28], sys.byteorder))
    return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)


class MediaPoller:
    """Every adopted socket of one event loop behind one private epoll, read in coalesced batches.

    Idle, the loop watches the private epoll. Once something arrives the poller
    switches to reading every READ_INTERVAL, for as long as each turn finds data,
    so that under load the loop's own epoll is never touched again. Packets sent
    while a turn is read go out together at its end, one burst per socket.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._transports: dict[int, MediaDatagramTransport] = {}
        self._buffers = _ReadBuffers()
        self._watching = True
        self._timer: asyncio.TimerHandle | None = None
        self.draining = False
        self.sending: list[MediaDatagramTransport] = []
        self._loop.add_reader(self._epoll.fileno(), self._on_ready)

    def register(self, transport: MediaDatagramTransport) -> None:
        """Start reading `transport`'s socket."""
        self._transports[transport.fileno] = transport
        self._epoll.register(transport.fileno, select.EPOLLIN)

    def unregister(self, transport: MediaDatagramTransport) -> None:
        """Stop reading `transport`'s socket; the last one closes the poller."""
        if self._transports.pop(transport.fileno, None) is None:
            return
        try:
            self._epoll.unregister(transport.fileno)
        except OSError:
            pass
        if not self._transports:
            self.close()

    def close(self) -> None:
        """Stop watching and release the epoll."""
        if _pollers.get(self._loop) is self:
            del _pollers[self._loop]
        if self._epoll.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watching and not self._loop.is_closed():
            self._loop.remove_reader(self._epoll.fileno())
        self._watching = False
        self._epoll.close()

    def _on_ready(self) -> None:
        # Stop watching, so the loop neither spins on the ready epoll nor wakes per packet.
        self._loop.remove_reader(self._epoll.fileno())
        self._watching = False
        self._timer = self._loop.call_later(READ_INTERVAL, self._drain)

    def _drain(self) -> None:
        self._timer = None
        if self._epoll.closed:
            return
        ready = self._epoll.poll(0)
        if not ready:
            self._watching = True
            self._loop.add_reader(self._epoll.fileno(), self._on_ready)
            return
        transports = self._transports
        self.draining = True
        try:
            for fileno, _ in ready:
                transport = transports.get(fileno)
                if transport is not None:
                    transport.read_ready(self._buffers)
        finally:
            self.draining = False
            sending, self.sending = self.sending, []
            for transport in sending:
                transport.flush()
        if not self._epoll.closed:
            self._timer = self._loop.call_later(READ_INTERVAL, self._drain)


_pollers: dict[asyncio.AbstractEventLoop, MediaPoller] = {}


def _poller_for(loop: asyncio.AbstractEventLoop) -> MediaPoller:
    poller = _pollers.get(loop)
    if poller is None:
        poller = _pollers[loop] = MediaPoller(loop)
    return poller


class MediaDatagramTransport(asyncio.DatagramTransport):
    """A UDP socket read by the loop's MediaPoller; sends go straight to the socket.

    A send the kernel cannot take at once (EAGAIN) is dropped, not queued: this is
    real-time media, and a late packet is worth less than the memory it would hold.
    """

    def __init__(self, poller: MediaPoller, sock: socket.socket, protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self._poller = poller
        self._sock = sock
        self._protocol = protocol
        self._closing = False
        self.fileno = sock.fileno()
        self.media_handler: MediaHandler | None = None
        self.sends_dropped = 0
        self._outgoing: list[tuple[Any, Any]] = []

    # -- reading -----------------------------------------------------------------

    def read_ready(self, buffers: _ReadBuffers) -> None:
        """Read everything the socket holds and deliver it (called by the poller)."""
        messages = buffers.messages
        data = buffers.data_view
        lengths = buffers.lengths
        stride = buffers.length_stride
        offset = buffers.length_offset
        recvmmsg = _libc.recvmmsg
        for _ in range(BATCHES_PER_TURN):
            if self._closing:
                return
            count = recvmmsg(self.fileno, messages, BATCH, _MSG_DONTWAIT, _ffi.NULL)
            if count < 0:
                code = _ffi.errno
                if code not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    self._protocol.error_received(OSError(code, os.strerror(code)))
                return
            for index in range(count):
                length = lengths[index * stride + offset]
                if length >= DATAGRAM_SIZE or not length:
                    continue  # empty, or cut short by the buffer: no WebRTC packet is this long
                start = index * DATAGRAM_SIZE
                datagram = data[start : start + length]
                handler = self.media_handler
                if handler is not None and 127 < datagram[0] < 192:
                    handler(datagram)
                elif not self._closing:
                    self._deliver(datagram, buffers, index)
            buffers.rearm(count)
            if count < BATCH:
                return

    def _deliver(self, datagram: bytes, buffers: _ReadBuffers, index: int) -> None:
        start = index * _SOCKADDR_SIZE
        address = sockaddr_to_address(buffers.names_view[start : start + buffers.name_length(index)])
        self._protocol.datagram_received(datagram, address)

    # -- asyncio.DatagramTransport -----------------------------------------------------

    def sendto(self, data: Any, addr: Any = None) -> None:
        """Send one datagram (at the end of the poller's turn if one is being read).

        Dropped if the socket buffer is full.
        """
        if self._closing:
            return
        if self._poller.draining:
            if not self._outgoing:
                self._poller.sending.append(self)
            self._outgoing.append((data, addr))
            return
        self._send_now(data, addr)

    def flush(self) -> None:
        """Send what was held back during the poller's turn."""
        outgoing, self._outgoing = self._outgoing, []
        if self._closing:
            return
        for data, addr in outgoing:
            self._send_now(data, addr)

    def _send_now(self, data: Any, addr: Any) -> None:
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.sends_dropped += 1
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
        self._poller.unregister(self)
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


def adopt(protocol: Any) -> MediaDatagramTransport | None:
    """Move a just-bound ICE protocol's socket from the loop's transport to the MediaPoller.

    Call it before any peer knows the socket's port: datagrams the old transport
    might still read would be lost. Returns None (and changes nothing) where this
    reader cannot run.
    """
    old = protocol.transport
    if _libc is None or isinstance(old, MediaDatagramTransport):
        return None
    original = old.get_extra_info("socket") if old is not None else None
    if original is None:
        return None
    sock = socket.socket(fileno=os.dup(original.fileno()))
    sock.setblocking(False)
    old.set_protocol(asyncio.DatagramProtocol())
    old.close()
    transport = MediaDatagramTransport(_poller_for(asyncio.get_running_loop()), sock, protocol)
    transport._poller.register(transport)
    protocol.connection_made(transport)
    return transport

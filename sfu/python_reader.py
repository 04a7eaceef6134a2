"""The reader's turn in Python: the reference for sfu/_reader.c, and what runs without it.

A reader holds one event loop's media sockets behind one epoll. A turn reads every
ready socket in rounds (one datagram from each, then ask the epoll again, at most
`rounds` per socket), hands each datagram to its transport
(sfu/media_socket.py: media to the peer, the rest to ICE), and sends what was sent
meanwhile at the end, in order, at most MAX_QUEUED per socket. Only STUN is read from
any sender; anything else only from the remote end of a checked ICE pair (`permit`),
the rest is dropped and counted (sfu/checked_senders.py). The reader in C does the
same, and forwards a steady route's packets through its lane on its own;
tests/test_media_socket.py runs on both.

A shared port (`--media-port`, sfu/shared_port.py) is one socket in the epoll with
many endpoints, one per peer's ICE component, made by `attach`: they send on the
port's socket, and the port hands each non-STUN datagram to the endpoint that
permitted its sender (the newest one, if two did); STUN goes to the port's
transport, which finds the endpoint by ICE username or transaction.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .checked_senders import LAST_STUN_BYTE, CheckedSenders
from .srtp import DatagramBuffer

if TYPE_CHECKING:
    from .media_socket import MediaDatagramTransport

MAX_QUEUED = 4096
"""Datagrams held back per socket during one turn; more are dropped (as sfu/_reader.c's MAX_QUEUED)."""


class PythonSocket(CheckedSenders):
    """One socket of a PythonReader: the reference for sfu._lane.MediaSocket."""

    def __init__(self, reader: PythonReader, fileno: int, family: int, transport: MediaDatagramTransport) -> None:
        super().__init__(family)
        self.fileno = fileno
        self.closed = False
        self.inbox: Any = None  # only the reader in C forwards through a peer's lanes
        self.sends_dropped = 0
        self.transport: MediaDatagramTransport | None = transport
        self._reader = reader
        self._sock = transport._sock
        self._recvfrom_into = transport._sock.recvfrom_into
        self._outgoing: list[tuple[Any, Any]] = []
        self.port: PythonSocket | None = None
        """The shared port this endpoint sends and is read on (made by `PythonReader.attach`)."""
        self.endpoints: dict[tuple[str, int], PythonSocket] | None = None
        """A shared port's endpoints by the senders they permitted; None for any other socket."""

    def read_one(self, buffer: DatagramBuffer, room: int) -> bool:
        """Read one datagram into `buffer` (of `room` bytes) and hand it on; False if there was none."""
        transport = self.transport
        try:
            size, address = self._recvfrom_into(buffer.writable)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as error:
            if transport is not None:
                transport._socket_error(error.errno)
            return False
        if size >= room or not size or transport is None:
            return True  # cut short by the buffer: no WebRTC packet is this long
        if buffer.memory[0] > LAST_STUN_BYTE and self.endpoints is not None:
            endpoint = self.endpoints.get(address if len(address) == 2 else address[:2])
            if endpoint is None:
                self.strangers_dropped += 1
                return True
            endpoint.deliver(size, address)
            return True
        self.deliver(size, address)
        return True

    def reads_per_round(self) -> int:
        """Datagrams read per round: a shared port one for each sender it reads for, any other socket one."""
        return max(1, len(self.endpoints)) if self.endpoints is not None else 1

    def deliver(self, size: int, address: Any) -> None:
        """The datagram of `size` bytes in the reader's buffer, from `address`, to this socket's transport."""
        transport = self.transport
        if transport is None:
            return
        if self._reader._buffer.memory[0] > LAST_STUN_BYTE and not self.admits(address):
            return  # not STUN, and from no checked ICE pair: counted
        transport._received(size, address)

    def permit(self, address: tuple[Any, ...]) -> tuple[str, int] | None:
        """As CheckedSenders.permit; on an endpoint, the shared port also reads `address` for it."""
        sender = self.sender(address)
        evicted = super().permit(address)
        port = self.port
        if port is not None and port.endpoints is not None and not self.closed:
            if evicted is not None and port.endpoints.get(evicted) is self:
                del port.endpoints[evicted]
            port.endpoints[sender] = self
        return evicted

    def sendto(self, data: Any, address: Any) -> None:
        """Send one datagram now, or at the end of the turn if one is being read."""
        if self.closed:
            return
        if self._reader.draining:
            if len(self._outgoing) >= MAX_QUEUED:
                self.sends_dropped += 1
                return
            if not self._outgoing:
                self._reader.pending.append(self)
            self._outgoing.append((data, address))
            return
        try:
            self._sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            self.sends_dropped += 1

    def flush(self) -> None:
        """Send what was held back during the turn, in order."""
        outgoing, self._outgoing = self._outgoing, []
        sendto = self._sock.sendto
        for index, (data, address) in enumerate(outgoing):
            if self.closed:
                return
            try:
                sendto(data, address)
            except (BlockingIOError, InterruptedError):
                self.sends_dropped += len(outgoing) - index  # the kernel's buffer is full: real-time, so drop
                return
            except OSError as error:
                if self.transport is not None:
                    self.transport._socket_error(error.errno)

    def close(self) -> None:
        """Send nothing more; a shared port reads nothing more for this endpoint."""
        self.closed = True
        self._outgoing = []
        self.transport = None
        port, self.port = self.port, None
        if port is not None and port.endpoints is not None:
            for sender in self.permitted:
                if port.endpoints.get(sender) is self:
                    del port.endpoints[sender]
        if self.endpoints is not None:
            for endpoint in list(self.endpoints.values()):
                endpoint.close()
            self.endpoints = {}


class PythonReader:
    """The sockets of one event loop behind one epoll, read in turns: the reference for
    sfu._lane.Reader, and what runs where the extension is not built."""

    def __init__(self, buffer: DatagramBuffer, rounds: int, on_error: Callable[[BaseException], None]) -> None:
        self._epoll = select.epoll()
        self._sockets: dict[int, PythonSocket] = {}
        self._buffer = buffer
        self._room = len(buffer.memory)
        self._rounds = rounds
        self._on_error = on_error
        self.draining = False
        self.pending: list[PythonSocket] = []

    @property
    def closed(self) -> bool:
        """Whether the epoll is closed."""
        return self._epoll.closed

    def fileno(self) -> int:
        """The epoll's file descriptor, for the event loop to watch."""
        return self._epoll.fileno()

    def register(self, fileno: int, family: int, transport: MediaDatagramTransport) -> PythonSocket:
        """Read the socket `fileno` in every turn."""
        socket_ = self._sockets[fileno] = PythonSocket(self, fileno, family, transport)
        self._epoll.register(fileno, select.EPOLLIN)
        return socket_

    def attach(self, port: PythonSocket, transport: MediaDatagramTransport) -> PythonSocket:
        """An endpoint of the shared port `port` for `transport`: it sends on the port's socket and
        is read, by the port, from the senders it permits."""
        if port.closed or port._reader is not self or port.port is not None:
            raise ValueError("not an open socket of this reader")
        if port.endpoints is None:
            port.endpoints = {}
        endpoint = PythonSocket(self, port.fileno, port.family, transport)
        endpoint.port = port
        return endpoint

    def unregister(self, socket_: PythonSocket) -> None:
        """Stop reading a socket; it sends nothing more."""
        if self._sockets.get(socket_.fileno) is socket_:
            del self._sockets[socket_.fileno]
            try:
                self._epoll.unregister(socket_.fileno)
            except OSError:
                pass
        socket_.close()

    def close(self) -> None:
        """Close the epoll and let go of every socket."""
        for socket_ in self._sockets.values():
            socket_.close()
        self._sockets.clear()
        self._epoll.close()

    def turn(self) -> bool:
        """Read every ready socket in rounds, then send what was held back meanwhile.

        Returns False if no socket was ready.
        """
        if self._epoll.closed or self.draining:
            return False
        poll = self._epoll.poll
        ready = poll(0)
        if not ready:
            return False
        sockets = self._sockets
        buffer, room = self._buffer, self._room
        self.draining = True
        try:
            for _ in range(self._rounds):
                for fileno, _events in ready:
                    socket_ = sockets.get(fileno)
                    if socket_ is not None:
                        try:
                            for _ in range(socket_.reads_per_round()):
                                if socket_.closed or not socket_.read_one(buffer, room):
                                    break
                        except Exception as error:
                            self._on_error(error)
                if self._epoll.closed:
                    break
                ready = poll(0)
                if not ready:
                    break
        finally:
            self.draining = False
            pending, self.pending = self.pending, []
            for socket_ in pending:
                socket_.flush()
        return True

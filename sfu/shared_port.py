"""One UDP port for every peer's media (`--media-port`): the socket and its STUN demultiplexing.

Without it every peer's ICE component binds an ephemeral port, and nobody can say
which ports a firewall must open. With it, every ICE host candidate on one host
address is that address and the media port, and all those components share one
socket (one per address: in practice one for IPv4 and one for IPv6), as
mediasoup's WebRtcServer and LiveKit's single-port mode do.

Each component is an endpoint of the port (sfu/media_socket.py, made by the
reader's `attach`): it sends on the port's socket and hears what is meant for it.
The reader (sfu/_reader.c, sfu/python_reader.py) hands a non-STUN datagram to the
endpoint that permitted its sender, i.e. the remote end of one of its checked ICE
pairs (sfu/checked_senders.py); nobody's sender is a stranger, dropped and counted
on the port. STUN comes here: a request or indication goes to the endpoint whose
ICE username fragment is the first half of its USERNAME ("ours:theirs"), a response
to the endpoint that sent the request with its transaction ID. A participant whose
address changes (Wi-Fi to 4G, a NAT rebinding) is found by their username first,
and their new address is read once its pair has been checked.
"""

from __future__ import annotations

import logging
import socket
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from .log_summary import LogSummary

if TYPE_CHECKING:
    from .media_socket import MediaDatagramTransport, MediaPoller

logger = logging.getLogger(__name__)

STUN_MAGIC = b"\x21\x12\xa4\x42"
STUN_HEADER = 20
USERNAME = 0x0006
MAX_TRANSACTIONS = 8192
"""STUN requests whose responses are awaited, per port; the oldest is forgotten first.
aioice retransmits a check for about 8 s and checks consent every 5 s: a few per peer."""
RECEIVE_BUFFER = 4 * 1024 * 1024
"""The port's kernel receive buffer: one socket takes what a few hundred would."""

_unrouted = LogSummary(logger, "STUN datagrams for no ICE session on the media port")


def stun_request(data: Any) -> bool:
    """Whether `data` (at least a STUN header) is a STUN request, whose response must come back to its sender."""
    return len(data) >= STUN_HEADER and data[0] & 0x01 == 0 and data[1] & 0x10 == 0


def username_fragment(data: Any, size: int) -> bytes | None:
    """The first half ("ours") of a STUN message's USERNAME attribute, or None."""
    end = min(STUN_HEADER + ((data[2] << 8) | data[3]), size)
    offset = STUN_HEADER
    while offset + 4 <= end:
        kind = (data[offset] << 8) | data[offset + 1]
        length = (data[offset + 2] << 8) | data[offset + 3]
        if kind == USERNAME:
            value = bytes(data[offset + 4 : min(offset + 4 + length, end)])
            return value.split(b":", 1)[0]
        offset += 4 + ((length + 3) & ~3)
    return None


class SharedPort:
    """The socket on (host, port) that every endpoint on that host address shares, and the
    transport the reader gives its STUN datagrams (`_received`)."""

    def __init__(self, poller: MediaPoller, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:  # as root, past net.core.rmem_max: one socket takes every peer's media
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUFFORCE, RECEIVE_BUFFER)
            except (OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.family = family
        self.address = (host, port)
        self._buffer = poller.buffer
        self._by_ufrag: dict[bytes, MediaDatagramTransport] = {}
        self._transactions: OrderedDict[bytes, MediaDatagramTransport] = OrderedDict()
        self.stun_unrouted = 0
        self.reader_socket = poller.reader.register(sock.fileno(), family, self)

    @property
    def strangers_dropped(self) -> int:
        """Non-STUN datagrams from senders no endpoint permitted."""
        return self.reader_socket.strangers_dropped

    def in_use(self, ufrag: str) -> bool:
        """Whether an endpoint of this port has ICE username fragment `ufrag`."""
        return ufrag.encode() in self._by_ufrag

    def join(self, ufrag: str, transport: MediaDatagramTransport) -> None:
        """STUN requests for ICE username fragment `ufrag` go to `transport` from now on."""
        if self.in_use(ufrag):
            raise ValueError("ICE username fragment in use on this port")
        self._by_ufrag[ufrag.encode()] = transport

    def leave(self, transport: MediaDatagramTransport) -> None:
        """Route nothing more to `transport`."""
        for key in [key for key, value in self._by_ufrag.items() if value is transport]:
            del self._by_ufrag[key]

    def sent(self, data: Any, transport: MediaDatagramTransport) -> None:
        """`transport` sends `data`: if it is a STUN request, its response goes back to it."""
        if data[0] < 4 and stun_request(data):
            transaction = bytes(data[8:STUN_HEADER])
            self._transactions[transaction] = transport
            self._transactions.move_to_end(transaction)
            if len(self._transactions) > MAX_TRANSACTIONS:
                self._transactions.popitem(last=False)

    # -- called by the reader ---------------------------------------------------------

    def _received(self, size: int, address: Any) -> None:
        """A STUN datagram (or a short one) in the poller's buffer: to the endpoint it is meant for."""
        data = self._buffer.memory
        target = None
        if size >= STUN_HEADER and data[4:8] == STUN_MAGIC:
            if not data[0] & 0x01:  # a request or an indication
                ufrag = username_fragment(data, size)
                target = self._by_ufrag.get(ufrag) if ufrag is not None else None
            else:
                target = self._transactions.get(bytes(data[8:STUN_HEADER]))
        if target is None or target.is_closing():
            self.stun_unrouted += 1
            _unrouted.count("unknown ICE username or transaction")
            return
        target._received(size, address)

    def _socket_error(self, number: int) -> None:
        """The shared socket failed to receive or send: nobody's in particular, so counted."""
        _unrouted.count(f"socket error {number}")

    def close(self) -> None:
        """Close the socket (its reader has let go of it)."""
        self._by_ufrag.clear()
        self._transactions.clear()
        self._sock.close()

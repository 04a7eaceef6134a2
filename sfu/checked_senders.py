"""Who may send an ICE socket anything but STUN: the remote ends of its connection's checked pairs.

aioice hands every datagram that does not parse as STUN to DTLS, whatever its
sender, so one stranger's forged DTLS alert (or a few garbage records) sent to a
participant's ICE port during setup ends their handshake for good. A socket
therefore reads STUN (first byte 0-3, RFC 7983) from anyone, since ICE must hear
checks from addresses it does not know yet (peer-reflexive candidates), and
everything else only from the remote address of a pair aioice has checked
(CandidatePair.State.SUCCEEDED: our request was answered from that very address,
with the right credentials). A new address of the participant (a NAT rebinding, a
new nomination) is checked before media moves to it, so it is permitted in time;
nothing before the first check passes. Drops are counted, never logged.

The sockets the SFU reads itself (sfu/media_socket.py) filter in their reader (C or
Python); `CheckedSenders` is the Python reader's filter and the one for ICE sockets
the SFU does not read itself (TURN relays).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from aioice.ice import CandidatePair

MAX_SENDERS = 16
"""Checked pairs' remote addresses one socket reads from; one more lets go of the oldest
(as sfu/_reader.c's MAX_SENDERS). A participant offers at most 32 candidates, most never succeed."""

LAST_STUN_BYTE = 3
"""RFC 7983: a first byte of 0-3 is STUN, which ICE must hear from any sender."""


class CheckedSenders:
    """The senders one socket reads non-STUN datagrams from, and the count of the rest:
    the reference for sfu._lane.MediaSocket's `permit`, `permitted` and `strangers_dropped`."""

    def __init__(self, family: int) -> None:
        self.family = family
        self.strangers_dropped = 0
        # Keyed as recvfrom names a sender ((host, port) for IPv4), in the order permitted.
        self._senders: dict[tuple[str, int], None] = {}

    def admits(self, address: tuple[Any, ...]) -> bool:
        """Whether a non-STUN datagram from `address` (as recvfrom names it) is read; counts it if not."""
        if (address if len(address) == 2 else address[:2]) in self._senders:
            return True
        self.strangers_dropped += 1
        return False

    def permit(self, address: tuple[Any, ...]) -> tuple[str, int] | None:
        """Read non-STUN datagrams from `address` (host, port): the remote end of a checked ICE pair.

        At most MAX_SENDERS are kept; one more lets go of the oldest, which is returned. ValueError if the host
        is not a numeric address of the socket's family, or the port is out of range.
        """
        sender = self.sender(address)
        if sender in self._senders:
            return None
        evicted = None
        if len(self._senders) == MAX_SENDERS:
            evicted = next(iter(self._senders))
            del self._senders[evicted]
        self._senders[sender] = None
        return evicted

    def sender(self, address: tuple[Any, ...]) -> tuple[str, int]:
        """`address` (host, port) as recvfrom names a sender: one text for every spelling of a host.

        ValueError if the host is not a numeric address of the socket's family, or the port is out of range.
        """
        host, port = address[0], address[1]
        if not 0 <= port <= 65535:
            raise ValueError("port out of range")
        try:
            return (socket.inet_ntop(self.family, socket.inet_pton(self.family, host)), port)
        except (OSError, TypeError):
            raise ValueError("not a numeric address of the socket's family") from None

    @property
    def permitted(self) -> list[tuple[str, int]]:
        """The senders non-STUN datagrams are read from, as (host, port), oldest first."""
        return list(self._senders)


def watch_checked_pairs(connection: Any, on_checked: Callable[[CandidatePair], None]) -> None:
    """Call `on_checked(pair)` for every pair of an aioice Connection that is, or becomes, checked.

    aioice has no event for it: every state change goes through `Connection.check_state`,
    and a pair that succeeds is told so before it can be nominated.
    """
    check_state = connection.check_state

    def checked(pair: CandidatePair, state: CandidatePair.State) -> None:
        check_state(pair, state)
        if state == CandidatePair.State.SUCCEEDED:
            on_checked(pair)

    connection.check_state = checked
    for pair in list(connection._check_list):
        if pair.state == CandidatePair.State.SUCCEEDED:
            on_checked(pair)

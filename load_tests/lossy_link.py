"""A lossy, slow link in an aiortc bot's own sockets: random loss of media and delay each way.

This machine's kernel has no netem (DESIGN.md, "Network tests"). Instead of a network
namespace, the bot's ICE sockets drop a share of the SRTP packets they send (seeded, so a run
can be repeated) and hold every datagram back `delay` seconds each way. The SFU sees what a
lossy uplink delivers: gaps, and retransmissions that may be lost again. Used by
tests/test_upstream_repair.py and load_tests/lossy.py.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from aiortc import RTCPeerConnection


class LossyLink:
    """Drops `loss` of the SRTP (not SRTCP, not STUN or DTLS) a peer sends; delays all of it."""

    def __init__(self, loss: float, delay: float = 0.0, seed: int = 14) -> None:
        self.loss = loss
        self.delay = delay
        self.sent = 0
        self.dropped = 0
        self.dropped_by_ssrc: dict[int, int] = {}
        self._random = random.Random(seed)

    def install(self, pc: RTCPeerConnection) -> None:
        """Put the link under every ICE socket of `pc` (after its offer has gathered them)."""
        seen = set()
        for transceiver in pc.getTransceivers():
            connection = transceiver.sender.transport.transport._connection
            if id(connection) in seen:
                continue
            seen.add(id(connection))
            for protocol in connection._protocols:
                self._wrap(protocol)

    def _wrap(self, protocol: Any) -> None:
        loop = asyncio.get_running_loop()
        received = protocol.datagram_received

        async def send_data(data: bytes, addr: tuple[Any, ...]) -> None:
            if len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:  # SRTP, not SRTCP
                self.sent += 1
                if self._random.random() < self.loss:
                    self.dropped += 1
                    ssrc = int.from_bytes(data[8:12], "big")
                    self.dropped_by_ssrc[ssrc] = self.dropped_by_ssrc.get(ssrc, 0) + 1
                    return
            transport = protocol.transport
            if transport is None or transport.is_closing():
                return
            if self.delay:
                loop.call_later(self.delay, _send_if_open, protocol, data, addr)
            else:
                transport.sendto(data, addr)

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            loop.call_later(self.delay, received, data, addr)

        protocol.send_data = send_data
        if self.delay:
            protocol.datagram_received = datagram_received


def _send_if_open(protocol: Any, data: bytes, addr: tuple[Any, ...]) -> None:
    transport = protocol.transport
    if transport is not None and not transport.is_closing():
        transport.sendto(data, addr)

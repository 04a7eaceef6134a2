"""A leg: one outgoing track on a subscriber's peer connection, fed by at most one publication.

Forwarding rewrites SSRC, payload type, sequence number and timestamp for the
leg and sends the payload as it came: no decoding, no encoding. The leg keeps
its sequence and timestamp continuous when its source changes (hand-over), and
a video leg starts only at a keyframe. Once started, a native lane (sfu/lane.py)
does the same work for the plain next packet; this is the reference it follows.
"""

from __future__ import annotations

import struct
from time import time
from typing import TYPE_CHECKING, Any, Protocol

from .lane import LegCounters
from .rtp_header import HEADER as _HEADER
from .rtp_header import extension_block, vp8_keyframe_start

if TYPE_CHECKING:
    from .publication import Publication
    from .srtp import FastSrtp

HISTORY_SIZE = 256
"""Packets kept per leg for retransmission on NACK (a power of two)."""

_ELEMENT = struct.Struct("!I")
"""A one-byte extension element header and a 24-bit value, written as one 32-bit word."""

VIDEO_GAP_TICKS = 3000
AUDIO_GAP_TICKS = 960


class PacketSink(Protocol):
    """Where a leg's packets go: the subscriber's SRTP session and ICE pair."""

    def send_rtp(self, header: bytearray, payload: memoryview) -> bytes | None:
        """Protect `header` + `payload` as one RTP packet and send it; return it as sent (None if not sent)."""
        ...

    def resend_rtp(self, packet: bytes) -> None:
        """Send again a packet that `send_rtp` returned."""
        ...

    def outbound_srtp(self) -> FastSrtp | None:
        """The SRTP session `send_rtp` protects with, for a native lane (None if not keyed yet)."""
        ...

    @property
    def destination(self) -> Any:
        """Where the reader in C sends a lane's packets directly (sfu._lane.Destination), or None."""
        ...


class Leg(LegCounters):
    """One outgoing track: its own SSRC, payload type and extension ids; its source may change.

    packets_sent, _last_sequence and _last_timestamp live in LegCounters, where a native
    lane writes them too."""

    def __init__(
        self,
        sink: PacketSink,
        kind: str,
        ssrc: int,
        payload_type: int,
        mid: str | None,
        mid_id: int | None,
        abs_send_time_id: int | None,
    ) -> None:
        self.sink = sink
        self.kind = kind
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.source: Publication | None = None
        self.started = False
        self.packets_sent = 0
        self.retransmitted = 0
        self._sequence_offset = 0
        self._timestamp_offset = 0
        self._next_sequence = 1
        self._next_timestamp = 0
        self._last_sequence = 0
        self._last_timestamp = 0
        self._history: list[bytes | None] = [None] * HISTORY_SIZE
        elements: list[tuple[int, bytes]] = []
        if mid is not None and mid_id is not None:
            elements.append((mid_id, mid.encode()))
        self._abs_send_time_at: int | None = None
        if kind == "video" and abs_send_time_id is not None:
            # The abs-send-time element goes last; its value is written per packet.
            self._abs_send_time_at = 12 + 4 + sum(1 + len(value) for _, value in elements)
            self._abs_send_time_element = (abs_send_time_id << 4 | 2) << 24
            elements.append((abs_send_time_id, b"\x00\x00\x00"))
        extensions = extension_block(elements) if elements else b""
        # The header and extensions of every packet of this leg, rewritten in place per packet.
        self._header = bytearray(_HEADER.size) + extensions
        self._first_byte = 0x90 if extensions else 0x80  # version 2, X bit if extensions

    def attach(self, source: Publication | None) -> None:
        """Feed this leg from `source` (or nothing); the old source lets go of it."""
        if source is self.source:
            return
        old = self.source
        if old is not None:
            old.lane = None  # a lane copies the route: it must not outlive it
            if old.leg is self:
                old.leg = None
        if source is not None:
            if source.leg is not None and source.leg is not self:
                source.leg.attach(None)
            source.leg = self
            source.lane = None
        self.source = source
        self._start_again()
        if source is not None:
            source.request_keyframe()

    def restart(self) -> None:
        """The source's numbering started over (far behind its newest packet): start again as at
        a hand-over, at the source's next keyframe for video, the leg's own numbering continuous."""
        if self.source is not None:
            self.source.lane = None  # its offsets are no longer the leg's
        self._start_again()

    def _start_again(self) -> None:
        self.started = False
        if self.packets_sent:
            self._next_sequence = (self._last_sequence + 1) & 0xFFFF
            step = VIDEO_GAP_TICKS if self.kind == "video" else AUDIO_GAP_TICKS
            self._next_timestamp = (self._last_timestamp + step) & 0xFFFFFFFF

    def send(self, packet: bytes, marker: int, sequence: int, timestamp: int, start: int, end: int,
             late: bool = False) -> None:
        """Rewrite one packet of the source for this leg and send it (payload is packet[start:end]).

        A `late` packet (a repair of an uplink loss, or reordered) goes out in its place; the
        leg's last sequence and timestamp stay the newest, for sender reports and hand-overs."""
        if not self.started:
            if self.kind == "video" and not vp8_keyframe_start(memoryview(packet)[start:end]):
                if self.source is not None:
                    self.source.request_keyframe()
                return
            self.started = True
            self._sequence_offset = (self._next_sequence - sequence) & 0xFFFF
            self._timestamp_offset = (self._next_timestamp - timestamp) & 0xFFFFFFFF
        sequence = (sequence + self._sequence_offset) & 0xFFFF
        timestamp = (timestamp + self._timestamp_offset) & 0xFFFFFFFF
        header = self._header
        _HEADER.pack_into(header, 0, self._first_byte, marker | self.payload_type, sequence, timestamp, self.ssrc)
        if self._abs_send_time_at is not None:
            # abs-send-time: 6.18 fixed-point seconds, 24 bits, after its one-byte element header.
            _ELEMENT.pack_into(header, self._abs_send_time_at, self._abs_send_time_element | (int(time() * 262144) & 0xFFFFFF))
        if not late:
            self._last_sequence = sequence
            self._last_timestamp = timestamp
        self.packets_sent += 1
        # Kept as sent, protected: a retransmission is the same SRTP packet again, which the
        # subscriber accepts because it never received the original.
        sent = self.sink.send_rtp(header, memoryview(packet)[start:end])
        if not late or (self._last_sequence - sequence) & 0xFFFF < HISTORY_SIZE:
            self._history[sequence % HISTORY_SIZE] = sent  # (a repair older than the history keeps out)

    def retransmit(self, sequences: list[int]) -> None:
        """Send again what the subscriber reported lost (NACK), if still in the history."""
        for sequence in sequences:
            packet = self._history[sequence % HISTORY_SIZE]
            if packet is not None and int.from_bytes(packet[2:4], "big") == sequence:
                self.retransmitted += 1
                self.sink.resend_rtp(packet)

    def last_sent(self) -> tuple[int, int]:
        """(packets sent, last RTP timestamp), for sender reports."""
        return self.packets_sent, self._last_timestamp

"""A publication: one incoming track (a student's webcam, screen or microphone, or a
surveillant's voice or camera), read at the RTP level and handed to its one leg.

Every packet is drained at once, watched or not: nothing queues here.

Upstream repair lives here, where a packet enters: a video gap is asked for again with a
generic NACK (sfu/nack.py decides what and when), the retransmission (RTX, RFC 4588, or the
plain packet again) goes on to the leg like a late packet, and a keyframe is asked for only
when the repair fails or the gap is too large. A keyframe request inside the limiter's
window waits for its end.
"""

from __future__ import annotations

import asyncio
import os
from time import monotonic
from collections.abc import Callable
from typing import TYPE_CHECKING

from .keyframes import KeyframeLimiter
from .lane import LaneSlot
from .nack import NackGenerator
from .rtp_header import FIXED_HEADER as _FIXED_HEADER
from .rtp_header import audio_level, extension_value
from .track_stats import TrackStats

if TYPE_CHECKING:
    from .forward import Leg

UPSTREAM_REPAIR = os.environ.get("INVIGIL_UPSTREAM_REPAIR", "1") != "0"
"""Whether video gaps are NACKed (else each asks for a keyframe, as before): for comparisons
(load_tests/lossy.py)."""

MAX_LATE = 512
"""How far behind the newest packet a packet counts as late (reordered or repaired); one
further behind means the publisher's numbering started over."""


class Publication(LaneSlot):
    """One incoming track of one peer, identified by its SSRC.

    `lane` (in LaneSlot, where the reader in C reads it) is the native lane forwarding
    this track's steady state (sfu/lane.py), if one is open."""

    def __init__(
        self,
        source: str,
        kind: str,
        payload_type: int,
        audio_level_id: int | None,
        request_keyframe: Callable[[int], None],
        send_nack: Callable[[int, list[int]], None] | None = None,
    ) -> None:
        self.source = source
        self.kind = kind
        self.is_audio = kind == "audio"
        self.payload_type = payload_type
        self.audio_level_id = audio_level_id if self.is_audio else None
        self.ssrc: int | None = None
        self.leg: Leg | None = None
        self.stats = TrackStats()
        self.keyframes = KeyframeLimiter()
        self._request_keyframe = request_keyframe
        self._send_nack = send_nack
        self.nacks = NackGenerator() if UPSTREAM_REPAIR and send_nack is not None and kind == "video" else None
        """Upstream repair; without a way to send NACKs, every video gap asks for a keyframe."""
        self.rtx_payload_type: int | None = None
        """The RTX payload type (RFC 4588) the publisher retransmits with, if negotiated."""
        self._reported = (0, 0)  # (packets expected, lost) at the last receiver report
        self._nack_timer: asyncio.TimerHandle | None = None
        self._keyframe_timer: asyncio.TimerHandle | None = None
        self.lane = None

    def receive(self, packet: bytes | memoryview) -> None:
        """Handle one decrypted RTP packet of this track: count it and forward it (the hot path).

        `packet` may be a view of the reader's buffer: nothing here keeps it past the call.

        The header is read inline rather than through `rtp_header.parse`: this runs for
        every packet, and each Python operation here is measurable at 5,000 packets a second.
        """
        size = len(packet)
        if size < 12:
            return
        first, second, sequence, timestamp = _FIXED_HEADER.unpack_from(packet)
        if first & 0xC0 != 0x80:
            return
        if second & 0x7F != self.payload_type:
            if second & 0x7F != self.rtx_payload_type:
                return
            original = self._original_of(packet)
            if original is None:
                return
            packet, size = original, len(original)
            first, second, sequence, timestamp = _FIXED_HEADER.unpack_from(packet)
        start = 12 + 4 * (first & 0x0F)
        if first & 0x10:
            if start + 4 > size:
                return
            start += 4 + 4 * ((packet[start + 2] << 8) | packet[start + 3])
        end = size - packet[-1] if first & 0x20 else size
        if start >= end:
            return
        marker = second & 0x80
        stats = self.stats
        expected = stats.expected_sequence
        late = False
        if sequence != expected and expected is not None:
            late = (expected - sequence) & 0xFFFF <= MAX_LATE
            if late and self.nacks is not None:
                if not self.nacks.received(sequence, monotonic()):
                    return  # a duplicate, or given up on (a keyframe is on its way): not forwarded
                stats.lost -= 1  # repaired: RFC 3550 counts lost as expected minus received
        stats.packets += 1
        stats.bytes += end - start
        stats.last_packet = monotonic()
        if marker:
            stats.frames += 1
        if sequence == expected or expected is None:
            stats.expected_sequence = (sequence + 1) & 0xFFFF
        elif not late:  # a late packet (reordered or repaired) is forwarded, not counted as lost
            gap = (sequence - expected) & 0xFFFF
            stats.expected_sequence = (sequence + 1) & 0xFFFF
            if gap < 0x8000:
                stats.lost += gap
                if not self.is_audio:
                    self._missed(expected, gap)
            else:
                # Far behind the newest: the publisher started over (not a loss, not a repair).
                if self.nacks is not None:
                    self.nacks.give_up()
                if self.leg is not None:
                    self.leg.restart()
                self.request_keyframe()
        if self.audio_level_id is not None and stats.packets % 5 == 0:
            stats.audio_level = audio_level(extension_value(packet, self.audio_level_id))
        leg = self.leg
        if leg is not None:
            leg.send(packet, marker, sequence, timestamp, start, end, late)

    def arrivals(self) -> tuple[int, int]:
        """(packets that came in order, packets lost on the way) so far, repairs not counted
        as either: the uplink's own loss, for its bit rate estimate."""
        stats = self.stats
        repaired = self.nacks.repaired if self.nacks is not None else 0
        return stats.packets - repaired, stats.lost + repaired

    def fraction_lost(self) -> int:
        """The share of packets lost since the last call, in 256ths (RFC 3550 6.4.1, for the
        receiver report): the publisher's browser runs its own loss-based estimate on it."""
        stats = self.stats
        expected, lost = stats.packets + stats.lost, stats.lost
        last_expected, last_lost = self._reported
        self._reported = (expected, lost)
        if expected <= last_expected or lost <= last_lost:
            return 0
        return min(255, (lost - last_lost) * 256 // (expected - last_expected))

    def _original_of(self, packet: bytes | memoryview) -> bytes | None:
        """The packet an RTX packet (RFC 4588) repeats: the original sequence number is in its
        first two payload bytes, the original payload after them. None unless it is a repair
        (older than the newest packet)."""
        data = bytearray(packet)
        first = data[0]
        start = 12 + 4 * (first & 0x0F)
        if first & 0x10:
            if start + 4 > len(data):
                return None
            start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
        end = len(data) - data[-1] if first & 0x20 else len(data)
        if self.ssrc is None or start + 2 >= end:
            return None  # padding only (bandwidth probes), or nothing after the original sequence
        original = data[:start] + data[start + 2 : end]
        original[0] = first & ~0x20  # the RTX padding is gone
        original[1] = (data[1] & 0x80) | self.payload_type
        original[2:4] = data[start : start + 2]
        original[8:12] = self.ssrc.to_bytes(4, "big")
        expected = self.stats.expected_sequence
        sequence = (original[2] << 8) | original[3]
        if expected is None or (sequence - expected) & 0xFFFF < 0x8000:
            return None  # only a repair: never a packet ahead of the newest
        return bytes(original)

    def _missed(self, first: int, count: int) -> None:
        """`count` video packets from `first` on did not come: NACK them, or ask for a keyframe."""
        nacks = self.nacks
        if nacks is None or not nacks.gap(first, count, monotonic()):
            # The uplink lost video we cannot get back: ask for a keyframe rather than freeze.
            self.request_keyframe()
            return
        if self._nack_timer is not None:
            self._nack_timer.cancel()  # one timer at a time: _nack_due sets the next
        self._nack_due()

    def _nack_due(self) -> None:
        """Send the NACKs due now, give up if a repair failed, and wake up at the next deadline
        (called by the timer, or with it cancelled)."""
        self._nack_timer = None
        nacks = self.nacks
        if nacks is None or self.ssrc is None:
            return
        now = monotonic()
        sequences, give_up = nacks.due(now)
        if sequences and self._send_nack is not None:
            self._send_nack(self.ssrc, sequences)
        if give_up:
            self.request_keyframe()
        deadline = nacks.next_deadline()
        if deadline is not None and self._nack_timer is None:
            self._nack_timer = _call_later(max(deadline - now, 0.0), self._nack_due)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe (PLI), at most twice a second; a request inside
        the limit waits for its end (one at a time)."""
        if self.kind != "video" or self.ssrc is None:
            return
        wait = self.keyframes.wait()
        if wait == 0.0:
            self._request_keyframe(self.ssrc)
        elif self._keyframe_timer is None:
            self._keyframe_timer = _call_later(wait, self._deferred_keyframe)

    def _deferred_keyframe(self) -> None:
        self._keyframe_timer = None
        self.request_keyframe()

    def close(self) -> None:
        """Stop the repair and keyframe timers (the peer is closing)."""
        for timer in (self._nack_timer, self._keyframe_timer):
            if timer is not None:
                timer.cancel()
        self._nack_timer = self._keyframe_timer = None
        self._send_nack = None


def _call_later(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle | None:
    """`callback` after `delay` on the running loop; None outside one (unit tests feed packets
    without a loop: nothing is retried or deferred there)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(delay, callback)

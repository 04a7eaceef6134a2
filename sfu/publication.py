"""A publication: one incoming track (a student's webcam, screen or microphone, or a
surveillant's voice or camera), read at the RTP level and handed to its one leg.

Every packet is drained at once, watched or not: nothing queues here.
"""

from __future__ import annotations

from time import monotonic
from collections.abc import Callable
from typing import TYPE_CHECKING

from .keyframes import KeyframeLimiter
from .lane import LaneSlot
from .rtp_header import FIXED_HEADER as _FIXED_HEADER
from .rtp_header import audio_level, extension_value
from .track_stats import TrackStats

if TYPE_CHECKING:
    from .forward import Leg


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
        if first & 0xC0 != 0x80 or second & 0x7F != self.payload_type:
            return
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
        stats.packets += 1
        stats.bytes += end - start
        stats.last_packet = monotonic()
        if marker:
            stats.frames += 1
        expected = stats.expected_sequence
        if sequence == expected or expected is None:
            stats.expected_sequence = (sequence + 1) & 0xFFFF
        else:
            gap = (sequence - expected) & 0xFFFF
            if gap < 0x8000:  # else a late (reordered) packet: forwarded, not counted
                stats.lost += gap
                stats.expected_sequence = (sequence + 1) & 0xFFFF
                if not self.is_audio:
                    # The uplink lost video we never get back: ask for a keyframe rather than freeze.
                    self.request_keyframe()
        if self.audio_level_id is not None and stats.packets % 5 == 0:
            stats.audio_level = audio_level(extension_value(packet, self.audio_level_id))
        leg = self.leg
        if leg is not None:
            leg.send(packet, marker, sequence, timestamp, start, end)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe (PLI), at most twice a second."""
        if self.kind == "video" and self.ssrc is not None and self.keyframes.allow():
            self._request_keyframe(self.ssrc)

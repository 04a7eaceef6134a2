"""Live per-track figures for the surveillant's tiles: counted per packet, read once a second."""

from __future__ import annotations

import time
from typing import Any

from .lane import TrackCounters


class TrackStats(TrackCounters):
    """Counters of one incoming track (counted per packet by `Publication.receive` or its
    native lane); `snapshot()` turns them into rates since the last call."""

    __slots__ = ("_last_snapshot", "_last_bytes", "_last_frames")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.frames = 0
        self.lost = 0
        self.last_packet = 0.0
        self.audio_level: int | None = None
        self.expected_sequence: int | None = None
        self._last_snapshot = time.monotonic()
        self._last_bytes = 0
        self._last_frames = 0

    def snapshot(self, kind: str) -> dict[str, Any]:
        """Bitrate, frame rate, loss, silence and audio level since the previous snapshot."""
        now = time.monotonic()
        elapsed = max(now - self._last_snapshot, 1e-3)
        figures: dict[str, Any] = {
            "bitrate_kbps": round((self.bytes - self._last_bytes) * 8 / elapsed / 1000, 1),
            "packets": self.packets,
            "packets_lost": self.lost,
            "ms_since_last_packet": round((now - self.last_packet) * 1000) if self.packets else None,
        }
        if kind == "video":
            figures["frames_per_second"] = round((self.frames - self._last_frames) / elapsed, 1)
        else:
            figures["audio_level"] = None if self.audio_level is None else round((127 - self.audio_level) / 127, 2)
        self._last_snapshot = now
        self._last_bytes = self.bytes
        self._last_frames = self.frames
        return figures

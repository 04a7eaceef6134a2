"""Keyframe requests toward a publisher, at most twice a second per track (like mediasoup's PLI limit).

A request inside the limit's window is deferred to the window's end, not dropped: dropped, a
loss just after a recovery left the track undecodable until the next loss (DESIGN.md).
"""

from __future__ import annotations

import time

MIN_INTERVAL = 0.5


class KeyframeLimiter:
    """Lets a keyframe request through only if the last one was at least `interval` ago, and
    says how long a request must wait otherwise."""

    def __init__(self, interval: float = MIN_INTERVAL) -> None:
        self.interval = interval
        self.sent = 0
        self._last = -interval

    def wait(self, now: float | None = None) -> float:
        """0.0 (and counted as sent) if a request may go now; else the seconds until one may."""
        now = time.monotonic() if now is None else now
        remaining = self._last + self.interval - now
        if remaining > 0:
            return remaining
        self._last = now
        self.sent += 1
        return 0.0

    def allow(self, now: float | None = None) -> bool:
        """True (and counted) if a request may be sent now."""
        return self.wait(now) == 0.0

"""Keyframe requests toward a publisher, at most twice a second per track (like mediasoup's PLI limit)."""

from __future__ import annotations

import time

MIN_INTERVAL = 0.5


class KeyframeLimiter:
    """Lets a keyframe request through only if the last one was at least `interval` ago."""

    def __init__(self, interval: float = MIN_INTERVAL) -> None:
        self.interval = interval
        self.sent = 0
        self._last = -interval

    def allow(self, now: float | None = None) -> bool:
        """True (and counted) if a request may be sent now."""
        now = time.monotonic() if now is None else now
        if now - self._last < self.interval:
            return False
        self._last = now
        self.sent += 1
        return True

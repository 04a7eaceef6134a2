"""Rate limits: a token bucket per socket and a sliding count of joins per address.

Addresses are held in memory only, for at most one window, and never logged.
"""

from __future__ import annotations

import time
from collections import deque


class TokenBucket:
    """Allows `rate` actions a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.refused = 0
        self._last = time.monotonic()

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.refused = 0
            return True
        self.refused += 1
        return False

    def overdrawn(self) -> bool:
        """True when a client keeps sending long after being told to slow down."""
        return self.refused > self.burst


class AddressLimiter:
    """At most `limit` joins per address within `window` seconds."""

    def __init__(self, limit: int = 60, window: float = 60.0, max_addresses: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._joins: dict[str, deque[float]] = {}

    def allow(self, address: str) -> bool:
        """Count one join from `address`; False when it is over the limit."""
        now = time.monotonic()
        if len(self._joins) >= self.max_addresses:
            self._prune(now)
        joins = self._joins.setdefault(address, deque())
        while joins and joins[0] <= now - self.window:
            joins.popleft()
        if len(joins) >= self.limit:
            return False
        joins.append(now)
        return True

    def _prune(self, now: float) -> None:
        for address, joins in list(self._joins.items()):
            if not joins or joins[-1] <= now - self.window:
                del self._joins[address]

"""Rate limits: a token bucket per socket and a sliding count of joins per address.

Addresses are held in memory only, for at most one window, and never logged.
An IPv6 host is counted by its /64 prefix (it may use any address in it), and an
IPv4-mapped IPv6 address as the IPv4 address it is.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque

IPV6_HOST_PREFIX = 64


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


def address_key(address: str) -> str:
    """What one join limit counts: the IPv4 address, or the /64 an IPv6 address is in."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_HOST_PREFIX), strict=False))
    return str(parsed)


class AddressLimiter:
    """At most `limit` joins per address within `window` seconds, for at most `max_addresses` at once."""

    def __init__(self, limit: int = 60, window: float = 60.0, max_addresses: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._joins: dict[str, deque[float]] = {}

    def allow(self, address: str) -> bool:
        """Count one join from `address`; False when it is over the limit."""
        now = time.monotonic()
        key = address_key(address)
        if key not in self._joins and len(self._joins) >= self.max_addresses:
            self._prune(now)
            # Still full: forget the addresses first seen longest ago rather than grow without bound.
            while len(self._joins) >= self.max_addresses:
                del self._joins[next(iter(self._joins))]
        joins = self._joins.setdefault(key, deque())
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

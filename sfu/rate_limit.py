"""Rate limits: a token bucket per socket and a sliding count of joins per address.

Addresses are held in memory only and never logged: an address is forgotten one
window after its last attempt, whether or not anyone joins after it. An IPv6 host
is counted by its /64 prefix (it may use any address in it), and an IPv4-mapped
IPv6 address as the IPv4 address it is.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import OrderedDict, deque

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
        # Least recently tried first: the stale ones are always at the front.
        self._joins: OrderedDict[str, deque[float]] = OrderedDict()
        self._expiry: asyncio.TimerHandle | None = None

    def allow(self, address: str) -> bool:
        """Count one join from `address`; False when it is over the limit."""
        now = time.monotonic()
        self._forget_before(now - self.window)
        key = address_key(address)
        joins = self._joins.get(key)
        if joins is None:
            # Still full: forget the addresses tried longest ago rather than grow without bound.
            while len(self._joins) >= self.max_addresses:
                self._joins.popitem(last=False)
            joins = self._joins[key] = deque()
        else:
            self._joins.move_to_end(key)
        while joins and joins[0] <= now - self.window:
            joins.popleft()
        allowed = len(joins) < self.limit
        if allowed:
            joins.append(now)
        self._schedule_expiry()
        return allowed

    def _forget_before(self, cutoff: float) -> None:
        """Drop the addresses with no join after `cutoff` (they would count zero anyway)."""
        while self._joins:
            key, joins = next(iter(self._joins.items()))
            if joins and joins[-1] > cutoff:
                return
            del self._joins[key]

    def _schedule_expiry(self) -> None:
        if self._expiry is not None or not self._joins:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # used outside the server's loop (unit tests): forgotten on the next call
        self._expiry = loop.call_later(self.window, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self._forget_before(time.monotonic() - self.window)
        self._schedule_expiry()

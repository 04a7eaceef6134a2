"""Rate limits: token buckets per socket, per address and per exam, and bounded upload slots.

A class behind one school NAT is one address: 200 students may join one exam
from it at once, and each runs the page's upload check, so the limits per
address are bursts sized for a class that refill steadily, not counts per
minute. `Buckets` and `UploadSlots` are pure (the caller passes the time);
`JoinLimiter` and `UploadLimiter` put them at the edge, with the clock.

Addresses are held in memory only and never logged: a bucket is forgotten as
soon as it has refilled (it would allow exactly what a new one allows), so an
address is gone at most `burst / rate` seconds after its last attempt, whether
or not anyone comes after it. An IPv6 host is counted by its /64 prefix (it may
use any address in it), and an IPv4-mapped IPv6 address as the IPv4 address it is.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

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
    """What one limit per address counts: the IPv4 address, or the /64 an IPv6 address is in."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_HOST_PREFIX), strict=False))
    return str(parsed)


@dataclass(frozen=True)
class Allowance:
    """`burst` actions at once, refilled at `rate` a second."""

    burst: float
    rate: float

    def __post_init__(self) -> None:
        if not (self.burst >= 0 and self.rate > 0):
            raise ValueError("an allowance needs burst >= 0 and rate > 0")

    @property
    def full_after(self) -> float:
        """Seconds an empty bucket takes to fill: after that long unused, a bucket is as good as new."""
        return self.burst / self.rate


JOIN_PER_ADDRESS = Allowance(burst=250, rate=3.0)
"""A class of 200 behind one NAT, with its surveillants and some reconnects, joins at once;
then 3 a second (180 a minute) keep a school going, while a flood gets 3 a second."""
JOIN_PER_EXAM = Allowance(burst=500, rate=5.0)
"""An exam's whole start rush from everywhere (500 at once, 1,000 within 100 s): anyone with
the shared student link can fill the queue with fake students only this fast."""
UPLOAD_PER_ADDRESS = Allowance(burst=800, rate=6.0)
"""The page's upload check makes at most 3 requests (64 KiB, 256 KiB, 1 MiB): 250 students
and some "measure again" at once, then 2 students' checks a second."""
UPLOADS_AT_ONCE_PER_ADDRESS = 64
"""Upload checks in progress from one address: a class measuring in the same few seconds."""
UPLOADS_AT_ONCE = 256
"""Upload checks in progress in all, so a flood from many addresses cannot take every
socket and all inbound bandwidth away from the media."""


class Buckets:
    """A token bucket per key, for at most `max_keys` keys; pure: every call is given the time.

    A bucket unused for `allowance.full_after` seconds is full, so it is forgotten: that
    changes no answer. When `max_keys` are in use, the least recently used is forgotten
    first (which can only be generous to it). Times must not go backwards.
    """

    def __init__(self, allowance: Allowance, max_keys: int) -> None:
        self.allowance = allowance
        self.max_keys = max_keys
        # key -> (tokens, when last counted); least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def take(self, key: str, now: float) -> bool:
        """Spend one of `key`'s tokens at time `now`; False (and nothing spent) when it has none."""
        self.forget_full(now)
        allowance = self.allowance
        entry = self._buckets.pop(key, None)
        if entry is None:
            while self._buckets and len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            tokens = float(allowance.burst)
        else:
            tokens = min(float(allowance.burst), entry[0] + (now - entry[1]) * allowance.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if self.max_keys > 0:
            self._buckets[key] = (tokens, now)
        return allowed

    def forget_full(self, now: float) -> None:
        """Forget every bucket that has refilled by `now`."""
        full_after = self.allowance.full_after
        while self._buckets:
            _, (_, last) = next(iter(self._buckets.items()))
            if now - last < full_after:
                return
            self._buckets.popitem(last=False)

    def next_full(self, now: float) -> float | None:
        """Seconds from `now` until the next bucket may be forgotten; None when there are none."""
        if not self._buckets:
            return None
        _, (_, last) = next(iter(self._buckets.items()))
        return max(0.0, last + self.allowance.full_after - now)


class UploadSlots:
    """Upload checks in progress: at most `per_key` for one address and `total` in all (pure counts)."""

    def __init__(self, per_key: int, total: int) -> None:
        self.per_key = per_key
        self.total = total
        self._busy: Counter[str] = Counter()
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """Slots taken, for all keys."""
        return self._in_use

    def free_for(self, key: str) -> bool:
        """True if `key` may start one more upload now."""
        return self._in_use < self.total and self._busy[key] < self.per_key

    def take(self, key: str) -> bool:
        """Take a slot for `key` if one is free."""
        if not self.free_for(key):
            return False
        self._busy[key] += 1
        self._in_use += 1
        return True

    def give_back(self, key: str) -> None:
        """Return a slot `key` took; a key with none left is forgotten."""
        if self._busy[key] <= 0:
            raise ValueError("no slot taken for this key")
        self._busy[key] -= 1
        self._in_use -= 1
        if not self._busy[key]:
            del self._busy[key]

    def __len__(self) -> int:
        """Keys with an upload in progress."""
        return len(self._busy)


class _Forgetting:
    """Buckets on the monotonic clock, with a timer that forgets refilled ones even when nobody comes."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._timer: asyncio.TimerHandle | None = None

    def _tables(self) -> tuple[Buckets, ...]:
        raise NotImplementedError

    def _take(self, table: Buckets, key: str) -> bool:
        allowed = table.take(key, self.clock())
        self._schedule()
        return allowed

    def _schedule(self) -> None:
        if self._timer is not None:
            return
        now = self.clock()
        waits = [wait for table in self._tables() if (wait := table.next_full(now)) is not None]
        if not waits:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # used outside the server's loop (unit tests): forgotten on the next call
        # A little after the bucket fills, so that it is certainly full when we look.
        self._timer = loop.call_later(min(waits) + 0.01, self._forget)

    def _forget(self) -> None:
        self._timer = None
        now = self.clock()
        for table in self._tables():
            table.forget_full(now)
        self._schedule()

    def close(self) -> None:
        """Stop the timer (the server is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class JoinLimiter(_Forgetting):
    """Joins (`hello`s): a bucket per address, taken before the link is read (so guessing links
    is throttled too), and a bucket per exam, taken once the link names one."""

    def __init__(
        self,
        per_address: Allowance = JOIN_PER_ADDRESS,
        per_exam: Allowance = JOIN_PER_EXAM,
        max_addresses: int = 100_000,
        max_exams: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.addresses = Buckets(per_address, max_addresses)
        self.exams = Buckets(per_exam, max_exams)

    def _tables(self) -> tuple[Buckets, ...]:
        return (self.addresses, self.exams)

    def allow(self, address: str) -> bool:
        """Count one join from `address`; False when it is over its allowance."""
        return self._take(self.addresses, address_key(address))

    def allow_exam(self, exam_id: str) -> bool:
        """Count one join to the exam `exam_id`; False when the exam is over its allowance."""
        return self._take(self.exams, exam_id)


class UploadLimiter(_Forgetting):
    """Upload checks: a bucket per address, and slots in progress per address and in all."""

    def __init__(
        self,
        per_address: Allowance = UPLOAD_PER_ADDRESS,
        at_once_per_address: int = UPLOADS_AT_ONCE_PER_ADDRESS,
        at_once: int = UPLOADS_AT_ONCE,
        max_addresses: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.addresses = Buckets(per_address, max_addresses)
        self.slots = UploadSlots(at_once_per_address, at_once)

    def _tables(self) -> tuple[Buckets, ...]:
        return (self.addresses,)

    def start(self, address: str) -> bool:
        """Admit one upload check from `address` (then call `finish`), or False: over the limits.

        A check refused for want of a free slot spends nothing of the address's allowance."""
        key = address_key(address)
        if not self.slots.free_for(key) or not self._take(self.addresses, key):
            return False
        return self.slots.take(key)

    def finish(self, address: str) -> None:
        """The upload check that `start` admitted for `address` is done."""
        self.slots.give_back(address_key(address))

"""What one process carries, in counts only: exams, participants per role, media packets,
bytes and dropped sends, CPU seconds and event-loop lag.

The same figures feed the node's heartbeat in the directory (sfu/cluster/directory.py)
and the operators' /metrics (sfu/cluster/metrics.py). Nothing here names an exam or a
person: a census is numbers.

The media counts are totals since the process started: each peer's and each
publication's own counters are read, and what they added since the last census is
added to the total, so a peer that leaves keeps what it counted (up to its last census).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any

ROLES = ("student", "surveillant", "organiser")
LAG_INTERVAL = 0.5
"""Seconds between the lag probe's wake-ups: how late each wake-up comes is the loop's lag."""


@dataclass
class Census:
    """One process's counts at one moment."""

    exams: int = 0
    participants: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    packets: int = 0
    """RTP packets received from publishers since start: each is forwarded to its one watcher."""
    bytes: int = 0
    """Their payload bytes."""
    dropped_sends: int = 0
    """Datagrams dropped since start because a media socket's send buffer was full."""
    cpu_seconds: float = 0.0
    loop_lag_seconds: float = 0.0
    """The largest lateness of the probe's wake-ups since the previous census."""

    def to_json(self) -> dict[str, Any]:
        """As a JSON-able dict (what a worker answers the entry)."""
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Census:
        """The census a worker answered (unknown keys ignored)."""
        known = {key: value[key] for key in cls.__dataclass_fields__ if key in value}
        return cls(**known)

    @property
    def people(self) -> int:
        """Students and surveillants connected (organisers carry no media)."""
        return self.participants.get("student", 0) + self.participants.get("surveillant", 0)


class CensusTaker:
    """Counts the exams of one registry; owns the loop-lag probe while `probe()` runs."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self._seen: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._packets = 0
        self._bytes = 0
        self._dropped = 0
        self._lag = 0.0

    def take(self) -> Census:
        """The counts now; the lag is the worst since the previous census."""
        census = Census(cpu_seconds=time.process_time(), loop_lag_seconds=self._lag)
        self._lag = 0.0
        for exam in list(self.registry.exams.values()):
            census.exams += 1
            for participant in list(exam.participants.values()):
                if participant.role in census.participants:
                    census.participants[participant.role] += 1
            for peer in list(exam.media.peers.values()):
                self._packets += self._grown(peer, peer.packets_received)
                for publication in list(peer.publications.values()):
                    self._bytes += self._grown(publication, publication.stats.bytes)
        self._dropped += self._dropped_sends()
        census.packets, census.bytes, census.dropped_sends = self._packets, self._bytes, self._dropped
        return census

    def _grown(self, thing: Any, value: int) -> int:
        before = self._seen.get(thing, 0)
        self._seen[thing] = value
        return max(0, value - before)

    def _dropped_sends(self) -> int:
        from ..media_socket import open_transports

        return sum(self._grown(transport, transport.sends_dropped) for transport in open_transports())

    async def probe(self) -> None:
        """Measure the event loop's lag until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_INTERVAL
            await asyncio.sleep(LAG_INTERVAL)
            self._lag = max(self._lag, loop.time() - due)

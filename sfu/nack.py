"""Upstream repair: which lost packets of a publisher's video track to ask for again (generic
NACK, RFC 4585), when to ask again, and when to give up and ask for a keyframe instead.

A pure generator in the style of pion/interceptor's pkg/nack: no I/O, no clock of its own.
The publication (sfu/publication.py) feeds it what the in-order path cannot decide (a gap,
a late packet, a retransmission), sends the NACKs it returns and calls it again at the
deadline it names. The steady in-order path (sfu/_lane.c) never reaches it.

Before, every uplink gap cost a keyframe request: on a 5% lossy link about one a second
per track, with the picture undecodable until the keyframe came (DESIGN.md).
"""

from __future__ import annotations

MAX_GAP = 64
"""A longer run of lost packets is not asked for: a keyframe repairs it sooner (and the
publisher's history, 128 packets in aiortc, would not hold it)."""

MAX_PENDING = 128
"""Sequence numbers waited for at once, at most; beyond it the generator gives up."""

MAX_NACKS = 3
"""Times one sequence number is asked for before a keyframe is asked for instead."""

INITIAL_RTT = 0.1
"""Round-trip time to assume until a repair has measured one (seconds)."""

MARGIN = 0.03
"""Added to the round-trip time before a NACK counts as unanswered: the publisher's own
turn, pacing and jitter."""

MIN_RTT, MAX_RTT = 0.005, 1.0


class _Missing:
    __slots__ = ("first_nack", "nacks", "next_at")

    def __init__(self, now: float) -> None:
        self.first_nack = now
        self.nacks = 0
        self.next_at = now


class NackGenerator:
    """The lost sequence numbers of one track, how often each was asked for, and until when.

    `gap` and `received` are fed by the receiver; `due` says what to send now. Times are
    seconds on any monotonic clock, passed in by the caller."""

    def __init__(self, max_gap: int = MAX_GAP, max_nacks: int = MAX_NACKS, rtt: float = INITIAL_RTT,
                 margin: float = MARGIN, max_pending: int = MAX_PENDING) -> None:
        self.max_gap = max_gap
        self.max_nacks = max_nacks
        self.max_pending = max_pending
        self.margin = margin
        self.rtt = rtt
        self.missing: dict[int, _Missing] = {}
        self.nacked = 0
        """Sequence numbers sent in NACKs (a retry counts again)."""
        self.repaired = 0
        """Missing packets that arrived after all (a retransmission or a late packet)."""
        self.given_up = 0
        """Times the generator gave up on a gap and a keyframe was asked for instead."""

    def gap(self, first: int, count: int, now: float) -> bool:
        """`count` sequence numbers from `first` on were skipped. False if the gap is too large
        to repair: then nothing is waited for any more and the caller asks for a keyframe."""
        if count > self.max_gap or len(self.missing) + count > self.max_pending:
            self.give_up()
            return False
        for offset in range(count):
            self.missing[(first + offset) & 0xFFFF] = _Missing(now)
        return True

    def received(self, sequence: int, now: float) -> bool:
        """A packet older than the newest arrived. True if it was waited for (it is forwarded);
        False for a duplicate or one given up on (it is dropped)."""
        entry = self.missing.pop(sequence, None)
        if entry is None:
            return False
        self.repaired += 1
        if entry.nacks == 1:
            # The one NACK's round trip: the retransmission answers it (a reordered packet that
            # beat its NACK has nacks == 0 and measures nothing).
            sample = min(max(now - entry.first_nack, MIN_RTT), MAX_RTT)
            self.rtt += (sample - self.rtt) / 8
        return True

    def due(self, now: float) -> tuple[list[int], bool]:
        """(sequence numbers to NACK now, whether to give up and ask for a keyframe).

        Each missing number is asked for at once, then again each time one round trip plus
        the margin passes unanswered, `max_nacks` times; the next deadline gives up."""
        sequences = []
        wait = self.rtt + self.margin
        for sequence, entry in self.missing.items():
            if entry.next_at > now:
                continue
            if entry.nacks >= self.max_nacks:
                self.give_up()
                return [], True
            if entry.nacks == 0:
                entry.first_nack = now
            entry.nacks += 1
            entry.next_at = now + wait
            sequences.append(sequence)
        self.nacked += len(sequences)
        return sequences, False

    def next_deadline(self) -> float | None:
        """When `due` next has something to do, or None if nothing is missing."""
        return min((entry.next_at for entry in self.missing.values()), default=None)

    def give_up(self) -> None:
        """Stop waiting for anything (a keyframe is asked for, which makes it all useless)."""
        self.missing.clear()
        self.given_up += 1

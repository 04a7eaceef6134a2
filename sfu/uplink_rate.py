"""The bit rate the SFU tells a publisher it may send (REMB): a loss-based estimate of its
uplink, in the manner of Google congestion control's loss-based controller (pion/interceptor
pkg/gcc, loss_based_bwe): below 2% loss it grows 8% a report, above 10% it shrinks by half
the loss, in between it holds.

Before, every publisher was told a fixed 3 Mbps; that is now the ceiling and the start, so a
clean link behaves as before. Only loss is used: it comes from counters the SFU keeps anyway
(no per-packet work). A delay-based estimate (arrival times against abs-send-time) would see
congestion before packets drop, but fed in Python it costs about 14 µs per video packet
(aiortc.rate.RemoteBitrateEstimator, measured), too much for the 30 µs budget; not done.
"""

from __future__ import annotations

MAX_BITRATE = 3_000_000
"""The ceiling and the start (bits per second): what the SFU told every publisher before."""

MIN_BITRATE = 150_000
"""The floor: enough for a thumbnail's picture and the microphone."""

MIN_PACKETS = 20
"""Fewer packets in a report interval say too little about loss: the estimate holds."""

INCREASE = 1.08
LOW_LOSS, HIGH_LOSS = 0.02, 0.10


class UplinkRate:
    """One publisher's uplink estimate, updated once per report interval."""

    def __init__(self, start: int = MAX_BITRATE) -> None:
        self.bitrate = start

    def update(self, received: int, lost: int) -> int:
        """One interval's packets received in order and lost on the way (before any repair):
        the new estimate in bits per second."""
        total = received + lost
        if total < MIN_PACKETS:
            return self.bitrate
        loss = lost / total
        if loss > HIGH_LOSS:
            self.bitrate = max(MIN_BITRATE, int(self.bitrate * (1 - 0.5 * loss)))
        elif loss < LOW_LOSS:
            self.bitrate = min(MAX_BITRATE, int(self.bitrate * INCREASE))
        return self.bitrate

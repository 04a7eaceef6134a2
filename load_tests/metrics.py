"""Turning what the bots noted into figures."""

from __future__ import annotations

import numpy as np

from .media import TRACK_NAMES, split_tag


def percentile(values, q: float) -> float | None:
    if len(values) == 0:
        return None
    return float(np.percentile(values, q))


def frame_stats(collector, t0: int, t1: int, eligible: set[int] | None,
                sent_filter=None) -> dict:
    """Video frames sent by eligible students with send time in [t0, t1] (ns,
    monotonic), and which of them reached a surveillant (any time until now:
    the caller waits a grace period after t1 before calling this).

    latency = surveillant receipt of the frame's last packet minus student
    send of the frame's last packet.
    """
    sent = 0
    received = 0
    per_track = {name: [0, 0] for name in TRACK_NAMES.values()}
    latencies: list[float] = []
    recv = collector.frames_recv
    for key, t_sent in collector.frames_sent.items():
        if not (t0 <= t_sent <= t1):
            continue
        if sent_filter is not None and not sent_filter(t_sent):
            continue
        tag = key >> 32
        student, track = split_tag(tag)
        if eligible is not None and student not in eligible:
            continue
        sent += 1
        name = TRACK_NAMES[track]
        per_track[name][0] += 1
        t_recv = recv.get(key)
        if t_recv is not None:
            received += 1
            per_track[name][1] += 1
            latencies.append((t_recv - t_sent) / 1e6)
    lat = np.asarray(latencies, dtype=float)
    return {
        "frames_sent": sent,
        "frames_received": received,
        "frame_delivery_ratio": (received / sent) if sent else None,
        "frame_delivery_by_track": {
            name: {"sent": s, "received": r, "ratio": (r / s) if s else None}
            for name, (s, r) in per_track.items()
        },
        "latency_ms_p50": percentile(lat, 50),
        "latency_ms_p95": percentile(lat, 95),
        "latency_ms_p99": percentile(lat, 99),
        "latency_ms_max": float(lat.max()) if len(lat) else None,
        "latency_ms_mean": float(lat.mean()) if len(lat) else None,
        "_latencies_ms": lat,
    }


def round_floats(value, digits: int = 3):
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [round_floats(v, digits) for v in value]
    return value


def loop_factory():
    """uvloop's event loop if installed (cheaper bots), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return None
    return uvloop.new_event_loop

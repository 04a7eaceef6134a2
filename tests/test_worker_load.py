"""A worker's CPU share as the entry measures it from censuses: never from a span too short to mean anything."""

from __future__ import annotations

from sfu.cluster.census import Census
from sfu.cluster.workers import CPU_WINDOW, Worker


def test_censuses_back_to_back_do_not_make_an_idle_worker_look_busy():
    worker = Worker(0)
    worker.counted(Census(cpu_seconds=2.000), now=100.0)
    # A census 10 ms later that cost 2 ms of CPU: 20% "busy" if measured over that span.
    worker.counted(Census(cpu_seconds=2.002), now=100.010)
    assert worker.cpu_share == 0.0
    worker.counted(Census(cpu_seconds=2.010), now=100.0 + CPU_WINDOW)
    assert worker.cpu_share < 0.02


def test_a_busy_worker_reads_busy():
    worker = Worker(0)
    worker.counted(Census(cpu_seconds=10.0), now=0.0)
    worker.counted(Census(cpu_seconds=10.8), now=2.0)
    assert abs(worker.cpu_share - 0.4) < 1e-9
    assert worker.census is not None and worker.census.cpu_seconds == 10.8

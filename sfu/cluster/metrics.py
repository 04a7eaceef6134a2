"""The operators' figures: a Prometheus /metrics endpoint on a port of its own (`--metrics-port`).

Off by default. It answers only on that port (bind it to a private address), never on the
public one. It reports counts from each worker's census (sfu/cluster/census.py): exams,
participants per role, media packets and bytes, dropped sends, CPU seconds, event-loop
lag and worker restarts; labelled by worker (`w0`, `w1`, … or `main` for one process),
never by exam, name or title.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .census import ROLES, Census, CensusTaker


@dataclass(frozen=True)
class WorkerFigures:
    """One worker's census and how often it was restarted."""

    worker: str
    census: Census
    restarts: int = 0


Source = Callable[[], list[WorkerFigures]]


class CensusCollector:
    """A prometheus_client collector that reads `source` at every scrape."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        """The metric families for one scrape."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        figures = self.source()
        exams = GaugeMetricFamily("invigil_exams", "Exams running", labels=["worker"])
        people = GaugeMetricFamily("invigil_participants", "Participants connected, per role", labels=["worker", "role"])
        packets = CounterMetricFamily(
            "invigil_media_packets", "RTP packets received from publishers (each forwarded to its one watcher)", labels=["worker"]
        )
        payload = CounterMetricFamily("invigil_media_bytes", "Payload bytes of those packets", labels=["worker"])
        dropped = CounterMetricFamily(
            "invigil_dropped_sends", "Datagrams dropped because a media socket's send buffer was full", labels=["worker"]
        )
        cpu = CounterMetricFamily("invigil_cpu_seconds", "CPU seconds of the worker process", labels=["worker"])
        lag = GaugeMetricFamily("invigil_event_loop_lag_seconds", "Worst event-loop lag since the last census", labels=["worker"])
        restarts = CounterMetricFamily("invigil_worker_restarts", "Times the worker process was started again", labels=["worker"])
        for item in figures:
            census, worker = item.census, [item.worker]
            exams.add_metric(worker, census.exams)
            for role in ROLES:
                people.add_metric([item.worker, role], census.participants.get(role, 0))
            packets.add_metric(worker, census.packets)
            payload.add_metric(worker, census.bytes)
            dropped.add_metric(worker, census.dropped_sends)
            cpu.add_metric(worker, census.cpu_seconds)
            lag.add_metric(worker, census.loop_lag_seconds)
            restarts.add_metric(worker, item.restarts)
        yield from (exams, people, packets, payload, dropped, cpu, lag, restarts)


def metrics_app(source: Source) -> web.Application:
    """The small app that answers GET /metrics (and nothing else)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(CensusCollector(source))

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


def one_process_source(registry: Any) -> tuple[Source, CensusTaker]:
    """A source for a single process (`--workers 1`): its own census, labelled `main`."""
    taker = CensusTaker(registry)
    return (lambda: [WorkerFigures("main", taker.take())]), taker


def serving_metrics(
    source: Source, host: str, port: int, probe: CensusTaker | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx for the main app: serve /metrics on `host`:`port` while it runs
    (and, for one process, keep its loop-lag probe running)."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(metrics_app(source), access_log=None)
        await runner.setup()
        task = asyncio.create_task(probe.probe()) if probe is not None else None
        try:
            await web.TCPSite(runner, host, port).start()
            yield
        finally:
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            await runner.cleanup()

    return lifecycle

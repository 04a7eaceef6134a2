"""The worker processes of one machine: started, watched, restarted when they die.

The entry owns a WorkerPool. Each worker is `python -m sfu.cluster.worker` on a
loopback port; the pool knows its port once it says so, the signalling sockets the
entry proxies to it, and its CPU time (from /proc, Linux). A worker that exits is
started again after a short pause; until it is back, it is not among the live ones,
so no join is routed to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from .placement import Load

logger = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
"""Seconds a worker has to import, build its app and listen."""
RESTART_PAUSE = 0.5
STOP_TIMEOUT = 10.0
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process `pid` (0.0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime 14 and stime 15 (man proc).
    return (int(fields[11]) + int(fields[12])) / _TICKS


class Worker:
    """One worker slot: its process while it runs, and what the entry counts for it."""

    def __init__(self, index: int) -> None:
        self.name = f"w{index}"
        self.process: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.sockets = 0
        self.restarts = 0
        self._cpu_mark: tuple[float, float] | None = None
        self.cpu_share = 0.0

    @property
    def live(self) -> bool:
        """Ready for sockets: started, listening and not exited."""
        return self.port is not None and self.process is not None and self.process.returncode is None

    def cpu(self) -> float:
        """CPU seconds this worker's current process has used."""
        return cpu_seconds(self.process.pid) if self.process is not None else 0.0

    def sample_cpu(self, now: float) -> None:
        """Update `cpu_share` (cores in use) from the CPU time since the previous sample."""
        used = self.cpu()
        if self._cpu_mark is not None and now > self._cpu_mark[0]:
            self.cpu_share = max(0.0, (used - self._cpu_mark[1]) / (now - self._cpu_mark[0]))
        self._cpu_mark = (now, used)


class WorkerPool:
    """N workers started from one spec; `on_exit(worker)` is told when one dies."""

    def __init__(self, count: int, spec: dict[str, Any], on_exit: Callable[[Worker], None]) -> None:
        self.workers = [Worker(index) for index in range(count)]
        self._spec = json.dumps(spec) + "\n"
        self._on_exit = on_exit
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        """Start every worker and wait until all listen (or fail to)."""
        ready = [asyncio.get_running_loop().create_future() for _ in self.workers]
        for worker, future in zip(self.workers, ready):
            self._tasks.append(asyncio.create_task(self._keep(worker, future)))
        await asyncio.gather(*ready)

    def loads(self, exams: dict[str, int]) -> list[Load]:
        """The live workers' loads, with `exams` counted per worker name by the caller."""
        return [
            Load(w.name, exams=exams.get(w.name, 0), participants=w.sockets, cpu=w.cpu_share)
            for w in self.workers
            if w.live
        ]

    def by_name(self, name: str) -> Worker | None:
        """The live worker called `name`, if any."""
        for worker in self.workers:
            if worker.name == name and worker.live:
                return worker
        return None

    async def sample(self, interval: float = 2.0) -> None:
        """Keep each worker's CPU share current (runs until cancelled)."""
        loop = asyncio.get_running_loop()
        while True:
            for worker in self.workers:
                worker.sample_cpu(loop.time())
            await asyncio.sleep(interval)

    async def _keep(self, worker: Worker, ready: asyncio.Future[None]) -> None:
        while not self._stopping:
            try:
                await self._run_once(worker, ready)
            except Exception:
                logger.exception("worker %s failed to start", worker.name)
            if not ready.done():
                ready.set_result(None)
            if self._stopping:
                return
            worker.restarts += 1
            logger.warning("worker %s exited: restarting it", worker.name)
            await asyncio.sleep(RESTART_PAUSE)

    async def _run_once(self, worker: Worker, ready: asyncio.Future[None]) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sfu.cluster.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        worker.process = process
        try:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(self._spec.encode())
            await process.stdin.drain()  # stdin stays open: the worker exits when it closes
            async with asyncio.timeout(READY_TIMEOUT):
                line = await process.stdout.readline()
            word, _, port = line.decode().partition(" ")
            if word != "port":
                raise RuntimeError("worker did not say its port")
            worker.port = int(port)
            worker._cpu_mark = None
            if not ready.done():
                ready.set_result(None)
            await process.wait()
        finally:
            worker.port = None
            worker.sockets = 0
            if process.returncode is None:
                with suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            self._on_exit(worker)

    async def stop(self) -> None:
        """SIGTERM every worker, SIGKILL the ones still there after STOP_TIMEOUT, and wait."""
        self._stopping = True
        processes = [w.process for w in self.workers if w.process is not None and w.process.returncode is None]
        for process in processes:
            with suppress(ProcessLookupError):
                process.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await asyncio.gather(*(p.wait() for p in processes))
        except TimeoutError:
            for process in processes:
                with suppress(ProcessLookupError):
                    process.kill()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()

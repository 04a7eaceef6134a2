"""The worker processes of one machine: started, watched, restarted when they die.

The entry owns a WorkerPool. Each worker is `python -m sfu.cluster.worker` on a
loopback port; the pool knows its port once it says so, the signalling sockets the
entry proxies to it, and its last census (sfu/cluster/census.py). A worker that exits is
started again after a short pause; until it is back, it is not among the live ones,
so no join is routed to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from .census import Census
from .placement import Load

logger = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
"""Seconds a worker has to import, build its app and listen."""
RESTART_PAUSE = 0.5
"""Seconds before a worker that exited is started again; doubled while it keeps failing
within STEADY seconds of its start, up to RESTART_PAUSE_MAX."""
RESTART_PAUSE_MAX = 30.0
STEADY = 60.0
STOP_TIMEOUT = 10.0
CPU_WINDOW = 1.0
"""Shortest span a worker's CPU share is measured over."""


class Worker:
    """One worker slot: its process while it runs, and what the entry counts for it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = f"w{index}"
        self.process: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.sockets = 0
        self.restarts = 0
        self.census: Census | None = None
        self._cpu_mark: tuple[float, float] | None = None
        self.cpu_share = 0.0

    @property
    def live(self) -> bool:
        """Ready for sockets: started, listening and not exited."""
        return self.port is not None and self.process is not None and self.process.returncode is None

    def counted(self, census: Census, now: float) -> None:
        """Keep the worker's latest census and its CPU share (cores in use), measured over at
        least CPU_WINDOW seconds: over a shorter span, the census's own few milliseconds of CPU
        would read as a busy worker (a drain asks for censuses back to back)."""
        self.census = census
        used = census.cpu_seconds
        if self._cpu_mark is None:
            self._cpu_mark = (now, used)
        elif now - self._cpu_mark[0] >= CPU_WINDOW:
            self.cpu_share = max(0.0, (used - self._cpu_mark[1]) / (now - self._cpu_mark[0]))
            self._cpu_mark = (now, used)


class WorkerPool:
    """N workers started from one spec; `on_exit(worker)` is told when one dies."""

    def __init__(self, count: int, spec: dict[str, Any], on_exit: Callable[[Worker], None]) -> None:
        self.workers = [Worker(index) for index in range(count)]
        self._spec = spec
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

    async def _keep(self, worker: Worker, ready: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        delay = RESTART_PAUSE
        while not self._stopping:
            started = loop.time()
            try:
                await self._run_once(worker, ready)
            except Exception:
                logger.exception("worker %s failed to start", worker.name)
            if not ready.done():
                ready.set_result(None)
            if self._stopping:
                return
            if loop.time() - started > STEADY:
                delay = RESTART_PAUSE
            worker.restarts += 1
            logger.warning("worker %s exited: restarting it in %g s", worker.name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_PAUSE_MAX)

    async def _run_once(self, worker: Worker, ready: asyncio.Future[None]) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sfu.cluster.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        worker.process = process
        try:
            assert process.stdin is not None and process.stdout is not None
            # Each worker learns its index: its media port is the base port plus its index.
            process.stdin.write((json.dumps({**self._spec, "index": worker.index}) + "\n").encode())
            await process.stdin.drain()  # stdin stays open: the worker exits when it closes
            async with asyncio.timeout(READY_TIMEOUT):
                line = await process.stdout.readline()
            word, _, port = line.decode().partition(" ")
            if word != "port":
                raise RuntimeError("worker did not say its port")
            worker.port = int(port)
            worker._cpu_mark = None
            worker.cpu_share = 0.0
            worker.census = None
            if not ready.done():
                ready.set_result(None)
            await process.wait()
        finally:
            worker.port = None
            worker.sockets = 0
            worker.census = None
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

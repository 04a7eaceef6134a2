"""The entry of `invigil serve --workers N` (and of each node with `--directory`): one address for
pages and signalling, worker processes behind it.

The entry serves the pages itself and proxies each signalling WebSocket to the worker
that runs its exam. It reads the socket's first frame (the `hello`), verifies the
link's signature and routes by the exam id in the signed settings (why, in the
package docstring: sfu/cluster/__init__.py). With a directory, an exam placed on
another node is proxied to that node's entry, which serves it on one of its workers.
Everything after the hello is passed through frame by frame, both ways, untouched;
media never passes here.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from ..config import ServerConfig
from ..links import LinkError, LinkSigner
from ..log_summary import LogSummary
from ..messages import MAX_SDP_FRAME_BYTES, ProtocolError, parse_client_message
from ..signalling import CLOSE_LINK_REFUSED, HELLO_TIMEOUT
from .census import Census
from .directory import HEARTBEAT, Directory, Node
from .placement import route
from .worker import (
    CENSUS_PATH,
    CLIENT_ADDRESS_HEADER,
    ENTRY_KEY_HEADER,
    client_address,
    entry_key,
    from_entry,
    spec_for,
)
from .workers import Worker, WorkerPool

logger = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_SERVICE_RESTART = 1012
"""Sent to a page whose worker died: not final, so the page reconnects (signalling.js)."""
CLOSE_TRY_AGAIN_LATER = 1013
"""No worker or node takes the exam right now (all restarting or draining): the page retries."""
CONNECT_TIMEOUT = 10.0
CENSUS_TIMEOUT = 2.0

_directory_failed = LogSummary(logger, "the directory did not answer: serving the exam here")
_census_failed = LogSummary(logger, "a worker did not answer its census")


class Entry:
    """The exams' placements on this machine's workers, the proxy that follows them, and, with a
    directory, this node's heartbeat and its drain on SIGTERM."""

    def __init__(
        self,
        config: ServerConfig,
        workers: int,
        directory: Directory | None = None,
        drain_timeout: float = 3 * 3600.0,
    ) -> None:
        self.signer = LinkSigner(config.secret)
        self._key = entry_key(config.secret)
        self.pool = WorkerPool(workers, spec_for(config), self._worker_exited)
        self.directory = directory
        self.drain_timeout = drain_timeout
        self.draining = False
        # exam id -> (worker name, the exam's end): ids and counts only, as everywhere here.
        self.placed: dict[str, tuple[str, int]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._packets: tuple[float, int] | None = None
        self.packets_per_second = 0.0

    # -- placement ---------------------------------------------------------------

    def worker_for(self, exam: tuple[str, int] | None) -> Worker | None:
        """The live worker for a hello naming `exam` (id, end), placing the exam if it is new here."""
        now = time.time()
        for exam_id, (_, ends_at) in list(self.placed.items()):
            if ends_at <= now:
                del self.placed[exam_id]
        counts: dict[str, int] = {}
        for name, _ in self.placed.values():
            counts[name] = counts.get(name, 0) + 1
        exam_id = exam[0] if exam is not None else None
        loads = self.pool.loads(counts)
        name = route(exam_id, {i: n for i, (n, _) in self.placed.items()}, loads)
        if name is None:
            return None
        if exam is not None and self.placed.get(exam[0], ("",))[0] != name:
            self.placed[exam[0]] = (name, exam[1])
            scores = ", ".join(f"{load.place} {load.score():.0f}" for load in loads)
            logger.info("exam %s: placed on worker %s (load scores: %s)", exam[0], name, scores)
        return self.pool.by_name(name)

    def _worker_exited(self, worker: Worker) -> None:
        # Its exams come back, at their next join, on the worker chosen then.
        for exam_id, (name, _) in list(self.placed.items()):
            if name == worker.name:
                del self.placed[exam_id]

    def exam_named(self, frame: str | bytes) -> tuple[str, int] | None:
        """(exam id, end) of a hello or a link `check` whose link verifies (only the exam's worker
        knows whether the exam or a seat of it has ended); None for anything else, which any worker
        can answer (an organiser's creator link, or an error the worker words as usual)."""
        try:
            message = parse_client_message(frame, None)
            if message["type"] not in ("hello", "check"):
                return None
            capability = self.signer.verify(message["token"], time.time())
        except (ProtocolError, LinkError):
            return None
        if capability.exam is None:
            return None
        return capability.exam.exam_id, capability.exam.ends_at

    async def _destination(self, exam: tuple[str, int] | None, forwarded: bool) -> tuple[str, Worker | None] | None:
        """Where the socket goes: another node's /ws, or a worker's here (with the worker); None: nowhere now."""
        if self.directory is not None and exam is not None and not forwarded:
            try:
                node = await self.directory.place(*exam)
            except Exception as error:  # Redis down or slow: one machine can still serve
                _directory_failed.count(type(error).__name__)
                node = None
                if self.draining:
                    return None
            else:
                if node is None:
                    return None
                if node.node_id != self.directory.node_id:
                    return node.url + "/ws", None
        worker = self.worker_for(exam)
        if worker is None or worker.port is None:
            return None
        return f"http://127.0.0.1:{worker.port}/ws", worker

    # -- the proxy ---------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        """GET /ws on the entry: read the hello, then pass frames to and from the exam's worker or node."""
        client = web.WebSocketResponse(max_msg_size=MAX_SDP_FRAME_BYTES, heartbeat=15.0, compress=False)
        await client.prepare(request)
        try:
            first = await client.receive(timeout=HELLO_TIMEOUT)
        except asyncio.TimeoutError:
            await client.close(code=CLOSE_LINK_REFUSED)
            return client
        if first.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            await client.close()
            return client
        destination = await self._destination(self.exam_named(first.data), from_entry(request, self._key))
        if destination is None:
            await client.close(code=CLOSE_TRY_AGAIN_LATER)
            return client
        url, worker = destination
        assert self._session is not None
        # From another node, the client is the one that node names; the worker counts joins by it.
        headers = {ENTRY_KEY_HEADER: self._key, CLIENT_ADDRESS_HEADER: client_address(request, self._key)}
        try:
            upstream = await self._session.ws_connect(
                url,
                headers=headers,
                max_msg_size=MAX_SDP_FRAME_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=CONNECT_TIMEOUT),
                compress=0,
            )
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            await client.close(code=CLOSE_SERVICE_RESTART)
            return client
        if worker is not None:
            worker.sockets += 1
        try:
            await _send(upstream, first)
            code = await _pipe(client, upstream)
        finally:
            if worker is not None:
                worker.sockets = max(0, worker.sockets - 1)
            await upstream.close()
        if not client.closed:
            await client.close(code=code)
        return client

    # -- counts, heartbeat, drain -----------------------------------------------------

    def censuses(self) -> list[tuple[str, Census]]:
        """The latest census of each live worker that answered one."""
        return [(w.name, w.census) for w in self.pool.workers if w.live and w.census is not None]

    def figures(self) -> list[Any]:
        """Each worker's latest census and restarts, for /metrics (sfu/cluster/metrics.py)."""
        from .metrics import WorkerFigures

        return [
            WorkerFigures(w.name, w.census or Census(), w.restarts) for w in self.pool.workers
        ]

    def node(self) -> Node:
        """This node as its heartbeat describes it."""
        assert self.directory is not None
        counted = [census for _, census in self.censuses()]
        live = [w for w in self.pool.workers if w.live]
        return Node(
            node_id=self.directory.node_id,
            url=self.directory.node_url,
            accepting=not self.draining,
            exams=sum(c.exams for c in counted),
            participants=sum(c.people for c in counted),
            cpu=sum(w.cpu_share for w in live) / max(1, len(live)),
            packets_per_second=self.packets_per_second,
        )

    async def _count(self) -> None:
        assert self._session is not None
        loop = asyncio.get_running_loop()
        for worker in self.pool.workers:
            if not worker.live:
                continue
            try:
                async with self._session.get(
                    f"http://127.0.0.1:{worker.port}{CENSUS_PATH}",
                    headers={ENTRY_KEY_HEADER: self._key},
                    timeout=aiohttp.ClientTimeout(total=CENSUS_TIMEOUT),
                ) as response:
                    census = Census.from_json(await response.json())
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError, TypeError) as error:
                _census_failed.count(type(error).__name__)
                continue
            worker.counted(census, loop.time())
        packets = sum(census.packets for _, census in self.censuses())
        now = loop.time()
        if self._packets is not None and now > self._packets[0]:
            self.packets_per_second = max(0.0, (packets - self._packets[1]) / (now - self._packets[0]))
        self._packets = (now, packets)

    async def _beat(self) -> None:
        if self.directory is None:
            return
        try:
            await self.directory.beat(self.node())
        except Exception as error:
            _directory_failed.count(type(error).__name__)

    async def _watch(self) -> None:
        while True:
            await self._count()
            await self._beat()
            await asyncio.sleep(HEARTBEAT)

    def _start_draining(self) -> None:
        if self.draining:
            return
        self.draining = True
        logger.info("draining: no new exams here; the running ones continue (up to %g s)", self.drain_timeout)
        self._own(asyncio.get_running_loop().create_task(self._drain()))

    async def _drain(self) -> None:
        await self._beat()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        while loop.time() < deadline:
            await self._count()  # fresh: an exam that started a moment ago must count
            live = [w for w in self.pool.workers if w.live]
            counted = self.censuses()
            if len(counted) == len(live) and sum(c.exams for _, c in counted) == 0:
                logger.info("drained: no exam runs here any more")
                break
            await asyncio.sleep(HEARTBEAT / 2)
        else:
            logger.warning("drain timeout: stopping with exams still running")
        loop.call_soon(_stop_serving)

    def _own(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """Start the workers, the proxy's client session and the counting with the app; stop them with it."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT))
        loop = asyncio.get_running_loop()
        try:
            await self.pool.start()
            await self._count()
            await self._beat()
            self._own(loop.create_task(self._watch()))
            if self.directory is not None:
                # After aiohttp's own handler (set in runner.setup, before the app starts): SIGTERM drains.
                loop.add_signal_handler(signal.SIGTERM, self._start_draining)
            yield
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self.directory is not None:
                with suppress(Exception):
                    await self.directory.leave()
                await self.directory.close()
            await self._session.close()
            await self.pool.stop()


def _stop_serving() -> None:
    # GracefulExit is a SystemExit: raised from a loop callback it ends run_until_complete,
    # which is how aiohttp's own signal handler stops http_guard.run.
    raise web.GracefulExit()


async def _send(socket: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, frame: aiohttp.WSMessage) -> None:
    if frame.type == WSMsgType.TEXT:
        await socket.send_str(frame.data)
    else:
        await socket.send_bytes(frame.data)


async def _pipe(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> int:
    """Pass frames both ways until one side closes; the close code for the client."""

    async def from_client() -> None:
        async for frame in client:
            if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await _send(upstream, frame)

    async def from_upstream() -> None:
        async for frame in upstream:
            if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await _send(client, frame)

    tasks = [asyncio.create_task(from_client()), asyncio.create_task(from_upstream())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if tasks[1] in done and upstream.close_code is not None and upstream.close_code not in (1005, 1006):
        # The worker (or node) closed the socket on purpose (exam ended, link refused, replaced...): say so.
        return upstream.close_code
    return CLOSE_SERVICE_RESTART if tasks[1] in done else 1000

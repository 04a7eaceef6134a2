"""The entry of `invigil serve --workers N`: one address for pages and signalling, N workers behind it.

The entry serves the pages itself and proxies each signalling WebSocket to the worker
that runs its exam. It reads the socket's first frame (the `hello`), verifies the
link's signature and routes by the exam id in the signed settings (why, in the
package docstring: sfu/cluster/__init__.py). Everything after the hello is passed
through frame by frame, both ways, untouched; media never passes here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import suppress

import aiohttp
from aiohttp import WSMsgType, web

from ..config import ServerConfig
from ..links import LinkError, LinkSigner
from ..messages import MAX_SDP_FRAME_BYTES, ProtocolError, parse_client_message
from ..signalling import CLOSE_LINK_REFUSED, HELLO_TIMEOUT
from .placement import route
from .worker import CLIENT_ADDRESS_HEADER, ENTRY_KEY_HEADER, spec_for
from .workers import Worker, WorkerPool

logger = logging.getLogger(__name__)

CLOSE_SERVICE_RESTART = 1012
"""Sent to a page whose worker died: not final, so the page reconnects (signalling.js)."""
CLOSE_TRY_AGAIN_LATER = 1013
"""No worker is live right now (all restarting): the page retries."""
CONNECT_TIMEOUT = 10.0


class Entry:
    """The exams' placements on this machine's workers and the proxy that follows them."""

    def __init__(self, config: ServerConfig, workers: int) -> None:
        self.signer = LinkSigner(config.secret)
        self._key = secrets.token_hex(16)
        self.pool = WorkerPool(workers, spec_for(config, self._key), self._worker_exited)
        # exam id -> (worker name, the exam's end): ids and counts only, as everywhere here.
        self.placed: dict[str, tuple[str, int]] = {}
        self._session: aiohttp.ClientSession | None = None

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
        name = route(exam_id, {i: n for i, (n, _) in self.placed.items()}, self.pool.loads(counts))
        if name is None:
            return None
        if exam is not None and self.placed.get(exam[0], ("",))[0] != name:
            self.placed[exam[0]] = (name, exam[1])
            logger.info("exam %s: placed on worker %s", exam[0], name)
        return self.pool.by_name(name)

    def _worker_exited(self, worker: Worker) -> None:
        # Its exams come back, at their next join, on the worker chosen then.
        for exam_id, (name, _) in list(self.placed.items()):
            if name == worker.name:
                del self.placed[exam_id]

    def exam_named(self, frame: str | bytes) -> tuple[str, int] | None:
        """(exam id, end) of a hello whose link verifies; None for anything else, which any worker
        can answer (an organiser's creator link, or an error the worker words as usual)."""
        try:
            message = parse_client_message(frame, None)
            if message["type"] != "hello":
                return None
            capability = self.signer.verify(message["token"], time.time())
        except (ProtocolError, LinkError):
            return None
        if capability.exam is None:
            return None
        return capability.exam.exam_id, capability.exam.ends_at

    # -- the proxy ---------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        """GET /ws on the entry: read the hello, then pass frames to and from the exam's worker."""
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
        worker = self.worker_for(self.exam_named(first.data))
        if worker is None or worker.port is None:
            await client.close(code=CLOSE_TRY_AGAIN_LATER)
            return client
        assert self._session is not None
        headers = {ENTRY_KEY_HEADER: self._key, CLIENT_ADDRESS_HEADER: request.remote or ""}
        try:
            upstream = await self._session.ws_connect(
                f"http://127.0.0.1:{worker.port}/ws",
                headers=headers,
                max_msg_size=MAX_SDP_FRAME_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=CONNECT_TIMEOUT),
                compress=0,
            )
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            await client.close(code=CLOSE_SERVICE_RESTART)
            return client
        worker.sockets += 1
        try:
            await _send(upstream, first)
            code = await _pipe(client, upstream)
        finally:
            worker.sockets = max(0, worker.sockets - 1)
            await upstream.close()
        if not client.closed:
            await client.close(code=code)
        return client

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """Start the workers and the proxy's client session with the app; stop them with it."""
        await self.pool.start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT))
        sampler = asyncio.create_task(self.pool.sample())
        try:
            yield
        finally:
            sampler.cancel()
            with suppress(asyncio.CancelledError):
                await sampler
            await self._session.close()
            await self.pool.stop()


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
        # The worker closed the socket on purpose (exam ended, link refused, replaced...): say so.
        return upstream.close_code
    return CLOSE_SERVICE_RESTART if tasks[1] in done else 1000

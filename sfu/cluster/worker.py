"""One worker process of `invigil serve --workers N`: the whole app on a loopback port.

The entry (sfu/cluster/entry.py) starts it as `python -m sfu.cluster.worker`, writes
its settings as one JSON line on stdin (the secret travels there, never on the command
line) and reads `port N` from its stdout once it listens. The worker exits when its
stdin closes, so it never outlives the entry, even one killed with SIGKILL.

Only the entry connects to it. The entry names the client's address in a header,
together with a key that only the entry and its workers know, so the per-address join
limit still counts browsers rather than the entry.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from aiohttp import web

from ..config import IceServer, ServerConfig
from ..turn_credentials import TurnRest

ENTRY_KEY_HEADER = "X-Invigil-Entry"
CLIENT_ADDRESS_HEADER = "X-Invigil-Client"
SHUTDOWN_SECONDS = 5.0

CENSUS_PATH = "/cluster/census"

logger = logging.getLogger(__name__)


def entry_key(secret: bytes) -> str:
    """The key the entry (and, between nodes, each node) shows its workers and peers.

    Derived from the link-signing secret, which every process of one deployment holds
    already, so nodes need nothing more to trust each other's client-address header."""
    return hmac.new(secret, b"invigil cluster entry", hashlib.sha256).hexdigest()


def from_entry(request: web.Request, key: str) -> bool:
    """Whether `request` carries the entry's key."""
    return hmac.compare_digest(request.headers.get(ENTRY_KEY_HEADER, ""), key)


def spec_for(config: ServerConfig) -> dict[str, Any]:
    """What a worker needs to build the same ServerConfig as its entry, as JSON-able values."""
    return {
        "secret": config.secret.hex(),
        "public_url": config.public_url,
        "default_cap": config.default_cap,
        "ice_servers": [[s.urls, s.username, s.credential] for s in config.ice_servers],
        "media_mode": config.media_mode,
        "student_media_seconds": config.student_media_seconds,
        "turn": None if config.turn is None else [config.turn.secret.hex(), list(config.turn.urls), config.turn.ttl_seconds],
        "media_port": config.media_port,
    }


def config_from_spec(spec: dict[str, Any]) -> ServerConfig:
    """The ServerConfig a spec describes (the inverse of `spec_for`). Worker `index` (in the spec,
    from the pool) takes media port base + index: each worker process needs a UDP port of its own."""
    turn = spec.get("turn")
    media_port = spec.get("media_port")
    return ServerConfig(
        secret=bytes.fromhex(spec["secret"]),
        public_url=spec["public_url"],
        default_cap=spec["default_cap"],
        ice_servers=tuple(IceServer(*server) for server in spec["ice_servers"]),
        media_mode=spec["media_mode"],
        student_media_seconds=spec["student_media_seconds"],
        turn=None if turn is None else TurnRest(bytes.fromhex(turn[0]), tuple(turn[1]), turn[2]),
        media_port=None if media_port is None else media_port + spec.get("index", 0),
    )


def client_address(request: web.Request, key: str) -> str:
    """The browser's address: as the entry (or another node) names it when the request carries
    the key, else the peer's own; a browser cannot name one for itself."""
    if CLIENT_ADDRESS_HEADER in request.headers and from_entry(request, key):
        return request.headers[CLIENT_ADDRESS_HEADER]
    return request.remote or ""


def client_address_from_entry(key: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware: requests that carry the entry's key are seen from the client's address."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if CLIENT_ADDRESS_HEADER in request.headers:
            request = request.clone(remote=client_address(request, key))
        return await handler(request)

    return middleware


async def serve(spec: dict[str, Any]) -> None:
    """Serve the app on 127.0.0.1 (a free port) until stdin closes or SIGTERM/SIGINT arrives."""
    from ..app import REGISTRY, make_app
    from .census import CensusTaker

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    config = config_from_spec(spec)
    key = entry_key(config.secret)
    app = make_app(config)
    app.middlewares.append(client_address_from_entry(key))
    census = CensusTaker(app[REGISTRY])

    async def answer_census(request: web.Request) -> web.Response:
        if not from_entry(request, key):
            raise web.HTTPNotFound()
        return web.json_response(census.take().to_json())

    app.router.add_get(CENSUS_PATH, answer_census)
    probe = loop.create_task(census.probe())
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        sys.stdout.write(f"port {port}\n")
        sys.stdout.flush()
        gc.freeze()
        watcher = loop.create_task(_until_stdin_closes())
        stopper = loop.create_task(stop.wait())
        try:
            await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watcher, stopper):
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
    finally:
        probe.cancel()
        with suppress(asyncio.CancelledError):
            await probe
        await runner.cleanup()


async def _until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


def main() -> int:
    """Entry point of `python -m sfu.cluster.worker`."""
    from ..cli import _new_event_loop, configure_logging

    configure_logging()
    line = sys.stdin.readline()
    if not line:
        return 2
    spec = json.loads(line)
    loop = _new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(spec))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

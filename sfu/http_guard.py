"""The HTTP front as `invigil serve` runs it: a deadline per request head, a cap per address, quiet errors.

aiohttp by itself keeps a connection that trickles its headers (slowloris) open for
its keep-alive timeout, counts no connections per client, logs a traceback quoting
the request line for every malformed request, and answers it without the security
headers and with a Server header naming its version. Here:

- every connection goes through a GuardedConnection, made by the loop when it
  accepts the socket: over `connections_per_address` open connections from one
  address (IPv6: one /64, as the join limit counts) it is closed at once, before
  any TLS handshake (TLS is done here with `loop.start_tls`, so that a handshake
  is counted and bounded too);
- a request head must arrive within `header_timeout` of the connection (after its
  handshake) or of the previous response; an idle keep-alive connection is closed
  after as long. This is aiohttp's keep-alive timer, which closes a connection that
  waits for a head when it fires, whether or not bytes trickle in;
- a parser error (bad request line, oversized header, bad chunking) is answered
  with a plain 400 and the security headers, and counted in a LogSummary: no
  traceback, no client bytes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .log_summary import LogSummary
from .rate_limit import address_key
from .security_headers import add_security_headers

logger = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a whole request head; browsers send theirs in one packet."""

CONNECTIONS_PER_ADDRESS = 512
"""Open HTTP connections per address (per /64 for IPv6).

A class of 200 behind one school NAT holds 200 WebSockets for the whole exam;
while pages load, a browser opens up to 6 more connections per student, each closed
HEADER_TIMEOUT after its last request. 200 students joining within 2 minutes
(1.7 a second) add about 1.7 × 6 × 15 s ≈ 150 of those, twice that in a rush:
512 leaves room for that and stops one address long before it can hold a server's
file descriptors (the README asks for 65,536)."""

_refused = LogSummary(logger, "refused a connection over the per-address cap")
_malformed = LogSummary(logger, "refused a malformed HTTP request")


@dataclass(frozen=True)
class HttpLimits:
    """What one client may hold of the HTTP front."""

    header_timeout: float = HEADER_TIMEOUT
    connections_per_address: int = CONNECTIONS_PER_ADDRESS


class AddressCounter:
    """Open connections per address, in memory and only while they are open."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, address: str) -> str | None:
        """Count one more connection from `address`; its key, or None when the address is at the cap."""
        key = address_key(address)
        count = self._open.get(key, 0)
        if count >= self.limit:
            return None
        self._open[key] = count + 1
        return key

    def release(self, key: str) -> None:
        """One connection counted under `key` closed."""
        count = self._open.pop(key, 0) - 1
        if count > 0:
            self._open[key] = count

    def __len__(self) -> int:
        return len(self._open)


class QuietRequestHandler(RequestHandler):
    """aiohttp's protocol with its error responses hardened: headers on, client bytes out."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Parser errors (400) are counted and answered plainly; other errors as aiohttp does, plus the headers."""
        if status != 400:
            # A failure of our own handlers: aiohttp logs the traceback, which we need.
            response = super().handle_error(request, status, exc, message)
        else:
            _malformed.count(type(exc).__name__ if exc is not None else "bad request")
            if request.writer.output_size > 0:
                raise ConnectionError("a response was already sent on this connection")
            # aiohttp's text quotes the offending bytes back; the client knows what it sent.
            response = web.Response(status=400, text="400 Bad Request\n")
            response.force_close()
        add_security_headers(response.headers, request.path)
        return response


class GuardedServer(web.Server):
    """aiohttp's Server, with each accepted socket behind a GuardedConnection."""

    def __init__(
        self,
        handler: Any,
        *,
        limits: HttpLimits,
        tls: ssl.SSLContext | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, keepalive_timeout=limits.header_timeout, **kwargs)
        self.limits = limits
        self.tls = tls
        self.admission = AddressCounter(limits.connections_per_address)
        self.handshaking: set[GuardedConnection] = set()

    def __call__(self) -> GuardedConnection:  # type: ignore[override]
        return GuardedConnection(self)

    def new_handler(self) -> QuietRequestHandler:
        """The HTTP protocol for one admitted connection."""
        return QuietRequestHandler(self, loop=self._loop, **self._kwargs)

    def pre_shutdown(self) -> None:
        """Close connections still in their TLS handshake, then the rest as aiohttp does."""
        for connection in list(self.handshaking):
            connection.abort()
        super().pre_shutdown()


class GuardedConnection(asyncio.Protocol):
    """One accepted socket: counted per address, TLS done here, then aiohttp's protocol behind it."""

    def __init__(self, server: GuardedServer) -> None:
        self._server = server
        self._handler: QuietRequestHandler | None = None
        self._key: str | None = None
        self._transport: asyncio.Transport | None = None
        self._handshake: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the socket (or close it), then start TLS or HTTP."""
        transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport instances
        peer = transport.get_extra_info("peername")
        key = self._server.admission.acquire(str(peer[0])) if peer else None
        if key is None:
            _refused.count("over the cap" if peer else "no peer address")
            transport.close()
            return
        self._key = key
        self._transport = transport
        if self._server.tls is None:
            self._start(transport)
        else:
            self._server.handshaking.add(self)
            self._handshake = asyncio.get_running_loop().create_task(self._start_tls(transport))

    async def _start_tls(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        tls = self._server.tls
        assert tls is not None
        try:
            secured = await loop.start_tls(
                transport, self, tls, server_side=True, ssl_handshake_timeout=self._server.limits.header_timeout
            )
        except Exception:  # a failed or slow handshake: the client's problem, not worth a line
            transport.abort()
            self._release()
            return
        finally:
            self._server.handshaking.discard(self)
            self._handshake = None
        if secured is None or secured.is_closing():
            self._release()
            return
        self._start(secured)

    def _start(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._handler = self._server.new_handler()
        self._handler.connection_made(transport)

    def abort(self) -> None:
        """Drop the connection now (server shutdown)."""
        if self._handshake is not None:
            self._handshake.cancel()
        if self._transport is not None:
            self._transport.abort()

    def _release(self) -> None:
        if self._key is not None:
            self._server.admission.release(self._key)
            self._key = None

    # -- asyncio.Protocol, passed on to aiohttp once it runs ---------------------------

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._handler is not None else None

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._handshake is not None:
            self._handshake.cancel()
        if self._handler is not None:
            self._handler.connection_lost(exc)
            self._handler = None


class GuardedRunner(web.AppRunner):
    """aiohttp's AppRunner serving through a GuardedServer."""

    def __init__(
        self, app: web.Application, *, limits: HttpLimits, tls: ssl.SSLContext | None, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits
        self._tls = tls

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app; gives its handler and request factory
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            loop=asyncio.get_running_loop(),
            limits=self._limits,
            tls=self._tls,
            **self._kwargs,
        )


def run(
    app: web.Application,
    *,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    limits: HttpLimits,
    on_ready: Callable[[], None],
    shutdown_timeout: float,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Serve `app` until SIGINT or SIGTERM, as aiohttp's run_app does but through the guard."""

    async def serve() -> None:
        runner = GuardedRunner(
            app, limits=limits, tls=tls, handle_signals=True, shutdown_timeout=shutdown_timeout, access_log=None
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            on_ready()
            await asyncio.Event().wait()  # until a signal raises GracefulExit
        finally:
            await runner.cleanup()

    main = loop.create_task(serve())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

"""The HTTP front as `invigil serve` runs it: a deadline per request head, a cap per address, quiet errors.

aiohttp by itself keeps a connection that trickles its headers (slowloris) open for
its keep-alive timeout (75 s under run_app, measured; an hour under a bare AppRunner),
lets a TLS handshake take 60 s, counts no connections per client, logs a traceback quoting
the request line for every malformed request, and answers it without the security
headers and with a Server header naming its version. Here:

- a GuardedSite accepts the connections itself, so it knows the peer before
  anything is read: over `connections_per_address` open connections from one
  address (IPv6: one /64, as the join limit counts) it is closed at once, before
  any TLS handshake; a TLS handshake gets `header_timeout` to finish;
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
import errno
import logging
import resource
import socket
import ssl
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

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
    """aiohttp's protocol with its error responses hardened (headers on, client bytes out),
    which gives its connection's place back when the connection closes."""

    def __init__(self, manager: web.Server, *, on_lost: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._on_lost = on_lost

    def connection_lost(self, exc: BaseException | None) -> None:
        """The connection closed: aiohttp cleans up, the address has one connection less."""
        try:
            super().connection_lost(exc)
        finally:
            self._on_lost()

    def handle_error(
        self,
        request: web.BaseRequest,
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
    """aiohttp's Server whose connections are QuietRequestHandlers with the header timeout."""

    def __init__(self, handler: Any, *, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(handler, keepalive_timeout=limits.header_timeout, **kwargs)
        self.limits = limits
        self.admission = AddressCounter(limits.connections_per_address)

    def __call__(self) -> QuietRequestHandler:
        return self.handler_for(lambda: None)

    def handler_for(self, on_lost: Callable[[], None]) -> QuietRequestHandler:
        """The HTTP protocol for one admitted connection; `on_lost` is called once it closes."""
        return QuietRequestHandler(self, loop=self._loop, on_lost=on_lost, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """aiohttp's AppRunner serving through a GuardedServer (use it with a GuardedSite)."""

    def __init__(self, app: web.Application, *, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app; gives its handler and request factory
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            loop=asyncio.get_running_loop(),
            limits=self._limits,
            **self._kwargs,
        )


class GuardedSite(web.BaseSite):
    """Listens on `host` and `port` (or on a bound `sock`) and accepts connections itself.

    Accepting here, not in the loop's server, gives the peer's address before
    anything is read: a connection over the cap is closed before any TLS
    handshake, and an admitted one gets `header_timeout` for its handshake.
    """

    def __init__(
        self,
        runner: GuardedRunner,
        host: str | None = None,
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._listeners = [sock] if sock is not None else []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return ", ".join(f"{scheme}://{_printable(s.getsockname())}" for s in self._listeners)

    async def start(self) -> None:
        """Bind (unless given a socket) and start accepting."""
        await super().start()
        if not self._listeners:
            self._listeners = _bind(self._host, self._port, self._backlog)
        else:
            self._listeners[0].listen(self._backlog)
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            listener.setblocking(False)
            self._own(loop.create_task(self._accept(listener)))

    async def stop(self) -> None:
        """Stop accepting, drop handshakes in progress, close the listening sockets."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for listener in self._listeners:
            listener.close()
        await super().stop()

    def _own(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert isinstance(server, GuardedServer)
        while True:
            try:
                connection, peer = await loop.sock_accept(listener)
            except OSError as error:  # EMFILE and the like: the README says how to avoid it
                _refused.count(f"accept failed ({errno.errorcode.get(error.errno or 0, 'OSError')})")
                await asyncio.sleep(0.1)
                continue
            key = server.admission.acquire(str(peer[0]))
            if key is None:
                _refused.count("over the cap")
                connection.close()
                continue
            self._own(loop.create_task(self._serve(server, connection, key)))

    async def _serve(self, server: GuardedServer, connection: socket.socket, key: str) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                server.admission.release(key)

        # From here the loop owns the socket, and closes it if the handshake fails.
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: server.handler_for(release),
                connection,
                ssl=self._ssl_context,
                ssl_handshake_timeout=server.limits.header_timeout if self._ssl_context else None,
            )
        except asyncio.CancelledError:
            release()
            raise
        except Exception:  # a failed or slow handshake: the client's problem, not worth a line
            release()


def _bind(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for every address `host` resolves to, as the loop's create_server binds them."""
    listeners: list[socket.socket] = []
    seen: set[Any] = set()
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            if address in seen:
                continue
            seen.add(address)
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.listen(backlog)
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _printable(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


FILE_LIMIT = 65536
"""File descriptors `invigil serve` asks for: connections, WebSockets and media sockets all take one."""

LOW_FILE_LIMIT = 4096
"""Below this, eight addresses at the default cap hold every descriptor: worth a warning."""


def raise_file_limit(wanted: int = FILE_LIMIT) -> int:
    """Raise this process's soft file-descriptor limit towards `wanted` (as far as the hard limit
    allows) and warn when it stays below LOW_FILE_LIMIT; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft != resource.RLIM_INFINITY and soft < LOW_FILE_LIMIT:
        logger.warning(
            "the file-descriptor limit is %d: a few hundred open connections can lock everyone out; "
            "set LimitNOFILE=%d (systemd) or ulimit -n %d",
            soft,
            wanted,
            wanted,
        )
    return soft


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

    raise_file_limit()

    async def serve() -> None:
        runner = GuardedRunner(
            app, limits=limits, handle_signals=True, shutdown_timeout=shutdown_timeout, access_log=None
        )
        await runner.setup()
        try:
            await GuardedSite(runner, host, port, ssl_context=tls).start()
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

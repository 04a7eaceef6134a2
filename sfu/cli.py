"""The `invigil` command: `invigil serve` starts one Invigil server process
(with `--workers` above 1 or `--directory`, an entry and its workers: sfu/cluster/).

It reads its options and INVIGIL_SECRET, builds the app with `sfu.app.make_app`,
prints the organiser link once the server listens, and logs no client data.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import os
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from .assignment import MAX_CAP, MIN_CAP
from .config import IceServer, ServerConfig
from .http_guard import CONNECTIONS_PER_ADDRESS, HEADER_TIMEOUT, HttpLimits
from .tls import TlsSetup, server_ssl_context
from .turn_credentials import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS, TurnRest

SECRET_ENV = "INVIGIL_SECRET"
TURN_SECRET_ENV = "INVIGIL_TURN_SECRET"
MIN_SECRET_BYTES = 16
ICE_SCHEMES = ("stun", "stuns", "turn", "turns")
ICE_TRANSPORTS = ("udp", "tcp")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# On SIGINT/SIGTERM, how long open requests and sockets get before they are cut.
SHUTDOWN_SECONDS = 5.0
# Libraries that log addresses of peers at INFO: only their warnings are kept.
NOISY_LOGGERS = ("aioice", "aiortc")

RANDOM_SECRET_HINT = (
    f"{SECRET_ENV} is not set: using a random secret for this process only. "
    "Every link stops working when it stops; set "
    f"{SECRET_ENV} (at least {MIN_SECRET_BYTES} bytes, e.g. `openssl rand -hex 32`) "
    "for links that survive a restart."
)


class UsageError(ValueError):
    """A wrong option or environment value, told to the operator as it is."""


def parse_ice_server(text: str) -> IceServer:
    """One --ice-server value as an IceServer.

    Forms: `stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]` and, with
    credentials, `turn:USER:PASS@host[:port][?transport=…]` (also `stuns:`,
    `turns:`). USER and PASS may be %-encoded (`%40` for `@`, `%3A` for `:`).
    """
    scheme, colon, rest = text.strip().partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ICE_SCHEMES:
        raise UsageError(f"ICE server {text!r}: must start with one of {', '.join(ICE_SCHEMES)}:")
    address, question, query = rest.partition("?")
    credentials, at, hostport = address.rpartition("@")
    if not at:
        hostport = address
    host, port = _split_host_port(hostport, text)
    urls = f"{scheme}:{host}" + (f":{port}" if port is not None else "")
    if question:
        urls += "?" + _checked_query(query, scheme, text)
    if scheme.startswith("stun"):
        if at:
            raise UsageError(f"ICE server {text!r}: a STUN server takes no credentials")
        return IceServer(urls=urls)
    if not at:
        raise UsageError(
            f"ICE server {text!r}: a TURN server needs credentials, as {scheme}:USER:PASS@host:port"
        )
    username, colon, credential = credentials.partition(":")
    if not colon or not username or not credential:
        raise UsageError(
            f"ICE server {text!r}: credentials must be USER:PASS before the @, both non-empty"
        )
    return IceServer(urls=urls, username=unquote(username), credential=unquote(credential))


def parse_turn_url(text: str) -> str:
    """One --turn-url value, checked: `turn:host[:port][?transport=udp|tcp]` or `turns:…`, no credentials
    (each participant gets their own, signed with INVIGIL_TURN_SECRET)."""
    scheme, colon, rest = text.strip().partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("turn", "turns"):
        raise UsageError(f"TURN URL {text!r}: must start with turn: or turns:")
    address, question, query = rest.partition("?")
    if "@" in address:
        raise UsageError(f"TURN URL {text!r}: no credentials here; they are made from ${TURN_SECRET_ENV}")
    host, port = _split_host_port(address, text)
    url = f"{scheme}:{host}" + (f":{port}" if port is not None else "")
    return url + ("?" + _checked_query(query, scheme, text) if question else "")


def turn_from_env(urls: Sequence[str], ttl: int, environ: Mapping[str, str]) -> TurnRest | None:
    """TURN REST API settings: --turn-url needs $INVIGIL_TURN_SECRET (coturn's static-auth-secret), and
    the reverse. The secret is used as coturn uses it: its text's UTF-8 bytes."""
    secret = environ.get(TURN_SECRET_ENV, "").strip()
    if not urls and not secret:
        return None
    if not urls:
        raise UsageError(f"{TURN_SECRET_ENV} is set but no --turn-url says where the TURN server is")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise UsageError(
            f"--turn-url needs {TURN_SECRET_ENV}, the TURN server's static-auth-secret, "
            f"of at least {MIN_SECRET_BYTES} bytes"
        )
    return TurnRest(secret=secret.encode(), urls=tuple(urls), ttl_seconds=ttl)


def _split_host_port(hostport: str, text: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise UsageError(f"ICE server {text!r}: unclosed [ in the address")
        host, after = hostport[: end + 1], hostport[end + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise UsageError(f"ICE server {text!r}: {host} is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise UsageError(f"ICE server {text!r}: expected :port after {host}")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
        if ":" in (port_text or ""):
            raise UsageError(f"ICE server {text!r}: write an IPv6 address in brackets, [::1]:3478")
    if not host or any(c.isspace() or c in "/?#@" for c in host):
        raise UsageError(f"ICE server {text!r}: missing or bad host")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"ICE server {text!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def _checked_query(query: str, scheme: str, text: str) -> str:
    name, equals, value = query.partition("=")
    if scheme.startswith("stun") or name != "transport" or value.lower() not in ICE_TRANSPORTS:
        raise UsageError(
            f"ICE server {text!r}: the only option is ?transport=udp or ?transport=tcp, for TURN"
        )
    return f"transport={value.lower()}"


def secret_from_env(environ: Mapping[str, str]) -> tuple[bytes, bool]:
    """The link-signing secret and whether it was generated (True: it dies with the process).

    INVIGIL_SECRET is read as hex when it is hex (even length), else as UTF-8
    text; either way it must give at least MIN_SECRET_BYTES bytes. Set but empty
    is an error, not "unset": someone meant to give one.
    """
    if SECRET_ENV not in environ:
        return secrets.token_bytes(32), True
    value = environ[SECRET_ENV].strip()
    try:
        secret = bytes.fromhex(value) if value else b""
    except ValueError:
        secret = value.encode("utf-8")
    if len(secret) < MIN_SECRET_BYTES:
        raise UsageError(
            f"{SECRET_ENV} is too short: it must give at least {MIN_SECRET_BYTES} bytes "
            f"({2 * MIN_SECRET_BYTES} hex digits or {MIN_SECRET_BYTES} characters); "
            "try `openssl rand -hex 32`"
        )
    return secret, False


def default_public_url(host: str, port: int, tls: bool) -> str:
    """Where browsers reach this server when --public-url is not given."""
    scheme = "https" if tls else "http"
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def checked_public_url(url: str) -> str:
    """--public-url without its trailing slash; only http(s) origins, optionally with a path."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--public-url {url!r}: must be http(s)://host[:port][/path]")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise UsageError(f"--public-url {url!r}: no query, fragment or credentials")
    return url.strip().rstrip("/")


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError("must be a number from 1 to 65535")
    return int(text)


def _cap(text: str) -> int:
    if not text.isdigit() or not MIN_CAP <= int(text) <= MAX_CAP:
        raise argparse.ArgumentTypeError(f"must be a number from {MIN_CAP} to {MAX_CAP}")
    return int(text)


def _seconds_between(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number of seconds from `low` to `high`."""

    def seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a number of seconds from {low:g} to {high:g}")
        return value

    return seconds


def _positive(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise argparse.ArgumentTypeError("must be a number from 1 to 1000000")
    return int(text)


def _turn_url(text: str) -> str:
    try:
        return parse_turn_url(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _ttl(text: str) -> int:
    if not text.isdigit() or not 60 <= int(text) <= MAX_TTL_SECONDS:
        raise argparse.ArgumentTypeError(f"must be a number of seconds from 60 to {MAX_TTL_SECONDS}")
    return int(text)


def _ice_server(text: str) -> IceServer:
    try:
        return parse_ice_server(text)
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def default_workers() -> int:
    """One worker per core this process may run on (a cpuset or taskset counts, not the host's cores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="invigil", description="Live proctoring: a human surveillant, an SFU, nothing stored."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server and print the organiser link",
        description=f"Run one Invigil server. Links are signed with ${SECRET_ENV}.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    serve.add_argument("--port", type=_port, default=8080, help="port to listen on (default %(default)s)")
    serve.add_argument("--tls-cert", metavar="PEM", help="certificate chain file (with --tls-key)")
    serve.add_argument("--tls-key", metavar="PEM", help="private key file (with --tls-cert)")
    serve.add_argument(
        "--self-signed",
        action="store_true",
        help="serve https with a fresh self-signed certificate held in memory (LAN use)",
    )
    serve.add_argument(
        "--ice-server",
        dest="ice_servers",
        metavar="URL",
        type=_ice_server,
        action="append",
        default=[],
        help="STUN/TURN server for browsers, repeatable: stun:host:port, "
        "turn:USER:PASS@host:port[?transport=udp|tcp]",
    )
    serve.add_argument(
        "--turn-url",
        dest="turn_urls",
        metavar="URL",
        type=_turn_url,
        action="append",
        default=[],
        help=f"TURN server whose credentials each participant gets, short-lived and signed with "
        f"${TURN_SECRET_ENV} (coturn's use-auth-secret), repeatable: turn:host:port[?transport=udp|tcp], "
        "turns:host:443",
    )
    serve.add_argument(
        "--turn-ttl",
        metavar="SECONDS",
        type=_ttl,
        default=DEFAULT_TTL_SECONDS,
        help="TURN credentials live this long, or to the exam's end plus 30 minutes if later "
        f"(at most {MAX_TTL_SECONDS}; default %(default)s)",
    )
    serve.add_argument(
        "--media-port",
        metavar="PORT",
        type=_port,
        help="receive and send all media on this one UDP port (one socket per server address) "
        "instead of a port per participant; the port a firewall opens for media. With --workers N, "
        "worker i uses PORT+i: open PORT to PORT+N-1",
    )
    serve.add_argument(
        "--default-cap",
        type=_cap,
        default=8,
        help="students per surveillant for new exams (default %(default)s)",
    )
    serve.add_argument(
        "--student-media-timeout",
        metavar="SECONDS",
        type=_seconds_between(1, 3600),
        default=60.0,
        help="a placed student whose media is not up within this time is released (default %(default)s)",
    )
    serve.add_argument(
        "--media-mode",
        choices=("forward", "transcode"),
        default="forward",
        help="forward encoded media (the product); transcode only as a benchmark baseline",
    )
    serve.add_argument(
        "--public-url",
        metavar="URL",
        help="address browsers use, for the links (default: the scheme, host and port served)",
    )
    serve.add_argument(
        "--header-timeout",
        type=_seconds_between(0.1, 3600),
        default=HEADER_TIMEOUT,
        metavar="SECONDS",
        help="close a connection whose request head has not arrived within this time, "
        "or that stays idle as long (default %(default)s)",
    )
    serve.add_argument(
        "--connections-per-address",
        type=_positive,
        default=CONNECTIONS_PER_ADDRESS,
        metavar="N",
        help="open HTTP connections one address (an IPv6 /64) may hold (default %(default)s)",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=default_workers(),
        metavar="N",
        help="worker processes behind the one address, each exam on one of them "
        "(default: the number of cores, %(default)s; 1 runs everything in this process)",
    )
    serve.add_argument(
        "--directory",
        metavar="redis://HOST:PORT",
        help="several machines: place exams on nodes through this Redis (needs the `cluster` extra)",
    )
    serve.add_argument(
        "--node-url",
        metavar="URL",
        help="with --directory: where the other nodes reach this one (default: the public URL)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=_seconds_between(0, 7 * 24 * 3600),
        default=3 * 3600.0,
        metavar="SECONDS",
        help="with --directory, SIGTERM drains: no new exams, the running ones go on until they end "
        "or this long, then the process stops (default %(default)s)",
    )
    serve.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus /metrics (counts only) on this port, for operators; off by default",
    )
    serve.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address for --metrics-port (default %(default)s: keep it private)",
    )
    return parser


def config_from_args(
    args: argparse.Namespace, secret: bytes, tls: bool, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """The ServerConfig for parsed `serve` arguments (and $INVIGIL_TURN_SECRET from `environ`)."""
    if args.public_url:
        public_url = checked_public_url(args.public_url)
    else:
        public_url = default_public_url(args.host, args.port, tls)
    return ServerConfig(
        secret=secret,
        public_url=public_url,
        default_cap=args.default_cap,
        ice_servers=tuple(args.ice_servers),
        turn=turn_from_env(args.turn_urls, args.turn_ttl, environ or {}),
        media_port=args.media_port,
        media_mode=args.media_mode,
        student_media_seconds=args.student_media_timeout,
    )


def configure_logging() -> None:
    """INFO logs with no client data: no access log, no peer addresses."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(drop_client_address)


def drop_client_address(record: logging.LogRecord) -> bool:
    """aiohttp names the client's address when a request fails: keep the error, drop the address."""
    if record.name == "aiohttp.server" and record.msg == "Error handling request from %s":
        record.msg, record.args = "Error handling request", ()
    return True


def serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from .app import creator_link, make_app
    from .http_guard import run

    try:
        secret, generated = secret_from_env(environ)
        hostnames = [args.host]
        if args.public_url:
            hostnames.append(urlsplit(args.public_url).hostname or "")
        tls = server_ssl_context(args.tls_cert, args.tls_key, args.self_signed, hostnames)
        config = config_from_args(args, secret, tls is not None, environ)
        directory = _directory_from_args(args, config)
        if args.metrics_port:
            _require("prometheus_client", "--metrics-port")
    except (UsageError, ValueError) as error:
        print(f"invigil serve: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"invigil serve: error: cannot load the TLS files: {error}", file=sys.stderr)
        return 2

    configure_logging()
    if generated:
        logging.getLogger("invigil").warning(RANDOM_SECRET_HINT)
    loop = _new_event_loop()
    asyncio.set_event_loop(loop)
    entry = None
    if args.workers > 1 or args.directory:
        from .cluster.entry import Entry

        entry = Entry(config, args.workers, directory, args.drain_timeout)
        app = make_app(config, websocket=entry.websocket)
        app.cleanup_ctx.append(entry.lifecycle)
    else:
        app = make_app(config)
    if args.metrics_port:
        _serve_metrics(app, args, entry)
    link = creator_link(app)

    def announce() -> None:
        # Called once the server listens.
        _print_ready(config, tls, link)
        # Everything imported and built so far lives as long as the process: keep the
        # cyclic collector from walking it again and again while media flows.
        gc.freeze()

    limits = HttpLimits(args.header_timeout, args.connections_per_address)
    run(
        app,
        host=args.host,
        port=args.port,
        tls=tls.context if tls else None,
        limits=limits,
        on_ready=announce,
        shutdown_timeout=SHUTDOWN_SECONDS,
        loop=loop,
    )
    return 0


def _serve_metrics(app: Any, args: argparse.Namespace, entry: Any) -> None:
    """Add the /metrics port to `app`'s lifecycle: the entry's workers, or this one process."""
    from .app import REGISTRY
    from .cluster.metrics import one_process_source, serving_metrics

    if entry is not None:
        app.cleanup_ctx.append(serving_metrics(entry.figures, args.metrics_host, args.metrics_port))
    else:
        source, taker = one_process_source(app[REGISTRY])
        app.cleanup_ctx.append(serving_metrics(source, args.metrics_host, args.metrics_port, taker))


def _directory_from_args(args: argparse.Namespace, config: ServerConfig) -> Any:
    """The cluster Directory for --directory (None without it); a UsageError for a bad URL or no `redis`."""
    if not args.directory:
        return None
    if urlsplit(args.directory).scheme not in ("redis", "rediss") or not urlsplit(args.directory).hostname:
        raise UsageError(f"--directory {args.directory!r}: must be redis://HOST:PORT (or rediss://)")
    try:
        from .cluster.directory import Directory

        return Directory(args.directory, checked_public_url(args.node_url or config.public_url))
    except ImportError:
        raise UsageError("--directory needs the Redis client: pip install 'invigil[cluster]'") from None


def _require(module: str, option: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise UsageError(f"{option} needs the `cluster` extra: pip install 'invigil[cluster]'") from None


def _print_ready(config: ServerConfig, tls: TlsSetup | None, link: str) -> None:
    lines = [f"Invigil is serving on {config.public_url}"]
    if tls is not None:
        lines.append(f"TLS certificate SHA-256 fingerprint: {tls.fingerprint_sha256}")
    lines.append("Organiser link (it creates exams: share it like a key):")
    lines.append(link)
    print("\n".join(lines), flush=True)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (cheaper packet I/O), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `invigil` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args, os.environ)
    return 2


if __name__ == "__main__":
    sys.exit(main())

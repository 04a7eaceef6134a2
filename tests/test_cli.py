"""`invigil serve`: option parsing, the secret, and a real server process."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest

from sfu.cli import (
    MIN_SECRET_BYTES,
    RANDOM_SECRET_HINT,
    UsageError,
    build_parser,
    checked_public_url,
    config_from_args,
    default_public_url,
    drop_client_address,
    main,
    parse_ice_server,
    secret_from_env,
)
from sfu.config import IceServer
from sfu.tls import fingerprint_sha256

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"^(https?)://127\.0\.0\.1:(\d+)/organise/#([A-Za-z0-9_.~=-]+)$")
FINGERPRINT = re.compile(r"fingerprint: ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})$")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stun:stun.example.org:3478", IceServer("stun:stun.example.org:3478")),
        ("stun:stun.example.org", IceServer("stun:stun.example.org")),
        ("STUN:192.0.2.1:3478", IceServer("stun:192.0.2.1:3478")),
        ("stun:[2001:db8::1]:3478", IceServer("stun:[2001:db8::1]:3478")),
        (
            "turn:alice:wonderland@turn.example.org:3478",
            IceServer("turn:turn.example.org:3478", "alice", "wonderland"),
        ),
        (
            "turn:alice:wonderland@turn.example.org:3478?transport=udp",
            IceServer("turn:turn.example.org:3478?transport=udp", "alice", "wonderland"),
        ),
        (
            "turns:bob:pa%40ss%3Aword@turn.example.org:5349?transport=tcp",
            IceServer("turns:turn.example.org:5349?transport=tcp", "bob", "pa@ss:word"),
        ),
        # A password may hold ':' and '@' unencoded: the last '@' ends it.
        (
            "turn:bob:a:b@c@[2001:db8::2]:3478",
            IceServer("turn:[2001:db8::2]:3478", "bob", "a:b@c"),
        ),
    ],
)
def test_ice_server_forms(text: str, expected: IceServer) -> None:
    assert parse_ice_server(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "stun.example.org:3478",
        "http://turn.example.org",
        "turn:turn.example.org:3478",  # TURN without credentials: browsers refuse it
        "turn:alice@turn.example.org:3478",  # no password
        "turn::secret@turn.example.org:3478",  # no user
        "stun:alice:secret@stun.example.org:3478",  # STUN takes no credentials
        "stun:stun.example.org:0",
        "stun:stun.example.org:65536",
        "stun:stun.example.org:port",
        "stun::3478",
        "stun:2001:db8::1:3478",  # IPv6 needs brackets
        "stun:[not-ipv6]:3478",
        "stun:[2001:db8::1",
        "turn:a:b@turn.example.org:3478?transport=sctp",
        "turn:a:b@turn.example.org:3478?foo=bar",
        "stun:stun.example.org:3478?transport=udp",
    ],
)
def test_bad_ice_servers_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_ice_server(text)


def test_ice_server_is_repeatable_and_keeps_order() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--ice-server",
            "stun:stun.example.org:3478",
            "--ice-server",
            "turn:u:p@turn.example.org:3478?transport=udp",
        ]
    )
    assert args.ice_servers == [
        IceServer("stun:stun.example.org:3478"),
        IceServer("turn:turn.example.org:3478?transport=udp", "u", "p"),
    ]
    config = config_from_args(args, b"s" * 32, tls=False)
    assert [server.to_browser() for server in config.ice_servers] == [
        {"urls": "stun:stun.example.org:3478"},
        {"urls": "turn:turn.example.org:3478?transport=udp", "username": "u", "credential": "p"},
    ]


def test_bad_ice_server_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", "--ice-server", "turn:turn.example.org"])
    assert exit_.value.code == 2
    assert "needs credentials" in capsys.readouterr().err


def test_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    config = config_from_args(args, b"s" * 32, tls=False)
    assert (args.host, args.port) == ("127.0.0.1", 8080)
    assert config.public_url == "http://127.0.0.1:8080"
    assert config.default_cap == 8
    assert config.ice_servers == ()
    assert not args.self_signed and args.tls_cert is None and args.tls_key is None


@pytest.mark.parametrize("option", [["--port", "0"], ["--port", "70000"], ["--default-cap", "0"]])
def test_out_of_range_numbers_are_refused(option: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", *option])


def test_student_media_timeout_reaches_the_config_and_is_bounded() -> None:
    assert config_from_args(build_parser().parse_args(["serve"]), b"s" * 32, tls=False).student_media_seconds == 60.0
    args = build_parser().parse_args(["serve", "--student-media-timeout", "90"])
    assert config_from_args(args, b"s" * 32, tls=False).student_media_seconds == 90.0
    for bad in ("0", "0.5", "nan", "inf", "3601", "soon"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "--student-media-timeout", bad])


def test_subcommand_is_required() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


@pytest.mark.parametrize(
    ("host", "port", "tls", "expected"),
    [
        ("127.0.0.1", 8080, False, "http://127.0.0.1:8080"),
        ("0.0.0.0", 8443, True, "https://127.0.0.1:8443"),
        ("::", 8080, False, "http://[::1]:8080"),
        ("::1", 8080, True, "https://[::1]:8080"),
        ("exam.example.org", 443, True, "https://exam.example.org:443"),
    ],
)
def test_default_public_url(host: str, port: int, tls: bool, expected: str) -> None:
    assert default_public_url(host, port, tls) == expected


def test_public_url_option_wins_and_loses_its_trailing_slash() -> None:
    args = build_parser().parse_args(
        ["serve", "--host", "0.0.0.0", "--public-url", "https://exam.example.org/", "--default-cap", "4"]
    )
    config = config_from_args(args, b"s" * 32, tls=False)
    assert config.public_url == "https://exam.example.org"
    assert config.default_cap == 4


@pytest.mark.parametrize(
    "url", ["ftp://exam.example.org", "exam.example.org", "https://", "https://h/?a=b", "https://h/#x"]
)
def test_bad_public_url_is_refused(url: str) -> None:
    with pytest.raises(UsageError):
        checked_public_url(url)


def test_secret_from_hex() -> None:
    secret, generated = secret_from_env({"INVIGIL_SECRET": "00" * 16 + "ff" * 16})
    assert secret == bytes(16) + b"\xff" * 16
    assert not generated


def test_secret_from_text() -> None:
    secret, generated = secret_from_env({"INVIGIL_SECRET": "correct horse battery stäple"})
    assert secret == "correct horse battery stäple".encode()
    assert not generated


def test_hex_that_decodes_too_short_is_refused() -> None:
    with pytest.raises(UsageError, match="too short"):
        secret_from_env({"INVIGIL_SECRET": "ab" * (MIN_SECRET_BYTES - 1)})


@pytest.mark.parametrize("value", ["", "   ", "short", "x" * (MIN_SECRET_BYTES - 1)])
def test_short_or_empty_secret_is_refused(value: str) -> None:
    with pytest.raises(UsageError, match="too short"):
        secret_from_env({"INVIGIL_SECRET": value})


def test_missing_secret_is_generated_and_random() -> None:
    first, generated = secret_from_env({})
    second, _ = secret_from_env({})
    assert generated
    assert len(first) == 32 and first != second


def test_random_secret_hint_says_links_die_with_the_process() -> None:
    assert "INVIGIL_SECRET" in RANDOM_SECRET_HINT
    assert "stops working when it stops" in RANDOM_SECRET_HINT


def test_bad_secret_stops_serve_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INVIGIL_SECRET", "short")
    assert main(["serve", "--port", "8080"]) == 2
    assert "INVIGIL_SECRET is too short" in capsys.readouterr().err


def test_half_a_tls_setup_stops_serve(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INVIGIL_SECRET", "x" * 32)
    assert main(["serve", "--tls-cert", "cert.pem"]) == 2
    assert "go together" in capsys.readouterr().err


def test_missing_tls_files_stop_serve(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INVIGIL_SECRET", "x" * 32)
    missing = str(tmp_path / "missing.pem")
    assert main(["serve", "--tls-cert", missing, "--tls-key", missing]) == 2
    assert "cannot load the TLS files" in capsys.readouterr().err


def test_log_filter_drops_the_client_address() -> None:
    record = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s", ("203.0.113.9",), None
    )
    assert drop_client_address(record)
    assert record.getMessage() == "Error handling request"


# --- a real `invigil serve` process -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServeProcess:
    """`invigil serve …` as a child process, with what it printed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stdout: list[str] = []

    async def wait_for_link(self, timeout: float = 30.0) -> re.Match[str]:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    stderr = await self._stderr()
                    raise AssertionError(f"invigil serve exited early:\n{''.join(self.stdout)}{stderr}")
                line = raw.decode().rstrip("\n")
                self.stdout.append(line + "\n")
                if match := LINK.match(line):
                    return match

    async def stop(self) -> tuple[int, str]:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await self.process.wait()
        return self.process.returncode, await self._stderr()

    async def _stderr(self) -> str:
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode()


async def _start_serve(*options: str, env: dict[str, str]) -> ServeProcess:
    # The installed console script where there is one (as `make run` uses it).
    script = Path(sys.executable).with_name("invigil")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "sfu.cli"]
    process = await asyncio.create_subprocess_exec(
        *command, "serve", *options,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return ServeProcess(process)


def _child_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "INVIGIL_SECRET"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


async def test_serve_prints_the_organiser_link_and_serves() -> None:
    port = _free_port()
    serve = await _start_serve("--host", "127.0.0.1", "--port", str(port), env=_child_env())
    try:
        match = await serve.wait_for_link()
        assert match.group(1) == "http"
        assert int(match.group(2)) == port
        assert len(match.group(3)) >= 20
        assert f"Invigil is serving on http://127.0.0.1:{port}\n" in serve.stdout
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status in (200, 404)
    finally:
        returncode, stderr = await serve.stop()
    assert returncode == 0, stderr
    assert "INVIGIL_SECRET is not set" in stderr
    # No access log: requests leave no trace, least of all the client's address.
    assert "/healthz" not in stderr
    assert "GET " not in stderr


async def test_serve_with_a_secret_gives_the_same_link_kind_without_the_hint() -> None:
    port = _free_port()
    serve = await _start_serve("--port", str(port), env=_child_env(INVIGIL_SECRET="k" * 32))
    try:
        await serve.wait_for_link()
    finally:
        returncode, stderr = await serve.stop()
    assert returncode == 0, stderr
    assert "INVIGIL_SECRET is not set" not in stderr


async def test_serve_self_signed_prints_the_fingerprint_it_serves() -> None:
    port = _free_port()
    serve = await _start_serve("--port", str(port), "--self-signed", env=_child_env())
    try:
        match = await serve.wait_for_link()
        assert match.group(1) == "https"
        printed = [m.group(1) for line in serve.stdout if (m := FINGERPRINT.search(line.rstrip()))]
        assert len(printed) == 1
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/healthz", ssl=False) as response:
                assert response.status in (200, 404)
        served = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port), timeout=10)
        assert fingerprint_sha256(served.encode()) == printed[0]
    finally:
        returncode, stderr = await serve.stop()
    assert returncode == 0, stderr


# --- the HTTP front of a real `invigil serve`: slow clients, many connections, bad requests --------


async def _serving(*options: str) -> tuple[ServeProcess, int]:
    port = _free_port()
    serve = await _start_serve("--port", str(port), *options, env=_child_env(INVIGIL_SECRET="k" * 32))
    await serve.wait_for_link()
    return serve, port


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Read until the server closes the connection (True) or resets it."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionResetError:
        pass
    return True


async def _healthz(port: int, *, local: str = "127.0.0.1", tls: bool = False) -> int:
    scheme = "https" if tls else "http"
    connector = aiohttp.TCPConnector(local_addr=(local, 0), ssl=False if tls else None)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{scheme}://127.0.0.1:{port}/healthz") as response:
            return response.status


async def test_slow_and_idle_connections_are_closed_after_the_header_timeout() -> None:
    """Slowloris: a head trickling in a line at a time is cut at the header timeout, and so is a
    connection that sends nothing and one left idle after a request; the server still serves,
    and a WebSocket (an exam lasts hours) is not cut."""
    serve, port = await _serving("--header-timeout", "1")
    session = aiohttp.ClientSession()
    try:
        websocket = await session.ws_connect(f"ws://127.0.0.1:{port}/ws")
        trickling = await asyncio.open_connection("127.0.0.1", port)
        silent = await asyncio.open_connection("127.0.0.1", port)
        idle = await asyncio.open_connection("127.0.0.1", port)
        idle[1].write(b"GET /healthz HTTP/1.1\r\nHost: invigil\r\n\r\n")
        assert (await idle[0].readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")

        async def trickle() -> None:
            trickling[1].write(b"GET /healthz HTTP/1.1\r\n")
            for number in range(10_000):
                trickling[1].write(b"X-%d: y\r\n" % number)
                await asyncio.sleep(0.2)

        async with asyncio.timeout(30), asyncio.TaskGroup() as group:
            sending = group.create_task(trickle())
            closed = await asyncio.gather(*(_closed_by_server(r) for r, _ in (trickling, silent, idle)))
            sending.cancel()
        assert closed == [True, True, True]
        for _, writer in (trickling, silent, idle):
            writer.close()
        assert await _healthz(port) == 200
        await websocket.send_json({"type": "hello", "v": 1, "token": "forged"})
        reply = await websocket.receive_json(timeout=10)
        assert reply["type"] == "error" and not websocket.closed
        await websocket.close()
    finally:
        await session.close()
        returncode, stderr = await serve.stop()
    assert returncode == 0, stderr


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_one_address_holds_at_most_the_cap_and_other_addresses_are_still_served(tls: bool) -> None:
    """The N+1th open connection from one address is closed at once (before any TLS handshake),
    while 127.0.0.2 is served; closing one of the N lets the address in again."""
    cap = 4
    serve, port = await _serving(
        "--connections-per-address", str(cap), "--header-timeout", "120", *(["--self-signed"] if tls else [])
    )
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        client_tls = ssl.create_default_context()
        client_tls.check_hostname, client_tls.verify_mode = False, ssl.CERT_NONE
        for _ in range(cap):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls if tls else None)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: invigil\r\n\r\n")
            assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
            held.append((reader, writer))

        # One more, as plain TCP that says nothing: an admitted one would wait 120 s for its head.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(20):
            assert await _closed_by_server(reader)
        writer.close()

        assert await _healthz(port, local="127.0.0.2", tls=tls) == 200

        held.pop()[1].close()

        async def admitted() -> bool:
            try:
                return await _healthz(port, tls=tls) == 200
            except aiohttp.ClientError:
                return False

        async with asyncio.timeout(20):
            while not await admitted():
                await asyncio.sleep(0.1)
    finally:
        for _, writer in held:
            writer.close()
        returncode, stderr = await serve.stop()
    assert returncode == 0, stderr
    assert "refused a connection over the per-address cap" in stderr
    assert "127.0.0.1" not in stderr.replace(f"http{'s' if tls else ''}://127.0.0.1:{port}", "")


MARKER = b"SeCrEtMaRkEr"
MALFORMED = (
    b"GET /" + MARKER + b"\x01 HTTP/1.1\r\nHost: invigil\r\n\r\n",  # a control character in the path
    b"G\x01T /" + MARKER + b" HTTP/1.1\r\n\r\n",  # a bad method
    b"GET /" + MARKER + b" HTTP/9.Q\r\nHost: invigil\r\n\r\n",  # a bad version
    b"GET / HTTP/1.1\r\nHost: invigil\r\nX-" + MARKER + b": " + MARKER * 1000 + b"\r\n\r\n",  # a header too long
    b"POST /join/upload-check HTTP/1.1\r\nHost: invigil\r\nTransfer-Encoding: chunked\r\n\r\n"
    + MARKER + b"\r\n0\r\n\r\n",  # bad chunking
)


async def _raw_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    async with asyncio.timeout(20):
        response = await reader.read()
    writer.close()
    return response


async def test_malformed_requests_are_counted_not_logged_nor_quoted() -> None:
    """A malformed request costs a client a few bytes: the log gets no traceback and no client
    bytes (one summary line per interval), and the 400 does not quote them back either."""
    serve, port = await _serving()
    try:
        for _ in range(20):
            for request in MALFORMED:
                response = await _raw_request(port, request)
                assert response.split(b"\r\n", 1)[0].split(b" ", 1)[1] == b"400 Bad Request", response
                assert MARKER not in response
        assert await _healthz(port) == 200
    finally:
        returncode, stderr = await serve.stop()
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    assert MARKER.decode() not in stderr
    lines = [line for line in stderr.splitlines() if "malformed HTTP request" in line]
    assert 1 <= len(lines) <= 2, stderr


def test_turn_urls_take_their_secret_from_the_environment_only() -> None:
    from sfu.cli import TURN_SECRET_ENV

    args = build_parser().parse_args(
        ["serve", "--turn-url", "turn:turn.example.org:3478?transport=tcp", "--turn-url", "turns:turn.example.org:443", "--turn-ttl", "3600"]
    )
    config = config_from_args(args, b"s" * 32, tls=False, environ={TURN_SECRET_ENV: "shared-with-coturn-0123"})
    assert config.turn is not None
    assert config.turn.urls == ("turn:turn.example.org:3478?transport=tcp", "turns:turn.example.org:443")
    assert (config.turn.secret, config.turn.ttl_seconds) == (b"shared-with-coturn-0123", 3600)
    assert config.ice_servers == ()
    with pytest.raises(UsageError, match=TURN_SECRET_ENV):
        config_from_args(args, b"s" * 32, tls=False, environ={})
    with pytest.raises(UsageError, match="--turn-url"):
        config_from_args(build_parser().parse_args(["serve"]), b"s" * 32, tls=False, environ={TURN_SECRET_ENV: "x" * 32})
    assert config_from_args(build_parser().parse_args(["serve"]), b"s" * 32, tls=False, environ={}).turn is None


@pytest.mark.parametrize(
    "option",
    [["--turn-url", "turn:u:p@turn.example.org"], ["--turn-url", "stun:turn.example.org"], ["--turn-ttl", "5"]],
)
def test_bad_turn_options_are_usage_errors(option: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", *option])
    assert exit_.value.code == 2


def test_media_port_option_reaches_the_config() -> None:
    assert config_from_args(build_parser().parse_args(["serve"]), b"s" * 32, tls=False).media_port is None
    args = build_parser().parse_args(["serve", "--media-port", "3479"])
    assert config_from_args(args, b"s" * 32, tls=False).media_port == 3479
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--media-port", "0"])

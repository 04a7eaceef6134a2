"""TLS for `invigil serve`: self-signed in memory only, files as given, and real handshakes."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sfu.tls import (
    SELF_SIGNED_DAYS,
    TlsSetup,
    fingerprint_sha256,
    self_signed_certificate,
    server_ssl_context,
)

ROOT = Path(__file__).resolve().parents[1]

WRITE_MODE_CHARS = set("wax+")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
FILE_CREATING_EVENTS = {
    "os.mkdir",
    "os.rename",
    "os.link",
    "os.symlink",
    "shutil.copyfile",
    "tempfile.mkstemp",
    "tempfile.mkdtemp",
}


class WriteWatcher:
    """An audit hook (hooks cannot be removed) that only records while armed."""

    def __init__(self) -> None:
        self.armed = False
        self.writes: list[tuple[str, tuple]] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if not self.armed:
            return
        if event == "open":
            path, mode, flags = args
            writes_by_mode = isinstance(mode, str) and bool(WRITE_MODE_CHARS & set(mode))
            writes_by_flags = isinstance(flags, int) and bool(flags & WRITE_FLAGS)
            if writes_by_mode or writes_by_flags:
                self.writes.append((event, args))
        elif event in FILE_CREATING_EVENTS:
            self.writes.append((event, args))


_watcher: WriteWatcher | None = None


def write_watcher() -> WriteWatcher:
    """The one watcher of this test session, installed on first use."""
    global _watcher
    if _watcher is None:
        _watcher = WriteWatcher()
    return _watcher


def _listing(directory: str | Path) -> set[str]:
    return set(os.listdir(directory))


def test_self_signed_writes_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    # Any Python temp file would land here, where we can see it.
    python_temp = tmp_path / "python-temp"
    python_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(python_temp))

    watcher = write_watcher()
    watcher.writes.clear()
    cwd_before, tmp_before = _listing(work), _listing("/tmp")
    watcher.armed = True
    try:
        setup = server_ssl_context(None, None, True, ["exam.example"])
    finally:
        watcher.armed = False
    cwd_after, tmp_after = _listing(work), _listing("/tmp")

    assert isinstance(setup, TlsSetup)
    assert watcher.writes == []
    assert cwd_after == cwd_before == set()
    assert _listing(python_temp) == set()
    assert tmp_after - tmp_before == set()
    assert not [fd for fd in os.listdir("/proc/self/fd") if "invigil-tls" in _fd_target(fd)]


def _fd_target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


STRACE_SCRIPT = textwrap.dedent(
    """
    import sys
    from sfu.tls import server_ssl_context

    def marker(name):
        try:
            open("/nonexistent-invigil-marker-" + name)
        except FileNotFoundError:
            pass

    marker("begin")
    setup = server_ssl_context(None, None, True, ["exam.example"])
    marker("end")
    print(setup.fingerprint_sha256)
    """
)


@pytest.mark.skipif(
    shutil.which("strace") is None and not os.environ.get("CI"),
    reason="strace is not installed (apt-get install strace); CI installs it",
)
def test_self_signed_opens_nothing_for_writing_at_the_system_call_level(tmp_path: Path) -> None:
    """OpenSSL opens files in C, where audit hooks cannot see: strace can."""
    trace = tmp_path / "trace.txt"
    syscalls = "openat,open,creat,mkdir,mkdirat,rename,renameat,renameat2,link,linkat,symlink,symlinkat"
    result = subprocess.run(
        ["strace", "-f", "-qq", "-e", f"trace={syscalls}", "-o", str(trace),
         sys.executable, "-B", "-c", STRACE_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = trace.read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if "invigil-marker-begin" in line)
    end = next(i for i, line in enumerate(lines) if "invigil-marker-end" in line)
    during = lines[begin + 1 : end]
    writing = [
        line
        for line in during
        if any(flag in line for flag in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"))
        or any(f"{call}(" in line for call in ("creat", "mkdir", "rename", "link", "symlink"))
    ]
    assert writing == []
    # The key reached OpenSSL through the anonymous memory file, read-only.
    assert any('"/proc/self/fd/' in line and "O_RDONLY" in line for line in during)


def test_self_signed_certificate_contents() -> None:
    certificate_pem, key_pem = self_signed_certificate(["Exam.Example", "192.168.1.20", "0.0.0.0"])
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    public_key = certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["exam.example", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.168.1.20"),
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert datetime.timedelta(days=SELF_SIGNED_DAYS) <= lifetime
    assert lifetime <= datetime.timedelta(days=SELF_SIGNED_DAYS, minutes=10)
    assert certificate.not_valid_before_utc <= datetime.datetime.now(datetime.timezone.utc)
    assert b"PRIVATE KEY" in key_pem and b"ENCRYPTED" not in key_pem


def test_fingerprint_matches_the_certificate() -> None:
    setup = server_ssl_context(None, None, True, [])
    assert setup is not None
    certificate = x509.load_pem_x509_certificate(setup.certificate_pem)
    expected = certificate.fingerprint(certificate.signature_hash_algorithm).hex(":").upper()
    assert setup.fingerprint_sha256 == fingerprint_sha256(setup.certificate_pem) == expected
    assert len(setup.fingerprint_sha256.split(":")) == 32


def test_each_self_signed_certificate_is_new() -> None:
    first = server_ssl_context(None, None, True, [])
    second = server_ssl_context(None, None, True, [])
    assert first is not None and second is not None
    assert first.fingerprint_sha256 != second.fingerprint_sha256


def test_plain_http_has_no_tls() -> None:
    assert server_ssl_context(None, None, False, ["exam.example"]) is None


@pytest.mark.parametrize(
    ("cert", "key", "self_signed"),
    [("cert.pem", None, False), (None, "key.pem", False), ("cert.pem", "key.pem", True)],
)
def test_contradictory_choices_are_refused(cert, key, self_signed) -> None:
    with pytest.raises(ValueError):
        server_ssl_context(cert, key, self_signed, [])


def test_certificate_files_are_loaded_as_given(tmp_path: Path) -> None:
    certificate_pem, key_pem = self_signed_certificate(["exam.example"])
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate_pem)
    key_file.write_bytes(key_pem)
    setup = server_ssl_context(str(cert_file), str(key_file), False, [])
    assert setup is not None
    assert setup.certificate_pem == certificate_pem
    assert setup.fingerprint_sha256 == fingerprint_sha256(certificate_pem)


def test_missing_certificate_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        server_ssl_context(str(tmp_path / "none.pem"), str(tmp_path / "none.key"), False, [])


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello over tls")


async def test_https_server_with_the_self_signed_context_answers() -> None:
    setup = server_ssl_context(None, None, True, ["exam.example"])
    assert setup is not None
    app = web.Application()
    app.router.add_get("/", _hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=setup.context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        trusting = ssl.create_default_context(cadata=setup.certificate_pem.decode())
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/", ssl=trusting) as response:
                assert response.status == 200
                assert await response.text() == "hello over tls"
            # The operator's hostname is in the certificate too.
            async with session.get(
                f"https://127.0.0.1:{port}/", ssl=trusting, server_hostname="exam.example"
            ) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(
                    f"https://127.0.0.1:{port}/", ssl=trusting, server_hostname="other.example"
                )
            # A client that does not trust this exact certificate refuses it.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(f"https://127.0.0.1:{port}/", ssl=ssl.create_default_context())
    finally:
        await runner.cleanup()


async def test_the_app_serves_https_pages_and_wss_signalling_with_the_certificate() -> None:
    """The whole app behind --self-signed: a page over HTTPS and a full `hello` over WSS."""
    import json
    import socket
    import ssl
    import time

    import aiohttp
    from aiohttp import web

    from sfu.app import creator_link, make_app
    from sfu.config import ServerConfig
    from sfu.tls import server_ssl_context

    tls = server_ssl_context(None, None, True, ["127.0.0.1"])
    assert tls is not None
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    app = make_app(ServerConfig(secret=b"tls-test-secret-0123456789", public_url=url))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=tls.context).start()
    trusted = ssl.create_default_context(cadata=tls.certificate_pem.decode())
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/join/", ssl=trusted) as response:
                assert response.status == 200
                assert "Content-Security-Policy" in response.headers
            socket_ = await session.ws_connect(url.replace("https", "wss") + "/ws", ssl=trusted)
            await socket_.send_str(json.dumps({"type": "hello", "v": 1, "token": creator_link(app).split("#")[1]}))
            welcome = json.loads((await socket_.receive(timeout=5)).data)
            assert welcome["type"] == "welcome" and welcome["role"] == "organiser"
            await socket_.send_str(json.dumps({
                "type": "create_exam", "v": 1, "id": 1, "title": "TLS", "kind": "written", "cap": 2,
                "note": "", "contact": "", "ends_at": int(time.time()) + 600, "id_check": False,
            }))
            created = json.loads((await socket_.receive(timeout=5)).data)
            assert created["type"] == "exam_created"
            assert created["student_link"].startswith(url + "/join/#")
            await socket_.close()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(f"{url}/join/")  # not trusted without the certificate
    finally:
        await runner.cleanup()

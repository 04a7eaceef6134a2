"""HTTP hardening: security headers on every response (the parser's own errors too), and the join limit per address."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from sfu.app import JOIN_LIMITER
from sfu.rate_limit import Allowance, JoinLimiter
from sfu.security_headers import CONTENT_SECURITY_POLICY, NO_DEVICES
from tests.peers import Client
from tests.test_sfu_forwarding import create_exam, token

PAGES = ("/", "/join/", "/desk/", "/organise/")
STATIC_FILES = (
    "/common/signalling.js",
    "/common/i18n.js",
    "/common/base.css",
    "/common/staff.css",
    "/common/staff.js",
    "/common/dom.js",
    "/common/fragment.js",
    "/common/catalogue/common.js",
    "/common/catalogue/student.js",
    "/common/catalogue/desk.js",
    "/join/static/student.js",
    "/join/static/favicon.svg",
    "/desk/static/desk.js",
    "/organise/static/organise.js",
)
OTHERS = (
    "/privacy", "/healthz", "/nowhere", "/common/nowhere.js", "/join/static/nowhere.js", "/desk/nowhere",
    "/join", "/desk", "/organise",  # redirects to the pages
)
DEVICES = ("camera", "microphone", "display-capture")
ALLOWED_DEVICES = {
    "/join/": {"camera", "microphone", "display-capture"},
    "/desk/": {"camera", "microphone"},
}
CSP_SOURCES = {"'self'", "'none'"}


def parse_csp(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            assert words[0] not in directives, f"directive {words[0]} given twice"
            directives[words[0]] = words[1:]
    return directives


def parse_permissions(header: str) -> dict[str, str]:
    features = {}
    for part in header.split(","):
        name, _, allowlist = part.strip().partition("=")
        features[name] = allowlist
    return features


def allowed_devices(path: str) -> set[str]:
    for prefix, devices in ALLOWED_DEVICES.items():
        if path.startswith(prefix):
            return devices
    return set()


async def fetch(session: aiohttp.ClientSession, url: str, method: str = "GET") -> aiohttp.ClientResponse:
    async with session.request(method, url, allow_redirects=False) as response:
        await response.read()
        return response


@pytest.mark.parametrize("path", PAGES + STATIC_FILES + OTHERS)
async def test_every_response_carries_the_security_headers(server: Any, path: str) -> None:
    async with aiohttp.ClientSession() as session:
        response = await fetch(session, server.url + path)
    if path in PAGES + STATIC_FILES:
        assert response.status == 200, (path, response.status)
        if path in PAGES:
            assert response.content_type == "text/html"
    headers = response.headers

    csp = parse_csp(headers["Content-Security-Policy"])
    assert csp.get("frame-ancestors") == ["'none'"]
    assert csp.get("default-src") == ["'self'"]
    for directive, sources in csp.items():
        assert sources and set(sources) <= CSP_SOURCES, f"{directive} allows {sources}: only 'self' or 'none'"
    assert csp.get("object-src") == ["'none'"] and csp.get("base-uri") == ["'none'"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]

    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers.getall("Content-Security-Policy") == [headers["Content-Security-Policy"]]
    assert headers.getall("Server") == ["Invigil"], "the server names no library nor version"
    assert "Set-Cookie" not in headers, "Invigil sets no cookies"

    permissions = parse_permissions(headers["Permissions-Policy"])
    allowed = allowed_devices(path)
    for device in DEVICES:
        assert device in permissions, f"{path}: {device} not mentioned, so the browser default applies"
        expected = "(self)" if device in allowed else "()"
        assert permissions[device] == expected, f"{path}: {device}={permissions[device]}"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_refused_methods_carry_the_headers_too(server: Any, method: str) -> None:
    async with aiohttp.ClientSession() as session:
        response = await fetch(session, server.url + "/join/", method)
    assert response.status == 405
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_the_upload_check_carries_the_headers_and_no_cookie(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(server.url + "/join/upload-check", data=b"x" * 1000) as response:
            assert response.status == 200
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "Set-Cookie" not in response.headers
        assert len(session.cookie_jar) == 0


async def test_pages_load_nothing_from_elsewhere_and_run_no_inline_code(server: Any) -> None:
    """What the CSP promises, checked in the pages themselves: no inline script or style,
    no other origin (the policy would block it, and a blocked page is broken)."""
    import re

    async with aiohttp.ClientSession() as session:
        for page in PAGES:
            async with session.get(server.url + page) as response:
                html = await response.text()
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page
            assert "<style" not in html and not re.search(r"\sstyle=", html), page
            assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE), f"{page}: inline event handler"
            assert "javascript:" not in html.lower(), page
            for reference in re.findall(r'(?:src|href)="([^"]+)"', html):
                if reference.startswith("#"):
                    continue  # a link within the page (skip link)
                assert reference.startswith("/") and not reference.startswith("//"), (page, reference)


async def test_the_websocket_upgrade_names_no_library_either(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(server.url.replace("http", "ws", 1) + "/ws") as socket:
            upgrade = socket._response.headers
    assert upgrade.getall("Server") == ["Invigil"]
    assert upgrade["X-Content-Type-Options"] == "nosniff"


# -- errors of the HTTP parser itself, on a real `invigil serve` ---------------------------------

PARSER_ERRORS = {
    "oversized header": b"GET /join/ HTTP/1.1\r\nHost: invigil\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
    "bad version": b"GET /join/ HTTP/9.Q\r\nHost: invigil\r\n\r\n",
    "bad chunking": b"POST /join/upload-check HTTP/1.1\r\nHost: invigil\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\n0\r\n\r\n",
}


def _head(response: bytes) -> tuple[str, dict[str, list[str]]]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return head[0], headers


async def test_parser_errors_carry_the_security_headers_and_name_no_library() -> None:
    """The 400s aiohttp's parser answers before any route runs: same headers as every response."""
    from tests.test_cli import _raw_request, _serving

    serve, port = await _serving()
    try:
        for case, request in PARSER_ERRORS.items():
            status, headers = _head(await _raw_request(port, request))
            assert " 400 " in status, (case, status)
            assert headers.get("content-security-policy") == [CONTENT_SECURITY_POLICY], case
            assert headers.get("referrer-policy") == ["no-referrer"], case
            assert headers.get("x-content-type-options") == ["nosniff"], case
            assert headers.get("x-frame-options") == ["DENY"], case
            assert headers.get("permissions-policy") == [NO_DEVICES], case
            assert headers.get("server") == ["Invigil"], case
        status, headers = _head(await _raw_request(port, b"GET /healthz HTTP/1.1\r\nHost: invigil\r\nConnection: close\r\n\r\n"))
        assert " 200 " in status and headers.get("server") == ["Invigil"]
    finally:
        returncode, stderr = await serve.stop()
    assert returncode == 0, stderr


# -- the join limit ----------------------------------------------------------------------------


async def _hello(session: aiohttp.ClientSession, url: str, link_token: str, **kwargs: Any) -> dict[str, Any]:
    client = Client(session, url)
    try:
        return await client.connect(link_token, **kwargs)
    finally:
        await client.close()


NO_REFILL = 1e-6
"""A rate so slow that nothing refills while a test runs."""


async def test_joins_per_address_are_limited(server: Any) -> None:
    """The address's allowance (here 40; the real numbers have their own tests in
    test_join_limits.py), then `rate_limited`, also for forged links (so guessing links is
    throttled), with X-Forwarded-For making no difference; another address is not affected."""
    limit = 40
    server.app[JOIN_LIMITER].addresses.allowance = Allowance(burst=limit, rate=NO_REFILL)
    creator = token(server.creator_link)
    async with aiohttp.ClientSession() as session:
        for number in range(limit):
            reply = await _hello(session, server.url, creator if number % 2 else "forged." + "A" * 43)
            assert reply["type"] == ("welcome" if number % 2 else "error"), reply
            if reply["type"] == "error":
                assert reply["code"] == "link_invalid"
        refused = await _hello(session, server.url, creator)
        assert refused["type"] == "error" and refused["code"] == "rate_limited", refused
        assert set(refused["message"]) == {"nl", "en"}

        # A refused join keeps the socket open (the page may retry later) and changes nothing.
        client = Client(session, server.url)
        reply = await client.connect(creator)
        assert reply["code"] == "rate_limited"
        assert client.closed_code is None
        again = await client.request({"type": "hello", "token": creator})
        assert again["code"] == "rate_limited"
        await client.close()

        async with aiohttp.ClientSession(headers={"X-Forwarded-For": "203.0.113.9"}) as spoofing:
            spoofed = await _hello(spoofing, server.url, creator)
        assert spoofed["code"] == "rate_limited", "a forwarded-for header must not buy new joins"

    # Another address (127.0.0.2 is loopback too) still joins.
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        welcome = await _hello(other, server.url, creator)
    assert welcome["type"] == "welcome", welcome


async def test_a_rate_limited_student_is_not_placed(server: Any) -> None:
    """A join refused by the limit creates no participant: the exam does not see it."""
    from sfu.app import REGISTRY

    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        server.app[JOIN_LIMITER].addresses.allowance = Allowance(burst=1, rate=NO_REFILL)
        first = Client(session, server.url)
        assert (await first.connect(token(created["student_link"]), name="Eerste"))["type"] == "welcome"
        second = Client(session, server.url)
        refused = await second.connect(token(created["student_link"]), name="Tweede")
        assert refused["code"] == "rate_limited"
        exam = server.app[REGISTRY].exams[created["exam"]["id"]]
        assert [p.name for p in exam.participants.values()] == ["Eerste"]
        assert exam.assignment.queue() == (first.latest("welcome")["participant_id"],)
        del exam
        for client in (first, second):
            await client.close()


async def test_too_many_refused_joins_close_the_socket(server: Any) -> None:
    """Retrying a refused join on one socket is a flood like any other: 4008 after the error budget."""
    server.app[JOIN_LIMITER].addresses.allowance = Allowance(burst=0, rate=NO_REFILL)
    async with aiohttp.ClientSession() as session:
        socket = await session.ws_connect(server.url.replace("http", "ws", 1) + "/ws")
        codes = []
        for _ in range(40):
            if socket.closed:
                break
            await socket.send_str(json.dumps({"type": "hello", "v": 1, "token": token(server.creator_link)}))
            frame = await socket.receive(timeout=5)
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            codes.append(json.loads(frame.data)["code"])
        while not socket.closed:
            await socket.receive(timeout=5)
        assert set(codes) <= {"rate_limited"} and codes
        assert socket.close_code == 4008


# -- the limiter itself ------------------------------------------------------------------------


def test_limiter_counts_its_burst_then_refills() -> None:
    now = [1000.0]
    limiter = JoinLimiter(per_address=Allowance(burst=3, rate=1 / 20), clock=lambda: now[0])
    assert [limiter.allow("192.0.2.1") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("192.0.2.2")
    now[0] += 20.5
    assert limiter.allow("192.0.2.1")
    assert not limiter.allow("192.0.2.1")


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),  # one /64: one household or one host
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("::ffff:192.0.2.7", "192.0.2.7", True),  # IPv4-mapped is the IPv4 address
        ("192.0.2.7", "192.0.2.8", False),
        ("2001:DB8:1:2::1", "2001:db8:1:2::1", True),
    ],
)
def test_limiter_counts_an_ipv6_host_by_its_64_prefix(first: str, second: str, shared: bool) -> None:
    """An IPv6 host picks any of 2^64 addresses of its prefix: counting per address would let
    it join without limit. Counting per /64 is what a per-address limit means for IPv6."""
    limiter = JoinLimiter(per_address=Allowance(burst=2, rate=NO_REFILL))
    assert limiter.allow(first) and limiter.allow(first)
    assert limiter.allow(second) is (not shared)


def test_limiter_memory_is_bounded() -> None:
    """Many addresses at once (a scan, a botnet) cannot grow the table past its bound."""
    now = [1000.0]
    limiter = JoinLimiter(per_address=Allowance(burst=5, rate=5 / 60), max_addresses=100, clock=lambda: now[0])
    for number in range(1000):
        limiter.allow(f"10.0.{number // 250}.{number % 250}")
    assert len(limiter.addresses) <= 100
    assert limiter.allow("10.9.9.9")


def test_limiter_forgets_refilled_addresses_when_next_used() -> None:
    now = [1000.0]
    limiter = JoinLimiter(per_address=Allowance(burst=2, rate=2 / 60), clock=lambda: now[0])
    limiter.allow("192.0.2.1")
    limiter.allow("192.0.2.2")
    now[0] += 30
    limiter.allow("192.0.2.2")
    now[0] += 31
    limiter.allow("192.0.2.3")
    assert "192.0.2.1" not in limiter.addresses
    assert "192.0.2.2" in limiter.addresses and "192.0.2.3" in limiter.addresses


async def test_the_server_forgets_every_address_once_its_allowance_has_refilled(server: Any) -> None:
    """Addresses are kept for the join limit only: once an address's allowance has refilled
    the server holds none, even when nobody joins after them (privacy, not only memory)."""
    limiter = server.app[JOIN_LIMITER]
    limiter.addresses.allowance = Allowance(burst=250, rate=1000.0)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        student = Client(session, server.url)
        assert (await student.connect(token(created["student_link"]), name="Kim"))["type"] == "welcome"
        assert "127.0.0.1" in limiter.addresses
        from tests.peers import wait_until

        await wait_until(lambda: not len(limiter.addresses), 10)
        await student.close()


async def test_the_limit_refuses_even_before_the_link_is_read(server: Any) -> None:
    """Once over the limit, a valid student link is refused too, and the socket learns nothing
    about the link (no exam_ended, no link_invalid): the limit comes first."""
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        server.app[JOIN_LIMITER].addresses.allowance = Allowance(burst=0, rate=NO_REFILL)
        client = Client(session, server.url)
        reply = await client.connect("garbage", name="X")
        assert reply["code"] == "rate_limited"
        reply = await client.request({"type": "hello", "token": token(created["student_link"]), "name": "Y"})
        assert reply["code"] == "rate_limited"
        await client.close()
        assert client.closed_code in (None, 1000)


def test_open_connections_are_counted_per_address_and_forgotten_when_closed() -> None:
    """The connection cap counts as the join limit does (an IPv6 /64 is one address) and keeps
    an address only while it has a connection open."""
    from sfu.http_guard import AddressCounter

    counter = AddressCounter(limit=2)
    first = counter.acquire("2001:db8:1:2::1")
    second = counter.acquire("2001:db8:1:2:ffff::9")
    assert first is not None and second is not None
    assert counter.acquire("2001:db8:1:2::77") is None
    assert counter.acquire("2001:db8:1:3::1") is not None
    counter.release(first)
    assert counter.acquire("2001:db8:1:2::1") is not None
    for key in ("2001:db8:1:2::/64", "2001:db8:1:2::/64", "2001:db8:1:3::/64"):
        counter.release(key)
    assert len(counter) == 0

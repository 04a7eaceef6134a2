"""Shared fixtures: the real app on a real port, and real Chromium pages.

`server` runs `make_app` in the test's own event loop on 127.0.0.1 (a free port),
`chromium` is a headless browser (see tests/browser.py), and `page_factory`
gives each participant its own browser context and page, with the page's
console errors and uncaught exceptions kept in `page.errors`.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from tests.browser import launch_chromium
from tests.firefox import launch_firefox

TEST_SECRET = b"test-secret-0123456789abcdef"


@dataclass(frozen=True)
class RunningServer:
    """An Invigil app serving on `url` (http://127.0.0.1:PORT, no trailing slash)."""

    url: str
    app: web.Application
    creator_link: str


ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def server_factory() -> AsyncIterator[ServerFactory]:
    """Start apps with ServerConfig overrides, e.g. `await server_factory(default_cap=2)`."""
    from sfu.app import creator_link, make_app
    from sfu.config import ServerConfig

    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> RunningServer:
        # Bind first: the links the app signs must carry the real port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            settings = {"secret": TEST_SECRET, "public_url": url, **overrides}
            app = make_app(ServerConfig(**settings))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
        except BaseException:
            sock.close()
            raise
        runners.append(runner)
        await web.SockSite(runner, sock).start()
        return RunningServer(url=url, app=app, creator_link=creator_link(app))

    try:
        yield start
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


@pytest.fixture
async def server(server_factory: ServerFactory) -> RunningServer:
    """The app with the default test configuration."""
    return await server_factory()


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """A headless Chromium (playwright Browser); skips or, in CI, fails when it is missing."""
    async with launch_chromium() as browser:
        yield browser


@pytest.fixture
async def firefox() -> AsyncIterator[Any]:
    """A headless Firefox ESR (tests/firefox.py); skips or, in CI, fails when it is missing."""
    async with launch_firefox() as browser:
        yield browser


def _is_favicon(url: str) -> bool:
    return urlsplit(url).path == "/favicon.ico"


@pytest.fixture
async def page_factory(chromium: Any) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """`await page_factory()` → a new page in its own context, one per participant.

    Keyword arguments go to `browser.new_context` (e.g. `locale="nl-NL"`). Each
    page gets `page.errors`: console errors (failed loads with their URL; the
    browser's own /favicon.ico request excepted) and uncaught exceptions, as strings.
    """
    contexts: list[Any] = []

    async def new_page(**context_options: Any) -> Any:
        context = await chromium.new_context(**context_options)
        contexts.append(context)
        page = await context.new_page()
        errors: list[str] = []
        page.errors = errors
        def on_console(message: Any) -> None:
            if message.type != "error":
                return
            url = message.location.get("url", "")
            if _is_favicon(url):
                return  # Chromium's own favicon request is not the page's doing.
            where = f" ({url})" if message.text.startswith("Failed to load resource") else ""
            errors.append(f"console.error: {message.text}{where}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
        return page

    try:
        yield new_page
    finally:
        for context in reversed(contexts):
            await context.close()

"""A real headless Firefox for tests: Debian's /usr/bin/firefox-esr over WebDriver BiDi.

puppeteer-core (tests/driver/, installed by `npm ci` from the Makefile; it never downloads a
browser) drives Firefox from a small node script, tests/driver/firefox_driver.mjs, which
speaks JSON lines on stdin/stdout. This module wraps it so that Firefox tests read like the
Chromium ones (tests/browser.py): `async with launch_firefox() as firefox`, then
`page = await firefox.new_page()`, `await page.goto(url)`, `await page.evaluate(...)`.

Fake camera and microphone, no permission prompts (the prefs are in the driver). Where
Firefox, node or the npm packages are missing, Firefox tests skip on a developer's machine
and fail in CI (env CI set).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.browser import in_ci

FIREFOX = "/usr/bin/firefox-esr"
DRIVER_DIR = Path(__file__).resolve().parent / "driver"
DRIVER = DRIVER_DIR / "firefox_driver.mjs"
INSTALL_HINT = "apt-get install firefox-esr nodejs npm, then `npm ci` in tests/driver (make install does it)"
REPLY_TIMEOUT = 60.0
"""Seconds any one request to the driver may take (a page load, a click, an evaluation)."""


def firefox_missing(firefox: str = FIREFOX, driver_dir: Path = DRIVER_DIR) -> str | None:
    """What is missing for the Firefox tests, or None when everything is there."""
    if not (os.path.isfile(firefox) and os.access(firefox, os.X_OK)):
        return f"{firefox} is missing"
    if shutil.which("node") is None:
        return "node is missing"
    if not (driver_dir / "node_modules" / "puppeteer-core").is_dir():
        return f"{driver_dir}/node_modules has no puppeteer-core"
    return None


def require_firefox(firefox: str = FIREFOX, driver_dir: Path = DRIVER_DIR) -> None:
    """Fail (in CI) or skip (elsewhere) the calling test when Firefox or its driver is missing."""
    missing = firefox_missing(firefox, driver_dir)
    if missing is None:
        return
    if in_ci():
        pytest.fail(f"{missing}: Firefox tests must run in CI ({INSTALL_HINT})", pytrace=False)
    pytest.skip(f"{missing}; {INSTALL_HINT} to run the Firefox tests")


class FirefoxError(RuntimeError):
    """The driver or Firefox refused a request."""


class Firefox:
    """One Firefox process behind the node driver; requests may run concurrently."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.ensure_future(self._read_replies())
        self.version = ""

    async def _read_replies(self) -> None:
        assert self._process.stdout is not None
        while line := await self._process.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                continue  # puppeteer or Firefox printing on stdout: not a reply
            future = self._waiting.pop(message.get("id"), None)
            if future is None or future.done():
                continue
            if message.get("ok"):
                future.set_result(message.get("value"))
            else:
                future.set_exception(FirefoxError(str(message.get("error"))))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(FirefoxError("the Firefox driver exited"))
        self._waiting.clear()

    async def request(self, op: str, **fields: Any) -> Any:
        """Send one request to the driver and wait for its reply."""
        assert self._process.stdin is not None
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self._process.stdin.write(json.dumps({"id": request_id, "op": op, **fields}).encode() + b"\n")
        await self._process.stdin.drain()
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                return await future
        finally:
            self._waiting.pop(request_id, None)

    async def new_page(
        self, init_script: str | None = None, viewport: dict[str, int] | None = None
    ) -> FirefoxPage:
        """A new page in its own browser context (user context), one per participant."""
        fields: dict[str, Any] = {}
        if init_script is not None:
            fields["initScript"] = init_script
        if viewport is not None:
            fields["viewport"] = viewport
        page_id = await self.request("newPage", **fields)
        return FirefoxPage(self, page_id)

    async def close(self) -> None:
        """Close Firefox and the driver."""
        process = self._process
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        try:
            async with asyncio.timeout(20):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


_FUNCTION = re.compile(r"^(async\s+)?(function\b|(\([^)]*\)|[A-Za-z_$][\w$]*)\s*=>)")


def _as_script(expression: str, arg: Any) -> str:
    """Playwright's convention: a function is called (with `arg`), anything else is evaluated."""
    stripped = expression.strip()
    if _FUNCTION.match(stripped):
        return f"({stripped})({json.dumps(arg)})"
    return stripped


class FirefoxPage:
    """A page in Firefox, with the few calls the tests need (named as in Playwright)."""

    def __init__(self, firefox: Firefox, page_id: int) -> None:
        self.firefox = firefox
        self.id = page_id

    async def goto(self, url: str) -> int | None:
        """Load `url`; the HTTP status."""
        return await self.firefox.request("goto", page=self.id, url=url)

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        """The value of `expression` in the page (a function is called with `arg`; promises awaited)."""
        return await self.firefox.request("eval", page=self.id, expression=_as_script(expression, arg))

    async def click(self, selector: str) -> None:
        """Click the visible element matching `selector`."""
        await self.firefox.request("click", page=self.id, selector=selector)

    async def fill(self, selector: str, value: str) -> None:
        """Type `value` into the (emptied) field matching `selector`."""
        await self.firefox.request("fill", page=self.id, selector=selector, value=value)

    async def wait_for_selector(self, selector: str, state: str = "visible", timeout: float = 15000) -> None:
        """Wait until `selector` matches an element (state: visible, hidden or attached)."""
        await self.firefox.request("wait", page=self.id, selector=selector, state=state, timeout=timeout)

    async def inner_text(self, selector: str) -> str:
        """The rendered text of the first element matching `selector`."""
        return await self.evaluate("(selector) => document.querySelector(selector).innerText", selector)

    @property
    def errors(self) -> Awaitable[list[str]]:
        """Console errors and uncaught exceptions so far (await it)."""
        return self.firefox.request("errors", page=self.id)

    async def close(self) -> None:
        """Close the page and its browser context."""
        await self.firefox.request("closePage", page=self.id)


@asynccontextmanager
async def launch_firefox() -> AsyncIterator[Firefox]:
    """A headless Firefox ESR with a fresh temporary profile, closed on exit."""
    require_firefox()
    environment = {**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"}
    process = await asyncio.create_subprocess_exec(
        "node",
        str(DRIVER),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=environment,
        cwd=str(DRIVER_DIR),
        limit=16 * 1024 * 1024,
    )
    firefox = Firefox(process)
    try:
        firefox.version = str((await firefox.request("launch") or {}).get("version", ""))
        yield firefox
    finally:
        await firefox.close()


PageFactory = Callable[..., Awaitable[FirefoxPage]]

"""Real `invigil serve` processes for the cluster tests, each cleaned up by PID.

`serving(...)` starts one `invigil serve` (an entry and its workers, or one node) with a
fixed secret and yields a ServedProcess; on the way out it sends SIGINT, waits, and
SIGKILLs the process and every child it had (by PID), so no worker is left behind.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"^(https?://[^/]+)/organise/#([A-Za-z0-9_.~=-]+)$")
SECRET_HEX = "00112233445566778899aabbccddeeff0123456789abcdef"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServedProcess:
    """One `invigil serve` child: its URL, its creator link, and what it printed."""

    process: asyncio.subprocess.Process
    url: str = ""
    creator_link: str = ""
    stdout: list[str] = field(default_factory=list)

    def workers(self) -> list[psutil.Process]:
        """The worker processes (children) of this serve process, live ones only."""
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]

    async def wait_for_workers(self, count: int, timeout: float = 60.0) -> list[psutil.Process]:
        async with asyncio.timeout(timeout):
            while len(workers := self.workers()) != count:
                await asyncio.sleep(0.1)
        return workers


async def _read_link(served: ServedProcess, timeout: float) -> None:
    assert served.process.stdout is not None
    async with asyncio.timeout(timeout):
        while True:
            raw = await served.process.stdout.readline()
            if not raw:
                raise AssertionError("invigil serve exited early:\n" + "".join(served.stdout))
            line = raw.decode().rstrip("\n")
            served.stdout.append(line + "\n")
            if match := LINK.match(line):
                served.url, served.creator_link = match.group(1), line
                return


@asynccontextmanager
async def serving(*options: str, port: int | None = None) -> AsyncIterator[ServedProcess]:
    """`invigil serve --host 127.0.0.1 --port PORT *options` until the block ends."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("INVIGIL_")}
    env.update(INVIGIL_SECRET=SECRET_HEX, PYTHONUNBUFFERED="1")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sfu.cli", "serve", "--host", "127.0.0.1", "--port", str(port or free_port()),
        *options,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=None,
    )
    served = ServedProcess(process)
    children: set[int] = set()
    try:
        await _read_link(served, 60.0)
        children.update(w.pid for w in served.workers())
        yield served
    finally:
        children.update(w.pid for w in served.workers())
        await stop(served, children)


async def stop(served: ServedProcess, children: set[int] = frozenset()) -> int | None:  # type: ignore[assignment]
    """SIGINT (stop now; SIGTERM would drain a node), up to 30 s to exit, then SIGKILL; the
    children too, by PID. The exit code."""
    process = served.process
    if process.returncode is None:
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(30):
                await process.wait()
        except TimeoutError:
            with suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    for pid in children:
        with suppress(psutil.NoSuchProcess):
            child = psutil.Process(pid)
            child.kill()
            child.wait(5)
    return process.returncode


@asynccontextmanager
async def redis_server() -> AsyncIterator[str]:
    """A real redis-server on a free loopback port, persisting nothing; its URL. Stopped by PID after."""
    import shutil

    import pytest

    from tests.browser import in_ci

    if shutil.which("redis-server") is None:
        if in_ci():
            raise AssertionError("redis-server is missing: .ci/run installs it")
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.write(b"PING\r\n")
                answer = await reader.readline()
                writer.close()
                if answer.startswith(b"+PONG"):
                    break
                await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()

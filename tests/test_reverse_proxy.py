"""The README's nginx snippet, as written there, in front of two nodes with a real Redis: TLS and
WebSockets pass, exams spread over the nodes, and each join reaches its exam's node.

Only the addresses and the certificate's paths of the snippet are replaced (the nodes' loopback
ports, a self-signed certificate in the test's temporary directory); nginx runs in the
foreground as this test's own process, stopped by PID after."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
from contextlib import AsyncExitStack, suppress
from pathlib import Path

import aiohttp
import psutil
import pytest

from sfu.tls import self_signed_certificate
from tests.browser import in_ci
from tests.cluster_processes import ROOT, free_port, redis_server, serving
from tests.peers import Client
from tests.test_directory import node_of
from tests.test_student_page import create_exam

pytest.importorskip("redis.asyncio")


def readme_nginx_snippet() -> str:
    """The ```nginx block of README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"```nginx\n(.*?)```", text, re.S)
    assert match, "README.md has no nginx snippet"
    return match.group(1)


def nginx_config(tmp: Path, port: int, upstreams: list[int]) -> Path:
    snippet = readme_nginx_snippet()
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in upstreams)
    snippet, count = re.subn(r"(upstream invigil \{\n)(?:\s*server [^;]+;\n)+", lambda m: m.group(1) + servers, snippet)
    assert count == 1
    snippet = snippet.replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    certificate, key = self_signed_certificate(["127.0.0.1"])
    (tmp / "cert.pem").write_bytes(certificate)
    (tmp / "key.pem").write_bytes(key)
    snippet = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {tmp / 'cert.pem'};", snippet)
    snippet = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {tmp / 'key.pem'};", snippet)
    temp = "".join(f"{kind}_temp_path {tmp / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = tmp / "nginx.conf"
    config.write_text(
        f"daemon off;\nuser root;\nworker_processes 1;\npid {tmp / 'nginx.pid'};\nerror_log stderr warn;\n"
        f"events {{}}\nhttp {{\n{temp}{snippet}\n}}\n"
    )
    return config


async def test_the_readme_nginx_snippet_carries_pages_and_websockets_to_the_right_node(tmp_path: Path) -> None:
    if shutil.which("nginx") is None:
        if in_ci():
            raise AssertionError("nginx is missing: .ci/run installs it")
        pytest.skip("nginx is not installed")
    async with AsyncExitStack() as stack:
        directory = await stack.enter_async_context(redis_server())
        front = free_port()
        public = f"https://127.0.0.1:{front}"
        ports = [free_port(), free_port()]
        nodes = [
            await stack.enter_async_context(
                serving(
                    "--workers", "1", "--directory", directory, "--public-url", public,
                    "--node-url", f"http://127.0.0.1:{port}", port=port,
                )
            )
            for port in ports
        ]
        config = nginx_config(tmp_path, front, ports)
        nginx = await asyncio.create_subprocess_exec("nginx", "-c", str(config), "-p", str(tmp_path))

        async def stop_nginx() -> None:
            children = []
            with suppress(psutil.NoSuchProcess):
                children = psutil.Process(nginx.pid).children()
            if nginx.returncode is None:
                nginx.send_signal(signal.SIGTERM)
                async with asyncio.timeout(20):
                    await nginx.wait()
            for child in children:
                with suppress(psutil.NoSuchProcess):
                    child.kill()

        stack.push_async_callback(stop_nginx)
        session = await stack.enter_async_context(aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)))
        async with asyncio.timeout(30):
            while True:
                try:
                    async with session.get(f"{public}/join/") as response:
                        if response.status == 200:
                            assert "Content-Security-Policy" in response.headers
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

        served = nodes[0]
        assert served.url == public  # the links point at the proxy
        exams = [await create_exam(session, served) for _ in range(2)]
        desks = []
        for number, exam in enumerate(exams):
            desk = Client(session, public)
            welcome = await desk.connect(exam["surveillant_links"][0].split("#", 1)[1], name=f"Desk {number}")
            assert welcome["type"] == "welcome", welcome
            desks.append(desk)
        holders = {await node_of(directory, exam["exam"]["id"]) for exam in exams}
        assert holders == {f"http://127.0.0.1:{port}" for port in ports}

        # nginx spreads the connections over both nodes; every student still reaches its exam.
        students = []
        for number, (exam, desk) in enumerate(zip(exams, desks)):
            for seat in range(3):
                student = Client(session, public)
                welcome = await student.connect(exam["student_link"].split("#", 1)[1], name=f"S{number}.{seat}")
                assert welcome["type"] == "welcome", welcome
                students.append(student)
            roster = await desk.wait_for(lambda m: m["type"] == "roster" and len(m["students"]) == 3)
            assert sorted(s["name"] for s in roster["students"]) == [f"S{number}.{seat}" for seat in range(3)]
        for client in (*desks, *students):
            await client.close()

"""Operators' /metrics: on its own port only, counts per worker and role, no names, titles or ids
(real `invigil serve` processes, real aiortc peers for the media counts)."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from tests.cluster_processes import free_port, serving
from tests.peers import Client, StudentPeer, SurveillantPeer, wait_until
from tests.test_student_page import create_exam

pytest.importorskip("prometheus_client")


def token(link: str) -> str:
    return link.split("#", 1)[1]


def values(text: str, name: str) -> dict[str, float]:
    """{label text: value} of one metric in the exposition format."""
    found = {}
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


async def scrape(session: aiohttp.ClientSession, port: int) -> str:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        return await response.text()


@pytest.mark.parametrize("workers", [2, 1])
async def test_metrics_count_exams_roles_media_cpu_and_lag_and_name_no_one(workers: int) -> None:
    metrics_port = free_port()
    async with serving("--workers", str(workers), "--metrics-port", str(metrics_port)) as served, \
            aiohttp.ClientSession() as session:
        created = await create_exam(session, served)
        desk = Client(session, served.url)
        assert (await desk.connect(token(created["surveillant_links"][0]), name="Mevr. Jansen"))["type"] == "welcome"
        watcher = SurveillantPeer(4)  # one set of tracks per place: the cap of create_exam
        await watcher.connect(desk)
        student = Client(session, served.url)
        assert (await student.connect(token(created["student_link"]), name="Sanne Visser"))["type"] == "welcome"
        publisher = StudentPeer()
        await publisher.connect(student)
        await wait_until(lambda: watcher.received[0]["webcam"].frames >= 10, 30)

        async def counted() -> str:
            while True:
                text = await scrape(session, metrics_port)
                if sum(values(text, "invigil_media_packets_total").values()) > 0:
                    return text
                await asyncio.sleep(0.2)

        async with asyncio.timeout(30):
            text = await counted()
        labels = ["w0", "w1"] if workers == 2 else ["main"]
        assert sum(values(text, "invigil_exams").values()) == 1
        participants = values(text, "invigil_participants")
        assert sum(v for k, v in participants.items() if 'role="student"' in k) == 1
        assert sum(v for k, v in participants.items() if 'role="surveillant"' in k) == 1
        assert sum(values(text, "invigil_media_bytes_total").values()) > 0
        assert set(values(text, "invigil_dropped_sends_total")) == {f'{{worker="{w}"}}' for w in labels}
        cpu = values(text, "invigil_cpu_seconds_total")
        assert set(cpu) == {f'{{worker="{w}"}}' for w in labels} and all(v > 0 for v in cpu.values())
        assert set(values(text, "invigil_event_loop_lag_seconds")) == set(cpu)
        for private in ("Jansen", "Sanne", "Visser", "Biologie", created["exam"]["id"]):
            assert private not in text

        # Not on the public port.
        async with session.get(f"{served.url}/metrics") as response:
            assert response.status == 404
        for closing in (publisher, watcher, student, desk):
            await closing.close()


async def test_metrics_are_off_by_default() -> None:
    async with serving("--workers", "1") as served, aiohttp.ClientSession() as session:
        async with session.get(f"{served.url}/metrics") as response:
            assert response.status == 404
        assert "metrics" not in "".join(served.stdout).lower()

"""Several nodes through a real Redis: placement by load, joins through the wrong node, a killed
node whose exam comes back elsewhere, and a SIGTERM drain (real processes: a redis-server and
`invigil serve --directory` nodes, each with its own port and public URL)."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import psutil
import pytest

from tests.cluster_processes import ServedProcess, free_port, redis_server, serving
from tests.peers import Client
from tests.test_student_page import create_exam

redis = pytest.importorskip("redis.asyncio")

RECOVERY_BOUND = 60.0
"""Generous: how long a test waits for something to come back (not a measured claim)."""


def token(link: str) -> str:
    return link.split("#", 1)[1]


async def nodes(stack: AsyncExitStack, directory: str, count: int) -> list[ServedProcess]:
    """`count` nodes (one worker each) on their own ports, sharing the directory."""
    started = []
    for _ in range(count):
        port = free_port()
        started.append(
            await stack.enter_async_context(
                serving(
                    "--workers", "1", "--directory", directory,
                    "--public-url", f"http://127.0.0.1:{port}", "--drain-timeout", "120",
                    port=port,
                )
            )
        )
    return started


async def node_of(directory: str, exam_id: str) -> str | None:
    """The URL of the node the directory has `exam_id` on (None if none or the node is gone)."""
    client = redis.from_url(directory)
    try:
        node_id = await client.get(f"invigil:exam:{exam_id}")
        if node_id is None:
            return None
        heartbeat = await client.get(f"invigil:node:{node_id.decode()}")
        import json

        return json.loads(heartbeat)["url"] if heartbeat is not None else None
    finally:
        await client.aclose()


async def joined(session: aiohttp.ClientSession, url: str, link: str, name: str) -> Client:
    client = Client(session, url)
    welcome = await client.connect(token(link), name=name)
    assert welcome["type"] == "welcome", welcome
    return client


async def holds_ids_addresses_and_counts_only(directory: str, exams: list[dict[str, Any]]) -> None:
    """Everything in Redis: node heartbeats (a URL, a flag, counts) and exam -> node ids."""
    import json

    client = redis.from_url(directory)
    try:
        keys = sorted([key.decode() async for key in client.scan_iter(match="*")])
        node_ids = {key.split(":")[2] for key in keys if key.startswith("invigil:node:")}
        assert len(node_ids) == 2
        assert {key for key in keys if key.startswith("invigil:exam:")} == {f"invigil:exam:{e['exam']['id']}" for e in exams}
        assert all(key.startswith(("invigil:node:", "invigil:exam:")) for key in keys)
        for key in keys:
            value = (await client.get(key)).decode()
            if key.startswith("invigil:exam:"):
                assert value in node_ids
                assert 0 < await client.ttl(key) <= 3600  # expires with the exam
            else:
                beat = json.loads(value)
                assert set(beat) == {"url", "accepting", "exams", "participants", "cpu", "packets_per_second"}
                assert all(isinstance(beat[k], (int, float)) for k in ("exams", "participants", "cpu", "packets_per_second"))
                assert 0 < await client.pttl(key) <= 5000  # the heartbeat's TTL
    finally:
        await client.aclose()


async def test_exams_are_placed_by_load_and_a_join_through_the_wrong_node_reaches_the_right_one() -> None:
    async with AsyncExitStack() as stack:
        directory = await stack.enter_async_context(redis_server())
        a, b = await nodes(stack, directory, 2)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        first, second = await create_exam(session, a), await create_exam(session, a)
        desk_1 = await joined(session, a.url, first["surveillant_links"][0], "Desk 1")
        desk_2 = await joined(session, a.url, second["surveillant_links"][0], "Desk 2")
        where_1 = await node_of(directory, first["exam"]["id"])
        where_2 = await node_of(directory, second["exam"]["id"])
        assert {where_1, where_2} == {a.url, b.url}, "the second exam did not go to the idle node"

        # Students come in through both nodes; each reaches its exam, wherever it runs.
        students = []
        for number, (exam, desk) in enumerate(((first, desk_1), (second, desk_2)), start=1):
            for via in (a, b):
                students.append(await joined(session, via.url, exam["student_link"], f"S{number} via {via.url[-5:]}"))
            roster = await desk.wait_for(lambda m: m["type"] == "roster" and len(m["students"]) == 2)
            assert sorted(s["name"] for s in roster["students"]) == sorted(
                f"S{number} via {via.url[-5:]}" for via in (a, b)
            )
        await holds_ids_addresses_and_counts_only(directory, [first, second])
        for client in (desk_1, desk_2, *students):
            await client.close()


async def test_a_killed_nodes_exam_comes_back_on_another_node() -> None:
    async with AsyncExitStack() as stack:
        directory = await stack.enter_async_context(redis_server())
        a, b = await nodes(stack, directory, 2)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        exam = await create_exam(session, a)
        desk = await joined(session, a.url, exam["surveillant_links"][0], "Desk")
        holder, other = (a, b) if await node_of(directory, exam["exam"]["id"]) == a.url else (b, a)
        await desk.close()

        # Joined through the node that stays, running on the node that dies.
        desk = await joined(session, other.url, exam["surveillant_links"][0], "Desk")
        for process in [*holder.workers(), psutil.Process(holder.process.pid)]:
            process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(RECOVERY_BOUND):
            while desk.closed_code is None:
                await asyncio.sleep(0.05)
        assert desk.closed_code == 1012  # the page reconnects by itself on this code

        # As the page does: join again until the exam runs somewhere live.
        async with asyncio.timeout(RECOVERY_BOUND):
            while True:
                again = Client(session, other.url)
                try:
                    welcome = await again.connect(token(exam["surveillant_links"][0]), name="Desk")
                except ConnectionError:
                    await again.close()
                    await asyncio.sleep(0.5)
                    continue
                break
        assert welcome["type"] == "welcome" and welcome["exam"]["id"] == exam["exam"]["id"]
        assert await node_of(directory, exam["exam"]["id"]) == other.url
        await again.close()


async def test_sigterm_drains_a_node_its_exam_goes_on_new_exams_go_elsewhere_and_it_exits_when_the_exam_ends() -> None:
    async with AsyncExitStack() as stack:
        directory = await stack.enter_async_context(redis_server())
        a, b = await nodes(stack, directory, 2)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        running = await create_exam(session, a)
        desk = await joined(session, a.url, running["surveillant_links"][0], "Desk")
        draining, other = (a, b) if await node_of(directory, running["exam"]["id"]) == a.url else (b, a)
        if draining is not a:
            await desk.close()
            desk = await joined(session, draining.url, running["surveillant_links"][0], "Desk")

        draining.process.send_signal(signal.SIGTERM)
        # Its heartbeat says so within a beat; until then a new exam could still land on it.
        client = redis.from_url(directory)
        try:
            async with asyncio.timeout(RECOVERY_BOUND):
                while True:
                    beats = [await client.get(key) async for key in client.scan_iter(match="invigil:node:*")]
                    if any(b'"accepting": false' in beat for beat in beats if beat):
                        break
                    await asyncio.sleep(0.1)
        finally:
            await client.aclose()

        # A new exam, joined through the draining node, runs on the other one.
        new = await create_exam(session, other)
        newcomer = await joined(session, draining.url, new["surveillant_links"][0], "Desk 2")
        assert await node_of(directory, new["exam"]["id"]) == other.url

        # The running exam goes on: its desk is still connected and still served.
        student = await joined(session, draining.url, running["student_link"], "Sanne")
        roster = await desk.wait_for(lambda m: m["type"] == "roster" and m["students"])
        assert [s["name"] for s in roster["students"]] == ["Sanne"]
        assert draining.process.returncode is None

        # The organiser ends it: the node has nothing left and exits by itself.
        organiser = await joined(session, draining.url, running["organiser_link"], None)
        await organiser.send({"type": "end_exam", "v": 1, "id": 1})
        async with asyncio.timeout(RECOVERY_BOUND):
            assert await draining.process.wait() == 0
        for c in (desk, student, organiser, newcomer):
            await c.close()


def through(link: str, url: str) -> str:
    """The same link, opened through the node at `url`."""
    return url + "/" + link.split("/", 3)[3]


@pytest.mark.browser
async def test_pages_of_a_killed_nodes_exam_are_live_again_through_another_node(page_factory: Any) -> None:
    from tests.test_desk_and_recovery import desk_page, live_with, really_plays, recorded_student, tile_of
    from tests.test_student_page import go_live

    async with AsyncExitStack() as stack:
        directory = await stack.enter_async_context(redis_server())
        a, b = await nodes(stack, directory, 2)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        exam = await create_exam(session, a)
        first = await joined(session, a.url, exam["surveillant_links"][0], "Mevr. Jansen")  # places the exam
        holder, other = (a, b) if await node_of(directory, exam["exam"]["id"]) == a.url else (b, a)
        await first.close()

        desk = await desk_page(page_factory, through(exam["surveillant_links"][0], other.url), "Mevr. Jansen")
        student = await recorded_student(page_factory)
        await go_live(student, through(exam["student_link"], other.url), "Sanne")
        await live_with(student, "Mevr. Jansen")
        await really_plays(desk, f"{await tile_of(desk, 'Sanne')} .tile-webcam-video")

        for process in [*holder.workers(), psutil.Process(holder.process.pid)]:
            process.send_signal(signal.SIGKILL)
        await student.wait_for_selector("#connection-banner:not([hidden])", timeout=RECOVERY_BOUND * 1000)
        await student.wait_for_selector("#connection-banner", state="hidden", timeout=RECOVERY_BOUND * 1000)
        await live_with(student, "Mevr. Jansen")
        await really_plays(desk, f"{await tile_of(desk, 'Sanne')} .tile-webcam-video", timeout=RECOVERY_BOUND)
        assert await node_of(directory, exam["exam"]["id"]) == other.url


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://", "127.0.0.1:6379"])
def test_a_directory_that_is_not_a_redis_url_stops_serve(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from sfu.cli import main

    assert main(["serve", "--directory", url]) == 2
    assert "must be redis://HOST:PORT" in capsys.readouterr().err

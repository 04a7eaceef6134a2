"""`invigil serve --workers 2`: one address, exams spread over two worker processes, and a
killed worker whose exam comes back on a live one (real processes, aiortc-free signalling
bots and real Chromium pages)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import aiohttp
import psutil
import pytest

from tests.cluster_processes import serving
from tests.peers import Client
from tests.test_student_page import create_exam

RECOVERY_BOUND = 60.0
"""Generous: how long a test waits for something to come back (not a measured claim)."""


def test_workers_default_to_the_number_of_cores_and_must_be_positive() -> None:
    from sfu.cli import build_parser

    assert build_parser().parse_args(["serve"]).workers == len(os.sched_getaffinity(0))
    assert build_parser().parse_args(["serve", "--workers", "3"]).workers == 3
    for bad in ("0", "-1", "many"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", "--workers", bad])


async def test_one_worker_is_one_process_as_before() -> None:
    async with serving("--workers", "1") as served, aiohttp.ClientSession() as session:
        exam = await create_exam(session, served)
        desk = Client(session, served.url)
        assert (await desk.connect(token(exam["surveillant_links"][0]), name="Desk"))["type"] == "welcome"
        assert served.workers() == []
        await desk.close()


def token(link: str) -> str:
    return link.split("#", 1)[1]


async def test_exams_spread_over_both_workers_and_a_killed_worker_takes_only_its_own_exam() -> None:
    async with serving("--workers", "2") as served, aiohttp.ClientSession() as session:
        workers = await served.wait_for_workers(2)
        exams = [await create_exam(session, served) for _ in range(2)]
        desks, students = [], []
        for number, exam in enumerate(exams):
            desk = Client(session, served.url)
            assert (await desk.connect(token(exam["surveillant_links"][0]), name=f"Desk {number}"))["type"] == "welcome"
            student = Client(session, served.url)
            assert (await student.connect(token(exam["student_link"]), name=f"Student {number}"))["type"] == "welcome"
            desks.append(desk)
            students.append(student)
        # Each exam's two sockets met in one process: the desk sees its own student, and only that one.
        for number, desk in enumerate(desks):
            roster = await desk.wait_for(lambda m: m["type"] == "roster" and m["students"])
            assert [s["name"] for s in roster["students"]] == [f"Student {number}"]

        psutil.Process(workers[0].pid).send_signal(signal.SIGKILL)
        async with asyncio.timeout(RECOVERY_BOUND):
            while not any(desk.closed_code is not None for desk in desks):
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the other worker's sockets would have closed by now too
        closed = [number for number, desk in enumerate(desks) if desk.closed_code is not None]
        assert len(closed) == 1, "the two exams were not on two different workers"
        assert desks[closed[0]].closed_code == 1012  # service restart: the page reconnects
        survivor = desks[1 - closed[0]]
        assert survivor.closed_code is None and students[1 - closed[0]].closed_code is None

        # The killed worker's exam comes back (on a live worker) at the next join.
        again = Client(session, served.url)
        exam = exams[closed[0]]
        welcome = await again.connect(token(exam["surveillant_links"][0]), name=f"Desk {closed[0]}")
        assert welcome["type"] == "welcome" and welcome["exam"]["id"] == exam["exam"]["id"]
        await served.wait_for_workers(2, timeout=RECOVERY_BOUND)  # and the worker was restarted
        for client in (*desks, *students, again):
            await client.close()


@pytest.mark.browser
async def test_pages_of_an_exam_whose_worker_is_killed_are_live_again(page_factory: Any) -> None:
    from tests.test_desk_and_recovery import desk_page, live_with, really_plays, recorded_student, tile_of
    from tests.test_student_page import go_live

    async with serving("--workers", "2") as served, aiohttp.ClientSession() as session:
        await served.wait_for_workers(2)
        created = await create_exam(session, served)
        desk = await desk_page(page_factory, created["surveillant_links"][0], "Mevr. Jansen")
        student = await recorded_student(page_factory)
        await go_live(student, created["student_link"], "Sanne")
        await live_with(student, "Mevr. Jansen")
        await really_plays(desk, f"{await tile_of(desk, 'Sanne')} .tile-webcam-video")

        # The worker carrying the media is the one with UDP sockets.
        holders = [w for w in served.workers() if w.net_connections(kind="udp")]
        assert len(holders) == 1
        holders[0].send_signal(signal.SIGKILL)

        await student.wait_for_selector("#connection-banner:not([hidden])", timeout=RECOVERY_BOUND * 1000)
        await student.wait_for_selector("#connection-banner", state="hidden", timeout=RECOVERY_BOUND * 1000)
        await live_with(student, "Mevr. Jansen")
        await really_plays(desk, f"{await tile_of(desk, 'Sanne')} .tile-webcam-video", timeout=RECOVERY_BOUND)
        assert holders[0].pid not in [w.pid for w in served.workers()]


async def test_a_worker_counts_joins_by_the_address_the_entry_names_and_a_browser_cannot_name_one() -> None:
    """The join limit must count browsers, not the entry: with the key the named address is
    the client's; without it (a browser, or anyone on the machine) the header is ignored."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from sfu.cluster.worker import CLIENT_ADDRESS_HEADER, ENTRY_KEY_HEADER, client_address_from_entry, entry_key

    key = entry_key(b"s" * 32)

    async def remote(request: web.Request) -> web.Response:
        return web.Response(text=request.remote or "")

    app = web.Application(middlewares=[client_address_from_entry(key)])
    app.router.add_get("/", remote)
    async with TestClient(TestServer(app)) as client:
        named = {ENTRY_KEY_HEADER: key, CLIENT_ADDRESS_HEADER: "192.0.2.7"}
        assert await (await client.get("/", headers=named)).text() == "192.0.2.7"
        forged = {ENTRY_KEY_HEADER: entry_key(b"t" * 32), CLIENT_ADDRESS_HEADER: "192.0.2.7"}
        assert await (await client.get("/", headers=forged)).text() == "127.0.0.1"
        assert await (await client.get("/", headers={CLIENT_ADDRESS_HEADER: "192.0.2.7"})).text() == "127.0.0.1"


async def test_joins_through_the_entry_are_limited_per_browser_address_not_for_everyone() -> None:
    """One address that joins too often is refused; another address still gets in. Were the
    worker to count the entry's address, the second would be refused too."""
    async with serving("--workers", "2") as served, aiohttp.ClientSession() as session, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as other:
        exam = await create_exam(session, served)
        refused = None
        # An address may join 250 at once (sfu/rate_limit.py), refilled 3 a second.
        for attempt in range(600):
            client = Client(session, served.url)
            reply = await client.connect(token(exam["student_link"]), name=f"S{attempt}")
            await client.close()
            if reply["type"] == "error":
                refused = reply
                break
        assert refused is not None and refused["code"] == "rate_limited"
        newcomer = Client(other, served.url)
        assert (await newcomer.connect(token(exam["student_link"]), name="Other"))["type"] == "welcome"
        await newcomer.close()


async def test_workers_do_not_outlive_an_entry_killed_with_sigkill() -> None:
    async with serving("--workers", "2") as served:
        workers = await served.wait_for_workers(2)
        served.process.send_signal(signal.SIGKILL)
        await served.process.wait()
        # Their stdin closes with the entry: each worker stops by itself.
        gone, alive = psutil.wait_procs(workers, timeout=RECOVERY_BOUND)
        assert alive == []


def test_each_worker_gets_the_turn_secret_and_a_media_port_of_its_own() -> None:
    """A worker builds its config from the entry's spec: TURN and the media port must survive the
    trip, and worker i takes base port + i (two processes cannot share one UDP port)."""
    from sfu.cluster.worker import config_from_spec, spec_for
    from sfu.config import ServerConfig
    from sfu.turn_credentials import TurnRest

    turn = TurnRest(b"t" * 32, ("turn:turn.example.org:3478?transport=udp",), 3600)
    spec = json.loads(json.dumps(spec_for(ServerConfig(secret=b"s" * 32, turn=turn, media_port=3479))))
    configs = [config_from_spec({**spec, "index": index}) for index in range(3)]
    assert [config.media_port for config in configs] == [3479, 3480, 3481]
    assert all(config.turn == turn for config in configs)
    assert config_from_spec(spec_for(ServerConfig(secret=b"s" * 32))).media_port is None

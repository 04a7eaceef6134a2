"""A class behind one school NAT: 200 students join one exam and run the upload check from one
address, while floods beyond the allowances (per address, per exam, uploads in progress) are refused.

The policies (`Buckets`, `UploadSlots`) are pure and tested against a model with hypothesis; the
limits of the real app are tested with real WebSocket clients and real POSTs. The server tests
freeze the limiters' clocks: everyone arrives at the same instant, the hardest case (real time
only refills), and the counts do not depend on how fast this machine is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sfu.app import JOIN_LIMITER, REGISTRY
from sfu.rate_limit import (
    JOIN_PER_ADDRESS,
    JOIN_PER_EXAM,
    UPLOAD_PER_ADDRESS,
    UPLOADS_AT_ONCE,
    UPLOADS_AT_ONCE_PER_ADDRESS,
    Allowance,
    Buckets,
    JoinLimiter,
    UploadLimiter,
    UploadSlots,
)
from student_join.routes import UPLOAD_LIMITER
from tests.peers import Client, wait_until
from tests.test_sfu_forwarding import create_exam, token

CLASS = 200
FIRST_BYTES, MAX_BYTES = 64 * 1024, 1024 * 1024
"""As in student_join/static/uplink.js: the page's upload check grows its POSTs from 64 KiB to 1 MiB."""


# -- the pure policies ---------------------------------------------------------------------------


class BucketsMachine(RuleBasedStateMachine):
    """`Buckets` against a model that never forgets: forgetting refilled buckets changes no answer,
    no key is ever allowed more than its burst plus what its rate refilled, and memory stays bounded."""

    def __init__(self) -> None:
        super().__init__()
        self.allowance = Allowance(burst=3, rate=0.5)
        self.buckets = Buckets(self.allowance, max_keys=1000)
        self.now = 0.0
        self.model: dict[str, tuple[float, float]] = {}
        self.allowed: dict[str, list[float]] = {}

    @rule(key=st.sampled_from(["a", "b", "c", "d"]), wait=st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 2.0, 7.0]))
    def take(self, key: str, wait: float) -> None:
        self.now += wait
        tokens, last = self.model.get(key, (self.allowance.burst, self.now))
        tokens = min(self.allowance.burst, tokens + (self.now - last) * self.allowance.rate)
        expected = tokens >= 1
        self.model[key] = (tokens - 1 if expected else tokens, self.now)
        assert self.buckets.take(key, self.now) is expected
        if expected:
            self.allowed.setdefault(key, []).append(self.now)

    @rule(wait=st.sampled_from([0.5, 3.0, 6.0, 10.0]))
    def time_passes(self, wait: float) -> None:
        self.now += wait
        self.buckets.forget_full(self.now)

    @invariant()
    def never_more_than_burst_plus_refill(self) -> None:
        for times in self.allowed.values():
            for start in range(len(times)):
                window = times[-1] - times[start]
                assert len(times) - start <= self.allowance.burst + window * self.allowance.rate + 1e-9

    @invariant()
    def refilled_buckets_are_forgotten(self) -> None:
        self.buckets.forget_full(self.now)
        for key, (_, last) in self.model.items():
            if self.now - last >= self.allowance.full_after:
                assert key not in self.buckets


BucketsMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_buckets_machine = BucketsMachine.TestCase


@settings(max_examples=100, deadline=None)
@given(keys=st.lists(st.integers(0, 500), max_size=400), max_keys=st.integers(1, 50))
def test_buckets_hold_at_most_max_keys(keys: list[int], max_keys: int) -> None:
    buckets = Buckets(Allowance(burst=2, rate=0.01), max_keys)
    for number, key in enumerate(keys):
        buckets.take(str(key), number * 0.1)
        assert len(buckets) <= max_keys


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["take", "give_back"]), st.sampled_from(["x", "y", "z"])), max_size=80))
def test_upload_slots_never_exceed_their_bounds(steps: list[tuple[str, str]]) -> None:
    slots = UploadSlots(per_key=3, total=5)
    held: dict[str, int] = {}
    for action, key in steps:
        if action == "take":
            free = held.get(key, 0) < 3 and sum(held.values()) < 5
            assert slots.take(key) is free
            if free:
                held[key] = held.get(key, 0) + 1
        elif held.get(key):
            slots.give_back(key)
            held[key] -= 1
        else:
            with pytest.raises(ValueError):
                slots.give_back(key)
        assert slots.in_use == sum(held.values()) <= 5
        assert len(slots) == sum(1 for count in held.values() if count)


def test_a_class_of_200_joins_from_one_address_and_a_flood_is_refused() -> None:
    """The default allowances: 200 at one instant (and a class's surveillants), then refused;
    within 2 minutes another class's worth; an exam from many addresses is bounded too."""
    now = [0.0]
    limiter = JoinLimiter(clock=lambda: now[0])
    assert all(limiter.allow("203.0.113.7") for _ in range(CLASS + 10))
    refused = sum(not limiter.allow("203.0.113.7") for _ in range(1000))
    assert 0 < refused and 1000 - refused <= JOIN_PER_ADDRESS.burst - CLASS - 10
    now[0] += 120
    assert all(limiter.allow("203.0.113.7") for _ in range(CLASS))
    assert sum(limiter.allow_exam("exam") for _ in range(5000)) == JOIN_PER_EXAM.burst
    assert limiter.allow_exam("another exam")


def test_a_class_of_200_runs_the_upload_check_and_a_flood_is_refused() -> None:
    now = [0.0]
    limiter = UploadLimiter(clock=lambda: now[0])
    for _ in range(CLASS * 3):  # the page's three POSTs each
        assert limiter.start("203.0.113.7")
        limiter.finish("203.0.113.7")
    admitted = 0
    while limiter.start("203.0.113.7"):
        limiter.finish("203.0.113.7")
        admitted += 1
    assert admitted == UPLOAD_PER_ADDRESS.burst - CLASS * 3
    assert limiter.start("2001:db8::1") and limiter.slots.in_use == 1


def test_uploads_in_progress_are_bounded_and_a_refusal_costs_no_allowance() -> None:
    limiter = UploadLimiter(
        per_address=Allowance(burst=100, rate=1.0), at_once_per_address=2, at_once=3, clock=lambda: 0.0
    )
    assert limiter.start("192.0.2.1") and limiter.start("192.0.2.1")
    assert not limiter.start("192.0.2.1")
    assert limiter.start("192.0.2.2")
    assert not limiter.start("192.0.2.3"), "the total bound holds across addresses"
    limiter.finish("192.0.2.1")
    assert limiter.start("192.0.2.1")
    assert limiter.addresses._buckets["192.0.2.1"][0] == 100 - 3


# -- through the real server ----------------------------------------------------------------------


def frozen(limiter: JoinLimiter | UploadLimiter) -> list[float]:
    """Stop the limiter's clock (and return it, to move it by hand)."""
    clock = [time.monotonic()]
    limiter.clock = lambda: clock[0]
    return clock


def student_app(server: Any) -> web.Application:
    for resource in server.app.router.resources():
        info = resource.get_info()
        if info.get("prefix") == "/join":
            return info["app"]
    raise LookupError("no student app")


async def hello(session: aiohttp.ClientSession, server: Any, link_token: str, name: str | None = None) -> Client:
    client = Client(session, server.url)
    await client.connect(link_token, name=name)
    return client


async def test_200_students_join_one_exam_from_one_address(server: Any) -> None:
    """All 200 get `welcome` and wait in the exam's queue; a flood after them is refused."""
    limiter = server.app[JOIN_LIMITER]
    frozen(limiter)
    clients: list[Client] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        created = await create_exam(session, server, cap=8)
        student = token(created["student_link"])
        try:
            for batch in range(0, CLASS, 25):
                clients += await asyncio.gather(
                    *(hello(session, server, student, f"Student {n}") for n in range(batch, batch + 25))
                )
            replies = [client.received[0] for client in clients]
            assert [reply["type"] for reply in replies] == ["welcome"] * CLASS, {r.get("code") for r in replies}
            exam = server.app[REGISTRY].exams[created["exam"]["id"]]
            assert len(exam.assignment.queue()) == CLASS
            del exam

            # A flood from the same address (forged links, so it is cheap) is refused.
            # A refused link closes its socket: each attempt opens a new one, as a flood would.
            codes: list[str] = []
            while "rate_limited" not in codes and len(codes) <= JOIN_PER_ADDRESS.burst:
                flood = await hello(session, server, "forged." + "A" * 43)
                codes.append(flood.received[0]["code"])
                await flood.close()
            assert codes.count("link_invalid") <= JOIN_PER_ADDRESS.burst - CLASS - 1
        finally:
            await asyncio.gather(*(client.close() for client in clients))


async def test_a_flood_into_one_exam_is_refused_from_any_address(server: Any) -> None:
    """The exam's own allowance (small here) holds across addresses; other exams still open."""
    limiter = server.app[JOIN_LIMITER]
    frozen(limiter)
    limiter.exams.allowance = Allowance(burst=6, rate=1e-6)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=8)
        other = await create_exam(session, server, cap=8)
    clients: list[Client] = []
    replies = []
    for number in range(9):
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.0.{2 + number % 3}", 0))
        session = aiohttp.ClientSession(connector=connector)
        client = await hello(session, server, token(created["student_link"]), f"S{number}")
        clients.append(client)
        replies.append(client.received[0])
    assert [r["type"] for r in replies[:6]] == ["welcome"] * 6
    assert [r.get("code") for r in replies[6:]] == ["rate_limited"] * 3
    async with aiohttp.ClientSession() as session:
        elsewhere = await hello(session, server, token(other["student_link"]), "T")
        assert elsewhere.received[0]["type"] == "welcome"
        await elsewhere.close()
    for client in clients:
        await client.close()
        await client.session.close()


async def page_upload_check(session: aiohttp.ClientSession, url: str) -> list[int]:
    """What student_join/static/uplink.js does: POSTs of zeros growing 64 KiB, 256 KiB, 1 MiB,
    stopping once one takes 700 ms or reaches 1 MiB. The statuses it got."""
    statuses = []
    size = FIRST_BYTES
    while True:
        sent = time.monotonic()
        async with session.post(url, data=bytes(size), headers={"Content-Type": "application/octet-stream"}) as reply:
            statuses.append(reply.status)
            await reply.read()
        if reply.status != 200 or time.monotonic() - sent >= 0.7 or size >= MAX_BYTES:
            return statuses
        size = min(size * 4, MAX_BYTES)


async def test_200_students_run_the_upload_check_from_one_address(server: Any) -> None:
    """Every student's check succeeds (the page's full sequence, 20 at a time); a flood after
    the class's allowance gets 429."""
    limiter = student_app(server)[UPLOAD_LIMITER]
    frozen(limiter)
    url = server.url + "/join/upload-check"
    async with aiohttp.ClientSession() as session:
        statuses: list[int] = []
        for batch in range(0, CLASS, 20):
            for result in await asyncio.gather(*(page_upload_check(session, url) for _ in range(20))):
                statuses += result
        assert set(statuses) == {200} and len(statuses) >= CLASS
        assert limiter.slots.in_use == 0
        flood = []
        for _ in range(UPLOAD_PER_ADDRESS.burst - len(statuses) + 5):
            async with session.post(url, data=b"x") as reply:
                flood.append(reply.status)
        assert flood[-5:] == [429] * 5 and flood.count(200) == UPLOAD_PER_ADDRESS.burst - len(statuses)


async def test_upload_checks_in_progress_are_bounded_per_address(server: Any) -> None:
    """Uploads held open up to the bound per address; one more gets 429 at once, another address
    does not; once they finish, the address checks again."""
    limiter = student_app(server)[UPLOAD_LIMITER]
    url = server.url + "/join/upload-check"
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield bytes(1024)
        await release.wait()
        yield bytes(1024)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def held() -> int:
            async with session.post(url, data=slow_body()) as reply:
                return reply.status

        holding = [asyncio.ensure_future(held()) for _ in range(UPLOADS_AT_ONCE_PER_ADDRESS)]
        try:
            await wait_until(lambda: limiter.slots.in_use == UPLOADS_AT_ONCE_PER_ADDRESS, 20)
            async with session.post(url, data=b"x") as reply:
                assert reply.status == 429 and reply.headers["Retry-After"] == "1"
            connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
            async with aiohttp.ClientSession(connector=connector) as other:
                async with other.post(url, data=b"x") as reply:
                    assert reply.status == 200
        finally:
            release.set()
            statuses = await asyncio.gather(*holding)
        assert statuses == [200] * UPLOADS_AT_ONCE_PER_ADDRESS
        assert limiter.slots.in_use == 0 and UPLOADS_AT_ONCE > UPLOADS_AT_ONCE_PER_ADDRESS
        async with session.post(url, data=b"x") as reply:
            assert reply.status == 200

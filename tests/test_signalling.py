"""The signalling socket through the real server: the exam's life, and bad input that changes nothing."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from sfu.app import REGISTRY
from sfu.messages import LARGEST_FRAME_BYTES
from tests.peers import Client
from tests.test_sfu_forwarding import create_exam, token


async def joined(session: aiohttp.ClientSession, server: Any, link: str, name: str | None = None) -> Client:
    client = Client(session, server.url)
    welcome = await client.connect(token(link), name=name)
    assert welcome["type"] == "welcome", welcome
    return client


async def test_queue_then_assignment_then_reassignment(server_factory: Any) -> None:
    server = await server_factory(surveillant_grace_seconds=0.3)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1)
        organiser = await joined(session, server, created["organiser_link"])
        first = await joined(session, server, created["student_link"], "Ada")
        assert (await first.wait_for(lambda m: m["type"] == "queue"))["position"] == 1
        second = await joined(session, server, created["student_link"], "Bo")
        assert (await second.wait_for(lambda m: m["type"] == "queue" and m["position"] == 2))
        await organiser.wait_for(lambda m: m["type"] == "overview" and len(m["queue"]) == 2)

        desk = await joined(session, server, created["surveillant_links"][0], "Mevr. K")
        placed = await first.wait_for(lambda m: m["type"] == "assigned")
        assert placed["surveillant"]["name"] == "Mevr. K"
        assert (await second.wait_for(lambda m: m["type"] == "queue" and m["position"] == 1))
        roster = await desk.wait_for(lambda m: m["type"] == "roster" and m["students"])
        assert [s["name"] for s in roster["students"]] == ["Ada"]

        # The surveillant drops; after the grace period Ada goes back to the front of the queue.
        first_mark, second_mark = first.mark(), second.mark()
        await desk.close()
        await first.wait_for(lambda m: m["type"] == "queue" and m["position"] == 1, timeout=5, after=first_mark)
        await second.wait_for(lambda m: m["type"] == "queue" and m["position"] == 2, timeout=5, after=second_mark)

        # A new surveillant seat takes Ada first.
        link = (await organiser.request({"type": "add_surveillant"}))["link"]
        other = await joined(session, server, link, "Dhr. L")
        await first.wait_for(lambda m: m["type"] == "assigned" and m["surveillant"]["name"] == "Dhr. L")
        for client in (organiser, first, second, other):
            await client.close()


async def test_surveillant_back_within_grace_keeps_students(server_factory: Any) -> None:
    server = await server_factory(surveillant_grace_seconds=5)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        desk = await joined(session, server, created["surveillant_links"][0], "S")
        student = await joined(session, server, created["student_link"], "Kim")
        await student.wait_for(lambda m: m["type"] == "assigned")
        await desk.close()
        desk = await joined(session, server, created["surveillant_links"][0], "S")
        roster = await desk.wait_for(lambda m: m["type"] == "roster" and m["students"])
        assert roster["students"][0]["name"] == "Kim"
        assert len([m for m in student.received if m["type"] == "queue"]) == 0
        await desk.close()
        await student.close()


async def test_student_resumes_their_place(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1)
        first = await joined(session, server, created["student_link"], "Een")
        second = await joined(session, server, created["student_link"], "Twee")
        await second.wait_for(lambda m: m["type"] == "queue" and m["position"] == 2)
        resume = second.latest("welcome")["resume"]
        await second.close()
        again = Client(session, server.url)
        welcome = await again.connect(token(created["student_link"]), name="Twee", resume=resume)
        assert welcome["participant_id"] == second.latest("welcome")["participant_id"]
        await again.wait_for(lambda m: m["type"] == "queue" and m["position"] == 2)
        await first.close()
        await again.close()


async def test_organiser_ends_exam_for_everyone_and_links_die(live_exam: dict[str, Any]) -> None:
    server, created = live_exam["server"], live_exam["created"]
    exam_id = created["exam"]["id"]
    assert exam_id in server.app[REGISTRY].exams
    await live_exam["organiser"].send({"type": "end_exam", "v": 1})
    for client in (live_exam["organiser"], live_exam["desk"], live_exam["student"]):
        await client.wait_for(lambda m: m["type"] == "exam_ended")
        await wait_closed(client)
        assert client.closed_code == 4000
    assert exam_id not in server.app[REGISTRY].exams
    late = Client(live_exam["session"], server.url)
    refused = await late.connect(token(created["student_link"]), name="Late")
    assert refused["type"] == "error" and refused["code"] == "exam_ended"
    await wait_closed(late)


async def test_exam_ends_at_its_end_time(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        organiser = Client(session, server.url)
        await organiser.connect(token(server.creator_link))
        created = await organiser.request(
            {"type": "create_exam", "title": "Kort", "kind": "written", "cap": 2, "note": "", "contact": "",
             "ends_at": int(time.time()) + 2, "id_check": False}
        )
        student = await joined(session, server, created["student_link"], "Kim")
        await student.wait_for(lambda m: m["type"] == "exam_ended", timeout=5)
        await wait_closed(student)
        assert student.closed_code == 4000
        await organiser.close()


async def wait_closed(client: Client, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while client.closed_code is None:
            await asyncio.sleep(0.02)


# -- bad input --------------------------------------------------------------------


@pytest.fixture
async def live_exam(server: Any) -> Any:
    """An exam with an organiser, a surveillant and an assigned student, all connected."""
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        organiser = await joined(session, server, created["organiser_link"])
        desk = await joined(session, server, created["surveillant_links"][0], "S")
        student = await joined(session, server, created["student_link"], "Kim")
        await student.wait_for(lambda m: m["type"] == "assigned")
        roster = await desk.wait_for(lambda m: m["type"] == "roster" and m["students"])
        yield {
            "session": session,
            "server": server,
            "created": created,
            "organiser": organiser,
            "desk": desk,
            "student": student,
            "student_id": roster["students"][0]["id"],
        }
        for client in (organiser, desk, student):
            await client.close()


async def still_working(exam: dict[str, Any]) -> None:
    """The others are untouched: a message from the surveillant still reaches the student."""
    reply = await exam["desk"].request({"type": "message", "student_id": exam["student_id"], "text": "Alles goed?"})
    assert reply["type"] == "ack", reply
    await exam["student"].wait_for(lambda m: m["type"] == "message" and m["text"] == "Alles goed?")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "malformed"),
        ("[1, 2, 3]", "malformed"),
        (json.dumps({"type": "message", "v": 2, "student_id": "x", "text": "hi"}), "unsupported_version"),
        (json.dumps({"type": "teleport", "v": 1}), "unknown_type"),
        (json.dumps({"type": "message", "v": 1, "student_id": 5, "text": "hi"}), "invalid"),
        (json.dumps({"type": "message", "v": 1, "student_id": "x", "text": "x" * 501}), "invalid"),
        (json.dumps({"type": "focus", "v": 1, "student_id": "p-nobody"}), "unknown_participant"),
        (json.dumps({"type": "set_cap", "v": 1, "cap": 3}), "not_allowed"),
        (json.dumps({"type": "hello", "v": 1, "token": "x"}), "not_allowed"),
    ],
)
async def test_bad_frames_from_a_surveillant_get_clear_errors(live_exam: dict[str, Any], frame: str, code: str) -> None:
    desk = live_exam["desk"]
    await desk.socket.send_str(frame)
    error = await desk.wait_for(lambda m: m["type"] == "error")
    assert error["code"] == code, error
    assert set(error["message"]) == {"nl", "en"} and all(error["message"].values())
    await still_working(live_exam)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "focus", "student_id": None},
        {"type": "message", "student_id": "p-000000000000", "text": "hi"},
        {"type": "end_exam"},
        {"type": "add_surveillant"},
        {"type": "hand_over", "student_id": "p-000000000000", "to": "p-000000000000"},
    ],
)
async def test_a_student_cannot_act_as_staff(live_exam: dict[str, Any], message: dict[str, Any]) -> None:
    reply = await live_exam["student"].request(message)
    assert reply["type"] == "error" and reply["code"] == "not_allowed", reply
    await still_working(live_exam)


async def test_a_surveillant_cannot_reach_another_surveillants_student(live_exam: dict[str, Any]) -> None:
    session, server, created = live_exam["session"], live_exam["server"], live_exam["created"]
    link = (await live_exam["organiser"].request({"type": "add_surveillant"}))["link"]
    intruder = await joined(session, server, link, "Other")
    for message in (
        {"type": "message", "student_id": live_exam["student_id"], "text": "hoi"},
        {"type": "talk", "student_id": live_exam["student_id"], "on": True},
        {"type": "focus", "student_id": live_exam["student_id"]},
        {"type": "end_session", "student_id": live_exam["student_id"], "reason": "x"},
    ):
        reply = await intruder.request(message)
        assert reply["type"] == "error" and reply["code"] == "not_allowed", (message, reply)
    assert not [m for m in live_exam["student"].received if m["type"] in ("message", "talk", "session_ended")]
    await still_working(live_exam)
    await intruder.close()


async def test_refused_links_close_the_socket(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server)
        good = token(created["student_link"])
        body, signature = good.split(".")
        tampered = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + signature
        for bad in (tampered, "garbage", good[:-3], ""):
            client = Client(session, server.url)
            reply = await client.connect(bad, name="X")
            assert reply["type"] == "error" and reply["code"] == "link_invalid", reply
            await wait_closed(client)
            assert client.closed_code == 4001


async def test_messages_before_hello_are_refused(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        socket = await session.ws_connect(server.url.replace("http", "ws") + "/ws")
        await socket.send_str(json.dumps({"type": "focus", "v": 1, "student_id": None}))
        reply = json.loads((await socket.receive(timeout=5)).data)
        assert reply["code"] == "not_authenticated"
        await socket.close()


async def test_oversized_frame_closes_only_that_socket(live_exam: dict[str, Any]) -> None:
    student = live_exam["student"]
    # Over the largest frame anyone may send (a cap-50 desk's offer); smaller ones are answered too_large.
    await student.socket.send_str(json.dumps({"type": "status", "v": 1, "camera": True, "pad": "x" * LARGEST_FRAME_BYTES}))
    await wait_closed(student)
    assert student.closed_code == 1009
    roster = live_exam["desk"].latest("roster")
    assert roster is not None


async def test_flood_closes_the_socket(live_exam: dict[str, Any]) -> None:
    desk = live_exam["desk"]
    frame = json.dumps({"type": "focus", "v": 1, "student_id": None})
    for _ in range(200):
        if desk.socket.closed:
            break
        await desk.socket.send_str(frame)
    await wait_closed(desk)
    assert desk.closed_code == 4008
    assert any(m["type"] == "error" and m["code"] == "rate_limited" for m in desk.received)
    # The student and organiser are still fine.
    reply = await live_exam["student"].request({"type": "hand", "raised": True})
    assert reply["type"] == "ack"


async def test_exam_organiser_gets_the_exam_links_back(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server)
        organiser = Client(session, server.url)
        welcome = await organiser.connect(token(created["organiser_link"]))
        assert welcome["links"] == {"organiser": created["organiser_link"], "student": created["student_link"]}
        student = Client(session, server.url)
        student_welcome = await student.connect(token(created["student_link"]), name="Kim")
        assert student_welcome["links"] is None and student_welcome["resume"]
        for page in ("join", "desk", "organise"):
            async with session.get(f"{server.url}/{page}", allow_redirects=False) as response:
                assert response.status == 308 and response.headers["Location"] == f"/{page}/"
        await organiser.close()
        await student.close()

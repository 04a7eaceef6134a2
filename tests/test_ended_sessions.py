"""An ended session stays ended, and a link can be checked before anything joins.

Personal seat links: numbered, signed like every link, one place each; a seat
ended by the surveillant cannot be taken again, and a second connection to a
seat replaces the first with the desk told. The shared link: an ended
session's resume is revoked, and a new student under the same name raises an
alert. `check` answers valid / expired / invalid / ended without joining.
Real server, real sockets (tests/peers.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from sfu.app import REGISTRY
from sfu.links import Capability
from tests.peers import Client
from tests.test_sfu_forwarding import create_exam, token


async def _organiser_seat_links(session: aiohttp.ClientSession, server: Any, created: dict[str, Any], count: int) -> list[str]:
    organiser = Client(session, server.url)
    await organiser.connect(token(created["organiser_link"]))
    reply = await organiser.request({"type": "seat_links", "count": count})
    await organiser.close()
    assert reply["type"] == "seat_links", reply
    return reply["links"]


async def _check(session: aiohttp.ClientSession, server: Any, link_token: str, resume: str | None = None) -> str:
    client = Client(session, server.url)
    client.socket = await session.ws_connect(client.url)
    client._reader = asyncio.ensure_future(client._read())
    message: dict[str, Any] = {"type": "check", "token": link_token}
    if resume is not None:
        message["resume"] = resume
    reply = await client.request(message)
    await client.close()
    assert reply["type"] == "link_status", reply
    return reply["status"]


async def test_seat_links_are_numbered_signed_and_the_same_on_every_request(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=4)
        links = await _organiser_seat_links(session, server, created, 3)
        assert len(links) == 3 and len(set(links)) == 3
        signer = server.app[REGISTRY].signer
        seats = [signer.verify(token(link), time.time()).seat for link in links]
        assert seats == ["seat-1", "seat-2", "seat-3"]
        assert links == await _organiser_seat_links(session, server, created, 3)
        # Only an exam's organiser may ask; a student may not.
        student = Client(session, server.url)
        await student.connect(token(links[0]), name="Sanne")
        refused = await student.request({"type": "seat_links", "count": 2})
        assert refused["code"] == "not_allowed"
        await student.close()


async def test_an_ended_seat_cannot_come_back(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=4)
        seat = token((await _organiser_seat_links(session, server, created, 2))[0])
        desk = Client(session, server.url)
        await desk.connect(token(created["surveillant_links"][0]), name="Mevr. Jansen")
        student = Client(session, server.url)
        await student.connect(seat, name="Sanne")
        roster = await desk.wait_for(lambda m: m["type"] == "roster" and m["students"])
        assert (await desk.request({"type": "end_session", "student_id": roster["students"][0]["id"],
                                    "reason": ""}))["type"] == "ack"
        await student.wait_for(lambda m: m["type"] == "session_ended")

        assert await _check(session, server, seat) == "session_ended"
        again = Client(session, server.url)
        refused = await again.connect(seat, name="Sanne")
        assert refused["type"] == "error" and refused["code"] == "session_ended"
        await _closed(again)
        assert again.closed_code == 4002
        await desk.close()


async def test_a_second_connection_to_a_seat_replaces_the_first_and_the_desk_sees_it(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=4)
        seat = token((await _organiser_seat_links(session, server, created, 1))[0])
        desk = Client(session, server.url)
        await desk.connect(token(created["surveillant_links"][0]), name="Mevr. Jansen")
        first = Client(session, server.url)
        first_welcome = await first.connect(seat, name="Sanne")
        await desk.wait_for(lambda m: m["type"] == "roster" and m["students"])
        second = Client(session, server.url)
        second_welcome = await second.connect(seat, name="Sanne")
        assert second_welcome["participant_id"] == first_welcome["participant_id"]
        alert = await desk.wait_for(lambda m: m["type"] == "alert")
        assert alert["kind"] == "taken_over" and alert["student_id"] == first_welcome["participant_id"]
        await _closed(first)
        assert first.closed_code == 4003
        roster = desk.latest("roster")
        assert roster is not None and len(roster["students"]) == 1
        await second.close()
        await desk.close()


async def _closed(client: Client) -> None:
    try:
        await client.wait_for(lambda m: False, timeout=5)
    except ConnectionError:
        return


async def test_on_the_shared_link_an_ended_resume_is_revoked_and_a_rejoin_by_name_is_seen(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=4)
        shared = token(created["student_link"])
        desk = Client(session, server.url)
        await desk.connect(token(created["surveillant_links"][0]), name="Mevr. Jansen")
        student = Client(session, server.url)
        welcome = await student.connect(shared, name="Sanne de Vries")
        roster = await desk.wait_for(lambda m: m["type"] == "roster" and m["students"])
        await desk.request({"type": "end_session", "student_id": roster["students"][0]["id"], "reason": ""})
        await _closed(student)
        assert student.closed_code == 4002

        assert await _check(session, server, shared, welcome["resume"]) == "session_ended"
        assert await _check(session, server, shared) == "ok"
        resumed = Client(session, server.url)
        refused = await resumed.connect(shared, name="Sanne de Vries", resume=welcome["resume"])
        assert refused["code"] == "session_ended"

        mark = desk.mark()
        other = Client(session, server.url)
        await other.connect(shared, name="Piet")
        stranger = await desk.wait_for(lambda m: m["type"] == "roster" and len(m["students"]) == 1, after=mark)
        assert not any(m["type"] == "alert" for m in desk.received[mark:])

        again = Client(session, server.url)
        rejoined = await again.connect(shared, name="  sanne de VRIES ")
        alert = await desk.wait_for(lambda m: m["type"] == "alert", after=mark)
        assert alert == {"type": "alert", "v": 1, "student_id": rejoined["participant_id"],
                         "kind": "rejoined_after_end"}
        assert stranger["students"][0]["name"] == "Piet"
        for client in (other, again, desk):
            await client.close()


async def test_a_check_says_what_a_link_would_meet_without_joining(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=4)
        registry = server.app[REGISTRY]
        link = token(created["student_link"])
        assert await _check(session, server, link) == "ok"
        assert await _check(session, server, link[:-3] + "AAA") == "link_invalid"
        assert await _check(session, server, "garbage") == "link_invalid"
        capability = registry.signer.verify(link, time.time())
        expired = registry.signer.sign(Capability(role="student", exam=capability.exam, seat="student",
                                                   expires_at=int(time.time()) - 1))
        assert await _check(session, server, expired) == "link_expired"
        # Nothing was started by the checks.
        assert registry.exams == {}

        organiser = Client(session, server.url)
        await organiser.connect(token(created["organiser_link"]))
        await organiser.send({"type": "end_exam", "v": 1})
        await _closed(organiser)
        assert await _check(session, server, link) == "exam_ended"
        assert await _check(session, server, token(created["surveillant_links"][0])) == "exam_ended"

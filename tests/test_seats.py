"""Who holds a student's seat: a hand-over detaches the old surveillant, a placed socket
without media is released, and a resume that takes a seat from an open socket is seen.

Real aiortc peers through the real server (tests/peers.py); the desk's display of the
same state is checked in real Chromium in tests/test_desk_seats.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.peers import Client, wait_until
from tests.test_sfu_forwarding import add_surveillant, create_exam, join_student, join_surveillant, token


async def _settle(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def test_a_hand_over_ends_the_old_surveillants_talk_back_and_focus(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        organiser, second_link = await add_surveillant(session, server, created)
        first, first_peer = await join_surveillant(session, server, created["surveillant_links"][0], "A", 2)
        student, publisher = await join_student(session, server, created, "Sanne")
        roster = await first.wait_for(lambda m: m["type"] == "roster" and m["students"])
        student_id = roster["students"][0]["id"]
        second, second_peer = await join_surveillant(session, server, second_link, "B", 2)
        others = await first.wait_for(lambda m: m["type"] == "roster" and m["others"])
        second_id = others["others"][0]["id"]

        assert (await first.request({"type": "focus", "student_id": student_id}))["type"] == "ack"
        assert (await first.request({"type": "talk", "student_id": student_id, "on": True}))["type"] == "ack"
        await wait_until(lambda: publisher.voice.frames >= 25, 15)

        reply = await first.request({"type": "hand_over", "student_id": student_id, "to": second_id})
        assert reply["type"] == "ack", reply
        await student.wait_for(lambda m: m["type"] == "assigned" and m["surveillant"]["name"] == "B")
        # The old surveillant's roster no longer says it talks to or focuses the student.
        after = await first.wait_for(lambda m: m["type"] == "roster" and not m["students"])
        assert after["talking"] is None and after["focus"] is None
        await student.wait_for(lambda m: m["type"] == "talk" and m["on"] is False)

        # A's voice no longer reaches the student, though A's microphone keeps sending.
        await _settle(1.0)
        heard = publisher.voice.frames
        await _settle(1.5)
        assert publisher.voice.frames == heard

        # The student's encoder follows B's focus, and A's focus changes no longer touch it.
        mark = student.mark()
        assert (await second.request({"type": "focus", "student_id": student_id}))["type"] == "ack"
        focused = await student.wait_for(lambda m: m["type"] == "quality", after=mark)
        assert focused["level"] == "focus"
        mark = student.mark()
        assert (await first.request({"type": "focus", "student_id": None}))["type"] == "ack"
        # B's message is sent after A's focus change: whatever A's change pushed came before it.
        await second.request({"type": "message", "student_id": student_id, "text": "Alles goed?"})
        await student.wait_for(lambda m: m["type"] == "message", after=mark)
        assert [m for m in student.received[mark:] if m["type"] == "quality"] == []
        assert student.latest("quality")["level"] == "focus"

        for closable in (publisher, first_peer, second_peer, student, first, second, organiser):
            await closable.close()


async def test_a_departing_surveillants_talk_back_ends_and_the_student_is_told(server_factory: Any) -> None:
    server = await server_factory(surveillant_grace_seconds=0.2)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        first, first_peer = await join_surveillant(session, server, created["surveillant_links"][0], "A", 2)
        student, publisher = await join_student(session, server, created, "Sanne")
        roster = await first.wait_for(lambda m: m["type"] == "roster" and m["students"])
        student_id = roster["students"][0]["id"]
        assert (await first.request({"type": "talk", "student_id": student_id, "on": True}))["type"] == "ack"
        await student.wait_for(lambda m: m["type"] == "talk" and m["on"] is True)
        await first.close()
        await student.wait_for(lambda m: m["type"] == "queue")
        assert student.latest("talk")["on"] is False
        for closable in (publisher, first_peer, student):
            await closable.close()


async def test_a_placed_student_without_media_is_released_and_frees_the_place(server_factory: Any) -> None:
    server = await server_factory(student_media_seconds=1.0)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1)
        surveillant = Client(session, server.url)
        await surveillant.connect(token(created["surveillant_links"][0]), name="A")
        squatter = Client(session, server.url)
        assert (await squatter.connect(token(created["student_link"]), name="Niemand"))["type"] == "welcome"
        await squatter.wait_for(lambda m: m["type"] == "assigned")
        # Meanwhile the desk is told this student's media is not up.
        roster = await surveillant.wait_for(lambda m: m["type"] == "roster" and m["students"])
        assert roster["students"][0]["name"] == "Niemand" and roster["students"][0]["media"] is False

        student, publisher = await join_student(session, server, created, "Echte student")
        await student.wait_for(lambda m: m["type"] == "queue")

        error = await squatter.wait_for(lambda m: m["type"] == "error", timeout=10)
        assert error["code"] == "media_failed"
        await wait_until(lambda: squatter.closed_code is not None, 5)
        assert squatter.closed_code == 4004
        await student.wait_for(lambda m: m["type"] == "assigned", timeout=10)
        live = await surveillant.wait_for(
            lambda m: m["type"] == "roster" and [s["name"] for s in m["students"]] == ["Echte student"]
            and m["students"][0]["media"] is True,
            timeout=10,
        )
        assert live["queue"] == 0
        # A student whose media is up keeps the place past the limit.
        await _settle(2.0)
        assert student.closed_code is None
        assert [s["name"] for s in surveillant.latest("roster")["students"]] == ["Echte student"]
        for closable in (publisher, student, squatter, surveillant):
            await closable.close()


async def test_a_resume_from_a_second_connection_alerts_the_surveillant(server: Any) -> None:
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        surveillant = Client(session, server.url)
        await surveillant.connect(token(created["surveillant_links"][0]), name="A")
        first_tab = Client(session, server.url)
        welcome = await first_tab.connect(token(created["student_link"]), name="Sanne")
        await first_tab.wait_for(lambda m: m["type"] == "assigned")

        # An ordinary reconnect (the earlier socket is closed) raises no alert.
        await first_tab.close()
        await surveillant.wait_for(lambda m: m["type"] == "alert" and m["kind"] == "connection_lost")
        again = Client(session, server.url)
        assert (await again.connect(token(created["student_link"]), name="Sanne", resume=welcome["resume"]))[
            "participant_id"
        ] == welcome["participant_id"]
        await again.request({"type": "hand", "raised": True})
        await surveillant.wait_for(lambda m: m["type"] == "alert" and m["kind"] == "hand_raised")
        assert [m for m in surveillant.received if m["type"] == "alert" and m["kind"] == "taken_over"] == []

        # The same secret presented while that socket is open takes the seat over, and the desk sees it.
        other_device = Client(session, server.url)
        taken = await other_device.connect(token(created["student_link"]), name="Sanne", resume=welcome["resume"])
        assert taken["participant_id"] == welcome["participant_id"]
        alert = await surveillant.wait_for(lambda m: m["type"] == "alert" and m["kind"] == "taken_over")
        assert alert["student_id"] == welcome["participant_id"]
        await wait_until(lambda: again.closed_code is not None, 5)
        assert again.closed_code == 4003
        for closable in (again, other_device, surveillant):
            await closable.close()

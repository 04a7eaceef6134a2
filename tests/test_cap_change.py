"""The cap changes mid-exam: every placed student keeps a place the desk has.

A desk negotiates one set of tracks per place and re-offers when the roster's
`slots` changes (surveillant_ui/static/desk/desk.js; raising the cap is covered
in Chromium by test_desk_places). Lowering the cap after a student has left
could leave a student on a place above the new count, which the re-offered desk
no longer has: a real aiortc desk and students through the real server.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.peers import Client, SurveillantPeer, wait_until
from tests.test_sfu_forwarding import create_exam, join_student, token


async def test_lowering_the_cap_moves_students_onto_places_the_desk_keeps(server: Any) -> None:
    opened: list[Any] = []
    async with aiohttp.ClientSession() as session:
        try:
            created = await create_exam(session, server, cap=3)
            organiser = Client(session, server.url)
            opened.append(organiser)
            await organiser.connect(token(created["organiser_link"]))
            desk_client = Client(session, server.url)
            opened.append(desk_client)
            await desk_client.connect(token(created["surveillant_links"][0]), name="Mevr. Jansen")
            desk = SurveillantPeer(3)
            opened.append(desk)
            await desk.connect(desk_client)
            students = {}
            for name in ("Anna", "Bram", "Chloë"):
                students[name], peer = await join_student(session, server, created, name)
                opened += [students[name], peer]
            roster = await desk_client.wait_for(lambda m: m["type"] == "roster" and len(m["students"]) == 3)
            slot_of = {student["name"]: student["slot"] for student in roster["students"]}
            assert sorted(slot_of.values()) == [0, 1, 2]
            # The student on the first place leaves: the others stay on places 1 and 2.
            first = next(name for name, slot in slot_of.items() if slot == 0)
            mark = desk_client.mark()
            await students[first].send({"type": "leave", "v": 1})
            await desk_client.wait_for(lambda m: m["type"] == "roster" and len(m["students"]) == 2, after=mark)

            mark = desk_client.mark()
            assert (await organiser.request({"type": "set_cap", "cap": 2}))["type"] == "ack"
            roster = await desk_client.wait_for(lambda m: m["type"] == "roster" and m["slots"] == 2, after=mark)
            slots = sorted(student["slot"] for student in roster["students"])
            assert slots == [0, 1], roster

            # The desk re-offers with two places, as desk.js does; both students play on them.
            smaller = SurveillantPeer(2)
            opened.append(smaller)
            await smaller.connect(desk_client)
            for slot in slots:
                await wait_until(lambda: smaller.received[slot]["webcam"].frames >= 5, timeout=30)
        finally:
            for thing in reversed(opened):
                await thing.close()


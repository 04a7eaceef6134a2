"""`media_live` through the real server with aiortc peers: a student hears it once their media
reaches the SFU and is forwarded to their surveillant's connected desk, on the C path and the
Python path alike; not while nobody receives it; and again after a hand-over, once the media
reaches the new desk.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.peers import Client, SurveillantPeer
from tests.test_sfu_forwarding import add_surveillant, create_exam, join_student, join_surveillant, media_server, token  # noqa: F401


def is_live(message: dict[str, Any]) -> bool:
    return message["type"] == "media_live"


async def two_rounds_of_the_check(desk: Client) -> None:
    """Two more rounds of the once-a-second loop that sends `media_live` (and then the desk's stats)."""
    for _ in range(2):
        await desk.wait_for(lambda m: m["type"] == "stats", after=desk.mark(), timeout=10)


async def test_media_live_comes_once_the_media_reaches_a_desk_and_again_after_a_hand_over(media_server: Any) -> None:
    server = media_server
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        organiser, second_link = await add_surveillant(session, server, created)

        # Placed with a desk that has no media connection: nothing is forwarded, so not live.
        first = Client(session, server.url)
        await first.connect(token(created["surveillant_links"][0]), name="A")
        student, publisher = await join_student(session, server, created, "Lotte")
        await student.wait_for(lambda m: m["type"] == "assigned")
        await two_rounds_of_the_check(first)
        assert not any(is_live(m) for m in student.received)

        # The desk's media connection: now the student's media is forwarded, and they hear it once.
        first_peer = SurveillantPeer(2)
        await first_peer.connect(first)
        await student.wait_for(is_live, timeout=15)
        await two_rounds_of_the_check(first)
        assert sum(is_live(m) for m in student.received) == 1

        # Handed over: `assigned` (B), then `media_live` again once B's desk gets the media.
        roster = await first.wait_for(lambda m: m["type"] == "roster" and m["students"])
        second, second_peer = await join_surveillant(session, server, second_link, "B", 2)
        roster = await first.wait_for(lambda m: m["type"] == "roster" and m["others"])
        mark = student.mark()
        reply = await first.request(
            {"type": "hand_over", "student_id": roster["students"][0]["id"], "to": roster["others"][0]["id"]}
        )
        assert reply["type"] == "ack", reply
        await student.wait_for(lambda m: m["type"] == "assigned" and m["surveillant"]["name"] == "B", after=mark)
        await student.wait_for(is_live, timeout=15, after=mark)
        kinds = [m["type"] for m in student.received[mark:]]
        assert kinds.index("assigned") < kinds.index("media_live")
        for closable in (publisher, first_peer, second_peer, student, first, second, organiser):
            await closable.close()

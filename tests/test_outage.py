"""A student's network dies: the server notices in seconds, and a new offer under the kept
session brings the media back to the same place with the same surveillant.

aiortc bots through the real server. The student's ICE sockets go silent behind
aiortc's back (what a pulled cable or a lost Wi-Fi does to the path: nothing arrives,
nothing answers). The times measured are printed (`pytest -s`), and bounded only loosely.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from tests.peers import StudentPeer, wait_until
from tests.test_sfu_forwarding import create_exam, join_student, join_surveillant


def _cut_the_path(peer: StudentPeer) -> None:
    """The student's network goes: from now on nothing their ICE sockets send leaves, and
    nothing sent to them arrives (the sockets stay open, so the peer can still be closed)."""
    connection = peer.pc.getTransceivers()[0].sender.transport.transport.iceGatherer._connection
    for protocol in connection._protocols:
        protocol.transport.sendto = lambda *args, **kwargs: None
        protocol.datagram_received = lambda *args, **kwargs: None


async def test_the_server_notices_a_dead_path_in_seconds_and_a_new_offer_restores_the_same_place(server: Any) -> None:
    from sfu.app import REGISTRY

    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "Mevr. Jansen", 2)
        student, publisher = await join_student(session, server, created, "Sam")
        assigned = await student.wait_for(lambda m: m["type"] == "assigned")
        roster = await surveillant.wait_for(lambda m: m["type"] == "roster" and m["students"])
        placed = roster["students"][0]
        tiles = watcher.received[placed["slot"]]
        await wait_until(lambda: tiles["microphone"].frames >= 20, 20)
        exam = server.app[REGISTRY].exams[created["exam"]["id"]]
        student_id = placed["id"]
        assert exam.media.media_up(student_id)

        mark, student_mark = surveillant.mark(), student.mark()
        cut_at = time.monotonic()
        _cut_the_path(publisher)
        # aioice's own consent timing (6 checks 5 s apart) took about 30 s here.
        noticed = await wait_until(lambda: not exam.media.media_up(student_id), 15)
        down = await surveillant.wait_for(
            lambda m: m["type"] == "roster" and m["students"] and m["students"][0]["media"] is False, 10, after=mark
        )
        assert down["students"][0]["slot"] == placed["slot"]
        mark = surveillant.mark()

        # The page's answer to a dead path: a new peer connection, offered on the same socket.
        back_at = time.monotonic()
        replacement = StudentPeer()
        await replacement.connect(student)
        heard = tiles["microphone"].frames
        await wait_until(lambda: tiles["microphone"].frames >= heard + 20, 20)
        live_again = time.monotonic() - back_at
        print(f"\nserver noticed the dead path after {noticed:.1f} s; live again {live_again:.1f} s after the new offer")
        roster = await surveillant.wait_for(
            lambda m: m["type"] == "roster" and m["students"] and m["students"][0]["media"] is True, 10, after=mark
        )

        again = roster["students"][0]
        assert (again["id"], again["slot"], again["admitted"]) == (student_id, placed["slot"], placed["admitted"])
        assert student.latest("assigned") == assigned  # no new placement, same surveillant
        assert not [m for m in student.received[student_mark:] if m["type"] in ("assigned", "queued", "notice", "error")]
        assert time.monotonic() - cut_at < 60
        for closable in (replacement, publisher, watcher, student, surveillant):
            await closable.close()

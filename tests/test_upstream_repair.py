"""Upstream repair through the real server: an aiortc student behind a lossy link, a
surveillant watching. The link is either the student's own sockets (5% of its media lost,
20 ms each way: load_tests/lossy_link.py) or a network namespace whose veth loses 5% of
everything (tests/netns.py, the student in its own process). The SFU NACKs the gaps,
aiortc's sender answers from its 128-packet history (with RTX where the offer negotiates it,
else plainly), and keyframes are asked for only when a repair fails: before, each gap cost
one. A student losing a fifth is told (REMB) to send less."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiortc import RTCRtpSender

from load_tests.lossy_link import LossyLink
from tests.peers import Client, StudentPeer, wait_until
from tests.test_sfu_forwarding import create_exam, join_surveillant, media_server, token  # noqa: F401 (fixture)

WEBCAM_DROPS = 15
"""Webcam packets the link loses before the test looks: about seven seconds at 5%."""


async def lossy_student(session: aiohttp.ClientSession, server: Any, created: dict[str, Any], link: LossyLink,
                        rtx: bool, answers_nacks: bool = True) -> tuple[Client, StudentPeer]:
    client = Client(session, server.url)
    welcome = await client.connect(token(created["student_link"]), name="Sam")
    assert welcome["type"] == "welcome", welcome
    peer = StudentPeer()
    codecs = RTCRtpSender.getCapabilities("video").codecs
    for transceiver in peer.pc.getTransceivers()[:2]:  # webcam and screen
        wanted = ("video/vp8", "video/rtx") if rtx else ("video/vp8",)
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() in wanted])
        if not answers_nacks:
            async def ignore(sequence: int) -> None:
                return None

            transceiver.sender._retransmit = ignore
    await peer.connect(client, on_answer=lambda sdp: None)
    link.install(peer.pc)
    return client, peer


def webcam_of(server: Any, created: dict[str, Any]) -> Any:
    from sfu.app import REGISTRY

    exam = server.app[REGISTRY].exams[created["exam"]["id"]]
    return next(p for p in exam.media.peers.values() if "webcam" in p.publications).publications["webcam"]


@pytest.mark.parametrize("rtx", [True, False], ids=["rtx", "plain retransmission"])
async def test_uplink_losses_are_repaired_with_nacks_not_keyframes(media_server: Any, rtx: bool) -> None:
    server = media_server
    link = LossyLink(loss=0.05, delay=0.02)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1)
        surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "Mevr. Jansen", 1)
        student, publisher = await lossy_student(session, server, created, link, rtx)
        tile = watcher.received[0]["webcam"]
        await wait_until(lambda: tile.frames >= 5, 20)
        webcam = webcam_of(server, created)
        assert (webcam.rtx_payload_type is not None) == rtx  # negotiated where the student offered it
        ssrc = publisher.pc.getTransceivers()[0].sender._ssrc
        dropped, keyframes, frames = link.dropped_by_ssrc.get(ssrc, 0), webcam.keyframes.sent, tile.frames
        await wait_until(lambda: link.dropped_by_ssrc.get(ssrc, 0) - dropped >= WEBCAM_DROPS, 60)
        gaps = link.dropped_by_ssrc[ssrc] - dropped
        nacks = webcam.nacks
        assert nacks is not None and nacks.nacked >= gaps // 2, (nacks.nacked, gaps)
        assert nacks.repaired >= gaps // 2, (nacks.repaired, gaps)
        # Before: one keyframe request per gap (at most two a second). Now only failed repairs ask.
        asked = webcam.keyframes.sent - keyframes
        assert asked <= gaps // 5, (asked, gaps)
        assert webcam.stats.lost <= gaps // 4  # what was repaired no longer counts as lost
        assert tile.frames > frames  # and the surveillant kept decoding
        for closable in (publisher, watcher, student, surveillant):
            await closable.close()


async def test_a_nack_the_student_does_not_answer_ends_in_a_keyframe_request(media_server: Any) -> None:
    server = media_server
    link = LossyLink(loss=0.05)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1)
        surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "Dhr. de Vries", 1)
        student, publisher = await lossy_student(session, server, created, link, rtx=False, answers_nacks=False)
        tile = watcher.received[0]["webcam"]
        await wait_until(lambda: tile.frames >= 5, 20)
        webcam = webcam_of(server, created)
        keyframes = webcam.keyframes.sent
        assert webcam.nacks is not None
        await wait_until(lambda: webcam.nacks.given_up >= 2, 60)
        assert webcam.keyframes.sent > keyframes and webcam.nacks.repaired <= webcam.nacks.given_up
        for closable in (publisher, watcher, student, surveillant):
            await closable.close()


@pytest.mark.parametrize("rtx", [True, False], ids=["rtx", "plain retransmission"])
async def test_a_student_in_a_lossy_network_namespace_is_repaired(rtx: bool) -> None:
    """The same through a real lossy link: the student in its own process inside a network
    namespace whose veth loses 5% of what it sends (media, RTCP, STUN alike)."""
    import socket
    import subprocess
    import sys

    from aiohttp import web

    from sfu.app import make_app
    from sfu.config import ServerConfig
    from tests.conftest import TEST_SECRET
    from tests.netns import available, lossy_namespace

    why_not = available()
    if why_not is not None:
        pytest.skip(why_not)
    with lossy_namespace(0.05) as namespace:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((namespace.outside, 0))
        url = f"http://{namespace.outside}:{sock.getsockname()[1]}"
        app = make_app(ServerConfig(secret=TEST_SECRET, public_url=url))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        from sfu.app import creator_link

        server = SimpleNamespace(url=url, app=app, creator_link=creator_link(app))
        student = None
        try:
            async with aiohttp.ClientSession() as session:
                created = await create_exam(session, server, cap=1)
                surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0],
                                                              "Mevr. Jansen", 1)
                student = await asyncio.create_subprocess_exec(
                    *namespace.command(sys.executable, "-m", "tests.netns_student", url, token(created["student_link"]),
                                       "120", *(["rtx"] if rtx else [])),
                    stdout=subprocess.PIPE,
                )
                tile = watcher.received[0]["webcam"]
                await wait_until(lambda: tile.frames >= 5, 30)
                webcam = webcam_of(server, created)
                assert (webcam.rtx_payload_type is not None) == rtx
                nacks = webcam.nacks
                assert nacks is not None
                keyframes, frames, repaired = webcam.keyframes.sent, tile.frames, nacks.repaired
                lost_before = webcam.stats.lost + nacks.repaired

                def lost() -> int:  # sequence numbers that did not come in order since
                    return webcam.stats.lost + nacks.repaired - lost_before

                await wait_until(lambda: lost() >= WEBCAM_DROPS, 90)
                gaps = lost()
                asked = webcam.keyframes.sent - keyframes
                print(f"lost {gaps}, repaired {nacks.repaired - repaired}, keyframe requests {asked}")
                assert nacks.repaired - repaired >= gaps // 2, (nacks.repaired - repaired, gaps)
                # Before: one keyframe request per gap (at most two a second).
                assert asked <= gaps // 5, (asked, gaps)
                assert tile.frames > frames
                for closable in (watcher, surveillant):
                    await closable.close()
        finally:
            if student is not None and student.returncode is None:
                student.kill()
                await student.wait()
            await runner.cleanup()


async def test_a_publisher_on_a_link_losing_a_fifth_is_told_to_send_less_and_does(media_server: Any) -> None:
    server = media_server
    link = LossyLink(loss=0.2)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1)
        surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "Mevr. Jansen", 1)
        student, publisher = await lossy_student(session, server, created, link, rtx=True)
        webcam = publisher.pc.getTransceivers()[0].sender
        await wait_until(lambda: webcam._RTCRtpSender__encoder is not None, 20)
        encoder = webcam._RTCRtpSender__encoder
        from sfu.app import REGISTRY
        from sfu.uplink_rate import MAX_BITRATE

        exam = server.app[REGISTRY].exams[created["exam"]["id"]]
        peer = next(p for p in exam.media.peers.values() if "webcam" in p.publications)
        # Told 3 Mbps before (aiortc's encoder then aims at its own 1.5 Mbps ceiling); now less each report.
        await wait_until(lambda: peer.uplink.bitrate < 1_000_000, 40)
        await wait_until(lambda: encoder.target_bitrate < 1_000_000, 5)
        assert peer.uplink.bitrate < MAX_BITRATE
        for closable in (publisher, watcher, student, surveillant):
            await closable.close()

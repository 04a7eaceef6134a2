"""The SFU through the real server: aiortc students and surveillants, real signalling, real media."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from tests.peers import Client, StudentPeer, SurveillantPeer, wait_until


async def create_exam(session: aiohttp.ClientSession, server: Any, **fields: Any) -> dict[str, Any]:
    """Create an exam through the creator link; returns `exam_created`."""
    organiser = Client(session, server.url)
    await organiser.connect(server.creator_link.split("#", 1)[1])
    created = await organiser.request(
        {
            "type": "create_exam",
            "title": "Wiskunde B",
            "kind": fields.get("kind", "written"),
            "cap": fields.get("cap", 8),
            "note": "",
            "contact": "exams@example.org",
            "ends_at": int(time.time()) + 3600,
            "id_check": fields.get("id_check", False),
        }
    )
    await organiser.close()
    assert created["type"] == "exam_created", created
    return created


async def add_surveillant(
    session: aiohttp.ClientSession, server: Any, created: dict[str, Any]
) -> tuple[Client, str]:
    """The exam's organiser, connected, and a new surveillant link it asked for (a second desk)."""
    organiser = Client(session, server.url)
    await organiser.connect(token(created["organiser_link"]))
    return organiser, (await organiser.request({"type": "add_surveillant"}))["link"]


def token(link: str) -> str:
    return link.split("#", 1)[1]


async def join_student(session: aiohttp.ClientSession, server: Any, created: dict[str, Any], name: str):
    client = Client(session, server.url)
    welcome = await client.connect(token(created["student_link"]), name=name)
    assert welcome["type"] == "welcome", welcome
    peer = StudentPeer()
    await peer.connect(client)
    return client, peer


async def join_surveillant(session: aiohttp.ClientSession, server: Any, link: str, name: str, slots: int):
    client = Client(session, server.url)
    welcome = await client.connect(token(link), name=name)
    assert welcome["type"] == "welcome", welcome
    peer = SurveillantPeer(slots)
    await peer.connect(client)
    return client, peer


async def test_student_media_reaches_surveillant_and_decodes(media_server: Any) -> None:
    server = media_server
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "Mevr. Jansen", 2)
        student, publisher = await join_student(session, server, created, "Sam")
        assigned = await student.wait_for(lambda m: m["type"] == "assigned")
        assert assigned["surveillant"]["name"] == "Mevr. Jansen"
        roster = await surveillant.wait_for(lambda m: m["type"] == "roster" and m["students"])
        slot = roster["students"][0]["slot"]
        tiles = watcher.received[slot]
        await wait_until(lambda: tiles["webcam"].frames >= 10 and tiles["screen"].frames >= 3, 15)
        await wait_until(lambda: tiles["microphone"].frames >= 20, 10)
        assert tiles["webcam"].last_frame.width == 320
        assert tiles["screen"].last_frame.width == 640
        # The path under test is the one that forwarded: lanes are open only where enabled.
        import sfu.lane
        from sfu.app import REGISTRY

        exam = server.app[REGISTRY].exams[created["exam"]["id"]]
        student_peer = next(p for p in exam.media.peers.values() if "webcam" in p.publications)
        lanes = [p.lane is not None for p in student_peer.publications.values() if p.leg is not None]
        assert lanes and all(lane == sfu.lane.ENABLED for lane in lanes)
        reader_socket = student_peer._connection._nominated[1].protocol.transport.reader_socket
        assert (type(reader_socket).__name__ == "MediaSocket") == sfu.lane.ENABLED
        # With the reader in C, the steady state never calls into Python; else every packet does.
        webcam = student_peer.publications["webcam"]
        python_calls = 0
        receive = webcam.receive

        def counted(packet: Any) -> None:
            nonlocal python_calls
            python_calls += 1
            receive(packet)

        webcam.receive = counted  # type: ignore[method-assign]
        before = webcam.stats.packets
        await wait_until(lambda: webcam.stats.packets - before >= 40, 10)
        share = python_calls / (webcam.stats.packets - before)
        assert share < 0.25 if sfu.lane.ENABLED else share == 1.0, share
        # Nothing of the other slot: only this student's media arrived.
        assert all(track.frames == 0 for track in watcher.received[1 - slot].values())
        assert server.codec_calls == {}, "the server decoded or encoded media"
        for closable in (publisher, watcher, student, surveillant):
            await closable.close()


async def test_late_surveillant_gets_a_picture_within_a_second(media_server: Any) -> None:
    server = media_server
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1)
        student, publisher = await join_student(session, server, created, "Noor")
        await student.wait_for(lambda m: m["type"] == "queue")
        # Let the student's stream run past its first keyframe.
        await wait_until(lambda: publisher.webcam.count > 30, 10)
        surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "Dhr. de Vries", 1)
        await student.wait_for(lambda m: m["type"] == "assigned")
        connected_at = time.monotonic()
        await wait_until(lambda: watcher.pc.connectionState == "connected", 10)
        took = await wait_until(lambda: watcher.received[0]["webcam"].frames >= 1, 5)
        assert took < 5
        assert watcher.received[0]["webcam"].first_at is not None
        assert watcher.received[0]["webcam"].first_at - connected_at < 3.0
        for closable in (publisher, watcher, student, surveillant):
            await closable.close()


async def test_hand_over_moves_streams_without_reconnecting(media_server: Any) -> None:
    server = media_server
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        organiser, second_link = await add_surveillant(session, server, created)
        first, first_peer = await join_surveillant(session, server, created["surveillant_links"][0], "A", 2)
        student, publisher = await join_student(session, server, created, "Lotte")
        roster = await first.wait_for(lambda m: m["type"] == "roster" and m["students"])
        student_id = roster["students"][0]["id"]
        second, second_peer = await join_surveillant(session, server, second_link, "B", 2)
        await wait_until(lambda: first_peer.received[0]["webcam"].frames >= 5, 15)
        roster = await first.wait_for(lambda m: m["type"] == "roster" and m["others"])
        reply = await first.request({"type": "hand_over", "student_id": student_id, "to": roster["others"][0]["id"]})
        assert reply["type"] == "ack", reply
        moved = await student.wait_for(lambda m: m["type"] == "assigned" and m["surveillant"]["name"] == "B")
        assert moved
        await wait_until(lambda: second_peer.received[0]["webcam"].frames >= 5, 10)
        before = first_peer.received[0]["webcam"].frames
        await wait_until(lambda: second_peer.received[0]["webcam"].frames >= 15, 10)
        assert first_peer.received[0]["webcam"].frames - before <= 2
        assert publisher.pc.connectionState == "connected"
        for closable in (publisher, first_peer, second_peer, student, first, second, organiser):
            await closable.close()


async def test_talk_back_reaches_only_the_chosen_student(media_server: Any) -> None:
    server = media_server
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "C", 2)
        one, one_peer = await join_student(session, server, created, "Een")
        two, two_peer = await join_student(session, server, created, "Twee")
        roster = await surveillant.wait_for(lambda m: m["type"] == "roster" and len(m["students"]) == 2)
        ids = {entry["name"]: entry["id"] for entry in roster["students"]}
        await wait_until(lambda: one_peer.pc.connectionState == "connected", 10)
        assert one_peer.voice.frames == 0 and two_peer.voice.frames == 0
        reply = await surveillant.request({"type": "talk", "student_id": ids["Twee"], "on": True})
        assert reply["type"] == "ack"
        await two.wait_for(lambda m: m["type"] == "talk" and m["on"])
        await wait_until(lambda: two_peer.voice.frames >= 25, 10)
        assert one_peer.voice.frames == 0
        await surveillant.request({"type": "talk", "student_id": ids["Twee"], "on": False})
        stopped_at = two_peer.voice.frames
        await wait_until(lambda: watcher.received[0]["webcam"].frames >= 5, 5)
        await _sleep(1.0)
        assert two_peer.voice.frames - stopped_at < 15
        assert one_peer.voice.frames == 0
        for closable in (one_peer, two_peer, watcher, one, two, surveillant):
            await closable.close()


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


@pytest.fixture(params=["native reader and lanes", "python path"])
async def media_server(server: Any, request: Any, monkeypatch: Any) -> Any:
    """The real application, counting every packet the server hands to aiortc's decode or encode path.

    Every test runs twice: with the reader in C (sfu/_reader.c) and its lanes (sfu/_lane.c)
    forwarding the steady state, and with PythonReader and every packet on the Python path,
    the reference they must match.
    """
    from aiortc.rtcrtpreceiver import RTCRtpReceiver
    from aiortc.rtcrtpsender import RTCRtpSender

    import sfu.lane
    import sfu.media_socket
    from sfu.app import REGISTRY

    if request.param == "python path":
        monkeypatch.setattr(sfu.lane, "ENABLED", False)
        monkeypatch.setattr(sfu.media_socket, "NATIVE", False)

    calls: dict[str, int] = {}
    registry = server.app[REGISTRY]

    def server_owned(thing: Any) -> bool:
        for exam in registry.exams.values():
            for peer in exam.media.peers.values():
                for transceiver in peer.pc.getTransceivers():
                    if thing is transceiver.receiver or thing is transceiver.sender:
                        return True
        return False

    original_receive = RTCRtpReceiver._handle_rtp_packet
    original_encode = RTCRtpSender._next_encoded_frame

    async def counting_receive(self: Any, *args: Any, **kwargs: Any) -> Any:
        if server_owned(self):
            calls["depacketize_decode"] = calls.get("depacketize_decode", 0) + 1
        return await original_receive(self, *args, **kwargs)

    async def counting_encode(self: Any, *args: Any, **kwargs: Any) -> Any:
        if server_owned(self):
            calls["encode"] = calls.get("encode", 0) + 1
        return await original_encode(self, *args, **kwargs)

    RTCRtpReceiver._handle_rtp_packet = counting_receive
    RTCRtpSender._next_encoded_frame = counting_encode
    try:
        yield SimpleNamespace(url=server.url, app=server.app, creator_link=server.creator_link, codec_calls=calls)
    finally:
        RTCRtpReceiver._handle_rtp_packet = original_receive
        RTCRtpSender._next_encoded_frame = original_encode


async def test_a_student_nobody_watches_does_not_grow_server_memory(media_server: Any) -> None:
    import tracemalloc

    from sfu.app import REGISTRY

    server = media_server
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1)
        student, publisher = await join_student(session, server, created, "Niemand kijkt")
        await student.wait_for(lambda m: m["type"] == "queue")
        exam = server.app[REGISTRY].exams[created["exam"]["id"]]
        peer = next(iter(exam.media.peers.values()))
        await wait_until(lambda: peer.publications["webcam"].stats.packets > 20, 10)
        tracemalloc.start(5)
        try:
            await _sleep(1.0)
            before = tracemalloc.take_snapshot()
            packets_before = peer.packets_received
            await _sleep(4.0)
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert peer.packets_received - packets_before > 150, "the student was not sending"
        only_sfu = [tracemalloc.Filter(True, "*/sfu/*")]
        growth = sum(stat.size_diff for stat in after.filter_traces(only_sfu).compare_to(
            before.filter_traces(only_sfu), "filename"))
        assert growth < 64 * 1024, f"server code grew by {growth} bytes while nobody watched"
        # Nothing queues below us either: aioice's datagram queue stays empty, and the
        # media arrives through the SFU's own reader, not the loop's datagram transport.
        assert peer._connection._queue.qsize() == 0
        from sfu.media_socket import MediaDatagramTransport

        nominated = peer._connection._nominated[1]
        assert isinstance(nominated.protocol.transport, MediaDatagramTransport)
        assert nominated.protocol.transport.media_handler == peer._receive_media
        assert all(p.leg is None for p in peer.publications.values())
        await publisher.close()
        await student.close()


async def test_oral_exam_examiner_and_student_see_and_hear_each_other(media_server: Any) -> None:
    server = media_server
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, kind="oral", cap=1)
        assert created["exam"]["cap"] == 1
        examiner = Client(session, server.url)
        await examiner.connect(token(created["surveillant_links"][0]), name="Examinator")
        examiner_peer = SurveillantPeer(1, with_voice=True, with_camera=True)
        await examiner_peer.connect(examiner)
        first, first_peer = await join_student(session, server, created, "Eerste")
        second, second_peer = await join_student(session, server, created, "Tweede")
        await second.wait_for(lambda m: m["type"] == "queue" and m["position"] == 1)
        await wait_until(lambda: first_peer.examiner.frames >= 5 and first_peer.voice.frames >= 25, 15)
        await wait_until(lambda: examiner_peer.received[0]["webcam"].frames >= 5, 10)
        assert second_peer.examiner.frames == 0 and second_peer.voice.frames == 0
        # "Next student": the examiner ends the session; the next one is admitted and sees the examiner.
        roster = examiner.latest("roster")
        reply = await examiner.request(
            {"type": "end_session", "student_id": roster["students"][0]["id"], "reason": "Klaar, dank je."}
        )
        assert reply["type"] == "ack", reply
        ended = await first.wait_for(lambda m: m["type"] == "session_ended")
        assert ended["reason"] == "Klaar, dank je."
        await second.wait_for(lambda m: m["type"] == "assigned")
        await wait_until(lambda: second_peer.examiner.frames >= 5 and second_peer.voice.frames >= 25, 15)
        assert server.codec_calls == {}
        for closable in (first_peer, second_peer, examiner_peer, first, second, examiner):
            await closable.close()


async def test_focus_asks_for_full_quality_and_stats_flow(media_server: Any) -> None:
    server = media_server
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "F", 2)
        student, publisher = await join_student(session, server, created, "Focus")
        first_quality = await student.wait_for(lambda m: m["type"] == "quality")
        assert first_quality["level"] == "thumbnail"
        roster = await surveillant.wait_for(lambda m: m["type"] == "roster" and m["students"])
        student_id = roster["students"][0]["id"]
        mark = student.mark()
        assert (await surveillant.request({"type": "focus", "student_id": student_id}))["type"] == "ack"
        focus = await student.wait_for(lambda m: m["type"] == "quality", after=mark)
        assert focus["level"] == "focus"
        assert focus["encodings"]["webcam"]["scaleResolutionDownBy"] == 1.0
        mark = student.mark()
        await surveillant.request({"type": "focus", "student_id": None})
        back = await student.wait_for(lambda m: m["type"] == "quality", after=mark)
        assert back["level"] == "thumbnail"
        stats = await surveillant.wait_for(
            lambda m: m["type"] == "stats" and m["tracks"].get(student_id, {}).get("webcam", {}).get("bitrate_kbps", 0) > 0,
            timeout=10,
        )
        webcam = stats["tracks"][student_id]["webcam"]
        assert webcam["frames_per_second"] > 0
        assert webcam["ms_since_last_packet"] < 1000
        assert "audio_level" in stats["tracks"][student_id]["microphone"]
        for closable in (publisher, watcher, student, surveillant):
            await closable.close()


def _dtls_record(content_type: int, sequence: int, body: bytes) -> bytes:
    """One DTLS 1.2 record of epoch 0, as anyone may write it: no key is needed."""
    return struct.pack("!BHH", content_type, 0xFEFD, 0) + sequence.to_bytes(6, "big") + struct.pack("!H", len(body)) + body


STRANGER_DATAGRAMS = {
    "a forged alert": [_dtls_record(21, 0, b"\x02\x28")],  # fatal, handshake_failure
    "garbage records": [_dtls_record(22, n, random.Random(n).randbytes(40)) for n in range(3)],
}


@pytest.mark.parametrize("attack", sorted(STRANGER_DATAGRAMS))
async def test_a_strangers_dtls_datagrams_during_setup_leave_the_media_up(media_server: Any, attack: str) -> None:
    """From the SDP answer until the student is connected, another socket on 127.0.0.1 keeps
    sending DTLS records to every ICE port of the student's answer: the server drops and counts
    them, and the student's media reaches the surveillant."""
    from aioice import Candidate

    from sfu.app import REGISTRY

    server = media_server
    datagrams = STRANGER_DATAGRAMS[attack]
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=1)
        surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "Mevr. Bos", 1)
        student = Client(session, server.url)
        assert (await student.connect(token(created["student_link"]), name="Sam"))["type"] == "welcome"
        publisher = StudentPeer()
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.1", 0))
        stranger.setblocking(False)
        ports: list[tuple[str, int]] = []
        sent = 0

        async def keep_sending() -> None:
            nonlocal sent
            while publisher.pc.connectionState not in ("connected", "failed", "closed"):
                for address in ports:
                    for datagram in datagrams:
                        stranger.sendto(datagram, address)
                        sent += 1
                await asyncio.sleep(0.01)

        def answered(sdp: str) -> None:
            for line in sdp.splitlines():
                if line.startswith("a=candidate:"):
                    candidate = Candidate.from_sdp(line[len("a=") :])
                    if candidate.transport.lower() == "udp" and candidate.type == "host" and "." in candidate.host:
                        ports.append((candidate.host, candidate.port))
            assert ports, "the answer names no IPv4 host candidate"
            for address in ports:  # before the student even starts ICE
                for datagram in datagrams:
                    stranger.sendto(datagram, address)

        sender = asyncio.ensure_future(keep_sending())
        try:
            await publisher.connect(student, on_answer=answered)
            tiles = watcher.received[0]
            await wait_until(lambda: tiles["webcam"].frames >= 10, 15)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            stranger.close()
        assert publisher.pc.connectionState == "connected"
        exam = server.app[REGISTRY].exams[created["exam"]["id"]]
        peer = next(p for p in exam.media.peers.values() if "webcam" in p.publications)
        assert peer.strangers_dropped >= len(datagrams) * len(ports)
        # Counted, not logged, and visible where the desk's figures come from.
        student_id = surveillant.latest("roster")["students"][0]["id"]
        stats = await surveillant.wait_for(lambda m: m["type"] == "stats" and student_id in m["tracks"], timeout=5)
        assert stats["tracks"][student_id]["connection"]["strangers_dropped"] >= len(datagrams) * len(ports)
        for closable in (publisher, watcher, student, surveillant):
            await closable.close()

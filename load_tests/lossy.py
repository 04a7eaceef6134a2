"""Students behind a lossy uplink: how much of the picture reaches the surveillant decodable,
and how many keyframes the SFU asks for, with upstream repair (NACK) and without it.

`python -m load_tests.lossy --students 4 --seconds 30 --loss 0.05 --delay 0.04`

Runs the real app in this process, aiortc students (real VP8 encoding; tests/peers.py) whose
own sockets drop `--loss` of their media and hold every datagram `--delay` seconds each way
(load_tests/lossy_link.py: this kernel has no netem), and one aiortc surveillant watching all of
them. It records every webcam RTP packet the surveillant receives and counts, per student:

- complete frames: every packet from the one after the previous frame's last to the frame's
  marker arrived (late repairs included);
- decodable frames: complete, and a keyframe or following a decodable frame (VP8 predicts
  from the previous frame: after a hole, nothing decodes until the next keyframe);
- keyframe requests per second per video track (webcam and screen), as the SFU sent them;
- the bit rate each student was told last (REMB, sfu/uplink_rate.py).

Each run happens twice, with repair and with INVIGIL_UPSTREAM_REPAIR's old behaviour (one
keyframe request per gap), and prints both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from typing import Any

import aiohttp
from aiohttp import web

import sfu.publication
from load_tests.lossy_link import LossyLink
from sfu.rtp_header import vp8_keyframe_start
from tests.peers import Client, StudentPeer, SurveillantPeer

SECRET = b"lossy-bench-secret-0123456789abc"


class Recorder:
    """Every RTP packet one aiortc receiver took: (sequence, marker, keyframe start)."""

    def __init__(self) -> None:
        self.packets: dict[int, tuple[bool, bool]] = {}
        self._cycles = 0
        self._last: int | None = None

    def add(self, sequence: int, marker: bool, keyframe: bool) -> None:
        if self._last is not None and sequence < 0x4000 and self._last > 0xC000:
            self._cycles += 0x10000
        extended = self._cycles + sequence
        if self._last is None or sequence > self._last or sequence < 0x4000 and self._last > 0xC000:
            self._last = sequence
        self.packets[extended] = (marker, keyframe)

    def frames(self) -> tuple[int, int, int]:
        """(frames, complete, decodable) from the first keyframe on."""
        sequences = sorted(self.packets)
        start = next((s for s in sequences if self.packets[s][1]), None)
        if start is None:
            return 0, 0, 0
        total = complete = decodable = 0
        chain = True
        first = start
        for sequence in range(start, sequences[-1] + 1):
            entry = self.packets.get(sequence)
            if entry is None or not entry[0]:
                continue
            # A frame: first .. sequence (its marker).
            total += 1
            whole = all(s in self.packets for s in range(first, sequence + 1))
            keyframe = whole and self.packets[first][1]
            chain = whole and (keyframe or chain)
            complete += whole
            decodable += chain
            first = sequence + 1
        return total, complete, decodable


def record(pc: Any, index: int, recorder: Recorder) -> None:
    """Hook the receiver of transceiver `index` so every RTP packet it takes is recorded."""
    receiver = pc.getTransceivers()[index].receiver
    original = receiver._handle_rtp_packet

    async def handle(packet: Any, arrival_time_ms: int) -> None:
        recorder.add(packet.sequence_number, bool(packet.marker), vp8_keyframe_start(memoryview(packet.payload)))
        await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle


async def start_server() -> tuple[web.AppRunner, str, str]:
    from sfu.app import creator_link, make_app
    from sfu.config import ServerConfig

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = make_app(ServerConfig(secret=SECRET, public_url=url))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner, url, creator_link(app)


async def run(students: int, seconds: float, loss: float, delay: float, repair: bool) -> dict[str, Any]:
    sfu.publication.UPSTREAM_REPAIR = repair
    runner, url, creator = await start_server()
    from sfu.app import REGISTRY

    closables: list[Any] = []
    try:
        async with aiohttp.ClientSession() as session:
            organiser = Client(session, url)
            await organiser.connect(creator.split("#", 1)[1])
            created = await organiser.request({
                "type": "create_exam", "title": "Lossy", "kind": "written", "cap": students, "note": "",
                "contact": "exams@example.org", "ends_at": int(time.time()) + 3600, "id_check": False,
            })
            await organiser.close()
            watcher_client = Client(session, url)
            await watcher_client.connect(created["surveillant_links"][0].split("#", 1)[1], name="Bench")
            watcher = SurveillantPeer(students)
            recorders = [Recorder() for _ in range(students)]
            for slot, recorder in enumerate(recorders):
                record(watcher.pc, slot * 3, recorder)
            await watcher.connect(watcher_client)
            closables += [watcher, watcher_client]
            links = []
            for index in range(students):
                client = Client(session, url)
                await client.connect(created["student_link"].split("#", 1)[1], name=f"Bot {index}")
                peer = StudentPeer()
                await peer.connect(client)
                link = LossyLink(loss, delay, seed=index)
                link.install(peer.pc)
                links.append(link)
                closables += [peer, client]
            await asyncio.sleep(5)  # everyone connected and past a first keyframe
            exam = runner.app[REGISTRY].exams[created["exam"]["id"]]
            videos = [p.publications[name] for p in exam.media.peers.values() if "webcam" in p.publications
                      for name in ("webcam", "screen")]
            asked = sum(v.keyframes.sent for v in videos)
            counts = [r.frames() for r in recorders]
            await asyncio.sleep(seconds)
            after = [r.frames() for r in recorders]
            asked = sum(v.keyframes.sent for v in videos) - asked
            frames = sum(a[0] - b[0] for a, b in zip(after, counts))
            complete = sum(a[1] - b[1] for a, b in zip(after, counts))
            decodable = sum(a[2] - b[2] for a, b in zip(after, counts))
            nacked = sum(v.nacks.nacked for v in videos if v.nacks is not None)
            repaired = sum(v.nacks.repaired for v in videos if v.nacks is not None)
            told = [p.uplink.bitrate for p in exam.media.peers.values() if "webcam" in p.publications]
            return {
                "repair": repair,
                "frames": frames,
                "complete": round(complete / max(frames, 1), 3),
                "decodable": round(decodable / max(frames, 1), 3),
                "keyframe_requests_per_track_per_s": round(asked / len(videos) / seconds, 3),
                "nacked": nacked,
                "repaired": repaired,
                "remb_told_kbps": sorted(bitrate // 1000 for bitrate in told),
                "uplink_packets_dropped": sum(link.dropped for link in links),
                "uplink_packets_sent": sum(link.sent for link in links),
            }
    finally:
        for closable in reversed(closables):
            await closable.close()
        await runner.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--delay", type=float, default=0.04, help="seconds each way (0.04: 80 ms RTT)")
    parser.add_argument("--only", choices=["repair", "keyframes"], help="run one mode only")
    arguments = parser.parse_args()
    modes = {"repair": [True], "keyframes": [False]}.get(arguments.only or "", [True, False])
    for repair in modes:
        result = await run(arguments.students, arguments.seconds, arguments.loss, arguments.delay, repair)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())

"""Bots without a server: bot students each connected straight to a plain
aiortc peer connection (in this process) whose RTP is taken by the same
`RtpSink` a bot surveillant uses. It checks that pre-encoded media flows and
that both hooks see the frame ids, and shows what the bots alone cost.

    python -m load_tests.loopback --students 4 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import psutil

from .bots import Collector, RtpSink, enlarge_receive_buffers, install_send_hook, \
    new_rtc_config, prefer_codec, video_payload_types, wait_connected
from .media import (
    TRACK_SCREEN,
    TRACK_WEBCAM,
    MediaLibrary,
    PreEncodedAudioTrack,
    PreEncodedVideoTrack,
    make_tag,
)
from .metrics import frame_stats, loop_factory
from aiortc import RTCPeerConnection


async def connect_pair(index: int, library: MediaLibrary, collector: Collector):
    student = RTCPeerConnection(new_rtc_config())
    tracks = [
        PreEncodedVideoTrack(library.webcam, make_tag(index, TRACK_WEBCAM)),
        PreEncodedVideoTrack(library.screen, make_tag(index, TRACK_SCREEN)),
    ]
    for track in tracks:
        t = student.addTransceiver(track, direction="sendonly")
        prefer_codec(t, "video/VP8")
        t.sender._send_keyframe = track.request_keyframe
    prefer_codec(student.addTransceiver(PreEncodedAudioTrack(library.audio), direction="sendonly"),
                 "audio/opus")
    prefer_codec(student.addTransceiver("audio", direction="recvonly"), "audio/opus")
    prefer_codec(student.addTransceiver("video", direction="recvonly"), "video/VP8")
    await student.setLocalDescription(await student.createOffer())

    receiver = RTCPeerConnection(new_rtc_config())
    await receiver.setRemoteDescription(student.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    sink = RtpSink(collector, video_payload_types(receiver.localDescription.sdp))
    sink.install(receiver)
    await student.setRemoteDescription(receiver.localDescription)
    install_send_hook(student, collector)
    enlarge_receive_buffers(student)
    enlarge_receive_buffers(receiver)
    await asyncio.gather(wait_connected(student, 30), wait_connected(receiver, 30))
    return student, receiver, sink, tracks


async def run(students: int, seconds: float) -> dict:
    library = MediaLibrary.standard()
    collector = Collector()
    pairs = [await connect_pair(i, library, collector) for i in range(students)]
    me = psutil.Process()
    await asyncio.sleep(2)  # warm-up
    cpu0 = sum(me.cpu_times()[:2])
    t0 = time.monotonic_ns()
    rx0, tx0 = collector.rx_packets, collector.tx_packets
    await asyncio.sleep(seconds)
    t1 = time.monotonic_ns()
    rx1, tx1 = collector.rx_packets, collector.tx_packets
    cpu1 = sum(me.cpu_times()[:2])
    await asyncio.sleep(1)  # grace
    result = {
        "students": students,
        "seconds": seconds,
        "media": library.describe(),
        "tx_packets": tx1 - tx0,
        "rx_packets": rx1 - rx0,
        "bots_cpu_seconds": round(cpu1 - cpu0, 3),
        "bots_cpu_us_per_packet_pair": round((cpu1 - cpu0) * 1e6 / max(1, rx1 - rx0), 1),
        "packets_lost": sum(s.lost() for _, _, s, _ in pairs),
        **frame_stats(collector, t0, t1, set(range(students))),
    }
    for student, receiver, sink, _ in pairs:
        await student.close()
        await receiver.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        result = runner.run(run(args.students, args.seconds))
    result.pop("_latencies_ms", None)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The SFU's per-packet work alone: CPU per forwarded packet, without bots, signalling or ICE.

`python -m load_tests.hot_path --students 40 --surveillants 5 --packets 200000`

Builds the forwarding objects the server builds (one MediaPeer per participant,
with its publications, legs and SRTP sessions; AES-256-GCM as aiortc
negotiates with Chromium), puts each on a real UDP socket adopted by the
MediaPoller, then sends SRTP packets from plain sockets in the mix and at the
sizes the bench's bots send (webcam, screen, microphone) and times each poller
turn with the thread's CPU clock: reading, decrypting, forwarding, encrypting
and sending, system calls included (the native lanes included, unless
INVIGIL_NATIVE_LANES=0). What it leaves out (the event loop's
wake-ups, RTCP, STUN, signalling) is what the full bench (`load_tests.bench`)
adds on top; the difference between the two is the cost of everything else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import time
from types import SimpleNamespace
from typing import Any

import pylibsrtp

from sfu.forward import Leg
from sfu.media_socket import MediaDatagramTransport, adopt
from sfu.peer import MediaPeer, student_layout, surveillant_layout
from sfu.publication import Publication
from sfu.srtp import FastSrtp

PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
KEY_SIZE = 32 + 12
PAYLOAD_TYPES = {"video": 96, "audio": 111}
TRACKS = (("webcam", "video", 45, 1100), ("screen", "video", 34, 1100), ("microphone", "audio", 50, 90))
"""(source, kind, packets a second, payload bytes): the bench's standard profile."""
TURN_PACKETS = 25
"""Packets per poller turn: what a 5 ms turn gathers at 40 students (~5,000 packets a second)."""


class _Protocol(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport


def srtp_session(key: bytes, inbound: bool) -> pylibsrtp.Session:
    """A libsrtp session with `key` (AES-256-GCM) for any SSRC, receiving or sending."""
    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=PROFILE,
    )
    policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy=policy)


async def _adopted_socket() -> MediaDatagramTransport:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(_Protocol, local_addr=("127.0.0.1", 0))
    transport = adopt(protocol)
    if transport is None:
        raise SystemExit("hot_path: the MediaPoller cannot run here (Linux only)")
    return transport


def _connect(peer: MediaPeer, transport: MediaDatagramTransport, remote: tuple[str, int], key: bytes) -> None:
    """Give a peer what DTLS and ICE would have: SRTP sessions and a nominated pair."""
    peer._rx = FastSrtp(srtp_session(key, inbound=True))
    peer._tx = FastSrtp(srtp_session(key, inbound=False))
    pair = SimpleNamespace(protocol=transport.get_protocol(), remote_addr=remote)
    peer._connection = SimpleNamespace(_nominated={1: pair})
    peer._hook(transport.get_protocol())


def _rtp(payload_type: int, sequence: int, timestamp: int, ssrc: int, size: int, video: bool) -> bytes:
    extension = struct.pack("!HH", 0xBEDE, 2) + bytes([0x10, ord("0"), 0x22, 0, 0, 0, 0, 0])
    header = struct.pack("!BBHII", 0x90, payload_type, sequence, timestamp, ssrc) + extension
    # Every video payload starts like a keyframe, so each leg starts at once.
    payload = (b"\x10\x00" if video else b"") + bytes(size)
    return header + payload


async def run(students: int, surveillants: int, packets: int) -> dict[str, float]:
    """Build the objects, push `packets` packets through the poller, return the measurements."""
    cap = -(-students // surveillants)
    watchers = []
    for index in range(surveillants):
        peer = MediaPeer(f"s{index}", surveillant_layout(cap), ice_servers=())
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sink.setblocking(False)
        transport = await _adopted_socket()
        _connect(peer, transport, sink.getsockname(), os.urandom(KEY_SIZE))
        for slot in range(cap):
            for source, kind, _, _ in TRACKS:
                leg = Leg(peer, kind, 10_000 + slot * 3 + len(peer.legs), PAYLOAD_TYPES[kind], str(len(peer.legs)), 1, 2 if kind == "video" else None)
                peer.legs[f"{source}{slot}"] = leg
                peer._legs_by_ssrc[leg.ssrc] = leg
        watchers.append((peer, sink))

    senders = []
    for index in range(students):
        peer = MediaPeer(f"p{index}", student_layout(), ice_servers=())
        transport = await _adopted_socket()
        key = os.urandom(KEY_SIZE)
        _connect(peer, transport, ("127.0.0.1", 9), key)
        outbound = FastSrtp(srtp_session(key, inbound=False))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind(("127.0.0.1", 0))
        transport.permit(sender.getsockname())  # as aioice's check of the student's pair does
        watcher, _ = watchers[index % surveillants]
        slot = index // surveillants
        for number, (source, kind, rate, size) in enumerate(TRACKS):
            publication = Publication(source, kind, PAYLOAD_TYPES[kind], None, peer.send_pli)
            peer.publications[source] = publication
            peer._learn(index * 16 + number + 1, publication)
            watcher.legs[f"{source}{slot}"].attach(publication)
            senders.append([rate, outbound, sender, transport.get_extra_info("sockname"), publication.ssrc, kind, size, 0])

    # The packets in the order the bots' mix sends them, weighted by each track's rate. One
    # second of the mix repeats exactly, so it is worked out once.
    total_rate = sum(rate for rate, *_ in senders)
    second = []
    credit = [0.0] * len(senders)
    for _ in range(min(packets, total_rate)):
        for index, track in enumerate(senders):
            credit[index] += track[0] / total_rate
        index = max(range(len(senders)), key=credit.__getitem__)
        credit[index] -= 1
        second.append(index)
    schedule = (second * -(-packets // len(second)))[:packets]

    poller = watchers[0][0]._connection._nominated[1].protocol.transport._poller
    forwarded_before = sum(leg.packets_sent for peer, _ in watchers for leg in peer.legs.values())
    busy = 0
    for start in range(0, packets, TURN_PACKETS):
        for index in schedule[start : start + TURN_PACKETS]:
            track = senders[index]
            _, outbound, sender, address, ssrc, kind, size, sequence = track
            track[7] = sequence + 1
            packet = _rtp(PAYLOAD_TYPES[kind], sequence & 0xFFFF, sequence * 3000, ssrc, size, kind == "video")
            sender.sendto(outbound.protect(packet), address)
        began = time.thread_time_ns()
        poller.turn()
        busy += time.thread_time_ns() - began
        for _, sink in watchers:
            try:
                while True:
                    sink.recv(2048)
            except BlockingIOError:
                pass
    forwarded = sum(leg.packets_sent for peer, _ in watchers for leg in peer.legs.values()) - forwarded_before
    for peer, sink in watchers:
        sink.close()
    return {"packets": packets, "forwarded": forwarded, "cpu_seconds": busy / 1e9, "us_per_packet": busy / 1e3 / max(forwarded, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--surveillants", type=int, default=5)
    parser.add_argument("--packets", type=int, default=200_000)
    args = parser.parse_args()
    result = asyncio.run(run(args.students, args.surveillants, args.packets))
    print(
        f"{result['forwarded']} of {result['packets']} packets forwarded; "
        f"poller turns {result['cpu_seconds']:.2f} s CPU -> {result['us_per_packet']:.1f} µs per forwarded packet"
    )


if __name__ == "__main__":
    main()

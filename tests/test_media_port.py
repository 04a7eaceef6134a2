"""One UDP port for all media (`--media-port`, sfu/shared_port.py), through a real server.

An exam with 8 aiortc students and a surveillant, served by a real `invigil serve`
process: `ss` shows that process holding UDP sockets on the media port only, and
every student's media reaches the surveillant. A student whose source address
changes (a new socket: a NAT rebinding, Wi-Fi to 4G) is read again once ICE has
checked the new address, and not before.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from types import SimpleNamespace
from typing import Any

import aiohttp
import psutil
import pytest

from tests.peers import wait_until
from tests.test_cli import _child_env, _free_port, _start_serve
from tests.test_sfu_forwarding import create_exam, join_student, join_surveillant

pytestmark = pytest.mark.skipif(not hasattr(__import__("select"), "epoll"), reason="the shared port is read by the MediaPoller (epoll)")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


def udp_ports_of(pid: int) -> list[int]:
    """The local ports of the UDP sockets of process `pid` and its children (workers), one entry
    per socket, as `ss -uanp` lists them."""
    pids = [pid] + [child.pid for child in psutil.Process(pid).children(recursive=True)]
    listing = subprocess.run(["ss", "-uanpH"], capture_output=True, text=True, check=True, timeout=10).stdout
    return [
        int(line.split()[3].rsplit(":", 1)[1])
        for line in listing.splitlines()
        if any(f"pid={one}," in line for one in pids)
    ]


async def test_an_exam_of_eight_students_and_a_surveillant_uses_one_udp_port() -> None:
    media_port = _free_udp_port()
    http_port = _free_port()
    serve = await _start_serve(
        "--port", str(http_port), "--media-port", str(media_port), "--workers", "1",
        env=_child_env(INVIGIL_SECRET="k" * 32),
    )
    closables: list[Any] = []
    try:
        match = await serve.wait_for_link()
        server = SimpleNamespace(url=f"http://127.0.0.1:{http_port}", creator_link=match.group(0))
        async with aiohttp.ClientSession() as session:
            created = await create_exam(session, server, cap=8)
            surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "Mevr. Jansen", 8)
            closables += [watcher, surveillant]
            for number in range(8):
                student, publisher = await join_student(session, server, created, f"Student {number}")
                closables += [publisher, student]
            await surveillant.wait_for(lambda m: m["type"] == "roster" and len(m["students"]) == 8, 30)
            await wait_until(lambda: all(slot["webcam"].frames >= 5 for slot in watcher.received), 90)
            await wait_until(lambda: all(slot["microphone"].frames >= 10 for slot in watcher.received), 30)
            ports = udp_ports_of(serve.process.pid)
            # One socket per server address (here one IPv4 and at most one IPv6), all on the media port.
            assert ports and set(ports) == {media_port}, ports
            assert len(ports) <= 2, ports
            for closable in reversed(closables):
                await closable.close()
            closables = []
    finally:
        for closable in reversed(closables):
            await closable.close()
        returncode, stderr = await serve.stop()
    assert returncode == 0, stderr


def _move_to_a_new_socket(peer: Any) -> tuple[str, int]:
    """The student's ICE socket of its nominated pair is replaced by a new one on another port,
    as a NAT rebinding or a change of network does; returns the new address."""
    connection = peer.pc.getTransceivers()[0].sender.transport.transport.iceGatherer._connection
    protocol = connection._nominated[1].protocol
    old = protocol.transport
    family = old.get_extra_info("socket").family
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((old.get_extra_info("sockname")[0], 0))
    sock.setblocking(False)
    old.set_protocol(asyncio.DatagramProtocol())
    old.close()
    loop = asyncio.get_running_loop()
    loop.create_task(loop.create_datagram_endpoint(lambda: protocol, sock=sock))
    return sock.getsockname()[:2]


async def test_media_still_flows_after_a_students_source_address_changes(server_factory: Any) -> None:
    from sfu.app import REGISTRY

    media_port = _free_udp_port()
    server = await server_factory(media_port=media_port)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "Mevr. Jansen", 2)
        student, publisher = await join_student(session, server, created, "Sam")
        roster = await surveillant.wait_for(lambda m: m["type"] == "roster" and m["students"])
        tiles = watcher.received[roster["students"][0]["slot"]]
        await wait_until(lambda: tiles["webcam"].frames >= 5, 20)
        exam = server.app[REGISTRY].exams[created["exam"]["id"]]
        server_peer = next(p for p in exam.media.peers.values() if "webcam" in p.publications)
        endpoint = server_peer._connection._nominated[1].protocol.transport
        assert endpoint.port is not None and endpoint.get_extra_info("sockname")[1] == media_port
        before = endpoint.port.strangers_dropped

        webcam = server_peer.publications["webcam"]
        new_address = _move_to_a_new_socket(publisher)
        await asyncio.sleep(0.5)
        # Until ICE has checked the new address, what it sends is a stranger's: dropped, counted.
        await wait_until(lambda: endpoint.port.strangers_dropped > before, 10)
        await wait_until(lambda: new_address in [tuple(a) for a in endpoint.reader_socket.permitted], 20)
        heard, packets = tiles["microphone"].frames, webcam.stats.packets
        await wait_until(lambda: tiles["microphone"].frames >= heard + 50 and webcam.stats.packets >= packets + 20, 40)
        # And what the server sends goes to where the student is now.
        assert server_peer._connection._nominated[1].remote_addr == new_address
        for closable in (publisher, watcher, student, surveillant):
            await closable.close()

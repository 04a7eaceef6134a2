"""Whom an ICE socket reads anything but STUN from (sfu/checked_senders.py): the remote ends of
pairs real aioice connections have checked, and a MediaPeer's sockets following them."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aioice import Connection
from aioice.ice import CandidatePair

from sfu import media_socket
from sfu.checked_senders import watch_checked_pairs
from sfu.media_socket import adopt
from sfu.peer import MediaPeer, student_layout
from tests.test_media_socket import DTLS_ALERT, Recorder, client, until


async def test_each_checked_pair_is_reported_and_a_peer_reflexive_one_too() -> None:
    """The controlled side is never told the other's candidates: it learns the address from the
    checks it receives (peer-reflexive), checks it back, and only then reports it."""
    controlling = Connection(ice_controlling=True, use_ipv6=False)
    controlled = Connection(ice_controlling=False, use_ipv6=False)
    reported: list[tuple[Any, Any]] = []
    try:
        await asyncio.gather(controlling.gather_candidates(), controlled.gather_candidates())
        watch_checked_pairs(controlled, lambda pair: reported.append((pair, pair.state)))
        for candidate in controlled.local_candidates:
            await controlling.add_remote_candidate(candidate)
        await controlling.add_remote_candidate(None)
        controlling.remote_username, controlling.remote_password = controlled.local_username, controlled.local_password
        controlled.remote_username, controlled.remote_password = controlling.local_username, controlling.local_password
        assert reported == []  # nothing is checked before the checks run
        async with asyncio.timeout(10):
            await asyncio.gather(controlling.connect(), controlled.connect())
        assert reported, "no pair was reported"
        assert all(state == CandidatePair.State.SUCCEEDED for _, state in reported)
        assert all(pair.remote_candidate.type == "prflx" for pair, _ in reported)
        nominated = controlled._nominated[1]
        assert any(pair is nominated for pair, _ in reported)
        assert nominated.remote_addr == controlling._nominated[1].local_addr
        # Told again when it watches a connection whose pairs are checked already.
        again: list[Any] = []
        watch_checked_pairs(controlled, again.append)
        assert nominated in again
    finally:
        await asyncio.gather(controlling.close(), controlled.close())


@pytest.mark.parametrize("read_by", ["reader in C", "PythonReader", "the loop (a TURN relay)"])
async def test_a_peer_reads_dtls_only_from_its_checked_pairs_and_counts_the_rest(read_by: str, monkeypatch: Any) -> None:
    if read_by == "reader in C" and media_socket.NativeReader is None:
        pytest.skip("sfu/_reader.c was not compiled: test_lane.py::test_the_native_lane_is_built reports it")
    monkeypatch.setattr(media_socket, "NATIVE", read_by == "reader in C")
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    protocol.local_candidate = SimpleNamespace(host="127.0.0.1")
    if read_by != "the loop (a TURN relay)":
        assert adopt(protocol) is not None
    peer = MediaPeer("student", student_layout(), ice_servers=())
    peer._hook(protocol)
    address = protocol.transport.get_extra_info("sockname")
    checked, stranger = client(), client()
    for sender in (checked, stranger):
        sender.sendto(DTLS_ALERT, address)
        sender.sendto(b"\x00\x01" + bytes(18), address)  # STUN is read from anyone
    await until(lambda: len(protocol.datagrams) == 2 and peer.strangers_dropped == 2)
    peer._pair_checked(SimpleNamespace(protocol=protocol, remote_addr=checked.getsockname()))
    for sender in (stranger, checked):
        sender.sendto(DTLS_ALERT, address)
    await until(lambda: len(protocol.datagrams) == 3 and peer.strangers_dropped == 3)
    assert protocol.datagrams[2] == (DTLS_ALERT, checked.getsockname())
    assert all(data[0] == 0 for data, _ in protocol.datagrams[:2])
    peer._pair_checked(SimpleNamespace(protocol=protocol, remote_addr=("host.example", 9)))  # not numeric: ignored
    protocol.transport.close()
    for closable in (checked, stranger):
        closable.close()

"""TURN with short-lived credentials: a real coturn (`use-auth-secret`), started here on loopback.

Each participant gets, in `welcome`, TURN credentials of their own signed with the
secret Invigil shares with coturn (sfu/turn_credentials.py). A student whose ICE may
use nothing but the relay goes live through it, over UDP and over TCP; coturn
refuses an expired credential and a forged one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from sfu.turn_credentials import TurnRest, turn_password
from tests.peers import Client, StudentPeer, wait_until
from tests.test_sfu_forwarding import create_exam, join_surveillant, token


@dataclass(frozen=True)
class Coturn:
    """A coturn on 127.0.0.1:`port` (UDP and TCP) that checks credentials signed with `secret`."""

    port: int
    secret: str


def _free_port() -> int:
    """A port free for both TCP and UDP on loopback, as coturn listens on both."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


@pytest.fixture
async def coturn() -> AsyncIterator[Coturn]:
    """coturn with `use-auth-secret`, no config file, no CLI, no TLS, no log or pid file; stopped by its PID."""
    port, secret = _free_port(), secrets.token_hex(16)
    process = subprocess.Popen(
        [
            "turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls",
            "--listening-ip", "127.0.0.1", "--listening-port", str(port), "--relay-ip", "127.0.0.1",
            "--use-auth-secret", "--static-auth-secret", secret, "--realm", "invigil.test",
            "--allow-loopback-peers", "--log-file", "stdout", "--pidfile", "",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(10):
            while True:
                assert process.poll() is None, "turnserver exited"
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        yield Coturn(port=port, secret=secret)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _allocate(coturn: Coturn, username: str, password: str, transport: str = "udp") -> None:
    """Ask coturn for a relay allocation with these credentials; raises TransactionFailed if refused."""
    relay, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", coturn.port), username, password, transport=transport
    )
    relay.close()


def _error_code(failure: stun.TransactionFailed) -> int:
    return failure.response.attributes["ERROR-CODE"][0]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_relay_only_student_goes_live_through_turn_with_issued_credentials(
    server_factory: Any, coturn: Coturn, transport: str
) -> None:
    turn = TurnRest(secret=coturn.secret.encode(), urls=(f"turn:127.0.0.1:{coturn.port}?transport={transport}",))
    server = await server_factory(turn=turn)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)
        surveillant, watcher = await join_surveillant(session, server, created["surveillant_links"][0], "Mevr. Jansen", 2)
        student = Client(session, server.url)
        welcome = await student.connect(token(created["student_link"]), name="Sam")
        [entry] = welcome["ice_servers"]
        expiry, _, pseudonym = entry["username"].partition(":")
        assert int(expiry) > time.time() and pseudonym and "Sam" not in pseudonym
        assert entry["credential"] == turn_password(coturn.secret.encode(), entry["username"])
        publisher = StudentPeer(
            RTCConfiguration(
                iceServers=[RTCIceServer(**entry)],
                iceTransportPolicy=RTCIceTransportPolicy.RELAY,
                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
            )
        )
        await publisher.connect(student)
        roster = await surveillant.wait_for(lambda m: m["type"] == "roster" and m["students"])
        tiles = watcher.received[roster["students"][0]["slot"]]
        await wait_until(lambda: tiles["webcam"].frames >= 10, 20)
        ice = publisher.pc.getTransceivers()[0].sender.transport.transport.iceGatherer._connection
        pair = ice._nominated[1]
        assert pair.local_candidate.type == "relay"
        inner = pair.protocol.transport._TurnTransport__inner_protocol
        assert type(inner).__name__ == f"TurnClient{transport.capitalize()}Protocol"
        for closable in (publisher, watcher, student, surveillant):
            await closable.close()


async def test_coturn_refuses_expired_and_forged_credentials_and_takes_fresh_ones(coturn: Coturn) -> None:
    turn = TurnRest(secret=coturn.secret.encode(), urls=(f"turn:127.0.0.1:{coturn.port}",), ttl_seconds=600)
    [fresh] = turn.issue("p-1", b"k" * 32)
    await _allocate(coturn, fresh.username, fresh.credential)
    await _allocate(coturn, fresh.username, fresh.credential, transport="tcp")

    [expired] = turn.issue("p-1", b"k" * 32, now=time.time() - 601 - 5)
    assert int(expired.username.split(":")[0]) < time.time()
    with pytest.raises(stun.TransactionFailed) as refused:
        await _allocate(coturn, expired.username, expired.credential)
    assert _error_code(refused.value) == 401

    forged_username = f"{int(time.time()) + 3600}:{fresh.username.split(':')[1]}"
    forged = base64.b64encode(hmac.new(b"not the secret", forged_username.encode(), hashlib.sha1).digest()).decode()
    with pytest.raises(stun.TransactionFailed) as refused:
        await _allocate(coturn, forged_username, forged)
    assert _error_code(refused.value) == 401
    # Someone else's valid password does not carry over to a later expiry of their choosing.
    with pytest.raises(stun.TransactionFailed) as refused:
        await _allocate(coturn, forged_username, fresh.credential)
    assert _error_code(refused.value) == 401


async def test_welcome_gives_each_participant_their_own_short_lived_credentials(server_factory: Any) -> None:
    turn = TurnRest(secret=b"turn-secret-0123456789", urls=("turn:turn.example.org:3478", "turns:turn.example.org:443"), ttl_seconds=7200)
    server = await server_factory(turn=turn)
    async with aiohttp.ClientSession() as session:
        created = await create_exam(session, server, cap=2)  # ends in an hour: the TTL is longer
        welcomes = []
        for name in ("Sam", "Noor"):
            client = Client(session, server.url)
            welcomes.append((client, await client.connect(token(created["student_link"]), name=name)))
        usernames = set()
        for client, welcome in welcomes:
            servers = welcome["ice_servers"]
            assert [s["urls"] for s in servers] == list(turn.urls)
            username = servers[0]["username"]
            assert all(s["username"] == username for s in servers)
            assert abs(int(username.split(":")[0]) - (time.time() + 7200)) < 60
            assert servers[0]["credential"] == turn_password(turn.secret, username)
            usernames.add(username.split(":")[1])
            await client.close()
        assert len(usernames) == 2

"""Failures strangers can cause at will are counted, not logged one by one (sfu/log_summary.py):
the summariser itself, and a flood of malformed STUN on a real ICE host socket read by the SFU's reader."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import struct
from typing import Any

import pytest
from aioice import Connection

from sfu.log_summary import LogSummary
from sfu.peer import _read_host_sockets_ourselves

MARKER = b"SeCrEtMaRk!!"


def test_the_first_failure_is_logged_and_the_rest_summarised_per_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    monkeypatch.setattr("sfu.log_summary.time.monotonic", lambda: now[0])
    summary = LogSummary(logging.getLogger("test.summary"), "dropped a thing", interval=60.0)
    with caplog.at_level(logging.WARNING, "test.summary"):
        for _ in range(500):
            summary.count("ValueError at x.py:1")
        for _ in range(20):
            summary.count("KeyError at y.py:2")
        assert [r.getMessage() for r in caplog.records] == [
            "dropped a thing: ValueError at x.py:1 (more are counted, one line per 60 s)"
        ]
        now[0] += 61
        summary.count("ValueError at x.py:1")  # after the interval: the summary comes first
        assert caplog.records[1].getMessage() == (
            "dropped a thing: 519 more in the last 60 s (ValueError at x.py:1 ×499; KeyError at y.py:2 ×20)"
        )
        assert len(caplog.records) == 2
        now[0] += 61
        summary.flush()  # the interval's one failure
        now[0] += 61
        summary.flush()  # a quiet interval ends the summary: the next failure is logged at once
        summary.count("KeyError at y.py:2")
    assert len(caplog.records) == 4
    assert caplog.records[3].getMessage().startswith("dropped a thing: KeyError at y.py:2 (more")
    assert summary.total == 522


def test_the_kinds_in_one_summary_are_bounded(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    monkeypatch.setattr("sfu.log_summary.time.monotonic", lambda: now[0])
    summary = LogSummary(logging.getLogger("test.summary"), "dropped", interval=60.0)
    with caplog.at_level(logging.WARNING, "test.summary"):
        for number in range(1000):
            summary.count(f"kind {number}")
        summary.flush()
    assert len(caplog.records) == 2
    assert len(caplog.records[1].getMessage()) < 300
    assert "other ×991" in caplog.records[1].getMessage()


async def test_the_summary_is_written_when_its_interval_ends(caplog: pytest.LogCaptureFixture) -> None:
    summary = LogSummary(logging.getLogger("test.summary"), "dropped", interval=0.05)
    with caplog.at_level(logging.WARNING, "test.summary"):
        for _ in range(3):
            summary.count("E")
        async with asyncio.timeout(10):
            while len(caplog.records) < 2:
                await asyncio.sleep(0.01)
    assert caplog.records[1].getMessage() == "dropped: 2 more in the last 0 s (E ×2)"
    summary.close()


def malformed_binding_request() -> bytes:
    """A STUN binding request whose PRIORITY is 2 bytes long instead of 4 (aioice raises struct.error),
    after a USERNAME that carries the marker: what a log line must never quote."""
    attributes = (
        struct.pack("!HH", 0x0006, len(MARKER)) + MARKER + struct.pack("!HH", 0x0024, 2) + b"\x00\x01\x00\x00"
    )
    return struct.pack("!HHI", 0x0001, len(attributes), 0x2112A442) + os.urandom(12) + attributes


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="the MediaPoller needs epoll")
async def test_ten_thousand_malformed_stun_requests_make_a_few_log_lines_quoting_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Sent over UDP to an ICE host socket the SFU reads (as sfu/peer.py sets it up for every
    peer), each request fails in aioice; the log gets a line or two, no bytes, no address."""
    connection = Connection(ice_controlling=False, components=1)
    _read_host_sockets_ourselves(connection)
    await connection.gather_candidates()
    handled = [0]
    for protocol in connection._protocols:
        original = protocol.datagram_received

        def counting(data: bytes, addr: Any, original: Any = original) -> None:
            handled[0] += 1
            original(data, addr)

        protocol.datagram_received = counting
    host = next(c for c in connection.local_candidates if c.type == "host" and ":" not in c.host)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((host.host, 0))
    sender_port = str(sender.getsockname()[1])
    try:
        with caplog.at_level(logging.INFO):
            sent = 0
            async with asyncio.timeout(120):
                while sent < 10_000:
                    for _ in range(50):  # what a socket buffer holds for sure
                        sender.sendto(malformed_binding_request(), (host.host, host.port))
                    sent += 50
                    while handled[0] < sent:
                        await asyncio.sleep(0.002)
    finally:
        sender.close()
        await connection.close()
    assert handled[0] == 10_000
    lines = [record.getMessage() for record in caplog.records]
    failures = [line for line in lines if "datagram could not be handled" in line]
    assert 1 <= len(failures) <= 2, lines[:5]
    assert any(line.startswith("a datagram could not be handled: error at stun.py:") for line in failures), failures
    text = caplog.text
    assert MARKER.decode() not in text
    assert host.host not in text and sender_port not in text

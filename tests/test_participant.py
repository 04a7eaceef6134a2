"""A participant whose socket never drains is cut loose, and nobody else waits for it."""

from __future__ import annotations

import asyncio
from typing import Any

from sfu.participant import CLOSE_SLOW_CONSUMER, OUTBOX_LIMIT, Participant


class StuckSocket:
    """A socket whose peer never reads: every send waits forever."""

    def __init__(self) -> None:
        self.closed = False
        self.close_code: int | None = None
        self.sent = 0

    async def send_json(self, message: Any) -> None:
        self.sent += 1
        await asyncio.Event().wait()

    async def close(self, code: int, message: bytes = b"") -> None:
        self.closed = True
        self.close_code = code


async def test_a_socket_that_never_reads_is_closed_when_its_outbox_is_full() -> None:
    participant = Participant(role="student", name="Traag", seat="student")
    socket = StuckSocket()
    participant.attach(socket)  # type: ignore[arg-type]
    started = asyncio.get_running_loop().time()
    for number in range(OUTBOX_LIMIT + 5):
        participant.push({"type": "message", "n": number})  # never blocks the caller
    assert asyncio.get_running_loop().time() - started < 0.5
    await asyncio.sleep(0.05)
    assert socket.closed and socket.close_code == CLOSE_SLOW_CONSUMER
    participant.push({"type": "message", "n": -1})  # after closing: dropped, no error
    await participant.detach()
    assert socket.sent == 1

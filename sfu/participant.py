"""A participant of one exam: who they are, their socket, and a bounded outbox to it.

A participant outlives a dropped socket for a grace period, so that a student
or surveillant who reconnects with the same link keeps their place.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .links import Role

logger = logging.getLogger(__name__)

OUTBOX_LIMIT = 256
"""Messages waiting for one slow socket before we give up on that socket."""

CLOSE_SLOW_CONSUMER = 4008


def new_participant_id() -> str:
    """A pseudonymous id: safe for logs, meaningless outside this process."""
    return "p-" + secrets.token_hex(6)


@dataclass
class StudentStatus:
    """What a student's page reports live; relayed to the surveillant, never stored."""

    camera: bool = False
    microphone: bool = False
    screen: bool = False
    page_hidden: bool = False

    def to_public(self) -> dict[str, bool]:
        """The status as sent to the surveillant."""
        return {
            "camera": self.camera,
            "microphone": self.microphone,
            "screen": self.screen,
            "page_hidden": self.page_hidden,
        }


@dataclass(eq=False)
class Participant:
    """One person in one exam, connected or in their grace period."""

    role: Role
    name: str
    seat: str
    id: str = field(default_factory=new_participant_id)
    resume: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    status: StudentStatus = field(default_factory=StudentStatus)
    hand_raised: bool = False
    admitted: bool = False
    """A student whose identity their surveillant checked live (or any assigned student without ID check)."""
    alerts: int = 0
    rejoined_after_end: bool = False
    """A shared-link student under the name of an ended session: their surveillant is alerted once placed."""
    socket: web.WebSocketResponse | None = None
    grace_task: asyncio.Task[None] | None = None
    media_watch: asyncio.Task[None] | None = None
    """A placed student's clock: released unless their media comes up in time (see Exam._watch_media)."""
    _outbox: asyncio.Queue[dict[str, Any] | None] | None = None
    _writer: asyncio.Task[None] | None = None
    last_pushed: dict[str, Any] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        """True while a socket is attached and open."""
        return self.socket is not None and not self.socket.closed

    def attach(self, socket: web.WebSocketResponse) -> None:
        """Take a (new) socket; the previous one, if any, must be detached first."""
        self.cancel_grace()
        self.socket = socket
        self._outbox = asyncio.Queue(maxsize=OUTBOX_LIMIT)
        self._writer = asyncio.ensure_future(self._write_loop(socket, self._outbox))

    async def detach(self) -> None:
        """Forget the socket and stop its writer (the socket itself is closed by its handler)."""
        writer, self._writer = self._writer, None
        self.socket = None
        self._outbox = None
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def finish(self, timeout: float = 1.0) -> None:
        """Send what is queued (within `timeout`), then detach the socket."""
        outbox, writer = self._outbox, self._writer
        if outbox is not None and writer is not None:
            try:
                outbox.put_nowait(None)
                await asyncio.wait_for(asyncio.shield(writer), timeout)
            except (asyncio.QueueFull, asyncio.TimeoutError):
                pass
        await self.detach()

    def push(self, message: dict[str, Any]) -> None:
        """Queue a message for this participant without waiting; a full outbox closes the socket."""
        outbox, socket = self._outbox, self.socket
        if outbox is None or socket is None or socket.closed:
            return
        try:
            outbox.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning("participant %s: outbox full, closing slow socket", self.id)
            asyncio.ensure_future(socket.close(code=CLOSE_SLOW_CONSUMER, message=b"too slow"))

    def push_if_changed(self, key: str, message: dict[str, Any]) -> None:
        """Push `message` unless the last message pushed under `key` was equal."""
        if self.last_pushed.get(key) == message:
            return
        self.last_pushed[key] = message
        self.push(message)

    def cancel_grace(self) -> None:
        """Stop a running grace timer, if any."""
        task, self.grace_task = self.grace_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def cancel_media_watch(self) -> None:
        """Stop the media clock, if any."""
        task, self.media_watch = self.media_watch, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    @staticmethod
    async def _write_loop(socket: web.WebSocketResponse, outbox: asyncio.Queue[dict[str, Any] | None]) -> None:
        try:
            while True:
                message = await outbox.get()
                if message is None or socket.closed:
                    return
                await socket.send_json(message)
        except (ConnectionError, RuntimeError):
            return

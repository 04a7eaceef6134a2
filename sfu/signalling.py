"""The signalling socket: one WebSocket per participant, checked message by message.

Every frame is parsed against the schema of its type and the sender's role
(`messages.parse_client_message`), every action checks the sender's
assignment, and a bad frame gets an error reply that changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from .config import IceServer
from .exam import CLOSE_EXAM_ENDED, CLOSE_REPLACED, CLOSE_SESSION_ENDED, Exam
from .links import SHARED_STUDENT_SEAT, Capability, LinkError
from .messages import LARGEST_FRAME_BYTES, ProtocolError, parse_client_message, sdp_limit
from .participant import Participant
from .rate_limit import JoinLimiter, TokenBucket
from .registry import ExamRegistry

logger = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
OFFER_TIMEOUT = 20.0
MAX_ERRORS = 30
CLOSE_LINK_REFUSED = 4001
CLOSE_FLOOD = 4008
CLOSE_LEFT = 4010
REFUSED_HELLO_CLOSE = {
    "link_invalid": CLOSE_LINK_REFUSED,
    "link_expired": CLOSE_LINK_REFUSED,
    "exam_ended": CLOSE_EXAM_ENDED,
    "session_ended": CLOSE_SESSION_ENDED,
}
"""A hello refused for one of these reasons closes its socket with the matching code."""


def where_it_failed(error: BaseException) -> str:
    """The exception's type and innermost line, for the log: never its message, which may quote the client."""
    frames = traceback.extract_tb(error.__traceback__)
    place = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return type(error).__name__ + place


class Closing(Exception):
    """Stop serving this socket and close it with `code`."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Connection:
    """One open signalling socket and the participant behind it."""

    def __init__(
        self,
        socket: web.WebSocketResponse,
        registry: ExamRegistry,
        join_limiter: JoinLimiter,
        address: str,
    ) -> None:
        self.socket = socket
        self.registry = registry
        self.join_limiter = join_limiter
        self.address = address
        self.bucket = TokenBucket(rate=10.0, burst=40.0)
        self.errors = 0
        self.capability: Capability | None = None
        self.exam: Exam | None = None
        self.participant: Participant | None = None

    # -- plumbing ------------------------------------------------------------

    async def reply(self, message: dict[str, Any], ref: int | None) -> None:
        """Send a direct reply (not through the outbox, so it is ordered before what follows)."""
        if ref is not None:
            message = {**message, "re": ref}
        if self.participant is not None and self.participant.socket is self.socket:
            self.participant.push(message)
        elif not self.socket.closed:
            await self.socket.send_json(message)

    async def fail(self, error: ProtocolError) -> None:
        """Answer with a clear error; too many errors close the socket."""
        self.errors += 1
        await self.reply(error.to_message(), None)
        if self.errors > MAX_ERRORS:
            raise Closing(CLOSE_FLOOD)

    async def serve(self) -> None:
        """Read frames until the socket closes: a successful `hello` within HELLO_TIMEOUT of
        opening (whatever else comes first), then the role's messages."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HELLO_TIMEOUT
        while self.capability is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Closing(CLOSE_LINK_REFUSED)
            try:
                frame = await self.socket.receive(timeout=remaining)
            except asyncio.TimeoutError:
                raise Closing(CLOSE_LINK_REFUSED) from None
            await self.handle_frame(frame)
        async for frame in self.socket:
            await self.handle_frame(frame)

    async def handle_frame(self, frame: Any) -> None:
        """One frame: check it, act on it, or answer why not."""
        if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            raise Closing(0)
        if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return
        if not self.bucket.take():
            if self.bucket.overdrawn():
                raise Closing(CLOSE_FLOOD)
            await self.fail(ProtocolError("rate_limited"))
            return
        role = self.capability.role if self.capability is not None else None
        # A desk's offer has three m-lines per place: its limit follows the exam's cap.
        sdp_max = sdp_limit(role, self.exam.cap if self.exam is not None else 0)
        message: dict[str, Any] | None = None
        try:
            message = parse_client_message(frame.data, role, sdp_max)
            await self.dispatch(message)
        except ProtocolError as error:
            if self.capability is None and error.code in REFUSED_HELLO_CLOSE:
                await self.reply(error.to_message(), None)
                raise Closing(REFUSED_HELLO_CLOSE[error.code]) from None
            await self.fail(error)
        except Closing:
            raise
        except Exception as error:
            # Our bug, not the client's: answer it and keep the socket, as for any refused message.
            kind = message["type"] if message is not None else "frame"
            logger.error("exam %s: %s failed: %s", self.exam.id if self.exam else "-", kind, where_it_failed(error))
            await self.fail(ProtocolError("internal", message["id"] if message is not None else None, kind))

    # -- messages --------------------------------------------------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route a checked message to its handler."""
        kind = message["type"]
        ref = message.get("id")
        try:
            if kind == "hello":
                await self.hello(message)
            elif kind == "check":
                await self.check(message, ref)
            else:
                await getattr(self, "on_" + kind)(message, ref)
        except ProtocolError as error:
            error.ref = ref
            raise

    async def hello(self, message: dict[str, Any]) -> None:
        """Check the link, then join the exam in the link's role and seat."""
        if self.capability is not None:
            raise ProtocolError("invalid")
        if not self.join_limiter.allow(self.address):
            raise ProtocolError("rate_limited")
        try:
            capability = self.registry.signer.verify(message["token"], time.time())
        except LinkError as error:
            raise ProtocolError(error.code) from None
        if capability.exam is not None and not self.join_limiter.allow_exam(capability.exam.exam_id):
            raise ProtocolError("rate_limited")
        exam = self.registry.open(capability.exam) if capability.exam is not None else None
        if exam is not None and capability.role == "student":
            if exam.session_was_ended(capability.seat, message.get("resume")):
                raise ProtocolError("session_ended")
        name = message.get("name") or ""
        if capability.role in ("student", "surveillant") and not name:
            raise ProtocolError("invalid")
        self.capability = capability
        self.exam = exam
        if exam is None:
            participant = Participant(role="organiser", name="", seat="creator")
            participant.attach(self.socket)
            self.participant = participant
            self.welcome(participant, None)
            return
        participant = self.take_seat(exam, capability, name, message.get("resume"))
        self.participant = participant
        self.welcome(participant, exam)
        if participant.role == "organiser":
            exam.add_organiser(participant)
        elif participant.id in exam.participants:
            exam.reconnected(participant)
        elif participant.role == "surveillant":
            exam.add_surveillant(participant)
        else:
            exam.add_student(participant)

    async def check(self, message: dict[str, Any], ref: int | None) -> None:
        """Say whether a link (and resume) would be let in, before the page asks for any device.

        Joins nothing and starts no exam: the answer is `link_status` with `status`
        "ok", "link_invalid", "link_expired", "exam_ended" or "session_ended".
        """
        if not self.join_limiter.allow(self.address):
            raise ProtocolError("rate_limited")
        try:
            capability = self.registry.signer.verify(message["token"], time.time())
        except LinkError as error:
            status = error.code
        else:
            status = self.registry.link_status(capability, message.get("resume"))
        await self.reply({"type": "link_status", "v": 1, "status": status}, ref)

    def take_seat(self, exam: Exam, capability: Capability, name: str, resume: object) -> Participant:
        """The participant for this socket: a returning one (same seat or resume secret) or a new one."""
        returning: Participant | None = None
        if capability.role == "surveillant":
            returning = exam.seat_holder(capability.seat)
        elif capability.role == "student" and capability.seat != SHARED_STUDENT_SEAT:
            # A personal seat is one place: the newest connection to it takes it over.
            returning = exam.seat_student(capability.seat)
        elif capability.role == "student":
            returning = exam.by_resume(resume)
        if returning is not None:
            old_socket = returning.socket
            taken_over = old_socket is not None and not old_socket.closed
            if taken_over:
                asyncio.ensure_future(old_socket.close(code=CLOSE_REPLACED, message=b"replaced"))
            returning.socket = None
            if name:
                returning.name = name
            returning.attach(self.socket)
            if taken_over and returning.role == "student":
                exam.seat_taken_over(returning)
            return returning
        participant = Participant(role=capability.role, name=name, seat=capability.seat)
        participant.attach(self.socket)
        return participant

    def welcome(self, participant: Participant, exam: Exam | None) -> None:
        """The first thing a participant hears: who they are here and how to reach the SFU."""
        participant.push(
            {
                "type": "welcome",
                "v": 1,
                "role": participant.role,
                "participant_id": participant.id,
                "resume": participant.resume if participant.role == "student" else None,
                "exam": exam.settings.to_public() if exam is not None else None,
                "cap": exam.cap if exam is not None else self.registry.config.default_cap,
                "ice_servers": [server.to_browser() for server in self.ice_servers(participant, exam)],
                "links": self.organiser_links(exam) if participant.role == "organiser" else None,
            }
        )

    def ice_servers(self, participant: Participant, exam: Exam | None) -> list[IceServer]:
        """The configured STUN/TURN servers, and TURN servers with credentials for this participant only."""
        config = self.registry.config
        servers = list(config.ice_servers)
        if config.turn is not None:
            ends_at = exam.settings.ends_at if exam is not None else None
            servers += config.turn.issue(participant.id, config.secret, ends_at=ends_at)
        return servers

    def organiser_links(self, exam: Exam | None) -> dict[str, str] | None:
        """The exam's organiser and student links, so a reloaded organiser page can show them again."""
        if exam is None:
            return None
        return {
            "organiser": self.registry.exam_link(exam.settings, "organiser", "organiser"),
            "student": self.registry.exam_link(exam.settings, "student", "student"),
        }

    def require_exam(self) -> tuple[Exam, Participant]:
        """The exam and participant of an authenticated exam socket, or `not_allowed`."""
        if self.exam is None or self.participant is None or self.exam.closed:
            raise ProtocolError("not_allowed")
        return self.exam, self.participant

    # organiser

    async def on_create_exam(self, message: dict[str, Any], ref: int | None) -> None:
        """Only the creator link creates exams; the answer carries all links of the new exam."""
        if self.exam is not None:
            raise ProtocolError("not_allowed")
        cap = message["cap"] if message["kind"] == "written" else 1
        settings = self.registry.create(
            message["title"], message["kind"], cap, message.get("note", ""), message.get("contact", ""),
            message["ends_at"], message["id_check"], message.get("screen_required"),
        )
        logger.info("exam %s: created", settings.exam_id)
        await self.reply(
            {
                "type": "exam_created",
                "v": 1,
                "exam": settings.to_public(),
                "organiser_link": self.registry.exam_link(settings, "organiser", "organiser"),
                "student_link": self.registry.exam_link(settings, "student", "student"),
                "surveillant_links": [self.registry.new_surveillant_link(settings)],
            },
            ref,
        )

    async def on_add_surveillant(self, message: dict[str, Any], ref: int | None) -> None:
        """A new surveillant seat."""
        exam, _ = self.require_exam()
        link = self.registry.new_surveillant_link(exam.settings)
        await self.reply({"type": "surveillant_link", "v": 1, "link": link}, ref)

    async def on_seat_links(self, message: dict[str, Any], ref: int | None) -> None:
        """Numbered personal student links (no names) for seats 1..count, to hand out."""
        exam, _ = self.require_exam()
        links = self.registry.seat_links(exam.settings, message["count"])
        await self.reply({"type": "seat_links", "v": 1, "links": links}, ref)

    async def on_set_cap(self, message: dict[str, Any], ref: int | None) -> None:
        """Change the cap of the running exam (an oral exam stays at 1)."""
        exam, _ = self.require_exam()
        if exam.settings.kind == "oral" and message["cap"] != 1:
            raise ProtocolError("invalid")
        exam.set_cap(message["cap"])
        await self.reply({"type": "ack", "v": 1}, ref)

    async def on_end_exam(self, message: dict[str, Any], ref: int | None) -> None:
        """End the exam for everyone: now, or after a warning of `after_seconds` (then `ack`)."""
        exam, _ = self.require_exam()
        after = message.get("after_seconds") or 0
        if after > 0:
            exam.end_after(after)
            await self.reply({"type": "ack", "v": 1}, ref)
            return
        await exam.close("ended_by_organiser")

    # student and surveillant

    async def on_offer(self, message: dict[str, Any], ref: int | None) -> None:
        """Negotiate this participant's media with the SFU."""
        exam, participant = self.require_exam()
        try:
            if participant.role == "student":
                coroutine = exam.media.student_offer(participant.id, message["sdp"])
            else:
                # A (re)offer is laid out for the current cap: raising the cap makes the desk re-offer.
                exam.slot_count[participant.id] = exam.cap
                coroutine = exam.media.surveillant_offer(participant.id, message["sdp"], exam.cap)
            answer = await asyncio.wait_for(coroutine, OFFER_TIMEOUT)
        except (ValueError, asyncio.TimeoutError, ProtocolError) as error:
            logger.info("exam %s: offer of %s refused (%s)", exam.id, participant.id, type(error).__name__)
            raise ProtocolError("media_failed") from None
        await self.reply({"type": "answer", "v": 1, "sdp": answer}, ref)
        exam.publish()

    async def on_status(self, message: dict[str, Any], ref: int | None) -> None:
        """A student's live status; changes that matter raise an alert for their surveillant."""
        exam, student = self.require_exam()
        before = student.status.to_public()
        for key in ("camera", "microphone", "screen", "page_hidden"):
            if key in message:
                setattr(student.status, key, message[key])
        after = student.status.to_public()
        surveillant = exam.assignment.surveillant_of(student.id)
        if surveillant is not None:
            if before["screen"] and not after["screen"]:
                exam.alert(surveillant, student.id, "screen_stopped")
            if before["camera"] and not after["camera"]:
                exam.alert(surveillant, student.id, "camera_off")
            if not before["page_hidden"] and after["page_hidden"]:
                exam.alert(surveillant, student.id, "page_hidden")
        exam.publish()
        await self.reply({"type": "ack", "v": 1}, ref)

    async def on_hand(self, message: dict[str, Any], ref: int | None) -> None:
        """The student asks for help (or withdraws the question)."""
        exam, student = self.require_exam()
        student.hand_raised = message["raised"]
        surveillant = exam.assignment.surveillant_of(student.id)
        if surveillant is not None and student.hand_raised:
            exam.alert(surveillant, student.id, "hand_raised")
        exam.publish()
        await self.reply({"type": "ack", "v": 1}, ref)

    async def on_leave(self, message: dict[str, Any], ref: int | None) -> None:
        """The student leaves for good; the surveillant sees it."""
        exam, student = self.require_exam()
        surveillant = exam.assignment.surveillant_of(student.id)
        if surveillant is not None:
            exam.alert(surveillant, student.id, "left")
        await exam.remove(student, "left")
        raise Closing(CLOSE_LEFT)

    # surveillant

    async def on_focus(self, message: dict[str, Any], ref: int | None) -> None:
        """Focus one student (full quality) or none."""
        exam, surveillant = self.require_exam()
        exam.set_focus(surveillant, message.get("student_id"))
        await self.reply({"type": "ack", "v": 1}, ref)

    async def on_message(self, message: dict[str, Any], ref: int | None) -> None:
        """A text message to one assigned student."""
        exam, surveillant = self.require_exam()
        student = exam.assigned_student(surveillant, message["student_id"])
        student.push({"type": "message", "v": 1, "from": surveillant.name, "text": message["text"]})
        await self.reply({"type": "ack", "v": 1}, ref)

    async def on_talk(self, message: dict[str, Any], ref: int | None) -> None:
        """Start or stop talking to one assigned student."""
        exam, surveillant = self.require_exam()
        student = exam.assigned_student(surveillant, message["student_id"])
        exam.set_talk(surveillant, student, message["on"])
        await self.reply({"type": "ack", "v": 1}, ref)

    async def on_hand_over(self, message: dict[str, Any], ref: int | None) -> None:
        """Give an assigned student to another surveillant with room."""
        exam, surveillant = self.require_exam()
        student = exam.assigned_student(surveillant, message["student_id"])
        exam.find(message["to"], "surveillant")
        exam.hand_over(student.id, message["to"])
        await self.reply({"type": "ack", "v": 1}, ref)

    async def on_end_session(self, message: dict[str, Any], ref: int | None) -> None:
        """End one assigned student's session, with a reason the student sees."""
        exam, surveillant = self.require_exam()
        student = exam.assigned_student(surveillant, message["student_id"])
        await exam.end_session(student, message.get("reason", ""))
        await self.reply({"type": "ack", "v": 1}, ref)

    async def on_admit(self, message: dict[str, Any], ref: int | None) -> None:
        """Admit an assigned student once their surveillant has checked their identity live."""
        exam, surveillant = self.require_exam()
        student = exam.assigned_student(surveillant, message["student_id"])
        exam.admit(student, surveillant)
        await self.reply({"type": "ack", "v": 1}, ref)

    # -- the end of a socket -------------------------------------------------

    async def close(self, code: int) -> None:
        """The socket is done: detach and start the participant's grace period."""
        participant, exam = self.participant, self.exam
        if participant is not None and participant.socket is self.socket:
            await participant.finish()
            if exam is not None:
                exam.disconnected(participant)
        if not self.socket.closed:
            await self.socket.close(code=code or 1000, message=b"")


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    """GET /ws: the signalling socket."""
    from .app import JOIN_LIMITER, REGISTRY

    # The role is known only after `hello`: the socket takes the largest frame anyone may send,
    # and parse_client_message holds each frame to its sender's own limit.
    socket = web.WebSocketResponse(max_msg_size=LARGEST_FRAME_BYTES, heartbeat=15.0, compress=False)
    await socket.prepare(request)
    connection = Connection(socket, request.app[REGISTRY], request.app[JOIN_LIMITER], request.remote or "")
    code = 1000
    try:
        await connection.serve()
    except Closing as closing:
        code = closing.code
    except asyncio.CancelledError:
        code = 1001
        raise
    finally:
        await connection.close(code)
    return socket

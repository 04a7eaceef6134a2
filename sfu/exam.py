"""One running exam: its participants, the assignment under the cap, and what each is told.

The exam owns everything below it (participants, grace timers, media). `close()`
drops all of it; after that nothing of the exam is left in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from .assignment import Assignment, AssignmentError, Move
from .config import ServerConfig
from .links import SHARED_STUDENT_SEAT, ExamSettings
from .messages import ProtocolError
from .participant import Participant
from .router import ExamMedia

logger = logging.getLogger(__name__)

CLOSE_EXAM_ENDED = 4000
CLOSE_SESSION_ENDED = 4002
CLOSE_REPLACED = 4003
CLOSE_NO_MEDIA = 4004

THUMBNAIL_ENCODINGS: dict[str, dict[str, float]] = {
    "webcam": {"maxBitrate": 150_000, "maxFramerate": 10, "scaleResolutionDownBy": 2.0},
    # Readable enough to see which application is open: 360 lines (640×360 of a 16:9 screen)
    # at 2 frames a second; `maxHeight` makes the page pick the scale from its own screen size.
    "screen": {"maxBitrate": 250_000, "maxFramerate": 2, "scaleResolutionDownBy": 1.0, "maxHeight": 360},
}
FOCUS_ENCODINGS: dict[str, dict[str, float]] = {
    "webcam": {"maxBitrate": 500_000, "maxFramerate": 15, "scaleResolutionDownBy": 1.0},
    "screen": {"maxBitrate": 1_200_000, "maxFramerate": 5, "scaleResolutionDownBy": 1.0},
}


class Exam:
    """The live state of one exam, in memory only."""

    def __init__(self, settings: ExamSettings, config: ServerConfig, on_closed: Callable[[str], None]) -> None:
        self.settings = settings
        self.id = settings.exam_id
        self.cap = settings.cap
        self.config = config
        self.assignment = Assignment(settings.cap)
        self.participants: dict[str, Participant] = {}
        self.media = ExamMedia(
            self.id,
            config,
            oral=settings.kind == "oral",
            screen_required=settings.screen_required,
            on_media_change=self._media_changed,
        )
        self.focus: dict[str, str | None] = {}
        self.talking: dict[str, str | None] = {}
        self.slots: dict[str, dict[str, int]] = {}
        self.slot_count: dict[str, int] = {}
        self.closed = False
        # Ended sessions, for the exam's life and in memory only: personal seats ended for good,
        # resume secrets revoked, and (shared link) the names they used, to alert on a rejoin.
        self.ended_seats: set[str] = set()
        self.ended_resumes: set[str] = set()
        self.ended_names: set[str] = set()
        self._on_closed = on_closed
        self._end_timer: asyncio.TimerHandle | None = None
        self.ending_at: float | None = None
        """When the organiser's announced end comes (unix seconds), or None."""
        self._ending_timer: asyncio.TimerHandle | None = None
        self._ending_seconds = 0
        delay = settings.ends_at - time.time()
        self._end_timer = asyncio.get_running_loop().call_later(
            max(0.0, delay), lambda: asyncio.ensure_future(self.close("time_up"))
        )
        self._stats_task = asyncio.ensure_future(self._push_stats_forever())

    # -- who is here -----------------------------------------------------

    def by_role(self, role: str) -> list[Participant]:
        """Participants of one role, in joining order."""
        return [p for p in self.participants.values() if p.role == role]

    def find(self, participant_id: object, role: str) -> Participant:
        """The participant with that id and role, or a `unknown_participant` error."""
        participant = self.participants.get(participant_id) if isinstance(participant_id, str) else None
        if participant is None or participant.role != role:
            raise ProtocolError("unknown_participant")
        return participant

    def seat_holder(self, seat: str) -> Participant | None:
        """The surveillant currently holding a seat (one link = one seat)."""
        for participant in self.participants.values():
            if participant.role == "surveillant" and participant.seat == seat:
                return participant
        return None

    def seat_student(self, seat: str) -> Participant | None:
        """The student holding a personal seat (a numbered seat link), if any."""
        for participant in self.participants.values():
            if participant.role == "student" and participant.seat == seat:
                return participant
        return None

    def session_was_ended(self, seat: str, resume: object) -> bool:
        """True if this personal seat, or the session behind this resume secret, was ended."""
        return seat in self.ended_seats or (isinstance(resume, str) and resume in self.ended_resumes)

    def by_resume(self, resume: object) -> Participant | None:
        """The student whose resume secret this is, if any."""
        if not isinstance(resume, str):
            return None
        for participant in self.participants.values():
            if participant.role == "student" and participant.resume == resume:
                return participant
        return None

    # -- joining and leaving ----------------------------------------------

    def add_organiser(self, participant: Participant) -> None:
        """An organiser watches the overview; they take no seat in the assignment."""
        self.participants[participant.id] = participant
        self.tell_ending(participant)
        self.publish()

    def add_surveillant(self, participant: Participant) -> None:
        """A surveillant takes a seat and, with it, students from the queue."""
        self.participants[participant.id] = participant
        self.slot_count[participant.id] = self.cap
        self.slots[participant.id] = {}
        self.apply(self.assignment.add_surveillant(participant.id))
        self.tell_ending(participant)
        logger.info("exam %s: surveillant %s joined", self.id, participant.id)

    def add_student(self, participant: Participant) -> None:
        """A student is placed with a surveillant with room, or queued."""
        self.participants[participant.id] = participant
        if participant.seat == SHARED_STUDENT_SEAT and _name_key(participant.name) in self.ended_names:
            participant.rejoined_after_end = True
        self.apply([self.assignment.add_student(participant.id)])
        logger.info("exam %s: student %s joined", self.id, participant.id)

    async def remove(self, participant: Participant, reason: str) -> None:
        """Drop a participant for good: their seat, their media, their place."""
        if self.participants.pop(participant.id, None) is None:
            return
        participant.cancel_grace()
        participant.cancel_media_watch()
        moves: list[Move] = []
        if participant.role == "student":
            surveillant = self.assignment.surveillant_of(participant.id)
            if surveillant is not None:
                self.slots.get(surveillant, {}).pop(participant.id, None)
                self.detach(participant.id, surveillant)
            moves = self.assignment.remove_student(participant.id)
        elif participant.role == "surveillant":
            for student_id in self.assignment.students_of(participant.id):
                self.detach(student_id, participant.id)
            moves = self.assignment.remove_surveillant(participant.id)
            self.slots.pop(participant.id, None)
            self.slot_count.pop(participant.id, None)
            self.focus.pop(participant.id, None)
            self.talking.pop(participant.id, None)
        await self.media.remove_participant(participant.id)
        logger.info("exam %s: %s %s removed (%s)", self.id, participant.role, participant.id, reason)
        self.apply(moves)

    def disconnected(self, participant: Participant) -> None:
        """The socket dropped: keep the place for a grace period, then remove."""
        if participant.id not in self.participants or self.closed:
            return
        if participant.role == "organiser":
            self.participants.pop(participant.id, None)
            return
        grace = (
            self.config.surveillant_grace_seconds
            if participant.role == "surveillant"
            else self.config.student_grace_seconds
        )
        if participant.role == "surveillant":
            self.apply(self.assignment.set_available(participant.id, False))
        else:
            surveillant = self.assignment.surveillant_of(participant.id)
            if surveillant is not None:
                self.alert(surveillant, participant.id, "connection_lost")
        participant.cancel_grace()
        participant.grace_task = asyncio.ensure_future(self._expire_after(participant, grace))
        self.publish()

    def reconnected(self, participant: Participant) -> None:
        """The same seat came back within its grace period."""
        participant.cancel_grace()
        participant.last_pushed.clear()
        self.tell_ending(participant)
        if participant.role == "surveillant" and not self.assignment.is_available(participant.id):
            self.apply(self.assignment.set_available(participant.id, True))
        self.publish()

    def seat_taken_over(self, student: Participant) -> None:
        """A resume took the student's place from a socket that was still open (a second tab or
        device, or a network change the server had not noticed yet): the earlier connection is
        closed, and their surveillant is told. A resume after the old socket closed is an
        ordinary reconnect and raises nothing: devices are not told apart (no fingerprinting)."""
        surveillant = self.assignment.surveillant_of(student.id)
        logger.info("exam %s: student %s taken over by a new connection", self.id, student.id)
        if surveillant is not None:
            self.alert(surveillant, student.id, "taken_over")

    async def _expire_after(self, participant: Participant, grace: float) -> None:
        await asyncio.sleep(grace)
        if not participant.connected:
            participant.grace_task = None
            await self.remove(participant, "grace_expired")

    # -- assignment -----------------------------------------------------------

    def apply(self, moves: Iterable[Move]) -> None:
        """Carry out assignment moves: slots, media routes and what everyone is told."""
        for move in moves:
            for holder, slots in self.slots.items():
                if slots.pop(move.student, None) is not None and holder != move.surveillant:
                    self.detach(move.student, holder)
            student = self.participants.get(move.student)
            if move.surveillant is None:
                self.media.route(move.student, None, None)
            else:
                slot = self._free_slot(move.surveillant)
                self.slots[move.surveillant][move.student] = slot
                self.media.route(move.student, move.surveillant, slot)
                if student is not None:
                    if not self.settings.id_check:
                        student.admitted = True
                    # The encoder follows the new surveillant's focus, never the old one's.
                    self.send_quality(student, focused=self.focus.get(move.surveillant) == move.student)
            if student is not None:
                self._watch_media(student)
        self.publish()
        for move in moves:
            student = self.participants.get(move.student)
            if move.surveillant is not None and student is not None and student.rejoined_after_end:
                # After the roster push, so the desk already knows the name.
                student.rejoined_after_end = False
                self.alert(move.surveillant, student.id, "rejoined_after_end")

    def detach(self, student_id: str, surveillant_id: str) -> None:
        """End what a surveillant had on a student it no longer watches: talk-back (voice route
        included) and focus. Called for every move away, a session's end and a departure."""
        if self.talking.get(surveillant_id) == student_id:
            self.talking[surveillant_id] = None
            self.media.set_talk(surveillant_id, None)
            student, surveillant = self.participants.get(student_id), self.participants.get(surveillant_id)
            if student is not None:
                name = surveillant.name if surveillant is not None else ""
                student.push({"type": "talk", "v": 1, "on": False, "from": name})
        if self.focus.get(surveillant_id) == student_id:
            self.focus[surveillant_id] = None

    def _free_slot(self, surveillant: str) -> int:
        taken = set(self.slots[surveillant].values())
        slot = 0
        while slot in taken:
            slot += 1
        return slot

    def hand_over(self, student_id: str, to: str) -> None:
        """Move a student to another surveillant with room; their media follows at once."""
        try:
            moves = self.assignment.hand_over(student_id, to)
        except AssignmentError as error:
            raise ProtocolError(error.code) from None
        self.apply(moves)

    def set_cap(self, cap: int) -> None:
        """Change the cap for new arrivals; never below what a surveillant already has."""
        busiest = max((len(self.assignment.students_of(s)) for s in self.assignment.surveillants()), default=0)
        if cap < busiest:
            raise ProtocolError("invalid")
        try:
            moves = self.assignment.set_cap(cap)
        except AssignmentError as error:
            raise ProtocolError(error.code) from None
        self.cap = cap
        self._fit_slots(cap)
        self.apply(moves)

    def _fit_slots(self, cap: int) -> None:
        """Move students placed at or above `cap` onto free lower places: the desks re-offer with
        `cap` places, so a higher one would have no tracks (a surveillant has at most `cap` students)."""
        for surveillant, slots in self.slots.items():
            for student in sorted(s for s, slot in slots.items() if slot >= cap):
                del slots[student]
                slot = self._free_slot(surveillant)
                slots[student] = slot
                self.media.route(student, surveillant, slot)

    # -- what everyone is told ------------------------------------------------

    def publish(self) -> None:
        """Tell every connected participant the part of the state that is theirs."""
        if self.closed:
            return
        queue = self.assignment.queue()
        for student_id in queue:
            student = self.participants.get(student_id)
            if student is not None:
                student.push_if_changed(
                    "placement", {"type": "queue", "v": 1, "position": queue.index(student_id) + 1}
                )
        for surveillant in self.by_role("surveillant"):
            for student_id in self.assignment.students_of(surveillant.id):
                student = self.participants.get(student_id)
                if student is not None:
                    student.push_if_changed(
                        "placement",
                        {
                            "type": "assigned",
                            "v": 1,
                            "surveillant": {"id": surveillant.id, "name": surveillant.name},
                        },
                    )
                    # Once per connection: a student who reconnects hears again that they were admitted.
                    if student.admitted:
                        student.push_if_changed("admission", {"type": "admitted", "v": 1})
            surveillant.push_if_changed("roster", self.roster_for(surveillant))
        overview = self.overview()
        for organiser in self.by_role("organiser"):
            organiser.push_if_changed("overview", overview)

    def roster_for(self, surveillant: Participant) -> dict[str, Any]:
        """The surveillant's view: their students, their slots, and who could take a hand-over."""
        students = []
        for student_id in self.assignment.students_of(surveillant.id):
            student = self.participants.get(student_id)
            if student is None:
                continue
            students.append(
                {
                    "id": student.id,
                    "name": student.name,
                    "slot": self.slots[surveillant.id].get(student.id),
                    "hand": student.hand_raised,
                    "admitted": student.admitted,
                    "status": student.status.to_public(),
                    "connected": student.connected,
                    "media": self.media.media_up(student.id),
                }
            )
        others = [
            {"id": other.id, "name": other.name, "room": self.assignment.has_room(other.id)}
            for other in self.by_role("surveillant")
            if other.id != surveillant.id and self.assignment.is_available(other.id)
        ]
        return {
            "type": "roster",
            "v": 1,
            "slots": self.cap,
            "cap": self.cap,
            "students": students,
            "queue": len(self.assignment.queue()),
            "others": others,
            "focus": self.focus.get(surveillant.id),
            "talking": self.talking.get(surveillant.id),
        }

    def overview(self) -> dict[str, Any]:
        """The organiser's view: counts, not media."""
        return {
            "type": "overview",
            "v": 1,
            "cap": self.cap,
            "surveillants": [
                {
                    "id": s.id,
                    "name": s.name,
                    "students": len(self.assignment.students_of(s.id)),
                    "cap": self.cap,
                    "alerts": s.alerts,
                    "unchecked": self.unchecked(s.id),
                    "connected": s.connected,
                }
                for s in self.by_role("surveillant")
            ],
            "queue": [
                {"id": student_id, "position": position}
                for position, student_id in enumerate(self.assignment.queue(), start=1)
            ],
        }

    def unchecked(self, surveillant_id: str) -> int:
        """How many of the surveillant's students still wait for their ID check."""
        return sum(
            1
            for student_id in self.assignment.students_of(surveillant_id)
            if (student := self.participants.get(student_id)) is not None and not student.admitted
        )

    def alert(self, surveillant_id: str, student_id: str, kind: str) -> None:
        """A live alert for the student's surveillant; counted for the organiser, never stored."""
        surveillant = self.participants.get(surveillant_id)
        if surveillant is None:
            return
        surveillant.alerts += 1
        surveillant.push({"type": "alert", "v": 1, "student_id": student_id, "kind": kind})

    def send_quality(self, student: Participant, focused: bool) -> None:
        """Ask the student's browser to send thumbnail or focus quality."""
        student.push(
            {
                "type": "quality",
                "v": 1,
                "level": "focus" if focused else "thumbnail",
                "encodings": FOCUS_ENCODINGS if focused else THUMBNAIL_ENCODINGS,
            }
        )

    # -- actions ----------------------------------------------------------------

    def assigned_student(self, surveillant: Participant, student_id: object) -> Participant:
        """A student assigned to this surveillant, or `not_allowed` / `unknown_participant`."""
        student = self.find(student_id, "student")
        if self.assignment.surveillant_of(student.id) != surveillant.id:
            raise ProtocolError("not_allowed")
        return student

    def admit(self, student: Participant, surveillant: Participant) -> None:
        """The surveillant checked the student's identity live: admitted for the rest of the exam."""
        if not student.admitted:
            student.admitted = True
            logger.info("exam %s: student %s admitted by %s", self.id, student.id, surveillant.id)
        self.publish()

    def set_focus(self, surveillant: Participant, student_id: str | None) -> None:
        """Full quality for the focused student, thumbnail for the one focused before."""
        new = self.assigned_student(surveillant, student_id) if student_id is not None else None
        old_id = self.focus.get(surveillant.id)
        if old_id is not None and (new is None or new.id != old_id):
            old = self.participants.get(old_id)
            # Only a student still watched by this surveillant follows its focus.
            if old is not None and self.assignment.surveillant_of(old.id) == surveillant.id:
                self.send_quality(old, focused=False)
        self.focus[surveillant.id] = new.id if new else None
        if new is not None:
            self.send_quality(new, focused=True)
        self.publish()

    def set_talk(self, surveillant: Participant, student: Participant, on: bool) -> None:
        """Route the surveillant's voice to this one student, only while talking."""
        current = self.talking.get(surveillant.id)
        if on:
            if current is not None and current != student.id:
                previous = self.participants.get(current)
                if previous is not None:
                    previous.push({"type": "talk", "v": 1, "on": False, "from": surveillant.name})
            self.talking[surveillant.id] = student.id
        elif current == student.id:
            self.talking[surveillant.id] = None
        self.media.set_talk(surveillant.id, self.talking.get(surveillant.id))
        student.push({"type": "talk", "v": 1, "on": on, "from": surveillant.name})
        self.publish()

    async def end_session(self, student: Participant, reason: str) -> None:
        """The surveillant ends one student's session; the student is told why.

        The session stays ended: a personal seat cannot be taken again and the resume secret
        is revoked; on the shared link a new student under the same name raises an alert.
        """
        if student.seat == SHARED_STUDENT_SEAT:
            self.ended_names.add(_name_key(student.name))
        else:
            self.ended_seats.add(student.seat)
        self.ended_resumes.add(student.resume)
        await self._send_away(
            student, {"type": "session_ended", "v": 1, "reason": reason}, "ended_by_surveillant", CLOSE_SESSION_ENDED
        )

    async def _send_away(self, student: Participant, message: dict[str, Any], reason: str, code: int) -> None:
        """Tell the student why, drop them for good, and close their socket with `code`."""
        socket = student.socket
        student.push(message)
        await asyncio.sleep(0)
        await self.remove(student, reason)
        await _flush_and_close(student, socket, code)

    # -- a placed student's media must come up --------------------------------------

    def _media_changed(self, owner: str) -> None:
        """A peer connection changed state: (re)start or stop the student's clock, update the desk."""
        participant = self.participants.get(owner)
        if self.closed or participant is None:
            return
        if participant.role == "student":
            self._watch_media(participant)
        self.publish()

    def _watch_media(self, student: Participant) -> None:
        """A placed student whose media is not up gets `student_media_seconds` to bring it up.

        The clock starts when the student is placed (or their media goes down while placed)
        and stops when their peer connection is up or they go back to the queue: a socket
        that never offers media cannot hold a surveillant's place for longer than that.
        """
        placed = self.assignment.surveillant_of(student.id) is not None
        if not placed or self.media.media_up(student.id):
            student.cancel_media_watch()
        elif student.media_watch is None:
            student.media_watch = asyncio.ensure_future(self._release_without_media(student))

    async def _release_without_media(self, student: Participant) -> None:
        await asyncio.sleep(self.config.student_media_seconds)
        student.media_watch = None
        if self.closed or self.participants.get(student.id) is not student or self.media.media_up(student.id):
            return
        if self.assignment.surveillant_of(student.id) is None:
            return
        await self._send_away(student, ProtocolError("media_failed").to_message(), "no_media", CLOSE_NO_MEDIA)

    async def _push_stats_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for student_id in self.media.newly_live():
                if (student := self.participants.get(student_id)) is not None:
                    student.push({"type": "media_live", "v": 1})
            for surveillant in self.by_role("surveillant"):
                if not surveillant.connected:
                    continue
                students = self.assignment.students_of(surveillant.id)
                if students:
                    surveillant.push(
                        {"type": "stats", "v": 1, "tracks": {s: self.media.track_stats(s) for s in students}}
                    )

    # -- the end ------------------------------------------------------------------

    def end_after(self, seconds: int) -> None:
        """Announce the end to the surveillants and organisers, then end the exam after `seconds`,
        so that nobody's incident notes vanish by surprise. A later, earlier call moves it forward."""
        at = time.time() + seconds
        if self.ending_at is not None and self.ending_at <= at:
            return
        self.ending_at = at
        if self._ending_timer is not None:
            self._ending_timer.cancel()
        self._ending_timer = asyncio.get_running_loop().call_later(
            seconds, lambda: asyncio.ensure_future(self.close("ended_by_organiser"))
        )
        self._ending_seconds = seconds
        for participant in self.participants.values():
            self.tell_ending(participant)
        logger.info("exam %s: ends in %d s", self.id, seconds)

    def tell_ending(self, participant: Participant) -> None:
        """A surveillant or organiser hears of an announced end (again after joining late)."""
        if self.ending_at is not None and participant.role in ("surveillant", "organiser"):
            participant.push(
                {"type": "exam_ending", "v": 1, "at": int(self.ending_at), "seconds": self._ending_seconds}
            )

    async def close(self, reason: str) -> None:
        """End the exam: tell everyone, close every connection, drop all state."""
        if self.closed:
            return
        self.closed = True
        if self._end_timer is not None:
            self._end_timer.cancel()
            self._end_timer = None
        if self._ending_timer is not None:
            self._ending_timer.cancel()
            self._ending_timer = None
        self._stats_task.cancel()
        participants = list(self.participants.values())
        sockets = [(p, p.socket) for p in participants]
        for participant in participants:
            participant.cancel_grace()
            participant.cancel_media_watch()
            participant.push({"type": "exam_ended", "v": 1, "reason": reason})
        await asyncio.sleep(0)
        await asyncio.gather(
            *(_flush_and_close(p, socket, CLOSE_EXAM_ENDED) for p, socket in sockets), return_exceptions=True
        )
        await self.media.close()
        await asyncio.gather(self._stats_task, return_exceptions=True)
        self.participants.clear()
        self.slots.clear()
        self.focus.clear()
        self.talking.clear()
        self.ended_seats.clear()
        self.ended_resumes.clear()
        self.ended_names.clear()
        logger.info("exam %s: ended (%s)", self.id, reason)
        self._on_closed(self.id)


def _name_key(name: str) -> str:
    """A name compared in memory only: case and surrounding space do not matter."""
    return " ".join(name.split()).casefold()


async def _flush_and_close(participant: Participant, socket: Any, code: int) -> None:
    """Let the participant's writer send what is queued, then close with `code`."""
    await participant.finish()
    if socket is not None and not socket.closed:
        await socket.close(code=code, message=b"")

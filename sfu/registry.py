"""All exams of this process, found by id, and the links that open them.

Exams are rebuilt from their links' signed settings, so the server keeps no
database: after a restart the first link presented brings its exam back (empty).
"""

from __future__ import annotations

import asyncio
import secrets
import time

from .config import ServerConfig
from .exam import Exam
from .links import (
    EXAM_AHEAD_MAX,
    LINK_LIFETIME_AFTER_END,
    Capability,
    ExamSettings,
    LinkSigner,
    PERSONAL_SEAT_PREFIX,
    new_exam_id,
    screen_required_by_default,
)
from .messages import ProtocolError


class ExamRegistry:
    """The exams of this process and the ids of the ones that ended."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.signer = LinkSigner(config.secret)
        self.exams: dict[str, Exam] = {}
        self._ended: dict[str, int] = {}

    def creator_link(self) -> str:
        """The organiser link printed at start: it may create exams."""
        capability = Capability(
            role="organiser",
            exam=None,
            seat="creator",
            expires_at=int(time.time()) + self.config.creator_link_days * 24 * 3600,
        )
        return self.link("organise", capability)

    def link(self, page: str, capability: Capability) -> str:
        """A full link: the page's address with the signed token in the fragment."""
        return f"{self.config.public_url}/{page}/#{self.signer.sign(capability)}"

    def exam_link(self, settings: ExamSettings, role: str, seat: str) -> str:
        """A link for one role (and seat) of an exam, valid a week past its end."""
        page = {"organiser": "organise", "surveillant": "desk", "student": "join"}[role]
        capability = Capability(
            role=role,  # type: ignore[arg-type]
            exam=settings,
            seat=seat,
            expires_at=settings.ends_at + LINK_LIFETIME_AFTER_END,
        )
        return self.link(page, capability)

    def new_surveillant_link(self, settings: ExamSettings) -> str:
        """One more surveillant seat for this exam."""
        return self.exam_link(settings, "surveillant", "s-" + secrets.token_hex(4))

    def seat_links(self, settings: ExamSettings, count: int) -> list[str]:
        """Personal student links for seats 1..count: numbered, no names; the same on every call."""
        return [self.exam_link(settings, "student", f"{PERSONAL_SEAT_PREFIX}{n}") for n in range(1, count + 1)]

    def link_status(self, capability: Capability, resume: object) -> str:
        """What a hello with this link (and resume) would meet, without joining or starting
        anything: "ok", "exam_ended", or "session_ended" for an ended seat or session."""
        if capability.exam is None:
            return "ok"
        settings = capability.exam
        if settings.exam_id in self._ended or settings.ends_at <= time.time():
            return "exam_ended"
        exam = self.exams.get(settings.exam_id)
        if exam is not None and capability.role == "student" and exam.session_was_ended(capability.seat, resume):
            return "session_ended"
        return "ok"

    def create(
        self, title: str, kind: str, cap: int, note: str, contact: str, ends_at: int, id_check: bool,
        screen_required: bool | None = None,
    ) -> ExamSettings:
        """Settings for a new exam; the exam itself starts when its first link is used.

        `invalid` unless it ends in the future and within EXAM_AHEAD_MAX from now."""
        now = time.time()
        if not now < ends_at <= now + EXAM_AHEAD_MAX:
            raise ProtocolError("invalid", detail="ends_at")
        return ExamSettings(
            exam_id=new_exam_id(),
            title=title,
            kind=kind,  # type: ignore[arg-type]
            cap=cap,
            note=note,
            contact=contact,
            ends_at=ends_at,
            id_check=id_check,
            screen_required=screen_required_by_default(kind) if screen_required is None else screen_required,
        )

    def open(self, settings: ExamSettings) -> Exam:
        """The running exam for these settings, started if needed; `exam_ended` if it is over."""
        if settings.exam_id in self._ended or settings.ends_at <= time.time():
            raise ProtocolError("exam_ended")
        exam = self.exams.get(settings.exam_id)
        if exam is None:
            exam = Exam(settings, self.config, self._forget)
            self.exams[settings.exam_id] = exam
        return exam

    def _forget(self, exam_id: str) -> None:
        exam = self.exams.pop(exam_id, None)
        if exam is not None:
            self._ended[exam_id] = exam.settings.ends_at
        now = time.time()
        for old_id, ends_at in list(self._ended.items()):
            if ends_at + LINK_LIFETIME_AFTER_END < now:
                del self._ended[old_id]

    async def close_all(self) -> None:
        """Server shutdown: end every exam."""
        await asyncio.gather(*(exam.close("server_stopped") for exam in list(self.exams.values())))

"""Who watches whom: students assigned to surveillants under a per-surveillant cap, the rest queued.

A pure policy with no I/O. Every change returns the `Move`s it made, in order,
so the exam can reroute media and tell exactly the students concerned.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_CAP = 1
MAX_CAP = 50

ERROR_CODES = frozenset({"unknown_participant", "no_room", "not_allowed", "invalid"})


@dataclass(frozen=True)
class Move:
    """A student now watched by `surveillant`, or placed in (or back in) the queue when None."""

    student: str
    surveillant: str | None


class AssignmentError(Exception):
    """A refused change, with a protocol error code; the assignment is left as it was."""

    code: str

    def __init__(self, code: str, detail: str = "") -> None:
        assert code in ERROR_CODES, code
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


def _check_cap(cap: object) -> int:
    if isinstance(cap, bool) or not isinstance(cap, int) or not MIN_CAP <= cap <= MAX_CAP:
        raise AssignmentError("invalid", f"cap must be an integer from {MIN_CAP} to {MAX_CAP}")
    return cap


def _check_id(participant: object) -> str:
    if not isinstance(participant, str) or not participant:
        raise AssignmentError("invalid", "a participant id is a non-empty string")
    return participant


class Assignment:
    """Students per surveillant (in assignment order), availability, and the waiting queue.

    Rules: a surveillant never gets a student while it has `cap` or more; a new
    or queued student goes to the available surveillant with the fewest
    students (ties: the one added first); the queue is first come, first
    served, except that students who lost their surveillant go to its front.
    Whenever an available surveillant has room, the queue is empty.
    """

    def __init__(self, cap: int) -> None:
        self._cap = _check_cap(cap)
        self._students: dict[str, list[str]] = {}  # surveillant -> students, in the order added
        self._unavailable: set[str] = set()
        self._surveillant_of: dict[str, str] = {}
        self._queue: list[str] = []

    # -- changes ----------------------------------------------------------------

    @property
    def cap(self) -> int:
        """The exam-wide cap: how many students one surveillant may be given."""
        return self._cap

    def set_cap(self, cap: int) -> list[Move]:
        """Change the cap for new placements; lowering keeps every current student, raising drains the queue."""
        self._cap = _check_cap(cap)
        return self._drain()

    def add_surveillant(self, surveillant: str) -> list[Move]:
        """Seat a new, available surveillant and give it queued students (front first) up to the cap."""
        if self._is_known(_check_id(surveillant)):
            raise AssignmentError("invalid", "participant already known")
        self._students[surveillant] = []
        return self._drain()

    def remove_surveillant(self, surveillant: str) -> list[Move]:
        """Unseat a surveillant; its students go to others with room, else to the queue's front in order."""
        students = self._students.pop(self._known_surveillant(surveillant))
        self._unavailable.discard(surveillant)
        moves: list[Move] = []
        overflow: list[str] = []
        for student in students:
            target = self._place_target()
            if target is None:
                del self._surveillant_of[student]
                overflow.append(student)
                moves.append(Move(student, None))
            else:
                self._assign(student, target)
                moves.append(Move(student, target))
        self._queue[:0] = overflow
        return moves

    def set_available(self, surveillant: str, available: bool) -> list[Move]:
        """Mark a surveillant (un)available; it keeps its students either way, and draining resumes when back."""
        self._known_surveillant(surveillant)
        if not available:
            self._unavailable.add(surveillant)
            return []
        self._unavailable.discard(surveillant)
        return self._drain()

    def add_student(self, student: str) -> Move:
        """Place a new student with the emptiest available surveillant below the cap, else at the queue's back."""
        return self._add_student(student, front=False)

    def add_student_front(self, student: str) -> Move:
        """Like `add_student`, but a queued student goes to the queue's front (they lost their surveillant)."""
        return self._add_student(student, front=True)

    def remove_student(self, student: str) -> list[Move]:
        """Forget a student; the room they free is filled from the queue."""
        surveillant = self._surveillant_of.pop(_check_id(student), None)
        if surveillant is not None:
            self._students[surveillant].remove(student)
            return self._drain()
        if student in self._queue:
            self._queue.remove(student)
            return []
        raise AssignmentError("unknown_participant", "no such student")

    def hand_over(self, student: str, to: str) -> list[Move]:
        """Move an assigned student to another available surveillant with room; the freed room drains the queue.

        Codes: `unknown_participant` (no such student or surveillant),
        `not_allowed` (the student is queued, not assigned), `invalid` (the
        student is already with `to`), `no_room` (`to` is full or unavailable).
        """
        if not self.knows_student(_check_id(student)):
            raise AssignmentError("unknown_participant", "no such student")
        target = self._known_surveillant(to)
        source = self._surveillant_of.get(student)
        if source is None:
            raise AssignmentError("not_allowed", "the student is queued, not assigned")
        if source == target:
            raise AssignmentError("invalid", "the student is already with this surveillant")
        if target in self._unavailable or not self.has_room(target):
            raise AssignmentError("no_room", "the surveillant cannot take a student now")
        self._students[source].remove(student)
        self._assign(student, target)
        return [Move(student, target), *self._drain()]

    # -- questions --------------------------------------------------------------

    def surveillant_of(self, student: str) -> str | None:
        """The student's surveillant; None when queued or unknown (see `knows_student`)."""
        return self._surveillant_of.get(student)

    def students_of(self, surveillant: str) -> tuple[str, ...]:
        """The surveillant's students, in the order they were assigned."""
        return tuple(self._students[self._known_surveillant(surveillant)])

    def queue(self) -> tuple[str, ...]:
        """The waiting students, front first."""
        return tuple(self._queue)

    def queue_position(self, student: str) -> int | None:
        """The student's 1-based place in the queue; None when assigned or unknown."""
        try:
            return self._queue.index(student) + 1
        except ValueError:
            return None

    def surveillants(self) -> tuple[str, ...]:
        """All seated surveillants, available or not, in the order they were added."""
        return tuple(self._students)

    def has_room(self, surveillant: str) -> bool:
        """Whether the surveillant has fewer students than the cap (availability aside)."""
        return len(self._students[self._known_surveillant(surveillant)]) < self._cap

    def is_available(self, surveillant: str) -> bool:
        """Whether the surveillant may be given students (False during a grace period)."""
        return self._known_surveillant(surveillant) not in self._unavailable

    def knows_student(self, student: str) -> bool:
        """Whether the student is assigned or queued."""
        return student in self._surveillant_of or student in self._queue

    # -- internals --------------------------------------------------------------

    def _is_known(self, participant: str) -> bool:
        return participant in self._students or self.knows_student(participant)

    def _known_surveillant(self, surveillant: str) -> str:
        if _check_id(surveillant) not in self._students:
            raise AssignmentError("unknown_participant", "no such surveillant")
        return surveillant

    def _place_target(self) -> str | None:
        """The available surveillant with the fewest students below the cap; ties go to the first added."""
        best: str | None = None
        for surveillant, students in self._students.items():
            if surveillant in self._unavailable or len(students) >= self._cap:
                continue
            if best is None or len(students) < len(self._students[best]):
                best = surveillant
        return best

    def _assign(self, student: str, surveillant: str) -> None:
        self._students[surveillant].append(student)
        self._surveillant_of[student] = surveillant

    def _add_student(self, student: str, front: bool) -> Move:
        if self._is_known(_check_id(student)):
            raise AssignmentError("invalid", "participant already known")
        target = self._place_target()
        if target is not None:
            self._assign(student, target)
        elif front:
            self._queue.insert(0, student)
        else:
            self._queue.append(student)
        return Move(student, target)

    def _drain(self) -> list[Move]:
        """Fill free room of available surveillants from the front of the queue."""
        moves: list[Move] = []
        while self._queue:
            target = self._place_target()
            if target is None:
                break
            student = self._queue.pop(0)
            self._assign(student, target)
            moves.append(Move(student, target))
        return moves

"""The assignment policy: unit tests per method, and a state machine that replays every Move."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sfu.assignment import Assignment, AssignmentError, Move


def snapshot(a: Assignment) -> tuple[object, ...]:
    """Everything observable about an assignment, to prove an error changed nothing."""
    return (
        a.cap,
        a.surveillants(),
        tuple((s, a.students_of(s), a.is_available(s)) for s in a.surveillants()),
        a.queue(),
    )


def refused(a: Assignment, code: str, call: Callable[..., object], *args: object) -> None:
    before = snapshot(a)
    with pytest.raises(AssignmentError) as error:
        call(*args)
    assert error.value.code == code
    assert snapshot(a) == before


def exam(cap: int, surveillants: int = 0, students: int = 0) -> Assignment:
    """Surveillants v1..vN added in order, then students s1..sM."""
    a = Assignment(cap)
    for i in range(1, surveillants + 1):
        a.add_surveillant(f"v{i}")
    for i in range(1, students + 1):
        a.add_student(f"s{i}")
    return a


# -- values ---------------------------------------------------------------------


def test_move_is_a_frozen_value():
    move = Move("s1", "v1")
    assert move == Move("s1", "v1") and move != Move("s1", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        move.student = "s2"  # type: ignore[misc]


def test_error_carries_its_code():
    error = AssignmentError("no_room", "full")
    assert error.code == "no_room" and "no_room" in str(error)


# -- cap --------------------------------------------------------------------------


@pytest.mark.parametrize("cap", [0, -1, 51, True, 2.0, "8", None])
def test_invalid_cap_is_refused_at_creation(cap):
    with pytest.raises(AssignmentError) as error:
        Assignment(cap)
    assert error.value.code == "invalid"


@pytest.mark.parametrize("cap", [1, 8, 50])
def test_valid_caps(cap):
    assert Assignment(cap).cap == cap


@pytest.mark.parametrize("cap", [0, 51, False, 3.5, "4"])
def test_set_cap_refuses_invalid_caps_and_changes_nothing(cap):
    a = exam(2, surveillants=1, students=3)
    refused(a, "invalid", a.set_cap, cap)


def test_lowering_cap_keeps_every_student_and_new_arrivals_follow_it():
    a = exam(4, surveillants=2, students=6)
    assert a.students_of("v1") == ("s1", "s3", "s5")
    assert a.set_cap(2) == []
    assert a.cap == 2
    assert a.students_of("v1") == ("s1", "s3", "s5")
    assert a.students_of("v2") == ("s2", "s4", "s6")
    assert a.add_student("s7") == Move("s7", None)
    assert not a.has_room("v1") and not a.has_room("v2")


def test_after_lowering_cap_freed_room_above_the_cap_is_not_refilled():
    a = exam(3, surveillants=1, students=3)
    a.set_cap(1)
    a.add_student("s4")
    assert a.remove_student("s1") == []
    assert a.queue() == ("s4",)
    assert a.remove_student("s2") == []
    assert a.remove_student("s3") == [Move("s4", "v1")]


def test_raising_cap_drains_the_queue_front_first_fewest_students_first():
    a = exam(1, surveillants=2, students=5)
    assert a.queue() == ("s3", "s4", "s5")
    assert a.set_cap(2) == [Move("s3", "v1"), Move("s4", "v2")]
    assert a.queue() == ("s5",)
    assert a.set_cap(3) == [Move("s5", "v1")]
    assert a.queue() == ()


def test_raising_cap_skips_unavailable_surveillants():
    a = exam(1, surveillants=2, students=3)
    a.set_available("v1", False)
    assert a.set_cap(2) == [Move("s3", "v2")]


def test_setting_the_same_cap_moves_nobody():
    a = exam(2, surveillants=1, students=3)
    assert a.set_cap(2) == []


# -- add_student ----------------------------------------------------------------


def test_student_goes_to_surveillant_with_fewest_students_ties_to_first_added():
    a = exam(3, surveillants=3)
    assert [a.add_student(f"s{i}") for i in range(1, 5)] == [
        Move("s1", "v1"),
        Move("s2", "v2"),
        Move("s3", "v3"),
        Move("s4", "v1"),
    ]
    a.remove_student("s2")
    assert a.add_student("s5") == Move("s5", "v2")


def test_student_without_surveillants_is_queued_at_the_back():
    a = Assignment(8)
    assert a.add_student("s1") == Move("s1", None)
    assert a.add_student("s2") == Move("s2", None)
    assert a.queue() == ("s1", "s2")
    assert a.queue_position("s2") == 2
    assert a.surveillant_of("s2") is None


def test_student_is_queued_when_everyone_is_full():
    a = exam(2, surveillants=2, students=4)
    assert a.add_student("s5") == Move("s5", None)
    assert a.queue_position("s5") == 1


def test_unavailable_surveillant_gets_no_new_students():
    a = exam(2, surveillants=2)
    a.set_available("v1", False)
    assert a.add_student("s1") == Move("s1", "v2")
    assert a.add_student("s2") == Move("s2", "v2")
    assert a.add_student("s3") == Move("s3", None)


@pytest.mark.parametrize("known", ["s1", "s3", "v1"])
def test_readding_a_known_id_is_invalid(known):
    a = exam(2, surveillants=1, students=3)  # s3 queued
    refused(a, "invalid", a.add_student, known)
    refused(a, "invalid", a.add_student_front, known)


@pytest.mark.parametrize("bad", ["", None, 7])
def test_malformed_ids_are_invalid(bad):
    a = exam(2, surveillants=1, students=1)
    refused(a, "invalid", a.add_student, bad)
    refused(a, "invalid", a.add_surveillant, bad)
    refused(a, "invalid", a.remove_student, bad)


# -- add_student_front ---------------------------------------------------------


def test_front_student_is_queued_at_the_front():
    a = exam(1, surveillants=1, students=3)
    assert a.add_student_front("s0") == Move("s0", None)
    assert a.queue() == ("s0", "s2", "s3")
    assert a.remove_student("s1") == [Move("s0", "v1")]


def test_front_student_is_placed_when_there_is_room():
    a = exam(2, surveillants=1, students=1)
    assert a.add_student_front("s0") == Move("s0", "v1")
    assert a.students_of("v1") == ("s1", "s0")


# -- add_surveillant -------------------------------------------------------------


def test_new_surveillant_takes_queue_front_first_up_to_cap():
    a = exam(2, students=3)
    assert a.add_surveillant("v1") == [Move("s1", "v1"), Move("s2", "v1")]
    assert a.queue() == ("s3",)
    assert a.add_surveillant("v2") == [Move("s3", "v2")]
    assert a.queue() == ()
    assert a.surveillants() == ("v1", "v2")
    assert a.is_available("v2") and a.has_room("v2")


def test_new_surveillant_with_empty_queue_moves_nobody():
    assert exam(2, surveillants=1).add_surveillant("v2") == []


@pytest.mark.parametrize("known", ["v1", "s1", "s2"])
def test_readding_a_known_surveillant_id_is_invalid(known):
    a = exam(1, surveillants=1, students=2)  # s2 queued
    refused(a, "invalid", a.add_surveillant, known)


# -- remove_surveillant ----------------------------------------------------------


def test_removed_surveillants_students_split_over_room_then_queue_front_in_order():
    a = exam(4, surveillants=3, students=10)  # v1: s1 s4 s7 s10, v2: s2 s5 s8, v3: s3 s6 s9
    assert a.students_of("v1") == ("s1", "s4", "s7", "s10")
    assert a.remove_surveillant("v1") == [
        Move("s1", "v2"),
        Move("s4", "v3"),
        Move("s7", None),
        Move("s10", None),
    ]
    assert a.queue() == ("s7", "s10")
    assert a.students_of("v2") == ("s2", "s5", "s8", "s1")
    assert a.students_of("v3") == ("s3", "s6", "s9", "s4")
    assert a.surveillants() == ("v2", "v3")


def test_removed_surveillants_overflow_goes_before_the_existing_queue():
    a = exam(3, surveillants=2)
    for name in ["x1", "y1", "x2", "y2", "x3", "y3"]:
        a.add_student(name)  # v1: x1 x2 x3, v2: y1 y2 y3
    a.add_student("q1")
    a.add_student("q2")
    a.remove_student("y2")
    assert a.queue() == ("q2",)  # q1 took v2's room
    a.set_cap(4)
    assert a.queue() == ()  # q2 to v1 or v2
    a.add_student("q3")
    a.add_student("q4")
    a.add_student("q5")
    assert a.queue() == ("q4", "q5")
    v1_students = a.students_of("v1")
    assert a.remove_surveillant("v1") == [Move(s, None) for s in v1_students]
    assert a.queue() == (*v1_students, "q4", "q5")
    assert a.queue_position("q4") == len(v1_students) + 1


def test_removing_a_surveillant_of_an_oral_exam_with_others_partly_full():
    a = exam(2, surveillants=3, students=4)  # v1: s1 s4, v2: s2, v3: s3
    a.add_student("s5")  # v2
    a.add_student("s6")  # v3
    a.remove_student("s5")  # v2 has room again
    assert a.remove_surveillant("v1") == [Move("s1", "v2"), Move("s4", None)]
    assert a.queue() == ("s4",)
    assert a.students_of("v2") == ("s2", "s1")


def test_removing_an_unavailable_surveillant_and_one_without_students():
    a = exam(2, surveillants=2, students=2)
    a.set_available("v1", False)
    assert a.remove_surveillant("v1") == [Move("s1", "v2")]
    assert a.remove_surveillant("v2") == [Move("s2", None), Move("s1", None)]
    assert a.queue() == ("s2", "s1")
    assert a.surveillants() == ()
    a.add_surveillant("v3")
    assert a.remove_surveillant("v3") == [Move("s2", None), Move("s1", None)]


def test_removing_an_unknown_surveillant_is_refused():
    a = exam(2, surveillants=1, students=1)
    refused(a, "unknown_participant", a.remove_surveillant, "v9")
    refused(a, "unknown_participant", a.remove_surveillant, "s1")


def test_removed_surveillant_id_is_free_again_and_available():
    a = exam(1, surveillants=1, students=1)
    a.set_available("v1", False)
    a.remove_surveillant("v1")
    assert a.add_surveillant("v1") == [Move("s1", "v1")]
    assert a.is_available("v1")


# -- set_available ---------------------------------------------------------------


def test_unavailable_surveillant_keeps_students_and_drains_when_back():
    a = exam(2, surveillants=1, students=1)
    assert a.set_available("v1", False) == []
    assert not a.is_available("v1")
    assert a.students_of("v1") == ("s1",)
    a.add_student("s2")
    a.add_student("s3")
    assert a.queue() == ("s2", "s3")
    assert a.set_available("v1", True) == [Move("s2", "v1")]
    assert a.is_available("v1")
    assert a.queue() == ("s3",)


def test_set_available_is_idempotent():
    a = exam(1, surveillants=1, students=2)
    assert a.set_available("v1", True) == []
    assert a.set_available("v1", False) == []
    assert a.set_available("v1", False) == []
    assert a.queue() == ("s2",)


def test_set_available_on_unknown_surveillant_is_refused():
    a = exam(1, surveillants=1, students=1)
    refused(a, "unknown_participant", a.set_available, "v2", True)
    refused(a, "unknown_participant", a.set_available, "s1", False)


# -- remove_student --------------------------------------------------------------


def test_oral_exam_removing_current_student_admits_the_next():
    a = exam(1, surveillants=1, students=3)
    assert a.students_of("v1") == ("s1",)
    assert a.remove_student("s1") == [Move("s2", "v1")]
    assert a.queue() == ("s3",)
    assert a.remove_student("s2") == [Move("s3", "v1")]
    assert a.remove_student("s3") == []
    assert a.students_of("v1") == () and not a.knows_student("s3")


def test_removing_a_queued_student_moves_nobody():
    a = exam(1, surveillants=1, students=4)
    assert a.remove_student("s3") == []
    assert a.queue() == ("s2", "s4")
    assert a.queue_position("s4") == 2
    assert not a.knows_student("s3")


def test_room_freed_at_an_unavailable_surveillant_is_not_filled():
    a = exam(1, surveillants=1, students=2)
    a.set_available("v1", False)
    assert a.remove_student("s1") == []
    assert a.queue() == ("s2",)
    assert a.set_available("v1", True) == [Move("s2", "v1")]


def test_removing_an_unknown_student_is_refused():
    a = exam(1, surveillants=1, students=2)
    refused(a, "unknown_participant", a.remove_student, "s9")
    refused(a, "unknown_participant", a.remove_student, "v1")


def test_removed_student_can_join_again():
    a = exam(1, surveillants=1, students=2)
    a.remove_student("s1")
    assert a.add_student("s1") == Move("s1", None)
    assert a.queue() == ("s1",)


# -- hand_over -------------------------------------------------------------------


def test_hand_over_moves_the_student_to_the_end_of_the_new_list():
    a = exam(3, surveillants=2, students=3)  # v1: s1 s3, v2: s2
    assert a.hand_over("s1", "v2") == [Move("s1", "v2")]
    assert a.students_of("v1") == ("s3",)
    assert a.students_of("v2") == ("s2", "s1")
    assert a.surveillant_of("s1") == "v2"


def test_hand_over_to_a_full_surveillant_fails_with_no_room_and_changes_nothing():
    a = exam(2, surveillants=2, students=4)
    a.add_student("s5")
    refused(a, "no_room", a.hand_over, "s1", "v2")


def test_hand_over_to_a_surveillant_over_a_lowered_cap_fails():
    a = exam(3, surveillants=2, students=3)  # v1: s1 s3, v2: s2
    a.set_cap(1)
    refused(a, "no_room", a.hand_over, "s3", "v2")


def test_hand_over_to_an_unavailable_surveillant_fails_with_no_room():
    a = exam(3, surveillants=2, students=2)
    a.set_available("v2", False)
    refused(a, "no_room", a.hand_over, "s1", "v2")


def test_hand_over_from_an_unavailable_surveillant_is_allowed():
    a = exam(2, surveillants=2, students=3)
    a.set_available("v1", False)
    assert a.hand_over("s1", "v2") == [Move("s1", "v2")]
    assert a.students_of("v1") == ("s3",)


def test_hand_over_refusals():
    a = exam(1, surveillants=2, students=3)  # v1: s1, v2: s2, s3 queued
    refused(a, "unknown_participant", a.hand_over, "s9", "v2")
    refused(a, "unknown_participant", a.hand_over, "s1", "v9")
    refused(a, "unknown_participant", a.hand_over, "s1", "s3")
    refused(a, "not_allowed", a.hand_over, "s3", "v2")
    refused(a, "invalid", a.hand_over, "s1", "v1")
    refused(a, "invalid", a.hand_over, "s1", None)


def test_hand_over_frees_room_which_the_policy_refills_when_a_queue_exists():
    # The queue is empty whenever an available surveillant has room, so a legal
    # hand-over never finds anyone to drain; the freed room stays free.
    a = exam(1, surveillants=2, students=1)
    assert a.hand_over("s1", "v2") == [Move("s1", "v2")]
    assert a.has_room("v1") and a.queue() == ()


# -- questions ---------------------------------------------------------------------


def test_questions_about_unknown_ids():
    a = exam(1, surveillants=1, students=2)
    assert a.surveillant_of("nobody") is None
    assert a.queue_position("nobody") is None
    assert a.queue_position("s1") is None
    assert not a.knows_student("nobody")
    assert not a.knows_student("v1")
    assert a.knows_student("s1") and a.knows_student("s2")
    for question in (a.students_of, a.has_room, a.is_available):
        with pytest.raises(AssignmentError) as error:
            question("nobody")
        assert error.value.code == "unknown_participant"


def test_returned_tuples_are_copies():
    a = exam(2, surveillants=1, students=3)
    assert isinstance(a.students_of("v1"), tuple)
    assert isinstance(a.queue(), tuple)
    assert isinstance(a.surveillants(), tuple)


# -- property tests ---------------------------------------------------------------


class AssignmentMachine(RuleBasedStateMachine):
    """Random exams; every Move is replayed on a shadow model that must match the real state."""

    def __init__(self) -> None:
        super().__init__()
        self.counter = 0

    @initialize(cap=st.integers(1, 4))
    def start(self, cap: int) -> None:
        self.a = Assignment(cap)
        self.cap = cap
        self.lists: dict[str, list[str]] = {}  # shadow: surveillant -> students
        self.available: dict[str, bool] = {}
        self.queue: list[str] = []
        self.gone: list[str] = []

    # -- shadow replay ---------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def students(self) -> list[str]:
        return sorted([s for lst in self.lists.values() for s in lst] + self.queue)

    def assigned(self) -> list[str]:
        return sorted(s for lst in self.lists.values() for s in lst)

    def best_target(self) -> str | None:
        room = [v for v, lst in self.lists.items() if self.available[v] and len(lst) < self.cap]
        return min(room, key=lambda v: len(self.lists[v]), default=None)

    def replay(self, moves: list[Move], queue_at: str, floating: Sequence[str] = (), policy: bool = True) -> None:
        """Apply Moves to the shadow; `queue_at` says where Move(_, None) lands ("back" or "front")."""
        floating = list(floating)
        newly_queued: list[str] = []
        old_queue = list(self.queue)
        assert len({m.student for m in moves}) == len(moves), "a student moved twice in one change"
        for move in moves:
            if move.student in floating:
                floating.remove(move.student)
            elif move.student in self.queue:
                assert self.queue[0] == move.student, "the queue is drained front first"
                self.queue.pop(0)
            else:
                owner = next(v for v, lst in self.lists.items() if move.student in lst)
                self.lists[owner].remove(move.student)
            if move.surveillant is None:
                newly_queued.append(move.student)
                continue
            target = move.surveillant
            assert target in self.lists and self.available[target]
            assert len(self.lists[target]) < self.cap, "a surveillant at the cap received a student"
            if policy:
                assert target == self.best_target(), "not the emptiest available surveillant first added"
            self.lists[target].append(move.student)
        assert not floating, "a student of a removed surveillant was lost"
        self.queue = newly_queued + self.queue if queue_at == "front" else self.queue + newly_queued
        stayed = [s for s in old_queue if s in self.queue]
        assert stayed == [s for s in self.queue if s in stayed], "queue order changed"
        self.check_same_state()

    def check_same_state(self) -> None:
        assert self.a.cap == self.cap
        assert self.a.surveillants() == tuple(self.lists)
        for v, lst in self.lists.items():
            assert self.a.students_of(v) == tuple(lst)
            assert self.a.is_available(v) == self.available[v]
        assert self.a.queue() == tuple(self.queue)

    def refuse(self, code: str, call: Callable[..., object], *args: object) -> None:
        refused(self.a, code, call, *args)

    # -- rules -----------------------------------------------------------------

    def fresh_or_gone(self, data: st.DataObject, prefix: str) -> str:
        """A new id, or one that left earlier: a removed id must leave nothing behind."""
        gone = [g for g in self.gone if g.startswith(prefix)]
        if gone and data.draw(st.booleans()):
            chosen = data.draw(st.sampled_from(gone))
            self.gone.remove(chosen)
            return chosen
        return self.new_id(prefix)

    @rule(data=st.data())
    def add_surveillant(self, data: st.DataObject) -> None:
        v = self.fresh_or_gone(data, "v")
        moves = self.a.add_surveillant(v)
        self.lists[v] = []
        self.available[v] = True
        self.replay(moves, "back")

    @rule(data=st.data(), front=st.booleans())
    def add_student(self, data: st.DataObject, front: bool) -> None:
        s = self.fresh_or_gone(data, "s")
        move = (self.a.add_student_front if front else self.a.add_student)(s)
        assert move.student == s
        self.replay([move], "front" if front else "back", floating=[s])

    @precondition(lambda self: self.students())
    @rule(data=st.data())
    def remove_student(self, data: st.DataObject) -> None:
        s = data.draw(st.sampled_from(self.students()))
        moves = self.a.remove_student(s)
        self.gone.append(s)
        if s in self.queue:
            self.queue.remove(s)
            assert moves == []
        else:
            owner = next(v for v, lst in self.lists.items() if s in lst)
            self.lists[owner].remove(s)
            assert all(m.surveillant == owner for m in moves)
        self.replay(moves, "back")

    @precondition(lambda self: self.lists)
    @rule(data=st.data())
    def remove_surveillant(self, data: st.DataObject) -> None:
        v = data.draw(st.sampled_from(list(self.lists)))
        moves = self.a.remove_surveillant(v)
        self.gone.append(v)
        orphans = self.lists.pop(v)
        del self.available[v]
        assert [m.student for m in moves] == orphans, "every student of the surveillant moves, in order"
        queued = [m for m in moves if m.surveillant is None]
        assert moves[len(moves) - len(queued):] == queued, "once queueing starts, nobody else is placed"
        self.replay(moves, "front", floating=orphans)

    @precondition(lambda self: self.lists)
    @rule(data=st.data(), available=st.booleans())
    def set_available(self, data: st.DataObject, available: bool) -> None:
        v = data.draw(st.sampled_from(list(self.lists)))
        before = dict(self.lists)
        moves = self.a.set_available(v, available)
        self.available[v] = available
        if not available:
            assert moves == [] and before == self.lists
        self.replay(moves, "back")

    @rule(cap=st.integers(1, 5))
    def set_cap(self, cap: int) -> None:
        moves = self.a.set_cap(cap)
        lowered = cap <= self.cap
        self.cap = cap
        if lowered:
            assert moves == []
        self.replay(moves, "back")

    @rule(cap=st.sampled_from([0, -3, 51, 1000]))
    def set_invalid_cap(self, cap: int) -> None:
        self.refuse("invalid", self.a.set_cap, cap)

    @precondition(lambda self: self.students() and self.lists)
    @rule(data=st.data())
    def hand_over(self, data: st.DataObject) -> None:
        s = data.draw(st.sampled_from(self.students()))
        to = data.draw(st.sampled_from([*self.lists, "v-unknown"]))
        owner = next((v for v, lst in self.lists.items() if s in lst), None)
        if to not in self.lists:
            expected = "unknown_participant"
        elif owner is None:
            expected = "not_allowed"
        elif owner == to:
            expected = "invalid"
        elif not self.available[to] or len(self.lists[to]) >= self.cap:
            expected = "no_room"
        else:
            expected = None
        if expected is not None:
            self.refuse(expected, self.a.hand_over, s, to)
            return
        moves = self.a.hand_over(s, to)
        assert moves[0] == Move(s, to)
        self.replay(moves[:1], "back", policy=False)
        self.replay(moves[1:], "back")

    @rule(data=st.data())
    def known_ids_and_unknown_ids_are_refused(self, data: st.DataObject) -> None:
        known = data.draw(st.sampled_from([*self.students(), *self.lists, "x"]))
        if known != "x":
            self.refuse("invalid", self.a.add_student, known)
            self.refuse("invalid", self.a.add_student_front, known)
            self.refuse("invalid", self.a.add_surveillant, known)
        self.refuse("unknown_participant", self.a.remove_student, "s-unknown")
        self.refuse("unknown_participant", self.a.remove_surveillant, "v-unknown")
        self.refuse("unknown_participant", self.a.set_available, "v-unknown", True)

    # -- invariants ----------------------------------------------------------

    @invariant()
    def every_student_is_in_exactly_one_place(self) -> None:
        placed = [s for v in self.a.surveillants() for s in self.a.students_of(v)]
        everyone = placed + list(self.a.queue())
        assert len(everyone) == len(set(everyone))
        assert sorted(everyone) == self.students()
        for v in self.a.surveillants():
            for s in self.a.students_of(v):
                assert self.a.surveillant_of(s) == v and self.a.queue_position(s) is None
        for position, s in enumerate(self.a.queue(), start=1):
            assert self.a.surveillant_of(s) is None and self.a.queue_position(s) == position
        assert all(self.a.knows_student(s) for s in everyone)

    @invariant()
    def queue_is_empty_while_an_available_surveillant_has_room(self) -> None:
        if any(self.a.is_available(v) and self.a.has_room(v) for v in self.a.surveillants()):
            assert self.a.queue() == ()

    @invariant()
    def has_room_follows_the_cap(self) -> None:
        for v in self.a.surveillants():
            assert self.a.has_room(v) == (len(self.a.students_of(v)) < self.a.cap)


AssignmentMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
test_assignment_machine = AssignmentMachine.TestCase

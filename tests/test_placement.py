"""The placement policy: the least-loaded place, exams that stay put, and spreading, property-tested."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sfu.cluster.placement import EXAM_WEIGHT, IDLE_CPU, Load, choose, route

places = st.sampled_from([f"w{i}" for i in range(6)])
loads_strategy = st.lists(
    st.builds(
        Load,
        place=places,
        exams=st.integers(0, 50),
        participants=st.integers(0, 2000),
        cpu=st.floats(0, 4, allow_nan=False),
        accepting=st.booleans(),
    ),
    max_size=6,
    unique_by=lambda load: load.place,
)


@given(loads_strategy)
def test_choice_is_an_accepting_place_with_the_least_load(loads):
    chosen = choose(loads)
    accepting = [load for load in loads if load.accepting]
    if not accepting:
        assert chosen is None
        return
    by_place = {load.place: load for load in loads}
    assert chosen in by_place and by_place[chosen].accepting
    assert all(by_place[chosen].score() <= load.score() for load in accepting)


@given(loads_strategy, st.randoms())
def test_choice_does_not_depend_on_the_order_places_are_listed_in(loads, random):
    shuffled = list(loads)
    random.shuffle(shuffled)
    assert choose(shuffled) == choose(loads)


@given(loads_strategy, st.integers(0, 5), st.integers(1, 500))
def test_more_load_elsewhere_does_not_change_the_choice(loads, index, extra):
    chosen = choose(loads)
    others = [load for load in loads if load.place != chosen]
    if chosen is None or not others:
        return
    heavier = others[index % len(others)]
    changed = [
        Load(l.place, l.exams, l.participants + extra, l.cpu, l.accepting) if l is heavier else l
        for l in loads
    ]
    assert choose(changed) == chosen


@given(st.integers(1, 6), st.integers(0, 60))
def test_a_run_of_new_exams_spreads_evenly(places_count, exams):
    counts = {f"w{i}": 0 for i in range(places_count)}
    for _ in range(exams):
        chosen = choose([Load(place, exams=n) for place, n in counts.items()])
        assert chosen is not None
        counts[chosen] += 1
    assert max(counts.values()) - min(counts.values()) <= 1


@given(loads_strategy, st.booleans())
def test_a_running_exam_stays_where_it_is_while_that_place_lives(loads, draining):
    if not loads:
        return
    holder = loads[0]
    loads = [Load(holder.place, holder.exams, holder.participants, holder.cpu, not draining), *loads[1:]]
    assert route("exam-1", {"exam-1": holder.place}, loads) == holder.place


@given(loads_strategy)
def test_an_exam_whose_place_is_gone_goes_to_a_new_choice(loads):
    alive = {load.place for load in loads}
    assert "gone" not in alive
    assert route("exam-1", {"exam-1": "gone"}, loads) == choose(loads)
    assert route(None, {}, loads) == choose(loads)


def test_an_empty_exam_counts_so_that_new_exams_do_not_pile_up():
    busy = Load("w0", exams=1, participants=0)
    idle = Load("w1", exams=0, participants=EXAM_WEIGHT - 1)
    assert choose([busy, idle]) == "w1"


def test_cpu_counts_when_it_says_more_than_the_participants():
    assert choose([Load("w0", participants=10, cpu=0.9), Load("w1", participants=20, cpu=0.1)]) == "w1"


def test_an_idle_workers_housekeeping_does_not_outweigh_an_exam():
    assert choose([Load("w0", exams=1, cpu=0.0), Load("w1", exams=0, cpu=IDLE_CPU)]) == "w1"

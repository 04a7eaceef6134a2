"""Where a new exam goes: the least-loaded worker (one machine) or node (several).

A pure policy, no I/O: the entry (sfu/cluster/entry.py) and the Redis directory
(sfu/cluster/directory.py) feed it what they know of each place's load and act on
its answer. Whole exams are placed, never split: one exam of 40 students and 5
surveillants costs about 14% of a core (measured), so an exam always fits one process.

An exam that already runs somewhere stays there as long as that place is alive,
even when it drains (takes no new exams); a place that is gone loses its exams,
and each comes back, at its next join, on the place chosen then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PARTICIPANTS_PER_CORE = 285
"""Participants one core carries at the measured 0.35% of a core per student."""

IDLE_CPU = 0.1
"""Share of a core below which CPU says nothing: an idle worker's own housekeeping (its census,
timers, the collector) comes and goes in this range, and must not outweigh a whole exam."""

EXAM_WEIGHT = 10
"""What an exam counts for beyond its present participants: a new exam is empty when it
is placed and fills within minutes, so a run of new exams must not all land on one place."""


@dataclass(frozen=True)
class Load:
    """What a worker or node reports: counts only, no names and no addresses of people."""

    place: str
    exams: int = 0
    participants: int = 0
    cpu: float = 0.0
    """Share of one core in use (0.0 to 1.0 or more)."""
    accepting: bool = True
    """False while the place drains: it keeps its exams but takes no new ones."""

    def score(self) -> float:
        """Comparable load: participants (or the CPU beyond idle they cost, when higher) plus the exams' weight."""
        busy = max(0.0, self.cpu - IDLE_CPU) * PARTICIPANTS_PER_CORE
        return max(float(self.participants), busy) + EXAM_WEIGHT * self.exams


def choose(loads: Sequence[Load]) -> str | None:
    """The accepting place with the lowest score (ties by name, so any order gives one answer);
    None when no place accepts new exams."""
    candidates = [load for load in loads if load.accepting]
    if not candidates:
        return None
    return min(candidates, key=lambda load: (load.score(), load.place)).place


def route(exam_id: str | None, placed: Mapping[str, str], loads: Sequence[Load]) -> str | None:
    """Where a join for `exam_id` goes: where the exam runs if that place is alive (draining or not),
    else a new choice. `exam_id` None (an organiser link that creates exams, an unreadable link)
    needs no particular place: the least loaded answers it."""
    if exam_id is not None:
        holder = placed.get(exam_id)
        if holder is not None and any(load.place == holder for load in loads):
            return holder
    return choose(loads)

"""How closely a trained policy follows its teacher, decision by decision.

Validation rewards say how far a clone is from its teacher; this says where the
distance comes from. The policy drives the validation episodes exactly as evaluation
runs it; at every decision the teacher is asked what it would do in the same state
(the teacher reads the state and changes nothing, as every scheduler). The two
decisions are compared part by part: wait or dispatch, then, where both dispatch, the
task, then, for the same task, the servers and the steps (the servers as the
simulator resolves them: a preset whose placement rule chooses them compares the
rule's choice).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eat.evaluation.runner import run_episode, scheduler_rng
from eat.params import PresetConfig
from eat.schedulers.base import Scheduler
from eat.sim.simulator import Dispatch, Outcome, Simulator

AGREEMENT_FIELDS = (
    "decisions",
    "same_decision",
    "same_gate",
    "same_task",
    "same_servers",
    "same_steps",
    "steps_error",
    "teacher_waits",
    "learner_waits",
)
"""The columns of :func:`teacher_agreement` (docs/learned_agents.md explains each)."""


class Shadowed(Scheduler):
    """``learner`` decides; ``teacher`` is asked in the same state and the pair is kept
    (``pairs``: the learner's and the teacher's decision as :func:`summarise_pairs`
    reads them)."""

    def __init__(self, learner: Scheduler, teacher: Scheduler, teacher_rng: np.random.Generator):
        self.name = learner.name  # the learner's own stream: the episode it plays alone
        self.learner, self.teacher, self.teacher_rng = learner, teacher, teacher_rng
        self.pairs: list[tuple[tuple | None, tuple | None, bool]] = []

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        self.learner.reset(sim, rng)
        self.teacher.reset(sim, self.teacher_rng)

    def decide(self, sim: Simulator) -> Dispatch | None:
        decision = self.learner.decide(sim)
        label = self.teacher.decide(sim)
        mine = None if decision is None else sim.preview(decision)
        theirs = None if label is None else sim.preview(label)
        steps_free = mine is None or mine.task.steps is None
        self.pairs.append((_resolved(mine), _resolved(theirs), steps_free))
        return decision


def _resolved(outcome: Outcome | None) -> tuple | None:
    """``(task, servers, steps)`` of a dispatch as the simulator would run it."""
    if outcome is None:
        return None
    return (outcome.task.task_id, tuple(sorted(outcome.servers)), outcome.steps)


def summarise_pairs(pairs: Sequence[tuple[tuple | None, tuple | None, bool]]) -> dict[str, float]:
    """Shares of agreement over ``(learner, teacher, steps_free)`` decision pairs
    (:data:`AGREEMENT_FIELDS`): each share is over the decisions where its question
    applies, NaN where none does; ``steps_error`` is the mean absolute difference of
    the steps where both dispatch the same task and the task has no steps of its own."""
    both = [(a, b, free) for a, b, free in pairs if a is not None and b is not None]
    same_task = [(a, b, free) for a, b, free in both if a[0] == b[0]]
    free_steps = [(a, b) for a, b, free in same_task if free]

    def share(values: list[bool]) -> float:
        return float(np.mean(values)) if values else float("nan")

    return {
        "decisions": float(len(pairs)),
        "same_decision": share([a == b for a, b, _ in pairs]),
        "same_gate": share([(a is None) == (b is None) for a, b, _ in pairs]),
        "same_task": share([a[0] == b[0] for a, b, _ in both]),
        "same_servers": share([a[1] == b[1] for a, b, _ in same_task]),
        "same_steps": share([a[2] == b[2] for a, b in free_steps]),
        "steps_error": float(np.mean([abs(a[2] - b[2]) for a, b in free_steps]))
        if free_steps
        else float("nan"),
        "teacher_waits": share([b is None for _, b, _ in pairs]),
        "learner_waits": share([a is None for a, _, _ in pairs]),
    }


def teacher_agreement(
    preset: PresetConfig,
    learner: Scheduler,
    teacher: Scheduler,
    rates: Sequence[float],
    seeds: Sequence[int],
) -> dict[str, float]:
    """:func:`summarise_pairs` of every decision ``learner`` makes on the episodes of
    ``seeds`` at every rate of ``rates``, each compared with ``teacher``'s decision in
    the same state. The learner's episodes are those it plays alone (same workloads,
    same streams); the teacher draws from its own stream per workload seed."""
    pairs: list[tuple[tuple | None, tuple | None, bool]] = []
    for rate in rates:
        for seed in seeds:
            shadowed = Shadowed(learner, teacher, scheduler_rng(teacher.name, seed))
            run_episode(preset, shadowed, rate, seed)
            pairs += shadowed.pairs
    return summarise_pairs(pairs)

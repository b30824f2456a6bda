"""Admission control: a bounded queue, and what the shadow simulator predicts for a job.

**Queue bound.** At most ``max_queued_jobs`` accepted jobs wait for a gang; a job past it
is refused with 429 and a ``Retry-After`` of the predicted time until the first queued
job starts (a place in the queue frees), at least one second.

**Predicted deadline** (policy ``predicted_deadline``). The shadow simulator's latency
model (the profile of this hardware) predicts when a new job would finish: the queue is
list-scheduled in its order, then the new job, each on the gang size that finishes it
first on the servers that free up first, with the fewest steps (``min_steps``), given the
models resident now. Servers that are busy free up at their predicted ``busy_until``
(now, if that has passed); servers that are down at their expected return. It is the
earliest finish in arrival order, not a bound over every scheduler: a scheduler that
reorders the queue (EDF) may do better, and more steps take longer. A job whose deadline
is before the predicted finish is refused: with 422 naming ``deadline_s`` when it would
miss even on an idle cluster (no retry helps), else with 429 and a ``Retry-After`` of
the predicted miss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from eat.sim.simulator import Simulator
from eat.sim.workload import Task

#: Task id of the hypothetical job in a forecast (real task ids are >= 0).
CANDIDATE_ID = -1


@dataclass(frozen=True)
class Forecast:
    """Predicted seconds from now for a new job (see the module docstring)."""

    start_s: float
    finish_s: float
    """When the job would finish, after the queue ahead of it."""
    idle_finish_s: float
    """When it would finish on an idle cluster (the same residency)."""
    first_start_s: float
    """When the first queued job would start (a place in the queue frees); 0 if none."""
    queued_ahead: int


def forecast(shadow: Simulator, model: str, resolution: int, now: float) -> Forecast:
    """The module docstring's prediction for a job of ``model`` at ``resolution`` that
    arrives at ``now`` (the controller's clock; the shadow's may lag behind it)."""
    steps = shadow.preset.min_steps
    sizes = [size for size in shadow.allowed_gang_sizes if size <= shadow.n_servers]
    free_at = []
    for server in shadow.servers:
        if server.task_id is None:
            free_at.append(now)
        else:  # running (predicted busy_until) or SERVER_DOWN (expected back)
            free_at.append(max(now, server.busy_until))
    candidate = Task(CANDIDATE_ID, now, model, resolution, math.inf, None)
    first_start = None
    start = finish = now
    for task in [*shadow.queue, candidate]:
        start, finish, gang = _earliest(shadow, task, free_at, sizes, steps)
        for server in gang:
            free_at[server] = finish
        if first_start is None and task is not candidate:
            first_start = start
    idle = [now] * shadow.n_servers
    _, idle_finish, _ = _earliest(shadow, candidate, idle, sizes, steps)
    return Forecast(
        start_s=start - now,
        finish_s=finish - now,
        idle_finish_s=idle_finish - now,
        first_start_s=(first_start - now) if first_start is not None else 0.0,
        queued_ahead=len(shadow.queue),
    )


def _earliest(
    shadow: Simulator, task: Task, free_at: list[float], sizes: list[int], steps: int
) -> tuple[float, float, tuple[int, ...]]:
    """(start, finish, gang) of the gang size that finishes ``task`` first on the servers
    that free up first."""
    order = sorted(range(len(free_at)), key=lambda i: (free_at[i], i))
    best: tuple[float, float, tuple[int, ...]] | None = None
    for size in sizes:
        gang = tuple(sorted(order[:size]))
        start = max(free_at[i] for i in gang)
        finish = start + shadow.gang_timing(task, gang).duration(steps)
        if best is None or finish < best[1]:
            best = (start, finish, gang)
    assert best is not None, "the preset allows no gang size"
    return best


def retry_after_s(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds))


__all__ = ["CANDIDATE_ID", "Forecast", "forecast", "retry_after_s"]

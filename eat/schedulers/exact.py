"""The exact optimum of small episodes: a constraint-programming model of the ``edge``
scheduling problem, solved with OR-Tools CP-SAT, that every scheduler is measured against.

Given an episode's tasks (all of them: the solver is clairvoyant), :func:`solve_exact`
chooses for every task its gang (an allowed number of servers that can hold its model),
its denoising steps and its start time, and maximises the simulator's own objective: the
sum over the tasks of :func:`eat.sim.reward.dispatch_reward` at each task's dispatch,

    min(cap, scale / (avg_wait + duration + wait)) + quality_weight * q(steps)
    - deadline_penalty * [start + duration > deadline].

The model (docs/exact.md has the full list of variables and constraints):

1. **Options.** A task's gang is one *gang type* (how many servers of each GPU type) and
   one *coldness* (warm: every member holds the model; cold: some member loads it; the
   latency model's timing depends on the members only through these, which
   :func:`gang_types` checks). One Boolean per (type, coldness), steps as Booleans
   per value, and Booleans per server tie the type to the servers.
2. **Duration** ``setup + steps * step_s + tail`` of the chosen option, linear in the
   option and steps Booleans.
3. **Order.** A total dispatch order (pairwise Booleans, transitive); the order also
   breaks ties within an instant, as the simulator dispatches one task after another.
4. **Servers.** Tasks that share a server run one after the other in dispatch order; a
   gang starts together.
5. **Residency.** A member is warm iff an earlier task of the same model ran on it and
   the models run on it since then do not evict it under least-recently-used eviction
   (:func:`evicting_sets`, from the preset's memory sizes); the task is cold iff some
   member is not warm. Servers start empty, so identical servers are interchangeable:
   the first use of each is ordered (symmetry breaking).
6. **Queue.** Task ``j`` is in task ``i``'s queue iff it arrived by ``i``'s start and is
   dispatched after ``i``; ``avg_wait`` is the mean waiting time of those tasks (all of
   them: an episode has at most ``avg_wait_window + 1`` tasks).
7. **Reward.** The latency term is exact up to the integer units: ``min(cap, num //
   X)`` with CP-SAT's integer division; quality is a table over steps; the deadline
   indicator is reified, every finish kept a rounding margin from its deadline. Two redundant cuts bound each task's reward by the best its
   option (or its steps) could earn without waiting: the linear relaxation then knows
   what a task can earn, which the division alone does not tell it.

Times are integers in ``time_unit_s`` and rewards in ``reward_unit``; the replay
(:class:`ReplayScheduler`) runs the schedule through the simulator, whose float reward
equals the model's objective within :attr:`ExactResult.tolerance` (the rounding bound
derived in :func:`rounding_bounds`). CP-SAT's presolve is off by default: the model is
small, and unpresolved the solver searches it as written, the redundant cuts included,
which is the model the tests verify; benchmarks/exact_optimum.py measures presolve on
beside it (docs/exact.md).

Only the ``edge`` preset is modelled, with latency noise off (``latency_noise_cv`` 0):
on ``paper`` the reference rule, not the scheduler, picks the servers from the state of
its warm groups. :func:`exact_comparison` solves the small episodes of a preset and runs
named schedulers on exactly the same episodes.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from ortools.sat.python import cp_model

from eat.evaluation.runner import run_episode
from eat.latency import GangTiming
from eat.params import ExactSettings, PresetConfig
from eat.schedulers.base import Scheduler
from eat.sim.simulator import Dispatch, Simulator, episode_rngs, make_tasks
from eat.sim.workload import Task

SOLVER_NAME = "exact"
"""The solver's name in comparison frames (and the replay scheduler's)."""

Status = Literal["optimal", "feasible", "infeasible", "unknown"]
"""``optimal``: proven; ``feasible``: a schedule, the time limit stopped the proof;
``infeasible``: no schedule (never expected: every task can run); ``unknown``: no schedule
found in the time limit."""

_STATUS: dict[object, Status] = {
    cp_model.OPTIMAL: "optimal",
    cp_model.FEASIBLE: "feasible",
    cp_model.INFEASIBLE: "infeasible",
    cp_model.UNKNOWN: "unknown",
}
_INT_LIMIT = 2**62
"""Products of integer bounds in the model must stay below this (CP-SAT's int64)."""


# ---------------------------------------------------------------------------
# What the model is made of
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GangType:
    """A gang up to the identity of its servers: how many of each GPU type."""

    counts: tuple[int, ...]
    """Servers of each GPU type, in the order of :attr:`ExactModel.gpu_types`."""
    warm: GangTiming
    """Timing when every member holds the model."""
    cold: GangTiming
    """Timing when some member loads it."""


def gang_types(sim: Simulator, task: Task, gpu_types: Sequence[str]) -> list[GangType]:
    """Every gang type ``task`` can run on in ``sim``'s cluster: an allowed size made of
    servers that can hold its model (busy or not).

    Raises ValueError if the latency model's timing of a gang depends on which members
    are cold, beyond whether any is: the model has one coldness per task."""
    capable = sim.placement.capable(task, free_only=False)
    available = [sum(1 for i in capable if sim.servers[i].gpu == gpu) for gpu in gpu_types]
    types = []
    for counts in itertools.product(*(range(n + 1) for n in available)):
        size = sum(counts)
        if size not in sim.allowed_gang_sizes:
            continue
        gpus = [gpu for gpu, count in zip(gpu_types, counts, strict=True) for _ in range(count)]
        latency = sim.latency
        warm = latency.gang_timing(task.model, task.resolution, gpus, [True] * size)
        cold = latency.gang_timing(task.model, task.resolution, gpus, [False] * size)
        for member in range(size):
            flags = [index != member for index in range(size)]
            partly = latency.gang_timing(task.model, task.resolution, gpus, flags)
            if (partly.setup_s, partly.step_s, partly.tail_s) != (
                cold.setup_s,
                cold.step_s,
                cold.tail_s,
            ):
                raise ValueError(
                    f"the timing of {task.model} on {gpus} depends on which member is cold "
                    f"({partly} with member {member} cold, {cold} all cold); the exact model "
                    "needs it to depend only on whether any member is"
                )
        if warm.step_s != cold.step_s or warm.tail_s != cold.tail_s:
            raise ValueError(
                f"a cold start of {task.model} on {gpus} changes more than the setup time"
            )
        types.append(GangType(counts, warm, cold))
    return types


def evicting_sets(
    model: str, memory_gb: float, models: dict[str, float], runnable: Sequence[str]
) -> list[frozenset[str]]:
    """The minimal sets of other models whose use on a server of ``memory_gb`` evicts
    ``model`` under least-recently-used eviction (``eat.sim.placement.ChosenGangs``):
    after a use of ``model``, it stays resident until the distinct other models used on
    the server since then, with it, no longer fit. ``models`` maps every model to its
    memory; only the ``runnable`` ones (that fit the server alone) are ever used there."""
    others = sorted(m for m in runnable if m != model)
    found: list[frozenset[str]] = []
    for size in range(1, len(others) + 1):
        for combination in itertools.combinations(others, size):
            chosen = frozenset(combination)
            if any(smaller <= chosen for smaller in found):
                continue
            if models[model] + sum(models[m] for m in chosen) > memory_gb:
                found.append(chosen)
    return found


@dataclass(frozen=True)
class PlannedDispatch:
    """One task of a schedule, as the model planned it."""

    task_id: int
    servers: tuple[int, ...]
    steps: int
    start: float
    """Planned start (s)."""
    cold: bool
    """Some member loads the model."""
    queued: frozenset[int]
    """Ids of the tasks still queued when it starts (its ``avg_wait``)."""
    missed: bool
    """It finishes after its deadline."""


@dataclass(frozen=True)
class ModelSize:
    """Size of a CP-SAT model as built (before search)."""

    variables: int
    booleans: int
    constraints: int


@dataclass(frozen=True)
class ExactResult:
    """What :func:`solve_exact` found."""

    status: Status
    objective: float
    """The model's total reward of :attr:`schedule` (reward units; nan without one)."""
    bound: float
    """CP-SAT's proven upper bound on the model's total reward (equal to
    :attr:`objective` when optimal)."""
    wall_s: float
    """Wall-clock seconds of the solve (building the model excluded)."""
    schedule: tuple[PlannedDispatch, ...]
    """The tasks in dispatch order (empty without a schedule)."""
    rounding: RoundingBounds
    """How far the simulator's times and reward of any schedule may lie from the
    model's, from the integer rounding alone."""
    size: ModelSize

    @property
    def tolerance(self) -> float:
        """The replay tolerance: the largest distance, from rounding, between the
        simulator's total reward of a schedule and the model's (reward units)."""
        return self.rounding.reward

    @property
    def proven(self) -> bool:
        """The objective is the proven optimum."""
        return self.status == "optimal"


@dataclass(frozen=True)
class RoundingBounds:
    """How far the model's integer times and rewards may lie from the simulator's floats
    (docs/exact.md derives them)."""

    duration_s: float
    """A duration: its setup and tail rounded once, its per-step time once per step."""
    start_s: float
    """A start: rounded arrivals, and the durations accumulated along the dispatch order."""
    reward: float
    """The episode's total reward (reward units): the :attr:`ExactResult.tolerance`."""


def rounding_bounds(preset: PresetConfig, n_tasks: int, settings: ExactSettings) -> RoundingBounds:
    """Worst-case rounding errors of the model of ``n_tasks`` tasks.

    With unit ``u``: a duration is off by at most ``d = u (1 + max_steps) / 2``; a start
    by at most ``e = n d + u``; the latency term's argument (wait + duration + avg_wait)
    by ``2e + d + 2u`` (the start enters the wait and avg_wait, arrivals are rounded, the
    mean is floored); the latency term moves by at most ``cap^2 / scale`` per second of
    its argument (the slope of ``scale / x`` where it meets the cap); its floor and the
    quality's rounding add 2 reward units per task. The deadline indicator is exact:
    the model keeps every finish more than ``e + d`` from its task's deadline
    (:attr:`ExactModel.deadline_margin`), so the simulator's finish lies on the same
    side; the queue is exact unless two events lie within ``e`` of each other, which
    :func:`check_replay` reports."""
    unit = settings.time_unit_s
    duration = unit * (1 + preset.max_steps) / 2
    start = n_tasks * duration + unit
    argument = 2 * start + duration + 2 * unit
    slope = preset.reward.latency_cap**2 / preset.reward.latency_scale
    return RoundingBounds(duration, start, n_tasks * (slope * argument + 2 * settings.reward_unit))


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


class ExactModel:
    """The CP-SAT model of one small episode (module docstring; docs/exact.md).

    Tasks are indexed in queue order (arrival, then id), as the simulator queues them."""

    def __init__(self, preset: PresetConfig, tasks: Sequence[Task], settings: ExactSettings):
        self._check(preset, tasks)
        self.preset, self.settings = preset, settings
        self.tasks = sorted(tasks, key=lambda t: (t.arrival, t.task_id))
        self.sim = Simulator(preset)
        self.sim.reset([], None)
        self.unit = settings.time_unit_s
        self.reward_scale = round(1.0 / settings.reward_unit)
        if self.reward_scale < 1:
            raise ValueError(f"reward_unit must be at most 1, got {settings.reward_unit}")
        reward = preset.reward
        self.cap = round(reward.latency_cap * self.reward_scale)
        self.numerator = round(reward.latency_scale * self.reward_scale / self.unit)
        self.penalty = round(reward.deadline_penalty * self.reward_scale)
        self.quality = [
            round(self.reward_scale * reward.quality_weight * self.sim.quality(steps))
            for steps in range(preset.max_steps + 1)
        ]
        servers = self.sim.servers
        self.gpu_types = list(dict.fromkeys(server.gpu for server in servers))
        self.model = cp_model.CpModel()
        self.arrival = [self.to_units(task.arrival) for task in self.tasks]
        self.types = [gang_types(self.sim, task, self.gpu_types) for task in self.tasks]
        self.rounding = rounding_bounds(preset, len(self.tasks), settings)
        # A finish may lie this many units from the simulator's: a finish the model puts
        # nearer a deadline than that could fall on either side of it in the simulator.
        self.deadline_margin = (
            math.ceil((self.rounding.start_s + self.rounding.duration_s) / self.unit) + 1
        )
        self._build()

    @staticmethod
    def _check(preset: PresetConfig, tasks: Sequence[Task]) -> None:
        if preset.kind != "edge":
            raise ValueError(
                f"preset kind {preset.kind!r} is not supported by the exact model; choose a "
                "preset of kind 'edge' (on 'paper' the reference rule places the tasks)"
            )
        if preset.latency_noise_cv != 0:
            raise ValueError(
                f"the exact model needs latency_noise_cv 0, got {preset.latency_noise_cv}"
            )
        if preset.reward.objective != "latency":
            raise ValueError(
                f"reward objective {preset.reward.objective!r} is not supported by the exact "
                "model; choose 'latency'"
            )
        if not tasks:
            raise ValueError("the exact model needs at least one task")
        if len({task.task_id for task in tasks}) != len(tasks):
            raise ValueError("task ids must be unique")
        limit = min(preset.queue_window, preset.reward.avg_wait_window + 1)
        if len(tasks) > limit:
            raise ValueError(
                f"{len(tasks)} tasks: the exact model handles at most {limit} (queue_window "
                f"{preset.queue_window}, avg_wait_window {preset.reward.avg_wait_window} + 1), "
                "so that every queued task is visible and enters avg_wait"
            )

    def to_units(self, seconds: float) -> int:
        return round(seconds / self.unit)

    # -- building ---------------------------------------------------------------------------
    def _build(self) -> None:
        n = len(self.tasks)
        self.horizon = max(self.arrival) + sum(
            max(self._duration(gang, True, self.preset.max_steps) for gang in self.types[i])
            for i in range(n)
        )
        self.start = [
            self.model.new_int_var(self.arrival[i], self.horizon, f"start{i}") for i in range(n)
        ]
        self._build_options()  # step 1 and 2
        self._build_order()  # step 3
        self._build_servers()  # step 4
        self._build_residency()  # step 5
        self._build_reward()  # steps 6 and 7

    def _duration(self, gang: GangType, cold: bool, steps: int) -> int:
        """Duration in units as the model computes it (setup and tail rounded once, the
        per-step time once)."""
        timing = gang.cold if cold else gang.warm
        return self.to_units(timing.setup_s + timing.tail_s) + steps * self.to_units(timing.step_s)

    def _latency_units(self, argument: int) -> int:
        """The latency term of ``argument`` time units, as the model computes it."""
        return min(self.cap, self.numerator // max(argument, 1))

    def _build_options(self) -> None:
        """Steps 1 and 2: option, steps and server Booleans, and the duration."""
        model, preset, n = self.model, self.preset, len(self.tasks)
        cold_minimum = [
            min(self._duration(gang, True, preset.min_steps) for gang in self.types[i])
            for i in range(n)
        ]
        self.options: list[list[tuple[GangType, bool, cp_model.IntVar]]] = []
        self.step_flags: list[dict[int, cp_model.IntVar]] = []
        self.steps: list[cp_model.IntVar] = []
        self.duration: list[cp_model.IntVar] = []
        self.cold: list[cp_model.IntVar] = []
        self.uses: list[list[cp_model.IntVar | None]] = []
        self.earliest_warm: list[int | None] = []
        for i, task in enumerate(self.tasks):
            # A warm start needs an earlier task of the model on every member: the first
            # task of that chain was cold and took at least its shortest cold run.
            chains = [
                self.arrival[k] + cold_minimum[k]
                for k in range(n)
                if k != i and self.tasks[k].model == task.model
            ]
            earliest = max(self.arrival[i], min(chains)) if chains else None
            self.earliest_warm.append(earliest)
            # a task with its own steps (a trace's request) runs exactly those
            steps_range = self.sim.steps_range(task)
            low, high = steps_range[0], steps_range[-1]
            flags = {steps: model.new_bool_var(f"steps{i}_{steps}") for steps in steps_range}
            model.add_exactly_one(flags.values())
            count = model.new_int_var(low, high, f"steps{i}")
            model.add(count == sum(steps * flag for steps, flag in flags.items()))
            options, per_step = [], []
            for g, gang in enumerate(self.types[i]):
                chosen = []
                for cold in (False, True) if earliest is not None else (True,):
                    chosen.append(model.new_bool_var(f"gang{i}_{g}_{'cold' if cold else 'warm'}"))
                    options.append((gang, cold, chosen[-1]))
                # steps of this gang type, 0 when another type is chosen
                steps_here = model.new_int_var(0, high, f"gangsteps{i}_{g}")
                model.add(steps_here >= low * sum(chosen))
                model.add(steps_here <= high * sum(chosen))
                per_step.append((steps_here, self.to_units(gang.warm.step_s)))
            model.add_exactly_one(flag for _, _, flag in options)
            model.add(sum(steps_here for steps_here, _ in per_step) == count)
            durations = [
                self._duration(gang, cold, steps)
                for gang, cold, _ in options
                for steps in (low, high)
            ]
            duration = model.new_int_var(min(durations), max(durations), f"duration{i}")
            fixed = sum(self._duration(gang, cold, 0) * flag for gang, cold, flag in options)
            model.add(duration == fixed + sum(unit * steps for steps, unit in per_step))
            cold_flag = model.new_bool_var(f"cold{i}")
            model.add(cold_flag == sum(flag for _, cold, flag in options if cold))
            if earliest is not None:
                model.add(self.start[i] >= earliest).only_enforce_if(~cold_flag)
            uses: list[cp_model.IntVar | None] = []
            capable = set(self.sim.placement.capable(task, free_only=False))
            for s in range(len(self.sim.servers)):
                uses.append(model.new_bool_var(f"use{i}_{s}") if s in capable else None)
            for t, gpu in enumerate(self.gpu_types):
                members = [
                    flag
                    for s, flag in enumerate(uses)
                    if flag is not None and self.sim.servers[s].gpu == gpu
                ]
                model.add(sum(members) == sum(gang.counts[t] * flag for gang, _, flag in options))
            self.options.append(options)
            self.step_flags.append(flags)
            self.steps.append(count)
            self.duration.append(duration)
            self.cold.append(cold_flag)
            self.uses.append(uses)

    def _build_order(self) -> None:
        """Step 3: ``before[i, j]``: task i is dispatched before task j."""
        model, n = self.model, len(self.tasks)
        self.before: dict[tuple[int, int], cp_model.IntVar] = {}
        for i, j in itertools.combinations(range(n), 2):
            flag = model.new_bool_var(f"before{i}_{j}")
            self.before[i, j], self.before[j, i] = flag, ~flag
            model.add(self.start[i] <= self.start[j]).only_enforce_if(flag)
            model.add(self.start[j] <= self.start[i]).only_enforce_if(~flag)
        for i, j, k in itertools.permutations(range(n), 3):
            model.add_bool_or(~self.before[i, j], ~self.before[j, k], self.before[i, k])

    def _build_servers(self) -> None:
        """Step 4: tasks on a shared server run in dispatch order; identical servers are
        used in order (symmetry breaking)."""
        model, n, servers = self.model, len(self.tasks), self.sim.servers
        for s in range(len(servers)):
            for i, j in itertools.permutations(range(n), 2):
                if self.uses[i][s] is None or self.uses[j][s] is None:
                    continue
                model.add(self.start[j] >= self.start[i] + self.duration[i]).only_enforce_if(
                    self.uses[i][s], self.uses[j][s], self.before[i, j]
                )
        # Identical servers (type, memory, residency at the start) can be relabelled in
        # any schedule: keep the labelling in which each is first used no later than the
        # next one (by task index).
        for s in range(len(servers) - 1):
            this, other = servers[s], servers[s + 1]
            same = (this.gpu, this.memory_gb, tuple(this.resident)) == (
                other.gpu,
                other.memory_gb,
                tuple(other.resident),
            )
            if not same:
                continue
            for i in range(n):
                if self.uses[i][s + 1] is None:
                    continue
                earlier = [self.uses[j][s] for j in range(i + 1) if self.uses[j][s] is not None]
                model.add_bool_or([~self.uses[i][s + 1], *earlier])

    def _and(self, literals: Sequence, name: str) -> cp_model.IntVar:
        """A Boolean equal to the conjunction of ``literals``."""
        target = self.model.new_bool_var(name)
        for literal in literals:
            self.model.add_implication(target, literal)
        self.model.add_bool_or([target, *(~literal for literal in literals)])
        return target

    def _or(self, literals: Sequence, name: str) -> cp_model.IntVar:
        """A Boolean equal to the disjunction of ``literals``."""
        target = self.model.new_bool_var(name)
        for literal in literals:
            self.model.add_implication(literal, target)
        self.model.add_bool_or([~target, *literals])
        return target

    def _build_residency(self) -> None:
        """Step 5: which members hold the model when a task starts, and the task's
        coldness."""
        n, servers, models = len(self.tasks), self.sim.servers, self.preset.models
        memory = {name: spec.memory_gb for name, spec in models.items()}
        for i, task in enumerate(self.tasks):
            cold_members = []
            for s, server in enumerate(servers):
                use = self.uses[i][s]
                if use is None:
                    continue
                runnable = [m for m in models if memory[m] <= server.memory_gb]
                evictions = evicting_sets(task.model, server.memory_gb, memory, runnable)
                survives = []  # an earlier use j of the model on s that still holds
                for j in range(n):
                    if j == i or self.tasks[j].model != task.model or self.uses[j][s] is None:
                        continue
                    evicted = self._evicted_between(j, i, s, evictions)
                    conditions = [self.uses[j][s], self.before[j, i]]
                    if evicted is not None:
                        conditions.append(~evicted)
                    survives.append(self._and(conditions, f"holds{j}_{i}_{s}"))
                if survives:
                    holds = self._or(survives, f"holds{i}_{s}")
                    cold_members.append(self._and([use, ~holds], f"coldmember{i}_{s}"))
                else:
                    cold_members.append(use)
            cold = self.cold[i]
            for member in cold_members:
                self.model.add_implication(member, cold)
            self.model.add_bool_or([~cold, *cold_members])

    def _evicted_between(
        self, j: int, i: int, s: int, evictions: list[frozenset[str]]
    ) -> cp_model.IntVar | None:
        """A Boolean: the models run on server ``s`` between tasks ``j`` and ``i`` cover
        one of the ``evictions`` sets (None: they never can)."""
        n = len(self.tasks)
        covered = []
        for evicting in evictions:
            present = []
            for other_model in sorted(evicting):
                between = [
                    self._and(
                        [self.uses[k][s], self.before[j, k], self.before[k, i]],
                        f"between{j}_{k}_{i}_{s}",
                    )
                    for k in range(n)
                    if k not in (i, j)
                    and self.tasks[k].model == other_model
                    and self.uses[k][s] is not None
                ]
                if not between:
                    break
                present.append(self._or(between, f"ran{other_model}_{j}_{i}_{s}"))
            else:
                covered.append(
                    present[0] if len(present) == 1 else self._and(present, f"evict{j}_{i}_{s}")
                )
        if not covered:
            return None
        return covered[0] if len(covered) == 1 else self._or(covered, f"evicted{j}_{i}_{s}")

    def _build_reward(self) -> None:
        """Steps 6 and 7: the queue, avg_wait, and each task's reward."""
        model, n, preset = self.model, len(self.tasks), self.preset
        self.queued: list[list[tuple[int, object]]] = []
        self.missed: list[cp_model.IntVar | None] = []
        terms = []
        for i, task in enumerate(self.tasks):
            # 6. the queue when i starts: arrived, and dispatched after i
            queue = []
            for j in range(n):
                if j == i:
                    continue
                if self.arrival[j] <= self.arrival[i]:
                    queue.append((j, self.before[i, j]))
                    continue
                arrived = model.new_bool_var(f"arrived{j}_at{i}")
                model.add(self.start[i] >= self.arrival[j]).only_enforce_if(arrived)
                model.add(self.start[i] <= self.arrival[j] - 1).only_enforce_if(~arrived)
                queue.append((j, self._and([self.before[i, j], arrived], f"queued{j}_at{i}")))
            self.queued.append(queue)
            average_wait = self._average_wait(i, queue)
            # 7. reward: latency term, quality, deadline
            durations = [self._duration(g, c, preset.min_steps) for g, c, _ in self.options[i]]
            shortest = min(durations)
            argument = model.new_int_var(shortest, 3 * self.horizon, f"argument{i}")
            model.add(argument == self.start[i] - self.arrival[i] + self.duration[i] + average_wait)
            raw_top = self.numerator // shortest
            if raw_top * 3 * self.horizon >= _INT_LIMIT:
                raise ValueError(
                    "the model's integers overflow: choose a larger time_unit_s or reward_unit"
                )
            raw = model.new_int_var(0, raw_top, f"latencyraw{i}")
            model.add_division_equality(raw, self.numerator, argument)
            latency = model.new_int_var(0, self.cap, f"latency{i}")
            model.add_min_equality(latency, [raw, self.cap])
            quality = sum(self.quality[s] * flag for s, flag in self.step_flags[i].items())
            term = latency + quality
            missed = None
            if math.isfinite(task.deadline) and self.penalty > 0:
                deadline = self.to_units(task.deadline)
                missed = model.new_bool_var(f"missed{i}")
                finish = self.start[i] + self.duration[i]
                # met or missed with room to spare for the rounding: the optimiser would
                # otherwise slide a task whose reward is flat in its start (the latency
                # term at its cap) onto its deadline, where the floats may disagree
                margin = self.deadline_margin
                model.add(finish <= deadline - margin).only_enforce_if(~missed)
                model.add(finish >= deadline + margin).only_enforce_if(missed)
                term = term - self.penalty * missed
            self.missed.append(missed)
            self._add_reward_cuts(i, term)
            terms.append(term)
        model.maximize(sum(terms))

    def _average_wait(self, i: int, queue: list[tuple[int, object]]) -> object:
        """avg_wait of task i in units, floored: ``count * aw <= sum of waits < count *
        (aw + 1)`` for the number ``count`` of queued tasks (one Boolean per count)."""
        if not queue:
            return 0
        model = self.model
        counts = [model.new_bool_var(f"queuelength{i}_{c}") for c in range(len(queue) + 1)]
        model.add_exactly_one(counts)
        model.add(sum(c * flag for c, flag in enumerate(counts)) == sum(q for _, q in queue))
        waits = []
        for j, queued in queue:
            wait = model.new_int_var(0, self.horizon, f"waitof{j}_at{i}")
            model.add(wait == self.start[i] - self.arrival[j]).only_enforce_if(queued)
            model.add(wait == 0).only_enforce_if(~queued)
            waits.append(wait)
        total = sum(waits)
        average = model.new_int_var(0, self.horizon, f"avgwait{i}")
        model.add(average == 0).only_enforce_if(counts[0])
        for c in range(1, len(counts)):
            model.add(c * average <= total).only_enforce_if(counts[c])
            model.add(total <= c * average + c - 1).only_enforce_if(counts[c])
        return average

    def _add_reward_cuts(self, i: int, term: object) -> None:
        """Redundant bounds on task i's reward: no more than its chosen option, or its
        chosen steps, could earn with the least wait it can have (none when cold; until
        :attr:`earliest_warm` when warm). Valid for every schedule: the latency term only
        falls with waiting, and so does meeting the deadline."""
        task = self.tasks[i]
        deadline = self.to_units(task.deadline) if math.isfinite(task.deadline) else None
        by_steps = {steps: -math.inf for steps in self.step_flags[i]}
        by_option = []
        for gang, cold, flag in self.options[i]:
            wait = 0 if cold else self.earliest_warm[i] - self.arrival[i]
            best = -math.inf
            for steps in self.step_flags[i]:
                duration = self._duration(gang, cold, steps)
                value = self._latency_units(duration + wait) + self.quality[steps]
                finish = self.arrival[i] + wait + duration
                late = deadline is not None and finish > deadline - self.deadline_margin
                if late and self.penalty > 0:
                    value -= self.penalty
                best = max(best, value)
                by_steps[steps] = max(by_steps[steps], value)
            by_option.append(best * flag)
        self.model.add(term <= sum(by_option))
        self.model.add(
            term <= sum(by_steps[steps] * flag for steps, flag in self.step_flags[i].items())
        )

    # -- solving ----------------------------------------------------------------------------
    def size(self) -> ModelSize:
        proto = self.model.proto
        variables = proto.variables
        booleans = sum(1 for v in variables if list(v.domain) == [0, 1])
        return ModelSize(len(variables), booleans, len(proto.constraints))

    def solve(self, *, presolve: bool = False) -> ExactResult:
        """Solve with the settings' workers and time limit. ``presolve``: CP-SAT's
        presolve, off by default (module docstring; benchmarks/exact_optimum.py measures
        the difference)."""
        solver = cp_model.CpSolver()
        parameters = solver.parameters
        parameters.num_workers = self.settings.workers
        parameters.max_time_in_seconds = self.settings.time_limit_s
        parameters.cp_model_presolve = presolve
        parameters.linearization_level = 2
        parameters.random_seed = 0
        started = time.perf_counter()
        code = solver.solve(self.model)
        wall = time.perf_counter() - started
        if code == cp_model.MODEL_INVALID:
            raise RuntimeError(f"invalid CP-SAT model: {self.model.validate()}")
        status = _STATUS[code]
        rounding = self.rounding
        schedule: tuple[PlannedDispatch, ...] = ()
        objective = math.nan
        if status in ("optimal", "feasible"):
            objective = solver.objective_value / self.reward_scale
            schedule = self._schedule(solver)
        bound = solver.best_objective_bound / self.reward_scale
        if status == "infeasible":
            bound = math.nan
        return ExactResult(status, objective, bound, wall, schedule, rounding, self.size())

    def _schedule(self, solver: cp_model.CpSolver) -> tuple[PlannedDispatch, ...]:
        n = len(self.tasks)
        rank = [
            sum(solver.boolean_value(self.before[j, i]) for j in range(n) if j != i)
            for i in range(n)
        ]
        order = sorted(range(n), key=lambda i: rank[i])
        planned = []
        for i in order:
            task = self.tasks[i]
            servers = tuple(
                s
                for s, use in enumerate(self.uses[i])
                if use is not None and solver.boolean_value(use)
            )
            queued = frozenset(
                self.tasks[j].task_id for j, flag in self.queued[i] if solver.boolean_value(flag)
            )
            missed = self.missed[i] is not None and solver.boolean_value(self.missed[i])
            planned.append(
                PlannedDispatch(
                    task.task_id,
                    servers,
                    solver.value(self.steps[i]),
                    solver.value(self.start[i]) * self.unit,
                    solver.boolean_value(self.cold[i]),
                    queued,
                    missed,
                )
            )
        return tuple(planned)


def solve_exact(
    preset: PresetConfig, tasks: Sequence[Task], settings: ExactSettings
) -> ExactResult:
    """The optimal schedule of ``tasks`` on ``preset`` (module docstring)."""
    return ExactModel(preset, tasks, settings).solve()


# ---------------------------------------------------------------------------
# Replaying a schedule through the simulator
# ---------------------------------------------------------------------------


class ReplayScheduler(Scheduler):
    """Makes the simulator execute a planned schedule, task by task in its dispatch order.

    The next planned task starts at the first decision epoch no earlier than its planned
    start minus ``slack_s`` at which it is queued, its servers are free and the tasks the
    plan has queued behind it have arrived. A wake-up at every planned start gives it that
    epoch where no arrival or completion falls (a start the plan delays on purpose). With
    ``slack_s`` the model's rounding bound, a start the model ties to an event (an arrival,
    a completion, the dispatch just before in the same instant) happens at that event in
    float time, as the simulator's reward needs. Tasks dispatched at one instant go in the
    plan's order: the simulator offers another epoch after each dispatch.
    """

    name: ClassVar[str] = SOLVER_NAME

    def __init__(self, schedule: Sequence[PlannedDispatch], slack_s: float) -> None:
        self.schedule = list(schedule)
        self.slack_s = slack_s
        self.position = 0

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        self.rng = rng
        self.position = 0
        planned = {p.task_id for p in self.schedule}
        if planned != set(sim.tasks):
            raise ValueError(
                f"the schedule plans tasks {sorted(planned)} but the episode has "
                f"{sorted(sim.tasks)}"
            )
        for start in sorted({p.start for p in self.schedule}):
            if start > sim.now:
                sim.schedule_wakeup(start)

    def decide(self, sim: Simulator) -> Dispatch | None:
        if self.position >= len(self.schedule):
            return None
        planned = self.schedule[self.position]
        if sim.now < planned.start - self.slack_s:
            return None
        queued = {task.task_id for task in sim.queue}
        if planned.task_id not in queued or not planned.queued <= queued:
            return None
        if any(sim.servers[s].task_id is not None for s in planned.servers):
            return None
        self.position += 1
        return Dispatch(planned.task_id, planned.steps, planned.servers)


def replay(preset: PresetConfig, tasks: Sequence[Task], result: ExactResult) -> pd.DataFrame:
    """The simulator's task records of ``result``'s schedule on ``tasks`` (columns:
    :data:`eat.sim.records.RECORD_COLUMNS`); their rewards sum to ``result.objective``
    within ``result.tolerance`` (:func:`check_replay` lists what differs)."""
    if not result.schedule:
        raise ValueError(f"a {result.status} result has no schedule to replay")
    sim = Simulator(preset)
    scheduler = ReplayScheduler(result.schedule, result.rounding.start_s)
    sim.reset(list(tasks), None)
    scheduler.reset(sim, np.random.default_rng(0))
    ongoing = sim.advance()
    while ongoing:
        decision = scheduler.decide(sim)
        if decision is None:
            ongoing = sim.wait()
        else:
            sim.dispatch(decision)
            ongoing = sim.advance()
    return sim.records_frame()


def check_replay(result: ExactResult, records: pd.DataFrame) -> list[str]:
    """What the simulator did differently from the plan, one line per difference: the
    servers, steps, order, coldness, deadline or queue of a task, or a start further
    from the planned one than the rounding bound. Empty when the replay is the plan."""
    found = []
    planned_order = [p.task_id for p in result.schedule]
    done_order = records["task_id"].tolist()
    if done_order != planned_order:
        found.append(f"dispatch order {done_order}, planned {planned_order}")
    position = {task_id: k for k, task_id in enumerate(done_order)}
    rows = {row.task_id: row for row in records.itertuples(index=False)}
    for planned in result.schedule:
        row = rows.get(planned.task_id)
        if row is None:
            found.append(f"task {planned.task_id} never ran")
            continue
        where = f"task {planned.task_id}"
        servers = tuple(int(s) for s in str(row.servers).split(","))
        if servers != planned.servers or row.steps != planned.steps:
            found.append(
                f"{where}: ran {row.steps} steps on {servers}, planned {planned.steps} on "
                f"{planned.servers}"
            )
        if abs(row.start - planned.start) > result.rounding.start_s:
            found.append(f"{where}: started at {row.start}, planned {planned.start}")
        if (row.cold_starts > 0) != planned.cold:
            found.append(f"{where}: cold {row.cold_starts > 0}, planned {planned.cold}")
        if (not row.deadline_met) != planned.missed:
            found.append(f"{where}: deadline met {row.deadline_met}, planned {not planned.missed}")
        queued = frozenset(
            other.task_id
            for other in rows.values()
            if other.arrival <= row.start and position[other.task_id] > position[row.task_id]
        )
        if queued != planned.queued:
            found.append(f"{where}: queue {sorted(queued)}, planned {sorted(planned.queued)}")
    return found


# ---------------------------------------------------------------------------
# Small episodes, and every scheduler against the optimum
# ---------------------------------------------------------------------------


def small_preset(preset: PresetConfig, settings: ExactSettings) -> PresetConfig:
    """``preset`` with episodes of ``settings.tasks`` tasks (initial tasks capped at that)
    and no latency noise: the episodes the exact model solves, drawn from the preset's own
    workload process and deadlines."""
    data = preset.model_dump()
    data["latency_noise_cv"] = 0.0
    data["workload"]["total_tasks"] = settings.tasks
    data["workload"]["initial_tasks"] = min(preset.workload.initial_tasks, settings.tasks)
    return PresetConfig.model_validate(data)


def small_episode(small: PresetConfig, rate: float, seed: int) -> list[Task]:
    """The tasks of the small episode of workload ``seed`` at ``rate`` tasks/s: those
    :func:`eat.evaluation.runner.run_episode` gives every scheduler for the same seed."""
    workload_rng, _ = episode_rngs(seed)
    return make_tasks(Simulator(small), rate, workload_rng)


COMPARISON_COLUMNS = [
    "preset",
    "rate",
    "seed",
    "instance",
    "scheduler",
    "tasks",
    "total_reward",
    "mean_reward",
    "latency_mean",
    "objective",
    "bound",
    "status",
    "solve_s",
    "tolerance",
    "variables",
    "constraints",
    "replay_differences",
    "below_optimum",
]
"""Columns of :func:`exact_comparison`'s frame."""


def exact_comparison(
    preset_name: str,
    preset: PresetConfig,
    settings: ExactSettings,
    rate: float,
    seeds: Sequence[int],
    schedulers: Sequence[str],
    make_scheduler: Callable[[str], Scheduler],
) -> pd.DataFrame:
    """Solve the small episodes of ``preset`` at ``rate`` for every workload seed, replay
    each optimal schedule through the simulator, and run every named scheduler on exactly
    the same small episodes.

    One row per instance (preset, rate, seed) and scheduler (columns
    :data:`COMPARISON_COLUMNS`); the solver's row is named :data:`SOLVER_NAME`. Its
    ``total_reward`` is the replay's, ``objective`` the model's, ``bound`` the proven
    upper bound, ``replay_differences`` the number of :func:`check_replay` lines.
    ``below_optimum`` is the proven optimum's ``objective`` minus a scheduler's total
    reward (nan where the optimum is not proven, and on the solver's row); the rows of
    the solver alone carry ``objective``, ``bound``, ``status``, ``solve_s``,
    ``tolerance`` and the model's size."""
    small = small_preset(preset, settings)
    rows = []
    for seed in seeds:
        tasks = small_episode(small, rate, seed)
        key = {
            "preset": preset_name,
            "rate": rate,
            "seed": seed,
            "instance": f"{preset_name}@{rate:g}#{seed}",
            "tasks": len(tasks),
        }
        result = solve_exact(small, tasks, settings)
        solver_row = {
            **key,
            "scheduler": SOLVER_NAME,
            "objective": result.objective,
            "bound": result.bound,
            "status": result.status,
            "solve_s": result.wall_s,
            "tolerance": result.tolerance,
            "variables": result.size.variables,
            "constraints": result.size.constraints,
            "total_reward": math.nan,
            "mean_reward": math.nan,
            "latency_mean": math.nan,
            "replay_differences": math.nan,
            "below_optimum": math.nan,
        }
        if result.schedule:
            records = replay(small, tasks, result)
            solver_row.update(_episode_columns(records))
            solver_row["replay_differences"] = len(check_replay(result, records))
        rows.append(solver_row)
        optimum = result.objective if result.proven else math.nan
        for name in schedulers:
            episode = run_episode(small, make_scheduler(name), rate, seed)
            row = {**key, "scheduler": name, **_episode_columns(episode.tasks)}
            row["below_optimum"] = optimum - row["total_reward"]
            rows.append(row)
    return pd.DataFrame(rows).reindex(columns=COMPARISON_COLUMNS)


SUMMARY_COLUMNS = [
    "preset",
    "scheduler",
    "episodes",
    "proven",
    "mean_reward",
    "gap_closed",
    "gap_closed_ci_low",
    "gap_closed_ci_high",
    "below_optimum_mean",
    "below_optimum_share",
    "above_bound_max",
]
"""Columns of :func:`optimum_summary`'s frame."""


def optimum_summary(
    comparison: pd.DataFrame,
    *,
    baseline: str = "random",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per preset and scheduler of an :func:`exact_comparison` frame: the mean reward per
    task, and on the episodes whose optimum is proven the share of the gap from
    ``baseline`` to the optimum that the scheduler closes,

        (mean_s - mean_baseline) / (mean_optimum - mean_baseline),

    means over those episodes, with a paired percentile-bootstrap interval (each
    resample draws the episodes once for the three), and its mean distance below the
    optimum (reward units per episode, and as a share of the optimum). The solver's row
    (:data:`SOLVER_NAME`) has the optimum's own numbers (its replay's reward; gap closed
    1). ``above_bound_max``: the most any episode's total reward exceeds the solver's
    proven bound (reward units; above the tolerance would contradict the bound)."""
    alpha = 1.0 - confidence
    rows = []
    for preset, group in comparison.groupby("preset", sort=True):
        solver = group[group["scheduler"] == SOLVER_NAME].set_index("instance")
        proven = solver.index[solver["status"] == "optimal"].tolist()
        sizes = solver.loc[proven, "tasks"].to_numpy(dtype=float)
        optimum = solver.loc[proven, "objective"].to_numpy(dtype=float) / sizes
        base = _per_task(group, baseline, proven)
        names = [SOLVER_NAME, *dict.fromkeys(group["scheduler"][group["scheduler"] != SOLVER_NAME])]
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(proven), size=(n_resamples, len(proven))) if proven else None
        for name in names:
            rows_of = group[group["scheduler"] == name].set_index("instance")
            bound = solver.loc[rows_of.index, "bound"]
            above = (rows_of["total_reward"] - bound).max()
            ours = optimum if name == SOLVER_NAME else _per_task(group, name, proven)
            share = low = high = below = below_share = math.nan
            if proven:
                gap = optimum.mean() - base.mean()
                if gap > 0:
                    share = (ours.mean() - base.mean()) / gap
                    resampled = (ours[draws].mean(axis=1) - base[draws].mean(axis=1)) / (
                        optimum[draws].mean(axis=1) - base[draws].mean(axis=1)
                    )
                    low, high = np.nanquantile(resampled, [alpha / 2.0, 1.0 - alpha / 2.0])
                below = float(((optimum - ours) * sizes).mean())
                below_share = float((optimum - ours).sum() / optimum.sum())
            rows.append(
                {
                    "preset": preset,
                    "scheduler": name,
                    "episodes": len(rows_of),
                    "proven": len(proven),
                    "mean_reward": float(rows_of["mean_reward"].mean()),
                    "gap_closed": share,
                    "gap_closed_ci_low": float(low),
                    "gap_closed_ci_high": float(high),
                    "below_optimum_mean": below,
                    "below_optimum_share": below_share,
                    "above_bound_max": float(above),
                }
            )
    return pd.DataFrame(rows).reindex(columns=SUMMARY_COLUMNS)


def _per_task(comparison: pd.DataFrame, name: str, instances: list[str]) -> np.ndarray:
    rows = comparison[comparison["scheduler"] == name].set_index("instance")
    missing = [instance for instance in instances if instance not in rows.index]
    if missing:
        raise ValueError(f"scheduler {name!r} has no episode {missing[0]} in the comparison")
    return rows.loc[instances, "mean_reward"].to_numpy(dtype=float)


def _episode_columns(records: pd.DataFrame) -> dict[str, float]:
    return {
        "total_reward": float(records["reward"].sum()),
        "mean_reward": float(records["reward"].mean()),
        "latency_mean": float(records["latency"].mean()),
    }


__all__ = [
    "COMPARISON_COLUMNS",
    "SOLVER_NAME",
    "SUMMARY_COLUMNS",
    "ExactModel",
    "ExactResult",
    "GangType",
    "ModelSize",
    "PlannedDispatch",
    "ReplayScheduler",
    "RoundingBounds",
    "check_replay",
    "evicting_sets",
    "exact_comparison",
    "gang_types",
    "optimum_summary",
    "replay",
    "rounding_bounds",
    "small_episode",
    "small_preset",
    "solve_exact",
]

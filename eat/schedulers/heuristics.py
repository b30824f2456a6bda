"""Heuristic schedulers: the baselines every learned agent is compared with.

Every scheduler works on every preset: what the preset decides (the gang sizes a task
may use, which servers it may start on, which are warm) they ask the simulator's
placement rule (:mod:`eat.sim.placement`), which on ``paper`` fixes the gang size per
task and picks the servers itself. Only the tasks of ``sim.window()`` are candidates,
and no scheduler returns an invalid dispatch. A scheduler returns ``None`` (wait for the next event) only while an event
is pending, so that waiting is always possible.

Shared conventions:

- *capable* server: one whose memory can hold the task's model (edge).
- *fixed steps*: ``settings.fixed_steps`` clipped into the task's steps range
  (``sim.steps_range``: ``[min_steps, max_steps]``, or only its own steps when the task
  has them, as a trace's requests do; every scheduler searches or draws steps in that
  range, so a request's own steps are always respected).
- *fixed gang size* (:func:`fixed_gang_size`): the largest of the task's gang sizes
  (``placement.gang_sizes``: on edge, the allowed sizes its capable servers, busy or
  free, can host) ``<= settings.fixed_gang_size``; the smallest if none is ``<=`` it.
- *affinity order* of servers: the model resident first, then faster, then lower id.
- *candidate gangs* of size ``k`` (``placement.candidate_gangs``): on edge the ``k``
  fastest servers (residents first on equal speed) and the ``k`` fastest with the model
  resident, overall and, with sites, within each site, one of which has the shortest
  duration for any number of steps, so searching them is exact, not an approximation;
  on paper the rule's gang. Candidates with the same timing (interchangeable servers:
  same type, site and residency) are weighed once, as the one with the fewest servers
  and then the lowest ids, which is what every tie-break below prefers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from eat.latency import GangTiming
from eat.params import SchedulerSettings
from eat.schedulers.base import Scheduler
from eat.sim.reward import reward_table, rewards_over_steps
from eat.sim.simulator import Dispatch, Simulator
from eat.sim.workload import Task

Gang = tuple[int, ...]


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def steps_range(sim: Simulator, task: Task) -> range:
    """The steps ``task`` may run with (:meth:`~eat.sim.simulator.Simulator.steps_range`)."""
    return sim.steps_range(task)


def clip_steps(sim: Simulator, task: Task, steps: int) -> int:
    """``steps`` clipped into the task's steps range."""
    allowed = sim.steps_range(task)
    return min(allowed[-1], max(allowed[0], steps))


def capable_servers(sim: Simulator, task: Task, *, free_only: bool) -> list[int]:
    """Servers that can hold the task's model, optionally only the free ones."""
    return sim.placement.capable(task, free_only=free_only)


def affinity_order(sim: Simulator, task: Task, servers: Sequence[int]) -> list[int]:
    """``servers`` with the task's model resident first, then faster, then lower id."""
    return sorted(
        servers,
        key=lambda i: (task.model not in sim.servers[i].resident, -sim.servers[i].speed, i),
    )


def fixed_gang_size(sim: Simulator, task: Task, requested: int) -> int:
    """Gang size of the fixed-size heuristics (see the module docstring)."""
    allowed = sim.placement.gang_sizes(task)
    smaller = [size for size in allowed if size <= requested]
    return max(smaller) if smaller else min(allowed)


def fixed_dispatch(sim: Simulator, task: Task, steps: int, requested: int) -> Dispatch | None:
    """The task at its fixed gang size on the first servers in affinity order, or None
    if it cannot start now at that size."""
    size = fixed_gang_size(sim, task, requested)
    gang = sim.placement.affinity_gang(task, size)
    return None if gang is None else Dispatch(task.task_id, steps, gang)


def candidate_gangs(sim: Simulator, task: Task, servers: Sequence[int], size: int) -> list[Gang]:
    """The candidate gangs of ``size`` among ``servers`` (module docstring)."""
    return sim.placement.candidate_gangs(task, size, servers)


class TimingCache:
    """Memoised gang timings of one simulator's latency model.

    Timings depend on the gang only through the multiset of (GPU type, model warm) of
    its members, so many gangs share one entry."""

    GANG_MEMO_SIZE: ClassVar[int] = 65536
    """Timings remembered by exact gang before forgetting (a large cluster has many)."""

    def __init__(self) -> None:
        self._latency: object | None = None
        self._table: dict[tuple, GangTiming] = {}
        self._by_gang: dict[tuple, GangTiming] = {}
        """The same timings by (model, resolution, gang, warm flags): candidate gangs
        come back at every decision, and this key needs no sorting."""

    def timing(
        self, sim: Simulator, task: Task, gang: Sequence[int], warm: Sequence[bool]
    ) -> GangTiming:
        """Timing of ``task`` on ``gang`` whose members are ``warm`` or not."""
        if self._latency is not sim.latency:
            self._latency = sim.latency
            self._table.clear()
            self._by_gang.clear()
        exact = (task.model, task.resolution, tuple(gang), tuple(warm))
        known = self._by_gang.get(exact)
        if known is not None:
            return known
        if len(self._by_gang) >= self.GANG_MEMO_SIZE:
            self._by_gang.clear()
        self._by_gang[exact] = timing = self._timing(sim, task, gang, warm)
        return timing

    def _timing(
        self, sim: Simulator, task: Task, gang: Sequence[int], warm: Sequence[bool]
    ) -> GangTiming:
        servers = sim.servers
        members = tuple(sorted(zip((servers[i].gpu for i in gang), warm, strict=True)))
        cross = sim.n_sites > 1 and sim.cross_site(gang)
        key = (task.model, task.resolution, members, cross)
        timing = self._table.get(key)
        if timing is None:
            gpus = [gpu for gpu, _ in members]
            flags = [is_warm for _, is_warm in members]
            if cross:
                timing = sim.latency.gang_timing(task.model, task.resolution, gpus, flags, True)
            else:
                timing = sim.latency.gang_timing(task.model, task.resolution, gpus, flags)
            self._table[key] = timing
        return timing

    def now(self, sim: Simulator, task: Task, gang: Sequence[int]) -> GangTiming:
        """Timing of ``task`` on ``gang`` given the current residency (busy members
        included: what they hold now is what they will hold when they free up)."""
        return self.timing(sim, task, gang, sim.placement.warm(task, gang))


def rewards_by_steps(sim: Simulator, task: Task, timing: GangTiming) -> list[tuple[int, float]]:
    """``(steps, reward)`` of dispatching ``task`` now on a gang with ``timing``, for
    every steps value in range: what ``sim.preview`` gives, without re-validating and
    re-timing the dispatch for each steps value."""
    return rewards_over_steps(
        sim.preset.reward,
        sim.quality.table,
        steps_range(sim, task),
        wait=sim.now - task.arrival,
        avg_wait=sim.avg_wait_excluding(task),
        now=sim.now,
        deadline=task.deadline,
        setup_s=timing.setup_s,
        step_s=timing.step_s,
        tail_s=timing.tail_s,
    )


def free_candidates(
    sim: Simulator, task: Task, cache: TimingCache, gangs: Sequence[Gang] | None = None
) -> list[tuple[Gang, GangTiming]]:
    """Gangs ``task`` could start on now, with their timing: the candidate gangs of
    every feasible size among the free capable servers (or ``gangs``, those of another
    task with the same model and fixed size), one per distinct timing (the one with the
    fewest servers, then the lowest ids: module docstring), in that order."""
    placement = sim.placement
    if gangs is None:
        gangs = placement.free_candidate_gangs(task, placement.feasible_gang_sizes(task))
    by_timing: dict[GangTiming, Gang] = {}
    for gang in gangs:
        timing = cache.now(sim, task, gang)
        kept = by_timing.get(timing)
        if kept is None or (len(gang), gang) < (len(kept), kept):
            by_timing[timing] = gang
    return sorted(
        ((gang, timing) for timing, gang in by_timing.items()), key=lambda c: (len(c[0]), c[0])
    )


@dataclass(frozen=True)
class DispatchTable:
    """Every dispatch a reward-driven scheduler weighs now, with its immediate reward:
    row ``r`` is ``tasks[r]`` on ``gangs[r]``, column ``c`` is ``steps[c]`` steps."""

    tasks: list[Task]
    gangs: list[Gang]
    steps: range
    rewards: np.ndarray
    """(rows, steps) rewards, the floats ``sim.preview`` gives (:func:`reward_table`)."""

    def key(self, row: int, column: int) -> tuple:
        """The tie-break of a dispatch: lower task id, fewer servers, fewer steps, lower
        server ids."""
        gang = self.gangs[row]
        return (self.tasks[row].task_id, len(gang), self.steps[column], gang)

    def dispatch(self, row: int, column: int) -> Dispatch:
        return Dispatch(self.tasks[row].task_id, self.steps[column], self.gangs[row])

    def best(self, tolerance: float) -> Dispatch | None:
        """The dispatch with the highest reward; among those within ``tolerance`` of it,
        the first by :meth:`key`."""
        if not self.gangs:
            return None
        top = float(self.rewards.max())
        rows, columns = np.nonzero(self.rewards >= top - tolerance)
        row, column = min(
            zip(rows.tolist(), columns.tolist(), strict=True), key=lambda rc: self.key(*rc)
        )
        return self.dispatch(row, column)

    def ranked(self, count: int) -> list[Dispatch]:
        """The ``count`` dispatches with the highest rewards, best first (ties by
        :meth:`key`)."""
        if not self.gangs or count <= 0:
            return []
        allowed = np.isfinite(self.rewards)  # -inf: steps outside the task's own
        flat = self.rewards[allowed]
        if count < flat.size:
            threshold = np.partition(flat, flat.size - count)[flat.size - count]
            rows, columns = np.nonzero(allowed & (self.rewards >= threshold))
        else:
            rows, columns = np.nonzero(allowed)
        entries = sorted(
            zip(rows.tolist(), columns.tolist(), strict=True),
            key=lambda rc: (-float(self.rewards[rc]), *self.key(*rc)),
        )
        return [self.dispatch(row, column) for row, column in entries[:count]]


def dispatch_table(sim: Simulator, tasks: Sequence[Task], cache: TimingCache) -> DispatchTable:
    """Every ``task`` of ``tasks`` on every gang it could start on now
    (:func:`free_candidates`, worked out once per model, resolution and fixed gang
    size) x every steps value, with its immediate reward."""
    placement = sim.placement
    gangs_of: dict[tuple[str, int | None], list[Gang]] = {}
    candidates: dict[tuple[str, int, int | None], list[tuple[Gang, GangTiming]]] = {}
    row_tasks: list[Task] = []
    gangs: list[Gang] = []
    timings: list[GangTiming] = []
    waits: list[float] = []
    for task in tasks:
        need = (task.model, task.resolution, task.gang_size)
        if need not in candidates:
            hosts = (task.model, task.gang_size)
            if hosts not in gangs_of:
                sizes = placement.feasible_gang_sizes(task)
                gangs_of[hosts] = placement.free_candidate_gangs(task, sizes)
            candidates[need] = free_candidates(sim, task, cache, gangs_of[hosts])
        avg_wait = sim.avg_wait_excluding(task)
        for gang, timing in candidates[need]:
            row_tasks.append(task)
            gangs.append(gang)
            timings.append(timing)
            waits.append(avg_wait)
    # One steps axis for every row: the union of the tasks' ranges (a trace's task has
    # its own steps); entries outside a row's own range are -inf, never chosen.
    ranges = [steps_range(sim, task) for task in row_tasks] or [
        range(sim.preset.min_steps, sim.preset.max_steps + 1)
    ]
    steps = range(min(r.start for r in ranges), max(r.stop for r in ranges))
    rewards = reward_table(
        sim.preset.reward,
        sim.quality.table,
        steps,
        wait=np.array([sim.now - task.arrival for task in row_tasks]),
        avg_wait=np.array(waits),
        now=sim.now,
        deadline=np.array([task.deadline for task in row_tasks]),
        setup_s=np.array([timing.setup_s for timing in timings]),
        step_s=np.array([timing.step_s for timing in timings]),
        tail_s=np.array([timing.tail_s for timing in timings]),
    )
    rewards = rewards.reshape(len(gangs), len(steps))
    if any(r != steps for r in ranges):
        counts = np.arange(steps.start, steps.stop)[None, :]
        starts = np.array([r.start for r in ranges])[:, None]
        stops = np.array([r.stop for r in ranges])[:, None]
        rewards = np.where((counts >= starts) & (counts < stops), rewards, -np.inf)
    return DispatchTable(row_tasks, gangs, steps, rewards)


# ---------------------------------------------------------------------------
# Schedulers
# ---------------------------------------------------------------------------


class RandomScheduler(Scheduler):
    """Uniformly random valid dispatch at every decision epoch; never waits.

    Task uniform among the dispatchable window tasks; gang size uniform among
    ``sim.feasible_gang_sizes(task)``; servers a uniformly random subset of that size
    of the free servers that can hold the model, where the placement rule lets the
    scheduler choose (paper: the rule's); steps uniform over the task's steps range
    (``[min_steps, max_steps]``). All draws come from the generator given to :meth:`reset`.
    """

    name: ClassVar[str] = "random"

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings

    def decide(self, sim: Simulator) -> Dispatch | None:
        tasks = sim.dispatchable()
        if not tasks:
            return None
        task = tasks[int(self.rng.integers(len(tasks)))]
        allowed = sim.steps_range(task)
        steps = int(self.rng.integers(allowed[0], allowed[-1] + 1))
        sizes = sim.feasible_gang_sizes(task)
        size = sizes[int(self.rng.integers(len(sizes)))]  # one size: numpy draws nothing

        def uniform(free: list[int], count: int) -> list[int]:
            return [free[int(i)] for i in self.rng.choice(len(free), size=count, replace=False)]

        gang = sim.placement.choose_servers(task, size, uniform)
        assert gang is not None  # the size is feasible now
        return Dispatch(task.task_id, steps, gang)


class FifoScheduler(Scheduler):
    """Strict first-in first-out: only the head of the queue (``window[0]``) may start.

    If the head cannot start now at its fixed gang size (paper: the task's size; edge:
    :func:`fixed_gang_size` of ``settings.fixed_gang_size``) on free capable servers,
    wait, even if tasks behind it could start. Steps: the fixed steps. Servers (edge):
    the free capable servers in affinity order (model resident, faster, lower id).
    """

    name: ClassVar[str] = "fifo"

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings

    def decide(self, sim: Simulator) -> Dispatch | None:
        window = sim.window()
        if not window:
            return None
        steps = clip_steps(sim, window[0], self.settings.fixed_steps)
        return fixed_dispatch(sim, window[0], steps, self.settings.fixed_gang_size)


class FirstFitScheduler(Scheduler):
    """First fit: the oldest window task that can start now at its fixed gang size
    (same gang, server and steps rule as :class:`FifoScheduler`); wait if none can."""

    name: ClassVar[str] = "first_fit"

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings

    def decide(self, sim: Simulator) -> Dispatch | None:
        for task in sim.window():
            steps = clip_steps(sim, task, self.settings.fixed_steps)
            dispatch = fixed_dispatch(sim, task, steps, self.settings.fixed_gang_size)
            if dispatch is not None:
                return dispatch
        return None


class GreedyScheduler(Scheduler):
    """Myopic reward maximiser: the dispatch with the highest immediate reward
    (``sim.preview(d).reward``: latency term, quality, deadline penalty, with the
    cold start / reload the gang really pays).

    Searches every dispatchable window task x every gang it can start on now (the
    candidate gangs of every feasible size, which contain a shortest-duration gang of
    each size, see the module docstring) x every steps value, all rewards at once
    (:func:`dispatch_table`). Ties (within 1e-9 of the best): lower task id, then fewer
    servers, then fewer steps, then lower server ids. Never waits. (Unlike the
    reference implementation's greedy, which swapped action fields and ignored gang
    size and reload.)
    """

    name: ClassVar[str] = "greedy"
    TOLERANCE: ClassVar[float] = 1e-9

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.cache = TimingCache()

    def decide(self, sim: Simulator) -> Dispatch | None:
        tasks = sorted(sim.dispatchable(), key=lambda t: t.task_id)
        return dispatch_table(sim, tasks, self.cache).best(self.TOLERANCE)


class RewardCompletion:
    """Completes a dispatch of a chosen task into that task's highest-immediate-reward
    dispatch: greedy's search (:func:`dispatch_table`, every gang it can start on now x
    every steps value, the same tie-break) restricted to the one task. A learned policy
    that decides *when* to dispatch and *which* task (the non-myopic part, what a
    planner teaches) leaves *how* (gang and steps, which the immediate reward ranks
    exactly) to it: ``completion: immediate_reward`` of :class:`~eat.params.SACConfig`."""

    def __init__(self) -> None:
        self.cache = TimingCache()

    def __call__(self, sim: Simulator, dispatch: Dispatch) -> Dispatch:
        task = sim.tasks[dispatch.task_id]
        best = dispatch_table(sim, [task], self.cache).best(GreedyScheduler.TOLERANCE)
        if best is None:
            raise ValueError(f"task {dispatch.task_id} cannot start now (t={sim.now})")
        return best


class EftOption:
    """EFT: one way to run a task: its gang and its start and finish times."""

    __slots__ = ("finish", "gang", "start")

    def __init__(self, gang: Gang, start: float, finish: float) -> None:
        self.gang, self.start, self.finish = gang, start, finish

    def key(self) -> tuple:
        return (self.finish, self.start, len(self.gang), self.gang)


class EarliestFinishTimeScheduler(Scheduler):
    """Earliest finish time: min-min list scheduling over the queue window.

    Steps are fixed to ``sim.quality.fewest_steps_reaching(settings.target_quality)``
    (a task's own steps when it has them).
    Each server is available at ``now`` if free, else at its ``busy_until``. A task's
    finish time on a gang is ``max(members' availability) + duration(steps)``, where
    the duration includes the cold starts that current residency implies. Gangs
    considered, busy servers included, are those of ``sim.placement.options``:

    - edge: for every allowed size and every availability threshold, the candidate
      gangs (module docstring) among the capable servers available by then; this is
      exact over all subsets.
    - paper: the rule's gang now (warm or cold), every intact warm group of the
      task's size at the time its last member frees up (a warm start; a busy group
      may finish earliest), and a cold start on the first servers to become available.

    Min-min: pick the (task, gang) with the earliest finish (ties: earlier arrival,
    lower id). If it can start now, dispatch it; otherwise reserve its gang until its
    finish (those servers become available only then), drop the task, and repeat with
    the rest of the window. If no task can start now, wait; if waiting is impossible
    (``sim.next_event_time() is None``), dispatch the option that finishes earliest
    among those that can start now.
    """

    name: ClassVar[str] = "eft"

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.cache = TimingCache()
        self._shortest_key: object | None = None
        self._shortest: dict[tuple, float] = {}

    def steps(self, sim: Simulator, task: Task | None = None) -> int:
        """The steps ``task`` runs with (without a task: those of any task that has no
        steps of its own)."""
        if task is not None and task.steps is not None:
            return task.steps
        preset = sim.preset
        return sim.quality.fewest_steps_reaching(
            self.settings.target_quality, preset.min_steps, preset.max_steps
        )

    def decide(self, sim: Simulator) -> Dispatch | None:
        now = sim.now
        avail = [now if s.task_id is None else max(now, s.busy_until) for s in sim.servers]
        reserved: set[int] = set()
        remaining = list(sim.window())
        best_of: dict[tuple, EftOption | None] = {}
        while remaining:
            chosen: tuple | None = None
            for task in remaining:
                combo = self._combo(task)
                if combo not in best_of:
                    best_of[combo] = self.earliest_option(
                        sim, task, self.steps(sim, task), avail, reserved
                    )
                option = best_of[combo]
                if option is None:
                    continue
                key = (option.finish, task.arrival, task.task_id)
                if chosen is None or key < chosen[0]:
                    chosen = (key, task, option)
            if chosen is None:
                break
            _, task, option = chosen
            if self._startable(sim, option, reserved):
                return self._dispatch(sim, task, self.steps(sim, task), option)
            for server_id in option.gang:
                avail[server_id] = option.finish
            reserved.update(option.gang)
            remaining.remove(task)
            members = set(option.gang)
            for combo, other in list(best_of.items()):
                if other is not None and members.intersection(other.gang):
                    del best_of[combo]
        if sim.next_event_time() is not None:
            return None
        return self._fallback(sim)

    @staticmethod
    def _combo(task: Task) -> tuple:
        """Tasks with equal combos have the same options."""
        return (task.model, task.resolution, task.gang_size, task.steps)

    def _startable(
        self, sim: Simulator, option: EftOption, reserved: set[int] | frozenset[int]
    ) -> bool:
        return option.start <= sim.now and all(
            sim.servers[i].task_id is None and i not in reserved for i in option.gang
        )

    def _dispatch(self, sim: Simulator, task: Task, steps: int, option: EftOption) -> Dispatch:
        return Dispatch(task.task_id, steps, option.gang)

    def _fallback(self, sim: Simulator) -> Dispatch | None:
        now = sim.now
        avail = [now if s.task_id is None else math.inf for s in sim.servers]
        best = None
        for task in sim.dispatchable():
            option = self.earliest_option(sim, task, self.steps(sim, task), avail, set())
            if option is not None and self._startable(sim, option, set()):
                key = (option.finish, task.arrival, task.task_id)
                if best is None or key < best[0]:
                    best = (key, task, option)
        if best is None:
            return None
        _, task, option = best
        return self._dispatch(sim, task, self.steps(sim, task), option)

    def earliest_option(
        self,
        sim: Simulator,
        task: Task,
        steps: int,
        avail: list[float] | None = None,
        reserved: set[int] | frozenset[int] = frozenset(),
    ) -> EftOption | None:
        """The way to run ``task`` with ``steps`` that finishes earliest, given each
        server's availability (default: now if free, else its ``busy_until``) and the
        servers reserved by earlier min-min picks; None if there is none."""
        if avail is None:
            avail = [
                sim.now if s.task_id is None else max(sim.now, s.busy_until) for s in sim.servers
            ]
        # Options come in order of their start; none starting after the best finish so
        # far minus the shortest duration any gang could have can finish earlier.
        shortest = self.shortest_duration(sim, task, steps)
        best: EftOption | None = None
        for option in sim.placement.options(task, avail, set(reserved)):
            if option.start == math.inf:
                break
            if best is not None and option.start + shortest > best.finish:
                break
            timing = self.cache.timing(sim, task, option.gang, option.warm)
            candidate = EftOption(option.gang, option.start, option.start + timing.duration(steps))
            if best is None or candidate.key() < best.key():
                best = candidate
        return best

    def shortest_duration(self, sim: Simulator, task: Task, steps: int) -> float:
        """A lower bound on the duration of ``task`` with ``steps`` on any gang: per gang
        size, the shortest text encoding, step and decode of any capable GPU type (warm,
        within a site), since a gang encodes and decodes on one member and steps no
        faster than any of its members."""
        key = (task.model, task.resolution, task.gang_size, steps)
        if self._shortest_key is not sim.latency:
            self._shortest_key, self._shortest = sim.latency, {}
        known = self._shortest.get(key)
        if known is not None:
            return known
        gpus = sorted({sim.servers[i].gpu for i in sim.placement.capable(task, free_only=False)})
        bound = math.inf
        for size in sim.placement.gang_sizes(task):
            timings = [
                sim.latency.gang_timing(task.model, task.resolution, [gpu] * size, [True] * size)
                for gpu in gpus
            ]
            if timings:
                setup = min(timing.setup_s for timing in timings)
                step = min(timing.step_s for timing in timings)
                tail = min(timing.tail_s for timing in timings)
                bound = min(bound, setup + steps * step + tail)
        self._shortest[key] = bound
        return bound


class WarmFirstScheduler(Scheduler):
    """Model affinity: avoid cold starts, unless the warm servers cannot keep up. Fixed steps.

    1. The oldest window task that can start now on a warm gang: paper, the
       simulator's rule returns a warm group of the task's size; edge, for the largest
       allowed size ``k' <=`` its fixed gang size with ``k'`` free servers holding the
       model, those of them in affinity order.
    2. Otherwise take the oldest task X that can start now at its fixed gang size k.
       Wait (None) if the warm gangs become free sooner than a cold start takes, for X
       and for the queue behind it; else dispatch X cold, on the servers in affinity
       order. "Sooner": the window tasks that need the same warm gangs (paper: same
       gang size; edge: same model), X first, are list-scheduled on them (each takes
       the earliest free warm gang of k, paper: the earliest group of size k, edge: the
       k earliest servers holding the model, and holds it for its warm duration), and
       the last of them starts before ``now`` + the cold start (paper: ``reload_s[k]``;
       edge: the model's cold start). With X alone this is the plain affinity rule
       ``busy_warm_group_free_at(k) - now < reload_s[k]`` (paper), or the k-th
       earliest availability among the servers holding the model minus now below the
       cold start (edge); the backlog term stops every task of a model from queueing
       behind one warm server while others idle (``sim.placement.warm_units``). Never
       waits when no event is pending.
    3. If no task can start at its fixed gang size, wait.
    """

    name: ClassVar[str] = "warm_first"

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.cache = TimingCache()

    def _warm_dispatch(self, sim: Simulator, task: Task, steps: int) -> Dispatch | None:
        target = fixed_gang_size(sim, task, self.settings.fixed_gang_size)
        sizes = sorted((k for k in sim.placement.gang_sizes(task) if k <= target), reverse=True)
        for size in sizes:
            gang = sim.placement.warm_gang(task, size)
            if gang is not None:
                return Dispatch(task.task_id, steps, gang)
        return None

    def _warm_soon(self, sim: Simulator, task: Task) -> bool:
        """The warm gangs serve ``task`` and the same-need tasks behind it (each at its
        fixed steps), each starting sooner than a cold start would take (see the class
        docstring)."""
        now = sim.now
        window = sim.window()
        queued = window[window.index(task) :]
        size = fixed_gang_size(sim, task, self.settings.fixed_gang_size)
        units = sim.placement.warm_units(task, size)
        cold = sim.latency.cold_start_s(task.model, size)
        line = [t for t in queued if units.same_need(t)]
        slots, width, gang = list(units.free_at), units.width, units.gang
        durations = []
        if gang is not None:
            warm = [True] * len(gang)
            durations = [
                self.cache.timing(sim, t, gang, warm).duration(
                    clip_steps(sim, t, self.settings.fixed_steps)
                )
                for t in line
            ]
        if len(slots) < width:
            return False
        slots.sort()
        start = now
        for duration in durations:
            start = slots[width - 1]
            if start - now >= cold:
                return False
            slots = sorted([start + duration] * width + slots[width:])
        return start - now < cold

    def decide(self, sim: Simulator) -> Dispatch | None:
        fixed = self.settings.fixed_steps
        window = sim.window()
        for task in window:
            dispatch = self._warm_dispatch(sim, task, clip_steps(sim, task, fixed))
            if dispatch is not None:
                return dispatch
        for task in window:
            steps = clip_steps(sim, task, fixed)
            dispatch = fixed_dispatch(sim, task, steps, self.settings.fixed_gang_size)
            if dispatch is None:
                continue
            if sim.next_event_time() is not None and self._warm_soon(sim, task):
                return None
            return dispatch
        return None


class EdfScheduler(Scheduler):
    """Earliest deadline first, maximising quality within the deadline.

    Task: the dispatchable window task with the earliest absolute deadline (ties and
    no deadline: FIFO order). For each gang it can start on now (the candidate gangs of
    every feasible size; paper: the rule's), the steps are
    the best-quality steps (ties: fewer steps) whose finish meets the deadline; with
    the eat_reference curve, which peaks at 30, that is the most steps up to 30. The
    gang: one that meets the deadline at the best quality, then the earliest finish,
    then fewer servers. If no gang meets the deadline at any steps, use the fewest steps
    (``min_steps``) on the gang that finishes earliest. A task's own steps, when it has
    them, are the only steps searched. Never waits.
    """

    name: ClassVar[str] = "edf"

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.cache = TimingCache()

    def decide(self, sim: Simulator) -> Dispatch | None:
        tasks = sim.dispatchable()
        if not tasks:
            return None
        task = min(tasks, key=lambda t: t.deadline)  # min keeps the first (oldest) on ties
        allowed = steps_range(sim, task)
        best: tuple | None = None
        for gang, timing in free_candidates(sim, task, self.cache):
            meeting = [
                steps for steps in allowed if sim.now + timing.duration(steps) <= task.deadline
            ]
            if meeting:
                steps = max(meeting, key=lambda s: (sim.quality(s), -s))
                missed, quality = False, sim.quality(steps)
            else:
                steps, missed, quality = allowed[0], True, 0.0
            finish = sim.now + timing.duration(steps)
            key = (missed, -quality, finish, len(gang), gang)
            if best is None or key < best[0]:
                best = (key, Dispatch(task.task_id, steps, gang))
        return None if best is None else best[1]


SCHEDULERS: dict[str, type[Scheduler]] = {
    cls.name: cls
    for cls in (
        RandomScheduler,
        FifoScheduler,
        FirstFitScheduler,
        GreedyScheduler,
        EarliestFinishTimeScheduler,
        WarmFirstScheduler,
        EdfScheduler,
    )
}


def make_scheduler(name: str, settings: SchedulerSettings) -> Scheduler:
    """A heuristic scheduler by its name in :data:`SCHEDULERS`."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
    return SCHEDULERS[name](settings)


__all__ = [
    "SCHEDULERS",
    "DispatchTable",
    "EarliestFinishTimeScheduler",
    "EdfScheduler",
    "FifoScheduler",
    "FirstFitScheduler",
    "GreedyScheduler",
    "RandomScheduler",
    "RewardCompletion",
    "TimingCache",
    "WarmFirstScheduler",
    "affinity_order",
    "candidate_gangs",
    "dispatch_table",
    "fixed_gang_size",
    "free_candidates",
    "make_scheduler",
    "rewards_by_steps",
]

"""Heuristic schedulers: the baselines every learned agent is compared with.

Every scheduler works on both presets. On ``paper`` the gang size is fixed per task
and the simulator's rule picks the servers, so a decision is ``Dispatch(task, steps)``;
on ``edge`` the scheduler picks the gang size and the servers explicitly. Only the
tasks of ``sim.window()`` are candidates, and no scheduler returns an invalid
dispatch. A scheduler returns ``None`` (wait for the next event) only while an event
is pending, so that waiting is always possible.

Shared conventions:

- *capable* server: one whose memory can hold the task's model (edge).
- *fixed steps*: ``settings.fixed_steps`` clipped into ``[min_steps, max_steps]``.
- *fixed gang size* (edge, :func:`fixed_gang_size`): the largest allowed gang size
  ``<= settings.fixed_gang_size`` that the cluster's capable servers (busy or free)
  can ever host; the smallest allowed size if none is ``<=`` it.
- *affinity order* of servers: the model resident first, then faster, then lower id.
- *candidate gangs* of size ``k`` among a set of servers (edge, :func:`candidate_gangs`):
  the ``k`` fastest servers (residents first on equal speed), and the ``k`` fastest
  servers on which the model is resident. Among all ``k``-subsets of the set, one of
  these two has the shortest duration for any number of steps: a gang's duration
  depends on its members only through the largest cold start (0 or the model's one),
  the slowest member's pace and the fastest member's speed. So searching them is
  exact, not an approximation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from eat.agents.base import Scheduler
from eat.params import SchedulerSettings
from eat.sim.latency import GangTiming
from eat.sim.simulator import Dispatch, Simulator
from eat.sim.workload import Task

Gang = tuple[int, ...]


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def steps_range(sim: Simulator) -> range:
    return range(sim.preset.min_steps, sim.preset.max_steps + 1)


def clip_steps(sim: Simulator, steps: int) -> int:
    return min(sim.preset.max_steps, max(sim.preset.min_steps, steps))


def capable_servers(sim: Simulator, task: Task, *, free_only: bool) -> list[int]:
    """Servers that can hold the task's model (edge), optionally only the free ones."""
    memory = sim.preset.models[task.model].memory_gb
    return [
        s.server_id
        for s in sim.servers
        if s.memory_gb >= memory and (not free_only or s.task_id is None)
    ]


def affinity_order(sim: Simulator, task: Task, servers: Sequence[int]) -> list[int]:
    """``servers`` with the task's model resident first, then faster, then lower id."""
    return sorted(
        servers,
        key=lambda i: (task.model not in sim.servers[i].resident, -sim.servers[i].speed, i),
    )


def fixed_gang_size(sim: Simulator, task: Task, requested: int) -> int:
    """Gang size of the fixed-size heuristics (see the module docstring)."""
    if sim.kind == "paper":
        return task.gang_size or 1
    hosts = len(capable_servers(sim, task, free_only=False))
    allowed = [size for size in sim.allowed_gang_sizes if size <= hosts] or [
        min(sim.allowed_gang_sizes)
    ]
    smaller = [size for size in allowed if size <= requested]
    return max(smaller) if smaller else min(allowed)


def fixed_dispatch(sim: Simulator, task: Task, steps: int, requested: int) -> Dispatch | None:
    """The task at its fixed gang size on the first servers in affinity order, or None
    if it cannot start now at that size."""
    size = fixed_gang_size(sim, task, requested)
    if sim.kind == "paper":
        return Dispatch(task.task_id, steps) if size <= sim.n_free else None
    free = capable_servers(sim, task, free_only=True)
    if len(free) < size:
        return None
    return Dispatch(task.task_id, steps, tuple(sorted(affinity_order(sim, task, free)[:size])))


def candidate_gangs(sim: Simulator, task: Task, servers: Sequence[int], size: int) -> list[Gang]:
    """Edge: the (at most two) candidate gangs of ``size`` among ``servers`` (module
    docstring): the fastest ones, and the fastest ones with the model resident."""
    order = affinity_order(sim, task, servers)
    order.sort(key=lambda i: -sim.servers[i].speed)  # stable: residents first on equal speed
    gangs: list[Gang] = []
    if len(order) >= size:
        gangs.append(tuple(sorted(order[:size])))
    warm = [i for i in order if task.model in sim.servers[i].resident]
    if len(warm) >= size:
        gang = tuple(sorted(warm[:size]))
        if gang not in gangs:
            gangs.append(gang)
    return gangs


class TimingCache:
    """Memoised gang timings of one simulator's latency model.

    Edge timings depend on the gang only through the multiset of (GPU type, model
    resident) of its members, so many gangs share one entry."""

    def __init__(self) -> None:
        self._latency: object | None = None
        self._table: dict[tuple, GangTiming] = {}

    def _check(self, sim: Simulator) -> None:
        if self._latency is not sim.latency:
            self._latency = sim.latency
            self._table.clear()

    def edge(self, sim: Simulator, task: Task, gang: Sequence[int]) -> GangTiming:
        """Timing of ``task`` on ``gang`` given the current residency (busy members
        included: what they hold now is what they will hold when they free up)."""
        self._check(sim)
        members = tuple(
            sorted((sim.servers[i].gpu, task.model in sim.servers[i].resident) for i in gang)
        )
        key = (task.model, task.resolution, members)
        timing = self._table.get(key)
        if timing is None:
            gpus = [gpu for gpu, _ in members]
            warm = [is_warm for _, is_warm in members]
            timing = sim.latency.gang_timing(  # type: ignore[call-arg]
                task.model, task.resolution, gpus, warm
            )
            self._table[key] = timing
        return timing

    def paper(self, sim: Simulator, size: int, warm: bool) -> GangTiming:
        self._check(sim)
        key = ("paper", size, warm)
        timing = self._table.get(key)
        if timing is None:
            timing = sim.latency.gang_timing(size, warm)  # type: ignore[call-arg]
            self._table[key] = timing
        return timing


def rewards_by_steps(sim: Simulator, task: Task, timing: GangTiming) -> list[tuple[int, float]]:
    """``(steps, reward)`` of dispatching ``task`` now on a gang with ``timing``, for
    every steps value in range: what ``sim.preview`` gives, without re-validating and
    re-timing the dispatch for each steps value."""
    avg_wait = sim.avg_wait_excluding(task)
    return [
        (steps, sim.reward(task, avg_wait, timing.duration(steps), steps))
        for steps in steps_range(sim)
    ]


def free_candidates(
    sim: Simulator, task: Task, cache: TimingCache
) -> list[tuple[Gang | None, GangTiming]]:
    """Gangs ``task`` could start on now, with their timing: the simulator's rule on
    paper (gang None), the candidate gangs of every feasible size on edge."""
    if sim.kind == "paper":
        size = task.gang_size or 1
        if size > sim.n_free:
            return []
        _, warm = sim.paper_gang(size)
        return [(None, cache.paper(sim, size, warm))]
    free = capable_servers(sim, task, free_only=True)
    result: list[tuple[Gang | None, GangTiming]] = []
    for size in sim.feasible_gang_sizes(task):
        for gang in candidate_gangs(sim, task, free, size):
            result.append((gang, cache.edge(sim, task, gang)))
    return result


# ---------------------------------------------------------------------------
# Schedulers
# ---------------------------------------------------------------------------


class RandomScheduler(Scheduler):
    """Uniformly random valid dispatch at every decision epoch; never waits.

    Task uniform among the dispatchable window tasks; on edge, gang size uniform among
    ``sim.feasible_gang_sizes(task)`` and servers a uniformly random subset of that
    size of the free servers that can hold the model (paper: the simulator's rule);
    steps uniform over ``[min_steps, max_steps]``. All draws come from ``self.rng``.
    """

    name: ClassVar[str] = "random"

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.rng = np.random.default_rng(0)

    def decide(self, sim: Simulator) -> Dispatch | None:
        tasks = sim.dispatchable()
        if not tasks:
            return None
        task = tasks[int(self.rng.integers(len(tasks)))]
        steps = int(self.rng.integers(sim.preset.min_steps, sim.preset.max_steps + 1))
        if sim.kind == "paper":
            return Dispatch(task.task_id, steps)
        sizes = sim.feasible_gang_sizes(task)
        size = sizes[int(self.rng.integers(len(sizes)))]
        free = capable_servers(sim, task, free_only=True)
        chosen = self.rng.choice(len(free), size=size, replace=False)
        return Dispatch(task.task_id, steps, tuple(sorted(free[int(i)] for i in chosen)))


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
        steps = clip_steps(sim, self.settings.fixed_steps)
        return fixed_dispatch(sim, window[0], steps, self.settings.fixed_gang_size)


class FirstFitScheduler(Scheduler):
    """First fit: the oldest window task that can start now at its fixed gang size
    (same gang, server and steps rule as :class:`FifoScheduler`); wait if none can."""

    name: ClassVar[str] = "first_fit"

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings

    def decide(self, sim: Simulator) -> Dispatch | None:
        steps = clip_steps(sim, self.settings.fixed_steps)
        for task in sim.window():
            dispatch = fixed_dispatch(sim, task, steps, self.settings.fixed_gang_size)
            if dispatch is not None:
                return dispatch
        return None


class GreedyScheduler(Scheduler):
    """Myopic reward maximiser: the dispatch with the highest immediate reward
    (``sim.preview(d).reward``: latency term, quality, deadline penalty, with the
    cold start / reload the gang really pays).

    Searches every dispatchable window task x every gang it can start on now (paper:
    the simulator's rule; edge: the candidate gangs of every feasible size, which
    contain a shortest-duration gang of each size, see the module docstring) x every
    steps value. Ties (within 1e-9): lower task id, then fewer servers, then fewer
    steps. Never waits. (Unlike the reference implementation's greedy, which swapped
    action fields and ignored gang size and reload.)
    """

    name: ClassVar[str] = "greedy"
    TOLERANCE: ClassVar[float] = 1e-9

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.cache = TimingCache()

    def decide(self, sim: Simulator) -> Dispatch | None:
        best: Dispatch | None = None
        best_reward = -math.inf
        best_key: tuple = ()
        for task in sorted(sim.dispatchable(), key=lambda t: t.task_id):
            for gang, timing in free_candidates(sim, task, self.cache):
                size = len(gang) if gang is not None else (task.gang_size or 1)
                gang_key = gang or ()
                for steps, reward in rewards_by_steps(sim, task, timing):
                    key = (task.task_id, size, steps, gang_key)
                    better = reward > best_reward + self.TOLERANCE
                    tied = abs(reward - best_reward) <= self.TOLERANCE and key < best_key
                    if better or tied:
                        best = Dispatch(task.task_id, steps, gang)
                        best_reward, best_key = reward, key
        return best


class EftOption:
    """EFT: one way to run a task: its gang (on paper, the servers the simulator's rule
    would pick, a warm group, or the first servers to free up) and its start and finish
    times."""

    __slots__ = ("finish", "gang", "start")

    def __init__(self, gang: Gang, start: float, finish: float) -> None:
        self.gang, self.start, self.finish = gang, start, finish

    def key(self) -> tuple:
        return (self.finish, self.start, len(self.gang), self.gang)


class EarliestFinishTimeScheduler(Scheduler):
    """Earliest finish time: min-min list scheduling over the queue window.

    Steps are fixed to ``sim.quality.fewest_steps_reaching(settings.target_quality)``.
    Each server is available at ``now`` if free, else at its ``busy_until``. A task's
    finish time on a gang is ``max(members' availability) + duration(steps)``, where
    the duration includes the cold starts that current residency implies. Gangs
    considered, busy servers included:

    - edge: for every allowed size and every availability threshold, the candidate
      gangs (module docstring) among the capable servers available by then; this is
      exact over all subsets.
    - paper: the simulator's rule now (warm or cold), every intact warm group of the
      task's size at the time its last member frees up (a warm start; a busy group
      may finish earliest, cf. ``sim.busy_warm_group_free_at``), and a cold start on
      the first servers to become available.

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

    def steps(self, sim: Simulator) -> int:
        preset = sim.preset
        return sim.quality.fewest_steps_reaching(
            self.settings.target_quality, preset.min_steps, preset.max_steps
        )

    def decide(self, sim: Simulator) -> Dispatch | None:
        steps = self.steps(sim)
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
                    best_of[combo] = self.earliest_option(sim, task, steps, avail, reserved)
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
                return self._dispatch(sim, task, steps, option)
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
        return self._fallback(sim, steps)

    @staticmethod
    def _combo(task: Task) -> tuple:
        """Tasks with equal combos have the same options."""
        return (task.model, task.resolution, task.gang_size)

    def _startable(
        self, sim: Simulator, option: EftOption, reserved: set[int] | frozenset[int]
    ) -> bool:
        return option.start <= sim.now and all(
            sim.servers[i].task_id is None and i not in reserved for i in option.gang
        )

    def _dispatch(self, sim: Simulator, task: Task, steps: int, option: EftOption) -> Dispatch:
        servers = None if sim.kind == "paper" else option.gang
        return Dispatch(task.task_id, steps, servers)

    def _fallback(self, sim: Simulator, steps: int) -> Dispatch | None:
        now = sim.now
        avail = [now if s.task_id is None else math.inf for s in sim.servers]
        best = None
        for task in sim.dispatchable():
            option = self.earliest_option(sim, task, steps, avail, set())
            if option is not None and self._startable(sim, option, set()):
                key = (option.finish, task.arrival, task.task_id)
                if best is None or key < best[0]:
                    best = (key, task, option)
        return None if best is None else self._dispatch(sim, best[1], steps, best[2])

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
        if sim.kind == "paper":
            options = self._paper_options(sim, task, steps, avail, reserved)
        else:
            options = self._edge_options(sim, task, steps, avail)
        finite = [option for option in options if option.start < math.inf]
        return min(finite, key=EftOption.key) if finite else None

    def _paper_options(
        self,
        sim: Simulator,
        task: Task,
        steps: int,
        avail: list[float],
        reserved: set[int] | frozenset[int],
    ) -> list[EftOption]:
        now, size = sim.now, task.gang_size or 1
        options = []
        if size <= sim.n_free:
            gang, warm = sim.paper_gang(size)
            if not reserved.intersection(gang):
                duration = self.cache.paper(sim, size, warm).duration(steps)
                options.append(EftOption(gang, now, now + duration))
        # Options that start later (those that start now exist only through the rule).
        warm_duration = self.cache.paper(sim, size, True).duration(steps)
        for members in sim.warm_groups():
            if len(members) == size:
                start = max(avail[i] for i in members)
                if start > now:
                    options.append(EftOption(members, start, start + warm_duration))
        earliest = sorted(range(sim.n_servers), key=lambda i: (avail[i], i))[:size]
        if len(earliest) == size:
            start = max(avail[i] for i in earliest)
            if start > now:
                cold_duration = self.cache.paper(sim, size, False).duration(steps)
                options.append(EftOption(tuple(sorted(earliest)), start, start + cold_duration))
        return options

    def _edge_options(
        self, sim: Simulator, task: Task, steps: int, avail: list[float]
    ) -> list[EftOption]:
        capable = capable_servers(sim, task, free_only=False)
        options = []
        thresholds = sorted({avail[i] for i in capable})
        for size in sim.allowed_gang_sizes:
            if size > len(capable):
                break
            for threshold in thresholds:
                ready = [i for i in capable if avail[i] <= threshold]
                if len(ready) < size:
                    continue
                for gang in candidate_gangs(sim, task, ready, size):
                    start = max(avail[i] for i in gang)
                    duration = self.cache.edge(sim, task, gang).duration(steps)
                    options.append(EftOption(gang, start, start + duration))
        return options


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
       behind one warm server while others idle. Never waits when no event is pending.
    3. If no task can start at its fixed gang size, wait.
    """

    name: ClassVar[str] = "warm_first"

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.cache = TimingCache()

    def _warm_dispatch(self, sim: Simulator, task: Task, steps: int) -> Dispatch | None:
        if sim.kind == "paper":
            size = task.gang_size or 1
            if size > sim.n_free:
                return None
            _, warm = sim.paper_gang(size)
            return Dispatch(task.task_id, steps) if warm else None
        target = fixed_gang_size(sim, task, self.settings.fixed_gang_size)
        free = capable_servers(sim, task, free_only=True)
        warm_free = [i for i in affinity_order(sim, task, free) if sim.is_warm(i, task.model)]
        sizes = [k for k in sim.allowed_gang_sizes if k <= target and k <= len(warm_free)]
        if not sizes:
            return None
        return Dispatch(task.task_id, steps, tuple(sorted(warm_free[: max(sizes)])))

    def _warm_soon(self, sim: Simulator, task: Task, steps: int) -> bool:
        """The warm gangs serve ``task`` and the same-need tasks behind it, each starting
        sooner than a cold start would take (see the class docstring)."""
        now = sim.now
        window = sim.window()
        queued = window[window.index(task) :]
        if sim.kind == "paper":
            size = task.gang_size or 1
            cold = sim.latency.reload_s[size]  # type: ignore[union-attr]
            # One free time per intact group of this size (its members free together).
            slots = [
                max(now + sim.remaining_busy(i) for i in members)
                for members in sim.warm_groups()
                if len(members) == size
            ]
            line = [t for t in queued if (t.gang_size or 1) == size]
            width = 1
            duration = self.cache.paper(sim, size, True).duration(steps)
            durations = [duration] * len(line)
        else:
            size = fixed_gang_size(sim, task, self.settings.fixed_gang_size)
            cold = sim.latency.cold_start_s[task.model]  # type: ignore[union-attr]
            holders = [
                i for i in capable_servers(sim, task, free_only=False) if sim.is_warm(i, task.model)
            ]
            slots = [now + sim.remaining_busy(i) for i in holders]
            line = [t for t in queued if t.model == task.model]
            width = size
            if len(holders) >= size:
                gang = tuple(sorted(holders, key=lambda i: -sim.servers[i].speed)[:size])
                durations = [self.cache.edge(sim, t, gang).duration(steps) for t in line]
            else:
                durations = []
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
        steps = clip_steps(sim, self.settings.fixed_steps)
        window = sim.window()
        for task in window:
            dispatch = self._warm_dispatch(sim, task, steps)
            if dispatch is not None:
                return dispatch
        for task in window:
            dispatch = fixed_dispatch(sim, task, steps, self.settings.fixed_gang_size)
            if dispatch is None:
                continue
            if sim.next_event_time() is not None and self._warm_soon(sim, task, steps):
                return None
            return dispatch
        return None


class EdfScheduler(Scheduler):
    """Earliest deadline first, maximising quality within the deadline.

    Task: the dispatchable window task with the earliest absolute deadline (ties and
    no deadline: FIFO order). For each gang it can start on now (paper: the
    simulator's rule; edge: the candidate gangs of every feasible size), the steps are
    the best-quality steps (ties: fewer steps) whose finish meets the deadline; with
    the eat_reference curve, which peaks at 30, that is the most steps up to 30. The
    gang: one that meets the deadline at the best quality, then the earliest finish,
    then fewer servers. If no gang meets the deadline at any steps, use ``min_steps``
    on the gang that finishes earliest. Never waits.
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
        best: tuple | None = None
        for gang, timing in free_candidates(sim, task, self.cache):
            meeting = [
                steps
                for steps in steps_range(sim)
                if sim.now + timing.duration(steps) <= task.deadline
            ]
            if meeting:
                steps = max(meeting, key=lambda s: (sim.quality(s), -s))
                missed, quality = False, sim.quality(steps)
            else:
                steps, missed, quality = sim.preset.min_steps, True, 0.0
            finish = sim.now + timing.duration(steps)
            size = len(gang) if gang is not None else 0
            key = (missed, -quality, finish, size, gang or ())
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
    return SCHEDULERS[name](settings)  # type: ignore[call-arg]


__all__ = [
    "SCHEDULERS",
    "EarliestFinishTimeScheduler",
    "EdfScheduler",
    "FifoScheduler",
    "FirstFitScheduler",
    "GreedyScheduler",
    "RandomScheduler",
    "TimingCache",
    "WarmFirstScheduler",
    "affinity_order",
    "candidate_gangs",
    "fixed_gang_size",
    "make_scheduler",
    "rewards_by_steps",
]

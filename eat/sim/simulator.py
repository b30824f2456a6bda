"""Discrete-event simulator of an edge GPU cluster serving text-to-image tasks.

Simulated time jumps from event to event (arrival, model load finished, gang
completion); there are no time ticks. A scheduler is asked to decide only at
*decision epochs*: a visible queued task can be dispatched now. It either
dispatches (a task, its gang of servers and a number of denoising steps) or waits
until the next event.

What a preset decides, the simulator asks two objects it builds from the preset and
never which kind of preset it is: the latency model (:mod:`eat.latency`: how long a
gang takes) and the placement rule (:mod:`eat.sim.placement`: which servers a task may
use and which of them are warm; ``paper`` keeps the EAT reference's warm groups,
``edge`` lets the scheduler choose the gang under memory-limited residency). A gang
starts together, pays the largest cold start of its members, computes at the pace of
its slowest member plus the per-step exchange, then decodes and returns the image.

With a ``topology`` the servers belong to sites (consecutive id ranges); a gang whose
members are in two or more sites exchanges over the link between sites
(``cross_site`` of :meth:`~eat.latency.LatencyModel.gang_timing`). Who is free, which
models each server holds and which servers share a site or a speed are kept as bit
masks as well (:mod:`eat.sim.bitmask`), so that the placement rule answers its
questions at a cost that grows with the groups it touches, not with the cluster.

Reward of a dispatch (0 for waiting): :func:`eat.sim.reward.dispatch_reward`.
"""

from __future__ import annotations

import copy
import heapq
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pandas as pd

from eat.latency import GangTiming, LatencyModel, SimTime, build_latency_model
from eat.params import PresetConfig
from eat.sim.bitmask import mask_of
from eat.sim.errors import SimulationError
from eat.sim.placement import PLACEMENTS, Placement
from eat.sim.quality import QualityCurve
from eat.sim.records import RECORD_COLUMNS, SEGMENT_COLUMNS, RecordFile, segments, task_record
from eat.sim.reward import dispatch_reward
from eat.sim.workload import Task

# Event priorities at equal times (lower first): servers are freed and models
# become resident before new arrivals are seen, so a decision epoch sees the whole
# state of its instant.
PRIORITY_COMPLETION = 0
PRIORITY_LOAD_DONE = 1
PRIORITY_ARRIVAL = 2
PRIORITY_WAKEUP = 3

EVENT_COMPLETION = "completion"
EVENT_LOAD_DONE = "load_done"
EVENT_ARRIVAL = "arrival"
EVENT_WAKEUP = "wakeup"
"""Changes no state: a decision epoch at a chosen time (a scheduler that plans a start)."""

#: ``Server.task_id`` of a server that is out of service (live driving, set_server_down).
SERVER_DOWN = -1


@dataclass(slots=True)
class Server:
    server_id: int
    gpu: str
    speed: float
    memory_gb: float
    resident: OrderedDict[str, None] = field(default_factory=OrderedDict)
    """Models held in GPU memory, least recently used first."""
    busy_until: SimTime = 0.0
    task_id: int | None = None
    group: int | None = None
    """Id of the warm group this server belongs to (``ReferenceGroups``)."""
    site: int = 0
    """The site it belongs to (0 without a topology)."""

    @property
    def free(self) -> bool:
        return self.task_id is None


@dataclass(frozen=True)
class Dispatch:
    """A scheduling decision: run ``task_id`` with ``steps`` denoising steps on
    ``servers`` (None lets the preset's placement rule choose, where it chooses)."""

    task_id: int
    steps: int
    servers: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Outcome:
    """What a dispatch does (or would do, for a preview)."""

    task: Task
    servers: tuple[int, ...]
    steps: int
    start: SimTime
    finish: SimTime
    timing: GangTiming
    quality: float
    reward: float

    @property
    def cold_start_s(self) -> float:
        return max(self.timing.member_cold_start_s)

    @property
    def deadline_met(self) -> bool:
        return self.finish <= self.task.deadline


class Simulator:
    """Event-driven cluster simulator; see the module docstring for the model."""

    def __init__(self, preset: PresetConfig) -> None:
        self.preset = preset
        self.quality = QualityCurve(preset.quality, preset.max_steps)
        self.latency: LatencyModel = build_latency_model(preset)
        self.placement: Placement = PLACEMENTS[preset.kind](self)
        self.allowed_gang_sizes = sorted(preset.allowed_gang_sizes)
        self.server_specs: list[tuple[str, float, float]] = []
        for group in preset.servers:
            rating = self.latency.gpu_rating(group.gpu)
            self.server_specs += [(group.gpu, rating.speed, rating.memory_gb)] * group.count
        self.n_servers = len(self.server_specs)
        self._noise_cv = preset.latency_noise_cv
        self._index_servers()
        self._standalone: dict[tuple[str, int, int | None, int], float] = {}
        self._clear([], None)

    def _index_servers(self) -> None:
        """What never changes during an episode: each server's site, and the masks of the
        servers of each site, speed and model they can hold."""
        topology = self.preset.topology
        sizes = [self.n_servers] if topology is None else topology.site_sizes
        self.server_sites: list[int] = [
            site for site, size in enumerate(sizes) for _ in range(size)
        ]
        self.n_sites = len(sizes)
        self.site_masks: list[int] = [0] * self.n_sites
        for server_id, site in enumerate(self.server_sites):
            self.site_masks[site] |= 1 << server_id
        speeds = sorted({speed for _, speed, _ in self.server_specs}, reverse=True)
        self.speed_classes: list[int] = [
            mask_of(i for i, (_, speed, _) in enumerate(self.server_specs) if speed == value)
            for value in speeds
        ]
        """Masks of the servers of equal speed, fastest first."""
        self.speed_class_single_type: list[bool] = [
            len({self.server_specs[i][0] for i in range(self.n_servers) if mask >> i & 1}) == 1
            for mask in self.speed_classes
        ]
        """Whether each speed class holds one GPU type (two types of equal speed are rare)."""
        self.site_speed_parts: list[list[tuple[int, int]]] = [
            [
                (index, site_mask & speed_class)
                for index, speed_class in enumerate(self.speed_classes)
                if site_mask & speed_class
            ]
            for site_mask in self.site_masks
        ]
        """Per site, its servers of each speed class present there: (class index, mask)."""
        self.capable_masks: dict[str, int] = {
            model: mask_of(
                i for i, (_, _, memory) in enumerate(self.server_specs) if memory >= spec.memory_gb
            )
            for model, spec in self.preset.models.items()
        }
        """Model -> the servers whose memory can hold it."""

    # ------------------------------------------------------------------ set-up
    def reset(
        self,
        tasks: list[Task],
        rng: np.random.Generator | None,
        *,
        arrival_rate: float | None = None,
        records_to: RecordFile | None = None,
    ) -> None:
        """Start a new episode with ``tasks`` (arrivals in the future are events);
        ``rng`` draws the latency noise (None: the preset has none, ``latency_noise_cv``
        0, as for a live shadow that predicts expected timings). ``arrival_rate`` is the
        rate of the workload process the tasks were drawn from, for schedulers that model
        the workload (None: unknown, as on a live system). ``records_to`` streams the
        task records and segments to files as they are made (``records`` then holds the
        last unwritten ones; :meth:`records_frame` reads them all back)."""
        self._clear(tasks, rng)
        self.arrival_rate = arrival_rate
        self.record_file = records_to
        if records_to is not None:
            records_to.start()

    def _clear(self, tasks: list[Task], rng: np.random.Generator | None) -> None:
        self.now: SimTime = 0.0
        self.rng = rng
        self.arrival_rate: float | None = None
        self.servers = [
            Server(i, gpu, speed, memory, site=site)
            for i, ((gpu, speed, memory), site) in enumerate(
                zip(self.server_specs, self.server_sites, strict=True)
            )
        ]
        self.n_free = self.n_servers
        self.free_mask = (1 << self.n_servers) - 1
        """The free servers (mask)."""
        self.resident_masks: dict[str, int] = dict.fromkeys(self.preset.models, 0)
        """Model -> the servers holding it (mask; ``Server.resident`` keeps the LRU order)."""
        self.queue: list[Task] = []
        self.tasks = {task.task_id: task for task in tasks}
        if len(self.tasks) != len(tasks):
            counts = Counter(task.task_id for task in tasks)
            repeated = sorted(task_id for task_id, count in counts.items() if count > 1)
            raise SimulationError(f"task ids must be unique; repeated: {repeated}")
        self._events: list[tuple[SimTime, int, int, str, object]] = []
        self._next_sequence = 0
        self._running: dict[int, Outcome] = {}
        self.placement.reset()
        self.records: list[tuple] = []
        self.segments: list[tuple] = []
        self.n_records = 0
        """Task records made this episode (streamed to a file or not)."""
        self._horizon: SimTime = 0.0
        self.record_file: RecordFile | None = None
        self.n_completed = 0
        self.n_arrived = 0
        for task in sorted(tasks, key=lambda t: (t.arrival, t.task_id)):
            if task.arrival < 0:
                raise SimulationError(
                    f"task {task.task_id} arrives at negative time {task.arrival}"
                )
            self._check_task(task)
            self._schedule(task.arrival, PRIORITY_ARRIVAL, EVENT_ARRIVAL, task)
        self._process_instant()

    def _check_task(self, task: Task) -> None:
        """A task this preset can run: a model it serves, its own steps (if any) in range."""
        if task.model not in self.preset.models:
            raise SimulationError(
                f"task {task.task_id}: model {task.model!r} is not in the preset; choose "
                f"one of {sorted(self.preset.models)}"
            )
        preset = self.preset
        if task.steps is not None and not preset.min_steps <= task.steps <= preset.max_steps:
            raise SimulationError(
                f"task {task.task_id} asks for {task.steps} steps, outside the preset's "
                f"[{preset.min_steps}, {preset.max_steps}]"
            )

    def _schedule(self, time: SimTime, priority: int, kind: str, payload: object) -> None:
        if time < self.now:
            raise SimulationError(f"event {kind} scheduled in the past: {time} < now {self.now}")
        heapq.heappush(self._events, (time, priority, self._next_sequence, kind, payload))
        self._next_sequence += 1

    def schedule_wakeup(self, time: SimTime) -> None:
        """An event at ``time`` that changes nothing, so that a scheduler which plans to
        start a task then gets a decision epoch (if a dispatch is possible then)."""
        self._schedule(time, PRIORITY_WAKEUP, EVENT_WAKEUP, None)

    # ------------------------------------------------------------------ copies
    def fork(self, *, records: bool = True) -> Simulator:
        """An independent copy of the whole state: queue, servers and residency, clock,
        pending events, the placement rule's state and the noise generator. Whatever
        happens in the fork never touches this simulator; driven with the same
        decisions, it produces the same records. ``records=False`` starts the fork's
        records and segments empty (planners only need the rewards); a simulator that
        streams its records to a file forks only that way."""
        if records and self.record_file is not None:
            raise SimulationError(
                "this simulator streams its records to a file: fork(records=False)"
            )
        fork = object.__new__(Simulator)
        # what never changes during an episode is shared
        fork.preset, fork.quality, fork.latency = self.preset, self.quality, self.latency
        fork.allowed_gang_sizes, fork.server_specs = self.allowed_gang_sizes, self.server_specs
        fork.n_servers, fork._noise_cv = self.n_servers, self._noise_cv
        fork.server_sites, fork.n_sites = self.server_sites, self.n_sites
        fork.site_masks, fork.speed_classes = self.site_masks, self.speed_classes
        fork.speed_class_single_type = self.speed_class_single_type
        fork.site_speed_parts = self.site_speed_parts
        fork.capable_masks, fork._standalone = self.capable_masks, self._standalone
        fork.now, fork.n_free, fork.arrival_rate = self.now, self.n_free, self.arrival_rate
        fork.free_mask, fork.resident_masks = self.free_mask, dict(self.resident_masks)
        fork.rng = None if self.rng is None else copy.deepcopy(self.rng)
        fork.servers = [
            Server(
                s.server_id,
                s.gpu,
                s.speed,
                s.memory_gb,
                OrderedDict(s.resident),
                s.busy_until,
                s.task_id,
                s.group,
                s.site,
            )
            for s in self.servers
        ]
        fork.queue = list(self.queue)  # tasks and outcomes are never mutated: shared
        fork.tasks = dict(self.tasks)
        fork._events = list(self._events)
        fork._next_sequence = self._next_sequence
        fork._running = dict(self._running)
        fork.records = list(self.records) if records else []
        fork.segments = list(self.segments) if records else []
        fork.n_records = len(fork.records)
        fork._horizon = max((record[9] for record in fork.records), default=0.0)
        fork.record_file = None
        fork.n_completed, fork.n_arrived = self.n_completed, self.n_arrived
        fork.placement = type(self.placement)(fork)
        fork.placement.copy_state(self.placement)
        return fork

    def future_arrivals(self) -> list[Task]:
        """The tasks that have not arrived yet, in arrival order (what an online scheduler
        does not know)."""
        pending = [payload for _, _, _, kind, payload in self._events if kind == EVENT_ARRIVAL]
        return sorted(pending, key=lambda task: (task.arrival, task.task_id))

    def replace_future_arrivals(self, tasks: list[Task]) -> None:
        """Forget the tasks that have not arrived and expect ``tasks`` instead (a planner
        samples them from the workload process); their arrivals must not be in the past
        and their ids must be new."""
        pending = [
            cast(Task, event[4]).task_id for event in self._events if event[3] == EVENT_ARRIVAL
        ]
        self._events = [event for event in self._events if event[3] != EVENT_ARRIVAL]
        heapq.heapify(self._events)
        for task_id in pending:
            del self.tasks[task_id]
        for task in tasks:
            if task.task_id in self.tasks:
                raise SimulationError(f"task id {task.task_id} already exists")
            self.tasks[task.task_id] = task
            self._schedule(task.arrival, PRIORITY_ARRIVAL, EVENT_ARRIVAL, task)

    # ------------------------------------------------------------------ events
    def _process_instant(self) -> None:
        """Process every event due at the current time."""
        events = self._events
        while events and events[0][0] <= self.now:
            _, _, _, kind, payload = heapq.heappop(events)
            if kind == EVENT_ARRIVAL:
                self.queue.append(cast(Task, payload))
                self.n_arrived += 1
            elif kind == EVENT_COMPLETION:
                self._complete(cast(int, payload))
            # EVENT_LOAD_DONE needs no state change: residency is booked at dispatch
            # so that no other task can evict a model while it loads.

    def _complete(self, task_id: int) -> None:
        outcome = self._running.pop(task_id, None)
        if outcome is None:
            raise SimulationError(f"task {task_id} completed twice or was never dispatched")
        for server_id in outcome.servers:
            server = self.servers[server_id]
            server.task_id = None
            self.free_mask |= 1 << server_id
        self.n_free += len(outcome.servers)
        self.n_completed += 1

    def next_event_time(self) -> SimTime | None:
        return self._events[0][0] if self._events else None

    @property
    def done(self) -> bool:
        """Every task has arrived and completed."""
        return self.n_completed == len(self.tasks)

    def advance(self) -> bool:
        """Move time forward to the next decision epoch.

        Returns True at a decision epoch (which may be the current instant, if a
        dispatch is still possible), False when the episode has ended."""
        while not self.has_decision():
            if not self._events:
                if not self.done:
                    raise SimulationError(
                        f"no events left but {len(self.tasks) - self.n_completed} tasks unfinished"
                    )
                return False
            self.now = self._events[0][0]
            self._process_instant()
        return True

    def wait(self) -> bool:
        """Skip the current decision epoch: jump to the next event, then to the next
        decision epoch. Returns False when the episode has ended."""
        if not self._events:
            raise SimulationError(
                f"wait at t={self.now} with no pending event: nothing would ever change"
            )
        self.now = self._events[0][0]
        self._process_instant()
        return self.advance()

    def run_to_end(self) -> None:
        """Process all remaining events (used once nothing is left to dispatch)."""
        while self._events:
            self.now = self._events[0][0]
            self._process_instant()

    # ------------------------------------------------------------------ queries
    def window(self) -> list[Task]:
        """The queued tasks visible to the scheduler, oldest first."""
        return self.queue[: self.preset.queue_window]

    def free_servers(self) -> list[int]:
        return [s.server_id for s in self.servers if s.task_id is None]

    def cross_site(self, servers: tuple[int, ...] | list[int]) -> bool:
        """The gang has members in two or more sites."""
        if self.n_sites == 1:
            return False
        sites = self.server_sites
        first = sites[servers[0]]
        return any(sites[i] != first for i in servers)

    def feasible_gang_sizes(self, task: Task) -> list[int]:
        """Gang sizes this task could start with now."""
        return self.placement.feasible_gang_sizes(task)

    def can_dispatch(self, task: Task) -> bool:
        return bool(self.placement.feasible_gang_sizes(task))

    def has_decision(self) -> bool:
        if not self.queue or self.n_free == 0:
            return False
        placement, seen = self.placement, set()
        for task in self.queue[: self.preset.queue_window]:
            need = (task.model, task.gang_size)  # tasks with equal needs start or not alike
            if need in seen:
                continue
            if placement.feasible_gang_sizes(task):
                return True
            seen.add(need)
        return False

    def steps_range(self, task: Task) -> range:
        """The steps a dispatch of ``task`` may use: its own when it has them (a trace's
        request; as the ``paper`` preset's tasks have their own gang size), else
        ``[min_steps, max_steps]``."""
        if task.steps is not None:
            return range(task.steps, task.steps + 1)
        return range(self.preset.min_steps, self.preset.max_steps + 1)

    def dispatchable(self) -> list[Task]:
        return [task for task in self.window() if self.can_dispatch(task)]

    def is_warm(self, server_id: int, model: str) -> bool:
        """Edge: the model is resident on the server."""
        return model in self.servers[server_id].resident

    def remaining_busy(self, server_id: int) -> float:
        server = self.servers[server_id]
        return 0.0 if server.task_id is None else max(0.0, server.busy_until - self.now)

    def gang_timing(self, task: Task, servers: tuple[int, ...]) -> GangTiming:
        """Expected timing of ``task`` on ``servers`` given current residency."""
        gpus = [self.servers[i].gpu for i in servers]
        warm = self.placement.warm(task, servers)
        if self.n_sites == 1:
            return self.latency.gang_timing(task.model, task.resolution, gpus, warm)
        return self.latency.gang_timing(
            task.model, task.resolution, gpus, warm, self.cross_site(servers)
        )

    # ------------------------------------------------------------------ dispatch
    def _validate(self, dispatch: Dispatch) -> tuple[Task, tuple[int, ...]]:
        task = next((t for t in self.window() if t.task_id == dispatch.task_id), None)
        if task is None:
            visible = [t.task_id for t in self.window()]
            raise SimulationError(
                f"task {dispatch.task_id} is not in the visible queue at t={self.now}; "
                f"visible: {visible}"
            )
        if not self.preset.min_steps <= dispatch.steps <= self.preset.max_steps:
            raise SimulationError(
                f"steps {dispatch.steps} outside [{self.preset.min_steps}, {self.preset.max_steps}]"
            )
        if task.steps is not None and dispatch.steps != task.steps:
            raise SimulationError(
                f"task {task.task_id} asks for {task.steps} steps (its own); the dispatch "
                f"has {dispatch.steps}"
            )
        if dispatch.servers is None:
            sizes = self.placement.gang_sizes(task)
            if self.placement.scheduler_places or len(sizes) != 1:
                raise SimulationError(f"dispatch of task {task.task_id} needs servers")
            servers = self.placement.choose_servers(task, sizes[0], None)
            if servers is None:
                raise SimulationError(
                    f"gang of {sizes[0]} requested with only {self.n_free} free servers"
                )
            return task, servers
        servers = tuple(dispatch.servers)
        if not servers:
            raise SimulationError(f"dispatch of task {task.task_id} needs servers")
        if len(set(servers)) != len(servers):
            raise SimulationError(f"servers {servers} repeat a server")
        for server_id in servers:
            if not 0 <= server_id < self.n_servers:
                raise SimulationError(
                    f"server {server_id} does not exist; servers are 0..{self.n_servers - 1}"
                )
            server = self.servers[server_id]
            if server.task_id is not None:
                raise SimulationError(f"server {server_id} is busy until {server.busy_until}")
        self.placement.check(task, servers)
        return task, servers

    def avg_wait_excluding(self, task: Task) -> float:
        """Mean waiting time of the first ``avg_wait_window`` queued tasks other than
        ``task`` (the reward's congestion term); 0 when none is queued."""
        window = self.preset.reward.avg_wait_window
        others = []
        for queued in self.queue:  # only the first `window` others matter
            if queued is not task:
                others.append(queued)
                if len(others) == window:
                    break
        return sum(self.now - t.arrival for t in others) / len(others) if others else 0.0

    def reward(self, task: Task, avg_wait: float, duration: float, steps: int) -> float:
        """Reward of dispatching ``task`` now for ``duration`` seconds with ``steps``
        steps, given :meth:`avg_wait_excluding` (:func:`eat.sim.reward.dispatch_reward`)."""
        return dispatch_reward(
            self.preset.reward,
            wait=self.now - task.arrival,
            avg_wait=avg_wait,
            duration=duration,
            quality=self.quality(steps),
            missed=self.now + duration > task.deadline,
        )

    def preview(self, dispatch: Dispatch) -> Outcome:
        """The expected outcome of ``dispatch`` without applying it (no noise)."""
        task, servers = self._validate(dispatch)
        timing = self.gang_timing(task, servers)
        duration = timing.duration(dispatch.steps)
        finish = self.now + duration
        return Outcome(
            task,
            servers,
            dispatch.steps,
            self.now,
            finish,
            timing,
            self.quality(dispatch.steps),
            self.reward(task, self.avg_wait_excluding(task), duration, dispatch.steps),
        )

    def dispatch(self, dispatch: Dispatch) -> Outcome:
        """Apply a decision: the gang starts now. Returns the realised outcome."""
        task, servers = self._validate(dispatch)
        timing = self.gang_timing(task, servers)
        compute = dispatch.steps * timing.step_s
        if self._noise_cv > 0:
            if self.rng is None:
                raise SimulationError("latency noise needs a generator: call reset(tasks, rng)")
            shape = 1.0 / self._noise_cv**2
            compute *= self.rng.gamma(shape, 1.0 / shape)
        duration = timing.setup_s + compute + timing.tail_s
        start, finish = self.now, self.now + duration
        outcome = Outcome(
            task,
            servers,
            dispatch.steps,
            start,
            finish,
            timing,
            self.quality(dispatch.steps),
            self.reward(task, self.avg_wait_excluding(task), duration, dispatch.steps),
        )
        self.queue.remove(task)
        self._book_servers(task, servers, timing, finish)
        self._running[task.task_id] = outcome
        self._schedule(finish, PRIORITY_COMPLETION, EVENT_COMPLETION, task.task_id)
        self._record(outcome)
        return outcome

    def _book_servers(
        self, task: Task, servers: tuple[int, ...], timing: GangTiming, finish: SimTime
    ) -> None:
        for server_id in servers:
            server = self.servers[server_id]
            server.task_id, server.busy_until = task.task_id, finish
            self.free_mask &= ~(1 << server_id)
        self.n_free -= len(servers)
        self.placement.book(task, servers, timing)

    def schedule_load_done(self, server_id: int, model: str, cold_start_s: SimTime) -> None:
        """A cold start that ends ``cold_start_s`` from now (residency is booked at
        dispatch, so that no other task can evict a model while it loads)."""
        self._schedule(
            self.now + cold_start_s, PRIORITY_LOAD_DONE, EVENT_LOAD_DONE, (server_id, model)
        )

    def _record(self, outcome: Outcome) -> None:
        task, cold = outcome.task, outcome.timing.member_cold_start_s
        self.records.append(
            task_record(
                task,
                outcome.servers,
                outcome.steps,
                outcome.start,
                outcome.finish,
                cold,
                outcome.quality,
                outcome.reward,
            )
        )
        self.segments.extend(segments(task, outcome.servers, outcome.start, outcome.finish, cold))
        self.n_records += 1
        if outcome.finish > self._horizon:
            self._horizon = outcome.finish
        if self.record_file is not None and len(self.records) >= self.record_file.flush_rows:
            self.flush_records()

    def flush_records(self) -> None:
        """Write the records kept in memory to the record file, and forget them."""
        if self.record_file is not None:
            self.record_file.append(self.records, self.segments)
            self.records, self.segments = [], []

    # ------------------------------------------------------------------ live driving
    # A real system (the testbed's controller, eat.testbed) mirrors its cluster in a
    # Simulator reset with no tasks, so that any Scheduler can decide on it: it sets
    # the clock to measured times, adds tasks as they arrive, applies decisions with
    # dispatch() (whose outcome and records are then predictions) and reports what
    # really happened: completions, failed gangs, servers down and up, residency.
    # No event is processed here: completions come from the real system.

    def advance_clock(self, now: SimTime) -> None:
        """Set the clock to a measured time. Predicted load-done events due by ``now``
        (they change no state) are dropped; predicted completions stay until the real
        ones are reported with :meth:`complete`."""
        if now < self.now:
            raise SimulationError(f"clock moved backwards: {now} < now {self.now}")
        self.now = now
        if any(event[3] == EVENT_LOAD_DONE and event[0] <= now for event in self._events):
            self._events = [
                event
                for event in self._events
                if not (event[3] == EVENT_LOAD_DONE and event[0] <= now)
            ]
            heapq.heapify(self._events)

    def add_arrival(self, task: Task) -> None:
        """``task`` arrives now: it joins the queue (its arrival must not be later)."""
        if task.task_id in self.tasks:
            raise SimulationError(f"task {task.task_id} already exists")
        if task.arrival > self.now:
            raise SimulationError(
                f"task {task.task_id} arrives at {task.arrival}, after now {self.now}"
            )
        self._check_task(task)
        self.tasks[task.task_id] = task
        self.queue.append(task)
        self.n_arrived += 1

    def _drop_completion(self, task_id: int) -> Outcome:
        outcome = self._running.get(task_id)
        if outcome is None:
            raise SimulationError(f"task {task_id} is not running at t={self.now}")
        self._events = [
            event
            for event in self._events
            if not (event[3] == EVENT_COMPLETION and event[4] == task_id)
        ]
        heapq.heapify(self._events)
        return outcome

    def complete(self, task_id: int) -> None:
        """The running ``task_id`` finished now (whatever was predicted): its servers
        are free."""
        self._drop_completion(task_id)
        self._complete(task_id)

    def requeue(self, task_id: int) -> None:
        """The gang running ``task_id`` failed: its servers are free and the task is
        back in the queue, in arrival order, to be dispatched again."""
        outcome = self._drop_completion(task_id)
        del self._running[task_id]
        for server_id in outcome.servers:
            self.servers[server_id].task_id = None
            self.free_mask |= 1 << server_id
        self.n_free += len(outcome.servers)
        task = outcome.task
        position = 0
        while position < len(self.queue) and (
            (self.queue[position].arrival, self.queue[position].task_id)
            < (task.arrival, task.task_id)
        ):
            position += 1
        self.queue.insert(position, task)

    def set_server_down(self, server_id: int, expected_back: SimTime) -> None:
        """A free server is out of service (its process died): busy with no task until
        :meth:`set_server_up`, expected back at ``expected_back`` (what schedulers
        read as its ``busy_until``); it has lost its resident models."""
        server = self.servers[server_id]
        if server.task_id is not None:
            raise SimulationError(
                f"server {server_id} runs task {server.task_id}; requeue it before taking "
                "the server down"
            )
        server.task_id, server.busy_until = SERVER_DOWN, expected_back
        for model in server.resident:
            self.resident_masks[model] &= ~(1 << server_id)
        server.resident.clear()
        self.free_mask &= ~(1 << server_id)
        self.n_free -= 1

    def set_server_up(self, server_id: int) -> None:
        """A server taken down with :meth:`set_server_down` is back in service."""
        server = self.servers[server_id]
        if server.task_id != SERVER_DOWN:
            raise SimulationError(f"server {server_id} is not down (task {server.task_id})")
        server.task_id, server.busy_until = None, self.now
        self.free_mask |= 1 << server_id
        self.n_free += 1

    def set_residency(self, server_id: int, models: list[str]) -> None:
        """The models resident on a server, least recently used first, as it reports."""
        unknown = sorted(set(models) - set(self.preset.models))
        if unknown:
            raise SimulationError(f"server {server_id}: unknown models {unknown}")
        bit = 1 << server_id
        for model in self.resident_masks:
            if model in models:
                self.resident_masks[model] |= bit
            else:
                self.resident_masks[model] &= ~bit
        self.servers[server_id].resident = OrderedDict.fromkeys(models)

    # ------------------------------------------------------------------ results
    def records_frame(self) -> pd.DataFrame:
        """One row per dispatched task (columns: :data:`RECORD_COLUMNS`)."""
        if self.record_file is not None:
            self.flush_records()
            return self.record_file.tasks_frame()
        return pd.DataFrame(self.records, columns=RECORD_COLUMNS)

    def segments_frame(self) -> pd.DataFrame:
        """One row per server per dispatched task (columns: :data:`SEGMENT_COLUMNS`)."""
        if self.record_file is not None:
            self.flush_records()
            return self.record_file.segments_frame()
        return pd.DataFrame(self.segments, columns=SEGMENT_COLUMNS)

    @property
    def horizon(self) -> SimTime:
        """Time of the last completion so far."""
        return self._horizon

    def standalone_latency(
        self, model: str, resolution: int, gang_size: int | None, steps: int | None = None
    ) -> float:
        """The SLO reference of a task: warm, on an empty cluster, on the fastest gang it
        could get (of its fixed size, or any size the cluster can host), at ``steps`` (a
        task's own) or else the preset's ``reference_steps``."""
        if steps is None:
            steps = self.preset.workload.deadline.reference_steps
        key = (model, resolution, gang_size, steps)
        known = self._standalone.get(key)
        if known is not None:
            return known
        probe = Task(-1, 0.0, model, resolution, math.inf, gang_size)
        capable = self.placement.capable(probe, free_only=False)
        # The fastest gang of a size is the fastest servers, or with sites the fastest
        # servers of one site (a gang across sites exchanges over the slower link).
        pools = [capable]
        if self.n_sites > 1:
            by_site: dict[int, list[int]] = {}
            for server_id in capable:
                by_site.setdefault(self.server_sites[server_id], []).append(server_id)
            pools += [members for members in by_site.values() if len(members) > 1]
        best = math.inf
        for size in self.placement.gang_sizes(probe):
            for pool in pools:
                if size > len(pool):
                    continue
                fastest = sorted(pool, key=lambda i: -self.server_specs[i][1])[:size]
                gpus = [self.server_specs[i][0] for i in fastest]
                if self.n_sites == 1:
                    timing = self.latency.gang_timing(model, resolution, gpus, [True] * size)
                else:
                    timing = self.latency.gang_timing(
                        model, resolution, gpus, [True] * size, self.cross_site(fastest)
                    )
                best = min(best, timing.duration(steps))
        if best == math.inf:
            raise SimulationError(f"no server of the cluster can hold {model!r}")
        self._standalone[key] = best
        return best

    def latency_scale(self) -> SimTime:
        """The preset's own time scale: the mean standalone latency
        (:meth:`standalone_latency`) of its workload's tasks, each model by its share,
        its resolutions and (fixed) gang sizes uniformly. Observations measure time in it."""
        workload = self.preset.workload
        total = sum(mix.share for mix in workload.models.values())
        gangs = workload.gang_sizes or [None]
        mean = 0.0
        for model, mix in workload.models.items():
            for resolution in mix.resolutions:
                for gang in gangs:
                    weight = mix.share / total / len(mix.resolutions) / len(gangs)
                    mean += weight * self.standalone_latency(model, resolution, gang)
        return mean

    def nominal_latency(self, model: str, resolution: int, steps: int | None = None) -> float:
        """Deadline reference: warm latency on one ``reference_gpu`` server at ``steps`` (a
        task's own) or else the preset's ``reference_steps``."""
        deadline = self.preset.workload.deadline
        if steps is None:
            steps = deadline.reference_steps
        return self.latency.nominal_latency_s(model, resolution, deadline.reference_gpu, steps)


def make_tasks(sim: Simulator, rate: float, rng: np.random.Generator) -> list[Task]:
    """Draw an episode's workload for ``sim``'s preset."""
    from eat.sim.workload import generate_tasks

    return generate_tasks(
        sim.preset.workload, rate, rng, sim.nominal_latency, sim.standalone_latency
    )


def episode_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for the workload and for the simulator's latency noise, so
    that every scheduler sees the same tasks for the same seed whatever it decides."""
    workload_seq, noise_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(workload_seq), np.random.default_rng(noise_seq)


__all__ = [
    "RECORD_COLUMNS",
    "SEGMENT_COLUMNS",
    "SERVER_DOWN",
    "Dispatch",
    "Outcome",
    "Server",
    "SimTime",
    "SimulationError",
    "Simulator",
    "episode_rngs",
    "make_tasks",
]

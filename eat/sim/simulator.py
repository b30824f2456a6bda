"""Discrete-event simulator of an edge GPU cluster serving text-to-image tasks.

Simulated time jumps from event to event (arrival, model load finished, gang
completion); there are no time ticks. A scheduler is asked to decide only at
*decision epochs*: a visible queued task can be dispatched now. It either
dispatches (a task, its gang of servers and a number of denoising steps) or waits
until the next event.

Two presets (``kind`` in params):

``paper``
    The EAT reference model (zzf1955/EAT). Each task's gang size is fixed at
    arrival. The servers are chosen by the reference rule: a free *warm group*
    (the servers that last ran a task together) of exactly that size if there is
    one, else the first free servers by id. The task is warm only if the chosen
    set equals an existing group; otherwise it pays the reload time, every group
    that the chosen servers belonged to dissolves, and the chosen set becomes a
    new group. Duration = per_step(c) x steps (+ reload(c) when cold).

``edge``
    Heterogeneous GPUs with memory-limited model residency (LRU eviction). The
    scheduler picks the gang (its size is the patch count) and the servers. Each
    member whose memory does not hold the task's model pays that model's cold
    start; the gang computes at the pace of its slowest member plus the
    per-step patch exchange, then decodes and returns the image.

Reward of a dispatch (0 for waiting), generalising the reference formula:
``min(cap, scale / (avg_wait + duration + wait)) + quality_weight * q(steps)
- deadline_penalty * missed``, where ``avg_wait`` is the mean waiting time of the
first ``avg_wait_window`` tasks still queued after this one leaves.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from eat.params import PresetConfig
from eat.sim.latency import GangTiming, PaperLatency, ProfileLatency
from eat.sim.quality import QualityCurve
from eat.sim.workload import Task

SimTime = float  # seconds

# Event priorities at equal times (lower first): servers are freed and models
# become resident before new arrivals are seen, so a decision epoch sees the whole
# state of its instant.
PRIORITY_COMPLETION = 0
PRIORITY_LOAD_DONE = 1
PRIORITY_ARRIVAL = 2

EVENT_COMPLETION = "completion"
EVENT_LOAD_DONE = "load_done"
EVENT_ARRIVAL = "arrival"

#: ``Server.task_id`` of a server that is out of service (live driving, set_server_down).
SERVER_DOWN = -1


class SimulationError(RuntimeError):
    """The simulator was misused (an invalid dispatch, waiting with nothing to wait for)."""


@dataclass
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
    """paper preset: id of the warm group this server belongs to."""

    @property
    def free(self) -> bool:
        return self.task_id is None


@dataclass(frozen=True)
class Dispatch:
    """A scheduling decision: run ``task_id`` with ``steps`` denoising steps on
    ``servers`` (None lets the preset's fixed rule choose, as the paper preset does)."""

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


RECORD_COLUMNS = [
    "task_id",
    "arrival",
    "model",
    "resolution",
    "deadline",
    "gang_size",
    "servers",
    "steps",
    "start",
    "finish",
    "waiting",
    "cold_start_s",
    "cold_starts",
    "service",
    "latency",
    "quality",
    "reward",
    "deadline_met",
]
SEGMENT_COLUMNS = ["server", "task_id", "start", "compute_start", "finish"]


class Simulator:
    """Event-driven cluster simulator; see the module docstring for the model."""

    def __init__(self, preset: PresetConfig) -> None:
        self.preset = preset
        self.kind = preset.kind
        self.quality = QualityCurve(preset.quality, preset.max_steps)
        self.latency: PaperLatency | ProfileLatency
        if preset.kind == "paper":
            self.latency = PaperLatency(preset)
        else:
            self.latency = ProfileLatency(preset)
        self.allowed_gang_sizes = sorted(preset.allowed_gang_sizes)
        self.server_specs: list[tuple[str, float, float]] = []
        for group in preset.servers:
            if isinstance(self.latency, ProfileLatency):  # calibrated: speed, catalogue memory
                spec = (
                    group.gpu,
                    self.latency.speed(group.gpu),
                    self.latency.memory_gb(group.gpu),
                )
            else:
                gpu = preset.gpu_types[group.gpu]
                spec = (group.gpu, gpu.speed, gpu.memory_gb)
            self.server_specs += [spec] * group.count
        self.n_servers = len(self.server_specs)
        self._noise_cv = preset.latency_noise_cv
        self.reset([], np.random.default_rng(0))

    # ------------------------------------------------------------------ set-up
    def reset(self, tasks: list[Task], rng: np.random.Generator) -> None:
        """Start a new episode with ``tasks`` (arrivals in the future are events)."""
        self.now: SimTime = 0.0
        self.rng = rng
        self.servers = [
            Server(i, gpu, speed, memory)
            for i, (gpu, speed, memory) in enumerate(self.server_specs)
        ]
        self.n_free = self.n_servers
        self.queue: list[Task] = []
        self.tasks = {task.task_id: task for task in tasks}
        if len(self.tasks) != len(tasks):
            raise SimulationError("task ids must be unique")
        self._events: list[tuple[SimTime, int, int, str, object]] = []
        self._sequence = itertools.count()
        self._running: dict[int, Outcome] = {}
        self._groups: dict[int, frozenset[int]] = {}
        self._group_ids = itertools.count()
        self.records: list[tuple] = []
        self.segments: list[tuple] = []
        self.n_completed = 0
        self.n_arrived = 0
        for task in sorted(tasks, key=lambda t: (t.arrival, t.task_id)):
            if task.arrival < 0:
                raise SimulationError(
                    f"task {task.task_id} arrives at negative time {task.arrival}"
                )
            self._schedule(task.arrival, PRIORITY_ARRIVAL, EVENT_ARRIVAL, task)
        self._process_instant()

    def _schedule(self, time: SimTime, priority: int, kind: str, payload: object) -> None:
        if time < self.now:
            raise SimulationError(f"event {kind} scheduled in the past: {time} < now {self.now}")
        heapq.heappush(self._events, (time, priority, next(self._sequence), kind, payload))

    # ------------------------------------------------------------------ events
    def _process_instant(self) -> None:
        """Process every event due at the current time."""
        events = self._events
        while events and events[0][0] <= self.now:
            _, _, _, kind, payload = heapq.heappop(events)
            if kind == EVENT_ARRIVAL:
                self.queue.append(payload)  # type: ignore[arg-type]
                self.n_arrived += 1
            elif kind == EVENT_COMPLETION:
                self._complete(payload)  # type: ignore[arg-type]
            # EVENT_LOAD_DONE needs no state change: residency is booked at dispatch
            # so that no other task can evict a model while it loads.

    def _complete(self, task_id: int) -> None:
        outcome = self._running.pop(task_id, None)
        if outcome is None:
            raise SimulationError(f"task {task_id} completed twice or was never dispatched")
        for server_id in outcome.servers:
            server = self.servers[server_id]
            server.task_id = None
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

    def fixed_gang_size(self, task: Task) -> int | None:
        return task.gang_size if self.kind == "paper" else None

    def feasible_gang_sizes(self, task: Task) -> list[int]:
        """Gang sizes this task could start with now."""
        if self.kind == "paper":
            size = task.gang_size or 1
            return [size] if size <= self.n_free else []
        model_memory = self.preset.models[task.model].memory_gb
        hosts = sum(1 for s in self.servers if s.task_id is None and s.memory_gb >= model_memory)
        return [size for size in self.allowed_gang_sizes if size <= hosts]

    def can_dispatch(self, task: Task) -> bool:
        if self.kind == "paper":
            return (task.gang_size or 1) <= self.n_free
        return bool(self.feasible_gang_sizes(task))

    def has_decision(self) -> bool:
        if not self.queue or self.n_free == 0:
            return False
        return any(self.can_dispatch(task) for task in self.window())

    def dispatchable(self) -> list[Task]:
        return [task for task in self.window() if self.can_dispatch(task)]

    def is_warm(self, server_id: int, model: str) -> bool:
        """Edge: the model is resident on the server."""
        return model in self.servers[server_id].resident

    def remaining_busy(self, server_id: int) -> float:
        server = self.servers[server_id]
        return 0.0 if server.task_id is None else max(0.0, server.busy_until - self.now)

    def paper_gang(self, gang_size: int) -> tuple[tuple[int, ...], bool]:
        """The reference server-selection rule: (servers, warm)."""
        for members in self._groups.values():
            if len(members) == gang_size and all(self.servers[i].task_id is None for i in members):
                return tuple(sorted(members)), True
        free = self.free_servers()
        if len(free) < gang_size:
            raise SimulationError(
                f"gang of {gang_size} requested with only {len(free)} free servers"
            )
        return tuple(free[:gang_size]), False

    def busy_warm_group_free_at(self, gang_size: int) -> SimTime | None:
        """paper: earliest time at which an intact warm group of this size becomes free
        (None if there is no such group)."""
        best = None
        for members in self._groups.values():
            if len(members) == gang_size:
                free_at = max(
                    self.now if self.servers[i].task_id is None else self.servers[i].busy_until
                    for i in members
                )
                best = free_at if best is None else min(best, free_at)
        return best

    def gang_timing(self, task: Task, servers: tuple[int, ...]) -> GangTiming:
        """Expected timing of ``task`` on ``servers`` given current residency."""
        if self.kind == "paper":
            members = frozenset(servers)
            warm = any(group == members for group in self._groups.values())
            return self.latency.gang_timing(len(servers), warm)  # type: ignore[call-arg]
        gpus = [self.servers[i].gpu for i in servers]
        warm_flags = [task.model in self.servers[i].resident for i in servers]
        return self.latency.gang_timing(  # type: ignore[call-arg]
            task.model, task.resolution, gpus, warm_flags
        )

    # ------------------------------------------------------------------ dispatch
    def _validate(self, dispatch: Dispatch) -> tuple[Task, tuple[int, ...]]:
        task = next((t for t in self.window() if t.task_id == dispatch.task_id), None)
        if task is None:
            raise SimulationError(
                f"task {dispatch.task_id} is not in the visible queue at t={self.now}"
            )
        if not self.preset.min_steps <= dispatch.steps <= self.preset.max_steps:
            raise SimulationError(
                f"steps {dispatch.steps} outside [{self.preset.min_steps}, {self.preset.max_steps}]"
            )
        if self.kind == "paper":
            if dispatch.servers is not None:
                raise SimulationError("the paper preset chooses servers itself; pass servers=None")
            servers, _ = self.paper_gang(task.gang_size or 1)
            return task, servers
        servers = dispatch.servers
        if not servers:
            raise SimulationError(f"edge dispatch of task {task.task_id} needs servers")
        if len(set(servers)) != len(servers):
            raise SimulationError(f"servers {servers} repeat a server")
        if len(servers) not in self.allowed_gang_sizes:
            raise SimulationError(
                f"gang size {len(servers)} not allowed; choose one of {self.allowed_gang_sizes}"
            )
        model_memory = self.preset.models[task.model].memory_gb
        for server_id in servers:
            if not 0 <= server_id < self.n_servers:
                raise SimulationError(f"server {server_id} does not exist")
            server = self.servers[server_id]
            if server.task_id is not None:
                raise SimulationError(f"server {server_id} is busy until {server.busy_until}")
            if server.memory_gb < model_memory:
                raise SimulationError(
                    f"server {server_id} ({server.memory_gb} GB) cannot hold {task.model} "
                    f"({model_memory} GB)"
                )
        return task, tuple(servers)

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
        steps, given :meth:`avg_wait_excluding` (see the module docstring)."""
        config = self.preset.reward
        wait = self.now - task.arrival
        latency_term = config.latency_scale / max(avg_wait + duration + wait, 1e-9)
        reward = min(config.latency_cap, latency_term)
        reward += config.quality_weight * self.quality(steps)
        if self.now + duration > task.deadline:
            reward -= config.deadline_penalty
        return reward

    def warm_groups(self) -> list[tuple[int, ...]]:
        """paper: the intact warm groups (servers that last ran a task together)."""
        return [tuple(sorted(members)) for members in self._groups.values()]

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
        self.n_free -= len(servers)
        if self.kind == "paper":
            members = frozenset(servers)
            if not any(group == members for group in self._groups.values()):
                touched = {self.servers[i].group for i in servers} - {None}
                for group_id in touched:
                    for member in self._groups.pop(group_id):  # type: ignore[arg-type]
                        self.servers[member].group = None
                group_id = next(self._group_ids)
                self._groups[group_id] = members
                for server_id in servers:
                    self.servers[server_id].group = group_id
            return
        model_memory = self.preset.models[task.model].memory_gb
        for server_id, cold in zip(servers, timing.member_cold_start_s, strict=True):
            server = self.servers[server_id]
            if task.model in server.resident:
                server.resident.move_to_end(task.model)
                continue
            used = sum(self.preset.models[m].memory_gb for m in server.resident)
            while server.resident and used + model_memory > server.memory_gb:
                evicted, _ = server.resident.popitem(last=False)
                used -= self.preset.models[evicted].memory_gb
            server.resident[task.model] = None
            self._schedule(
                self.now + cold, PRIORITY_LOAD_DONE, EVENT_LOAD_DONE, (server_id, task.model)
            )

    def _record(self, outcome: Outcome) -> None:
        task = outcome.task
        cold = outcome.timing.member_cold_start_s
        self.records.append(
            (
                task.task_id,
                task.arrival,
                task.model,
                task.resolution,
                task.deadline,
                len(outcome.servers),
                ",".join(map(str, outcome.servers)),
                outcome.steps,
                outcome.start,
                outcome.finish,
                outcome.start - task.arrival,
                outcome.cold_start_s,
                sum(1 for c in cold if c > 0),
                outcome.finish - outcome.start,
                outcome.finish - task.arrival,
                outcome.quality,
                outcome.reward,
                outcome.deadline_met,
            )
        )
        for server_id, member_cold in zip(outcome.servers, cold, strict=True):
            self.segments.append(
                (
                    server_id,
                    task.task_id,
                    outcome.start,
                    outcome.start + member_cold,
                    outcome.finish,
                )
            )

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
        if task.model not in self.preset.models:
            raise SimulationError(
                f"task {task.task_id}: model {task.model!r} is not in the preset; choose one "
                f"of {sorted(self.preset.models)}"
            )
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
        server.resident.clear()
        self.n_free -= 1

    def set_server_up(self, server_id: int) -> None:
        """A server taken down with :meth:`set_server_down` is back in service."""
        server = self.servers[server_id]
        if server.task_id != SERVER_DOWN:
            raise SimulationError(f"server {server_id} is not down (task {server.task_id})")
        server.task_id, server.busy_until = None, self.now
        self.n_free += 1

    def set_residency(self, server_id: int, models: list[str]) -> None:
        """The models resident on a server, least recently used first, as it reports."""
        unknown = sorted(set(models) - set(self.preset.models))
        if unknown:
            raise SimulationError(f"server {server_id}: unknown models {unknown}")
        self.servers[server_id].resident = OrderedDict.fromkeys(models)

    # ------------------------------------------------------------------ results
    def records_frame(self) -> pd.DataFrame:
        """One row per dispatched task (columns: :data:`RECORD_COLUMNS`)."""
        return pd.DataFrame(self.records, columns=RECORD_COLUMNS)

    def segments_frame(self) -> pd.DataFrame:
        """One row per server per dispatched task (columns: :data:`SEGMENT_COLUMNS`)."""
        return pd.DataFrame(self.segments, columns=SEGMENT_COLUMNS)

    @property
    def horizon(self) -> SimTime:
        """Time of the last completion so far."""
        return max((record[9] for record in self.records), default=0.0)

    def nominal_latency(self, model: str, resolution: int) -> float:
        """Deadline reference: warm latency on one ``reference_gpu`` server."""
        deadline = self.preset.workload.deadline
        if self.kind == "paper":
            per_step = self.latency.per_step_s[1]  # type: ignore[union-attr]
            return per_step * deadline.reference_steps
        return self.latency.nominal_latency_s(  # type: ignore[union-attr]
            model, resolution, deadline.reference_gpu, deadline.reference_steps
        )


def make_tasks(sim: Simulator, rate: float, rng: np.random.Generator) -> list[Task]:
    """Draw an episode's workload for ``sim``'s preset."""
    from eat.sim.workload import generate_tasks

    return generate_tasks(sim.preset.workload, rate, rng, sim.nominal_latency)


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

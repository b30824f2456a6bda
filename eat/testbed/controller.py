"""The controller: live arrivals, a shadow simulator, any scheduler, real gangs.

The controller runs on an asyncio loop (the HTTP service's, or its own for a workload
replay), so that arrivals, completions and decisions are handled one at a time
without locks.

**Shadow simulator.** The live cluster is mirrored in a
:class:`~eat.sim.simulator.Simulator` driven through its live-driving methods: a task
that arrives joins its queue (``add_arrival``), the clock is set to the measured
time (``advance_clock``), a decision is applied to both (``dispatch`` books the
shadow's servers and residency; the real gang starts on the workers), a worker's
report frees the shadow's servers (``complete``) and sets their residency to what
the workers report (``set_residency``). So every :class:`~eat.schedulers.base.Scheduler`
runs unchanged: ``decide(shadow)`` reads the same queue window, free servers, resident
models and expected timings as in simulation, and a learned agent observes
``Encoder(shadow).observe()``, built from live state. The shadow's *timings*
(``busy_until``, ``preview``, the outcome of ``dispatch``) are predictions from the
latency model; the recorded timings are the real ones measured here and on the
workers. Observation feature 6 (share of the episode's tasks not yet arrived) is 0:
an open system does not know its future arrivals.

**Decision epochs** are those of the simulator: after every arrival and completion
(and when a server comes back), as long as ``shadow.has_decision()``. A scheduler that
waits (``None``) is asked again at the next real event, or at the shadow's next
predicted event if that comes first.

**Faults.** A gang fails when its leader's process dies (``RayActorError``), a member
dies (:class:`~eat.testbed.worker.GangMemberFailed`), or it hangs: no result after
``max(hang_min_s, hang_factor x`` its predicted duration``)``. A hung gang's members are
pinged (pings run in the workers' control concurrency group, so a busy but live worker
answers); those that do not answer within ``ping_timeout_s`` are killed with
``ray.kill(no_restart=False)``, or the whole gang if every member answers (a live but
stuck gang: its state is unknown, so none of it is trusted). The controller then puts the
task back in the shadow's queue (``requeue``), takes the dead servers out of service
(``set_server_down``) until Ray has restarted them and they answer a ping
(``set_server_up``, with an empty cache), and the scheduler re-runs the task on the
servers it chooses. A task's result is accepted once, from the attempt that is
current, so no accepted task is lost or duplicated; a task still failing after
``max_attempts`` attempts, or failing for any other reason (an error in the task
itself), is reported failed: never silently dropped.

Records follow :data:`~eat.sim.simulator.RECORD_COLUMNS` (one row per task, its final
attempt), then testbed columns (measured phases, predictions, attempts). A long-running
service keeps only the latest ``history`` of them (:class:`ControllerSettings`), and the
shadow's bookkeeping of finished tasks with them, so its memory stays bounded.

**Observers** (:class:`ControllerEvents`, e.g. the job store of
:mod:`eat.testbed.jobrunner`) hear when a gang starts a task, when a failed gang's task
goes back to the queue, and when a worker goes down and comes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from eat.params import PresetConfig
from eat.schedulers.base import Scheduler
from eat.sim.records import RECORD_COLUMNS, SEGMENT_COLUMNS, segments, task_record
from eat.sim.reward import dispatch_reward
from eat.sim.simulator import Dispatch, Outcome, SimulationError, Simulator
from eat.sim.workload import Task
from eat.testbed import require
from eat.testbed.engine import GenerationRequest
from eat.testbed.worker import GangMemberFailed, GangResult, TaskSpec

log = logging.getLogger(__name__)

#: Testbed columns after RECORD_COLUMNS in :meth:`Controller.records_frame`.
EXTRA_COLUMNS = [
    "attempts",
    "leader_setup_s",
    "encode_s",
    "step_s_mean",
    "step_s_median",
    "compute_s",
    "decode_s",
    "png_s",
    "leader_s",
    "overhead_s",
    "predicted_service",
    "predicted_cold_start_s",
    "predicted_step_s",
    "decision_ms",
    "prompt",
    "seed",
]


class TaskFailed(RuntimeError):
    """A task could not be completed (see :attr:`Controller.failures`)."""


class TaskCancelled(RuntimeError):
    """A queued task was cancelled (:meth:`Controller.cancel`)."""


class ControllerEvents(Protocol):
    """What an observer of the controller hears (every call on the controller's loop)."""

    def task_started(self, task_id: int, attempt: int, servers: tuple[int, ...]) -> None:
        """A gang started ``attempt`` of the task on ``servers``."""

    def task_requeued(self, task_id: int, attempt: int, error: str) -> None:
        """The gang of ``attempt`` failed; the task is queued again."""

    def server_down(self, server: int) -> None:
        """A worker died (or hung and was killed) and is out of service."""

    def server_up(self, server: int) -> None:
        """A worker that was down answers again (Ray restarted it)."""


class RequestError(ValueError):
    """A request the testbed cannot run; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class TaskRequest:
    """What a client (or the workload replay) asks for."""

    model: str
    resolution: int
    prompt: str
    deadline_s: float | None
    """Seconds after arrival by which the image should be delivered (None: no target)."""
    seed: int
    negative_prompt: str | None = None


@dataclass
class TaskResult:
    """A completed task: its record (a row of :meth:`Controller.records_frame`) and image."""

    task_id: int
    record: dict[str, Any]
    png: bytes | None


@dataclass
class _Pending:
    task: Task
    request: TaskRequest
    future: asyncio.Future
    attempts: int = 0
    outcome: Outcome | None = None
    """The shadow's prediction for the current attempt."""
    start: float = 0.0
    decision_ms: float = 0.0
    avg_wait: float = 0.0
    running: bool = False


@dataclass
class ControllerSettings:
    guidance_scale: float
    max_attempts: int
    """Attempts per task before it is reported failed (faults only)."""
    restart_timeout_s: float
    """How long a dead worker may take to answer again before it stays out of service."""
    expected_restart_s: float
    """Predicted down time of a dead worker (what schedulers read as its busy_until)."""
    hang_factor: float
    hang_min_s: float
    """A gang is hung with no result after max(hang_min_s, hang_factor x predicted)."""
    ping_timeout_s: float
    """A hung gang's member that does not answer a ping within this is killed."""
    return_images: bool = True
    history: int | None = None
    """Completed tasks whose records stay in memory (None: all, as a replay needs)."""
    clock: Callable[[], float] = field(default=time.monotonic)


async def _awaited(ref: Any) -> Any:
    """A coroutine awaiting a Ray ObjectRef (what ``asyncio.wait_for`` can cancel)."""
    return await ref


def task_seed(seed: int, task_id: int) -> int:
    """The initial-noise seed of a workload task (fixed per workload seed and task)."""
    return int(zlib.crc32(f"{seed}/{task_id}".encode()))


class Controller:
    """Takes tasks, asks ``scheduler`` on the shadow simulator, runs gangs on ``workers``."""

    def __init__(
        self,
        preset: PresetConfig,
        workers: list[Any],
        scheduler: Scheduler,
        settings: ControllerSettings,
        *,
        rng: np.random.Generator,
    ) -> None:
        if preset.latency_noise_cv > 0:
            raise ValueError(
                "the shadow simulator predicts expected timings: the preset's "
                f"latency_noise_cv must be 0, got {preset.latency_noise_cv}"
            )
        if preset.n_servers != len(workers):
            raise ValueError(
                f"preset has {preset.n_servers} servers but {len(workers)} workers were given"
            )
        self.preset = preset
        self.workers = workers
        self.scheduler = scheduler
        self.settings = settings
        self.shadow = Simulator(preset)
        if not self.shadow.placement.scheduler_places:
            raise ValueError("the testbed needs a preset whose scheduler picks the servers")
        self.shadow.reset([], None)  # no noise: the shadow's timings are expectations
        # the scheduler's own stream (eat.evaluation.runner.scheduler_rng, as in simulation)
        self.scheduler.reset(self.shadow, rng)
        self._t0 = settings.clock()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._wakeup: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task] = set()
        self.records: list[dict[str, Any]] = []
        self.segments: list[tuple] = []
        self.failures: list[dict[str, Any]] = []
        self.down: set[int] = set()
        self.decision_seconds: list[float] = []
        self.n_completed = 0
        self.n_failed = 0
        self.events: ControllerEvents | None = None
        self._held = False

    def listen(self, events: ControllerEvents) -> None:
        """Tell ``events`` what happens from now on (one observer)."""
        self.events = events

    def hold(self) -> None:
        """Start no new gang (running ones finish): a stopping service, or a test that
        needs a queue that does not move."""
        self._held = True

    def release(self) -> None:
        """Undo :meth:`hold` and decide at once."""
        self._held = False
        self._decide()

    # ------------------------------------------------------------------ clock, queries
    def now(self) -> float:
        """Seconds since the controller started."""
        return self.settings.clock() - self._t0

    def status(self) -> dict[str, Any]:
        shadow = self.shadow
        return {
            "now": self.now(),
            "queued": len(shadow.queue),
            "running": self.running,
            "pending": len(self._pending),
            "completed": self.n_completed,
            "failed": self.n_failed,
            "held": self._held,
            "servers": [
                {
                    "server": s.server_id,
                    "free": s.task_id is None,
                    "down": s.server_id in self.down,
                    "task": s.task_id if s.task_id is not None and s.task_id >= 0 else None,
                    "resident": list(s.resident),
                }
                for s in shadow.servers
            ],
        }

    # ------------------------------------------------------------------ arrivals
    def validate(self, request: TaskRequest) -> None:
        """Raise :class:`RequestError` (with the allowed values) for a request the testbed
        cannot run."""
        workload = self.preset.workload
        if request.model not in workload.models:
            raise RequestError(
                "model",
                f"model {request.model!r} is not served; choose one of {sorted(workload.models)}",
            )
        allowed = workload.models[request.model].resolutions
        if request.resolution not in allowed:
            raise RequestError(
                "resolution",
                f"resolution {request.resolution} is not served for {request.model}; choose "
                f"one of {sorted(allowed)}",
            )
        if request.deadline_s is not None and not request.deadline_s > 0:
            raise RequestError(
                "deadline_s", f"deadline_s must be > 0 seconds, got {request.deadline_s}"
            )
        if not request.prompt.strip():
            raise RequestError("prompt", "prompt must not be blank")

    @property
    def queued(self) -> int:
        """Tasks waiting for a gang."""
        return len(self.shadow.queue)

    @property
    def running(self) -> int:
        """Tasks on a gang now."""
        return sum(1 for p in self._pending.values() if p.running)

    def task_state(self, task_id: int) -> str | None:
        """``"queued"`` or ``"running"`` for a task not yet finished, else None."""
        pending = self._pending.get(task_id)
        if pending is None:
            return None
        return "running" if pending.running else "queued"

    def submit(
        self, request: TaskRequest, task_id: int | None = None, waited_s: float = 0.0
    ) -> asyncio.Future:
        """Accept a task now; the future resolves to its :class:`TaskResult` (or raises
        :class:`TaskFailed`, or :class:`TaskCancelled`). Invalid requests raise
        :class:`RequestError` and queue nothing. ``waited_s``: how long ago the task
        really arrived (a job taken over from an earlier controller): its arrival and
        deadline are that much earlier on this controller's clock."""
        self.validate(request)
        if waited_s < 0:
            raise ValueError(f"waited_s must be >= 0, got {waited_s}")
        if task_id is None:
            task_id = self._next_id
        if task_id in self._pending or task_id in self.shadow.tasks:
            raise ValueError(f"task id {task_id} was already submitted")
        self._next_id = max(self._next_id, task_id + 1)
        now = self.now()
        arrival = now - waited_s
        deadline = arrival + request.deadline_s if request.deadline_s is not None else float("inf")
        task = Task(task_id, arrival, request.model, request.resolution, deadline, None)
        future = asyncio.get_running_loop().create_future()
        self._pending[task_id] = _Pending(task, request, future)
        self.shadow.advance_clock(now)
        self.shadow.add_arrival(task)
        self._decide()
        return future

    def cancel(self, task_id: int) -> bool:
        """Withdraw a queued task (its future raises :class:`TaskCancelled`); False if it
        is running or unknown."""
        pending = self._pending.get(task_id)
        if pending is None or pending.running:
            return False
        del self._pending[task_id]
        self.shadow.queue.remove(pending.task)
        # count it as finished in the shadow (an open system's bookkeeping only)
        self.shadow.n_completed += 1
        self._forget(task_id)
        pending.future.set_exception(TaskCancelled(f"task {task_id} was cancelled"))
        pending.future.exception()  # retrieved: nobody need await a cancelled task
        return True

    async def run_tasks(self, tasks: list[Task], prompts: list[str], seed: int) -> list[TaskResult]:
        """Replay a workload: each task is submitted at its arrival time (relative to
        now), with its workload id, model, resolution and deadline slack; returns when
        every task has completed (raises TaskFailed if one failed)."""
        if len(prompts) != len(tasks):
            raise ValueError(f"{len(tasks)} tasks but {len(prompts)} prompts")
        start = self.now()
        futures = []
        for task, prompt in sorted(zip(tasks, prompts, strict=True), key=lambda p: p[0].arrival):
            delay = start + task.arrival - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            slack = task.deadline - task.arrival if np.isfinite(task.deadline) else None
            request = TaskRequest(
                task.model, task.resolution, prompt, slack, task_seed(seed, task.task_id)
            )
            futures.append(self.submit(request, task_id=task.task_id))
        return list(await asyncio.gather(*futures))

    # ------------------------------------------------------------------ decisions
    def _decide(self) -> None:
        """Ask the scheduler until it waits or nothing can start (a decision epoch)."""
        shadow = self.shadow
        shadow.advance_clock(self.now())
        while shadow.has_decision() and not self._held:
            began = time.perf_counter()
            decision = self.scheduler.decide(shadow)
            elapsed = time.perf_counter() - began
            self.decision_seconds.append(elapsed)
            if decision is None:
                self._wake_at_next_prediction()
                return
            self._launch(decision, elapsed)

    def _wake_at_next_prediction(self) -> None:
        """After a wait: decide again at the shadow's next predicted event, if it is in
        the future (a real event may come first and decide sooner)."""
        upcoming = self.shadow.next_event_time()
        if upcoming is None or upcoming <= self.shadow.now:
            return
        if self._wakeup is not None:
            self._wakeup.cancel()
        delay = upcoming - self.now()
        self._wakeup = asyncio.get_running_loop().call_later(max(0.0, delay), self._decide)

    def _launch(self, decision: Dispatch, decision_s: float) -> None:
        pending = self._pending[decision.task_id]
        pending.avg_wait = self.shadow.avg_wait_excluding(pending.task)
        outcome = self.shadow.dispatch(decision)  # books the shadow; timings predicted
        pending.outcome = outcome
        pending.attempts += 1
        pending.start = self.now()
        pending.decision_ms = 1e3 * decision_s
        pending.running = True
        request = pending.request
        spec = TaskSpec(
            task_id=pending.task.task_id,
            attempt=pending.attempts,
            model=request.model,
            request=GenerationRequest(
                prompt=request.prompt,
                resolution=request.resolution,
                steps=decision.steps,
                guidance_scale=self.settings.guidance_scale,
                seed=request.seed,
                negative_prompt=request.negative_prompt,
            ),
            servers=outcome.servers,
            return_image=self.settings.return_images,
        )
        leader, *members = (self.workers[i] for i in outcome.servers)
        ref = leader.run_task.remote(spec, members)
        self._spawn(self._await_gang(spec, ref))
        if self.events is not None:
            self.events.task_started(spec.task_id, spec.attempt, spec.servers)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ completions
    async def _await_gang(self, spec: TaskSpec, ref: Any) -> None:
        ray = require("ray")
        outcome = self._pending[spec.task_id].outcome
        predicted = outcome.finish - outcome.start
        patience = max(self.settings.hang_min_s, self.settings.hang_factor * predicted)
        try:
            result: GangResult = await asyncio.wait_for(_awaited(ref), patience)
        except TimeoutError:
            await self._gang_hung(spec, patience, predicted)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, GangMemberFailed):
                self._gang_failed(spec, cause.server_ids, str(cause))
            else:
                self._task_error(spec, error)
        except ray.exceptions.RayActorError as error:  # the leader's process died
            self._gang_failed(spec, [spec.servers[0]], f"leader died: {error}")
        else:
            self._completed(spec, result)

    def _completed(self, spec: TaskSpec, result: GangResult) -> None:
        pending = self._pending.get(spec.task_id)
        if pending is None or pending.attempts != spec.attempt:  # a stale attempt
            log.warning("dropping result of task %d attempt %d", spec.task_id, spec.attempt)
            return
        finish = self.now()
        self.shadow.advance_clock(finish)
        self.shadow.complete(spec.task_id)
        for server, resident in result.resident_after.items():
            self.shadow.set_residency(server, resident)
        record = self._record(pending, result, finish)
        self.records.append(record)
        self.segments.extend(
            segments(pending.task, spec.servers, pending.start, finish, result.member_cold_start_s)
        )
        del self._pending[spec.task_id]
        self.n_completed += 1
        self._forget(spec.task_id)
        pending.future.set_result(TaskResult(spec.task_id, record, result.png))
        self._decide()

    def _forget(self, task_id: int) -> None:
        """Bound the memory of a long-running controller (``settings.history``): keep the
        latest records, and drop the shadow's bookkeeping of a finished task, which no
        decision reads again."""
        history = self.settings.history
        if history is None:
            return
        self.shadow.tasks.pop(task_id, None)
        for log_list in (
            self.records,
            self.segments,
            self.failures,
            self.decision_seconds,
            self.shadow.records,
            self.shadow.segments,
        ):
            if len(log_list) > 2 * history:  # trimmed in batches, not at every task
                del log_list[:-history]

    def _record(self, pending: _Pending, result: GangResult, finish: float) -> dict[str, Any]:
        """The task record (the simulator's columns, from measured times) and the
        testbed's own columns (:data:`EXTRA_COLUMNS`)."""
        task, outcome = pending.task, pending.outcome
        assert outcome is not None
        steps = len(result.step_s)
        service = finish - pending.start
        quality = self.shadow.quality(steps)
        reward = dispatch_reward(  # the simulator's reward with the measured duration
            self.preset.reward,
            wait=pending.start - task.arrival,
            avg_wait=pending.avg_wait,
            duration=service,
            quality=quality,
            missed=pending.start + service > task.deadline,
        )
        row = dict(
            zip(
                RECORD_COLUMNS,
                task_record(
                    task,
                    result.servers,
                    steps,
                    pending.start,
                    finish,
                    result.member_cold_start_s,
                    quality,
                    reward,
                ),
                strict=True,
            )
        )
        row.update(
            {
                "attempts": pending.attempts,
                "leader_setup_s": result.setup_s,
                "encode_s": result.encode_s,
                "step_s_mean": float(np.mean(result.step_s)),
                "step_s_median": float(np.median(result.step_s)),
                "compute_s": float(sum(result.step_s)),
                "decode_s": result.decode_s,
                "png_s": result.png_s,
                "leader_s": result.leader_s,
                "overhead_s": service - result.leader_s,
                "predicted_service": outcome.finish - outcome.start,
                "predicted_cold_start_s": outcome.cold_start_s,
                "predicted_step_s": outcome.timing.step_s,
                "decision_ms": pending.decision_ms,
                "prompt": pending.request.prompt,
                "seed": pending.request.seed,
            }
        )
        return row

    # ------------------------------------------------------------------ faults
    def _gang_failed(self, spec: TaskSpec, dead: list[int], message: str) -> None:
        pending = self._pending.get(spec.task_id)
        if pending is None or pending.attempts != spec.attempt:
            return
        now = self.now()
        self.shadow.advance_clock(now)
        self.shadow.requeue(spec.task_id)
        pending.running = False
        final = pending.attempts >= self.settings.max_attempts
        self.failures.append(
            {
                "time": now,
                "task_id": spec.task_id,
                "attempt": spec.attempt,
                "servers": ",".join(map(str, spec.servers)),
                "dead": ",".join(map(str, dead)),
                "error": message[:500],
                "final": final,
            }
        )
        log.warning(
            "task %d attempt %d failed on %s: %s", spec.task_id, spec.attempt, dead, message
        )
        for server in dead:
            if server not in self.down:
                self.down.add(server)
                self.shadow.set_server_down(server, now + self.settings.expected_restart_s)
                self._spawn(self._recover(server))
                if self.events is not None:
                    self.events.server_down(server)
        if final:
            self._give_up(spec.task_id, f"failed {pending.attempts} times: {message}")
        elif self.events is not None:
            self.events.task_requeued(spec.task_id, spec.attempt, message)
        self._decide()

    async def _gang_hung(self, spec: TaskSpec, patience: float, predicted: float) -> None:
        """No result in time: kill the members that do not answer (or the whole gang)."""
        ray = require("ray")
        answers = await asyncio.gather(
            *(
                asyncio.wait_for(self._ping(server), self.settings.ping_timeout_s)
                for server in spec.servers
            ),
            return_exceptions=True,
        )
        silent = [
            server
            for server, answer in zip(spec.servers, answers, strict=True)
            if isinstance(answer, BaseException)
        ]
        dead = silent or list(spec.servers)
        for server in dead:
            ray.kill(self.workers[server], no_restart=False)  # Ray restarts it
        self._gang_failed(
            spec,
            dead,
            f"hung: no result {patience:.1f} s after dispatch (predicted {predicted:.2f} s); "
            f"not answering a ping: {silent or 'none, the whole gang is restarted'}",
        )

    def _task_error(self, spec: TaskSpec, error: BaseException) -> None:
        """An error inside the task (not a dead process): fail it, never retry silently."""
        pending = self._pending.get(spec.task_id)
        if pending is None or pending.attempts != spec.attempt:
            return
        self.shadow.advance_clock(self.now())
        self.shadow.requeue(spec.task_id)
        self.failures.append(
            {
                "time": self.now(),
                "task_id": spec.task_id,
                "attempt": spec.attempt,
                "servers": ",".join(map(str, spec.servers)),
                "dead": "",
                "error": str(error)[:500],
                "final": True,
            }
        )
        self._give_up(spec.task_id, str(error))
        self._decide()

    def _give_up(self, task_id: int, message: str) -> None:
        """Remove a queued task for good and fail its future."""
        pending = self._pending.pop(task_id)
        shadow = self.shadow
        shadow.queue.remove(pending.task)
        # count it as finished in the shadow (an open system's bookkeeping only)
        shadow.n_completed += 1
        self.n_failed += 1
        self._forget(task_id)
        pending.future.set_exception(TaskFailed(f"task {task_id}: {message}"))

    async def _recover(self, server: int) -> None:
        """Wait until a dead worker answers again (Ray restarts it), then put it back."""
        ray = require("ray")
        deadline = self.settings.clock() + self.settings.restart_timeout_s
        state = None
        while state is None:
            remaining = deadline - self.settings.clock()
            if remaining <= 0:
                log.error("server %d did not come back; it stays out of service", server)
                return
            try:
                state = await asyncio.wait_for(self._ping(server), timeout=remaining)
            except TimeoutError:
                continue
            except ray.exceptions.ActorDiedError as error:  # restarts exhausted: gone
                log.error("server %d is gone for good: %s", server, error)
                return
            except ray.exceptions.RayActorError:  # still restarting
                await asyncio.sleep(0.2)
        self.shadow.advance_clock(self.now())
        self.shadow.set_server_up(server)
        self.shadow.set_residency(server, state["resident"])
        self.down.discard(server)
        log.info("server %d is back (pid %s)", server, state["pid"])
        if self.events is not None:
            self.events.server_up(server)
        self._decide()

    async def _ping(self, server: int) -> dict[str, Any]:
        return await self.workers[server].ping.remote()

    # ------------------------------------------------------------------ results
    def records_frame(self) -> pd.DataFrame:
        """One row per completed task: RECORD_COLUMNS, then EXTRA_COLUMNS."""
        frame = pd.DataFrame(self.records, columns=RECORD_COLUMNS + EXTRA_COLUMNS)
        return frame.sort_values("task_id", ignore_index=True)

    def segments_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.segments, columns=SEGMENT_COLUMNS)

    def failures_frame(self) -> pd.DataFrame:
        columns = ["time", "task_id", "attempt", "servers", "dead", "error", "final"]
        return pd.DataFrame(self.failures, columns=columns)

    async def drain(self) -> None:
        """Wait until every accepted task has completed or failed."""
        while self._pending:
            await asyncio.gather(
                *(p.future for p in list(self._pending.values())), return_exceptions=True
            )

    async def close(self) -> None:
        """Stop timers and wait for recoveries still running (bounded by their timeout)."""
        if self._wakeup is not None:
            self._wakeup.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


__all__ = [
    "EXTRA_COLUMNS",
    "Controller",
    "ControllerEvents",
    "ControllerSettings",
    "RequestError",
    "SimulationError",
    "TaskCancelled",
    "TaskFailed",
    "TaskRequest",
    "TaskResult",
    "task_seed",
]

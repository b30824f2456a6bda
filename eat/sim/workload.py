"""Seeded workload generators: when tasks arrive and what they ask for.

Arrival processes (``workload.process`` in params):

- ``poisson``: exponential inter-arrival times at ``rate`` (exact, no time ticks).
- ``mmpp``: a two-state Markov-modulated Poisson process (calm / burst) whose
  long-run mean rate is ``rate``; the burst state's rate is ``burst_ratio`` times
  the calm one and takes ``burst_share`` of the time.
- ``diurnal``: a non-homogeneous Poisson process with rate
  ``rate * (1 + amplitude * sin(2 pi t / period))``, sampled by thinning.
- ``trace``: replay of a CSV (columns ``arrival``, ``model``, ``resolution``, and
  optionally ``deadline`` as seconds after arrival, ``gang_size`` and ``steps``),
  time-scaled so that its mean rate equals ``rate``. ``trace_window`` says which rows
  an episode replays: the first ``total_tasks``, or as many consecutive rows from a
  start the seed draws. A ``steps`` value is the request's own step count: the task
  runs with exactly those steps whoever schedules it (as the ``paper`` preset's tasks
  run with their own gang size), and its deadline is drawn against its latency at
  those steps. Other columns are ignored (:mod:`eat.sim.traces` writes such files
  from the Alibaba GenTD26 trace).

Every random draw comes from the generator passed in, so a seed fixes the episode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from eat.params import WorkloadConfig

SimTime = float  # seconds


@dataclass
class Task:
    """One text-to-image request."""

    task_id: int
    arrival: SimTime
    model: str
    resolution: int
    """Image side length in pixels."""
    deadline: SimTime
    """Absolute time by which the image should be delivered (inf: no QoS target)."""
    gang_size: int | None
    """Servers the task must run on (paper preset), or None when the scheduler chooses."""
    steps: int | None = None
    """Denoising steps the request asks for (a trace's own), or None when the scheduler
    chooses them."""


def arrival_times(
    workload: WorkloadConfig, rate: float, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` arrival times (s, ascending, after t = 0) of the configured process."""
    if rate <= 0:
        raise ValueError(f"arrival rate must be > 0 tasks/s, got {rate}")
    if count == 0:
        return np.zeros(0)
    if workload.process == "poisson":
        return np.cumsum(rng.exponential(1.0 / rate, size=count))
    if workload.process == "mmpp":
        return _mmpp_arrivals(workload, rate, count, rng)
    if workload.process == "diurnal":
        return _diurnal_arrivals(workload, rate, count, rng)
    raise ValueError(
        f"process {workload.process!r} has no generator here; choose one of "
        "['diurnal', 'mmpp', 'poisson'] (traces go through load_trace)"
    )


def _mmpp_arrivals(
    workload: WorkloadConfig, rate: float, count: int, rng: np.random.Generator
) -> np.ndarray:
    share, ratio = workload.burst_share, workload.burst_ratio
    calm_rate = rate / (share * ratio + 1.0 - share)
    rates = (calm_rate, calm_rate * ratio)
    mean_sojourn = (
        workload.burst_mean_duration_s * (1.0 - share) / share,
        workload.burst_mean_duration_s,
    )
    state = int(rng.random() < share)  # start in the stationary distribution
    now, times = 0.0, []
    while len(times) < count:
        end = now + rng.exponential(mean_sojourn[state])
        t = now + rng.exponential(1.0 / rates[state])
        while t < end and len(times) < count:
            times.append(t)
            t += rng.exponential(1.0 / rates[state])
        now, state = end, 1 - state
    return np.asarray(times)


def _diurnal_arrivals(
    workload: WorkloadConfig, rate: float, count: int, rng: np.random.Generator
) -> np.ndarray:
    amplitude, period = workload.diurnal_amplitude, workload.diurnal_period_s
    peak = rate * (1.0 + amplitude)
    now, times = 0.0, []
    while len(times) < count:
        now += rng.exponential(1.0 / peak)
        current = rate * (1.0 + amplitude * math.sin(2.0 * math.pi * now / period))
        if rng.random() * peak <= current:
            times.append(now)
    return np.asarray(times)


def load_trace(path: str) -> pd.DataFrame:
    """Read a workload trace CSV and check its columns."""
    frame = pd.read_csv(path)
    missing = {"arrival", "model", "resolution"} - set(frame.columns)
    if missing:
        raise ValueError(f"trace {path} lacks columns {sorted(missing)}")
    if (frame["arrival"].diff().dropna() < 0).any():
        raise ValueError(f"trace {path}: arrivals must be in ascending order")
    if "steps" in frame.columns:
        steps = frame["steps"].dropna()
        bad = steps[(steps < 1) | (steps != steps.round())]
        if len(bad):
            raise ValueError(
                f"trace {path}: steps must be positive integers; row {bad.index[0]} has "
                f"{bad.iloc[0]!r}"
            )
    return frame


class NominalLatency(Protocol):
    """``nominal_latency(model, resolution[, steps])``: the reference service time slack
    deadlines multiply (at the preset's reference steps, or at a task's own)."""

    def __call__(self, model: str, resolution: int, steps: int | None = ..., /) -> float: ...


class Standalone(Protocol):
    """``standalone_latency(model, resolution, gang_size[, steps])``: the SLO reference
    of a task (at the preset's reference steps, or at a task's own)."""

    def __call__(
        self, model: str, resolution: int, gang_size: int | None, steps: int | None = ..., /
    ) -> float: ...


def generate_tasks(
    workload: WorkloadConfig,
    rate: float,
    rng: np.random.Generator,
    nominal_latency: NominalLatency | None = None,
    standalone_latency: Standalone | None = None,
) -> list[Task]:
    """Draw one episode's tasks.

    ``nominal_latency(model, resolution)`` gives the reference service time from which
    slack deadlines are drawn (``deadline.mode == "slack"``); ``standalone_latency`` the
    one SLO deadlines multiply (``"slo"``).
    """
    if workload.process == "trace":
        return _trace_tasks(workload, rate, rng, nominal_latency, standalone_latency)
    n_initial = workload.initial_tasks
    arrivals = np.concatenate(
        [np.zeros(n_initial), arrival_times(workload, rate, workload.total_tasks - n_initial, rng)]
    )
    return _tasks_at(workload, arrivals, 0, rng, nominal_latency, standalone_latency)


def sample_future_tasks(
    workload: WorkloadConfig,
    rate: float,
    start: SimTime,
    count: int,
    first_id: int,
    rng: np.random.Generator,
    nominal_latency: NominalLatency | None = None,
    standalone_latency: Standalone | None = None,
) -> list[Task]:
    """``count`` tasks arriving after ``start`` from the workload process at ``rate``,
    with ids from ``first_id``: what a planner that models the workload expects when it
    does not know the real future. The process restarts at ``start`` (exact for Poisson,
    which is memoryless; the burst state of ``mmpp`` and the phase of ``diurnal`` start
    afresh; ``trace`` is modelled as Poisson at its mean rate)."""
    if count <= 0:
        return []
    process = (
        workload
        if workload.process != "trace"
        else workload.model_copy(update={"process": "poisson"})
    )
    arrivals = start + arrival_times(process, rate, count, rng)
    return _tasks_at(workload, arrivals, first_id, rng, nominal_latency, standalone_latency)


def _tasks_at(
    workload: WorkloadConfig,
    arrivals: np.ndarray,
    first_id: int,
    rng: np.random.Generator,
    nominal_latency: NominalLatency | None,
    standalone_latency: Standalone | None,
) -> list[Task]:
    """Tasks arriving at ``arrivals``, their models, resolutions, gang sizes and deadlines
    drawn from the workload's mix (in this order: the draws of a seed are fixed)."""
    models = list(workload.models)
    shares = np.array([workload.models[m].share for m in models])
    model_index = rng.choice(len(models), size=len(arrivals), p=shares / shares.sum())
    tasks = []
    for offset, (arrival, index) in enumerate(zip(arrivals, model_index, strict=True)):
        model = models[index]
        resolutions = workload.models[model].resolutions
        resolution = int(resolutions[rng.integers(len(resolutions))])
        gang = int(rng.choice(workload.gang_sizes)) if workload.gang_sizes else None
        deadline = _draw_deadline(
            workload,
            float(arrival),
            model,
            resolution,
            gang,
            rng,
            nominal_latency,
            standalone_latency,
        )
        tasks.append(Task(first_id + offset, float(arrival), model, resolution, deadline, gang))
    return tasks


def _draw_deadline(
    workload: WorkloadConfig,
    arrival: float,
    model: str,
    resolution: int,
    gang: int | None,
    rng: np.random.Generator,
    nominal_latency: NominalLatency | None,
    standalone_latency: Standalone | None,
    steps: int | None = None,
) -> float:
    """The task's deadline; a task with its own ``steps`` is measured at those steps (the
    latency functions are asked with the steps only then, so plain two-argument ones
    serve every other workload)."""
    if workload.deadline.mode == "none":
        return math.inf
    if workload.deadline.mode == "slo":  # no draw: the SLO is a fixed multiple
        if standalone_latency is None:
            raise ValueError("deadline mode 'slo' needs a standalone_latency function")
        reference = (
            standalone_latency(model, resolution, gang)
            if steps is None
            else standalone_latency(model, resolution, gang, steps)
        )
        return arrival + workload.deadline.slo_scale * reference
    if nominal_latency is None:
        raise ValueError("deadline mode 'slack' needs a nominal_latency function")
    slack = rng.uniform(workload.deadline.slack_min, workload.deadline.slack_max)
    nominal = (
        nominal_latency(model, resolution)
        if steps is None
        else nominal_latency(model, resolution, steps)
    )
    return arrival + slack * nominal


def _trace_tasks(
    workload: WorkloadConfig,
    rate: float,
    rng: np.random.Generator,
    nominal_latency: NominalLatency | None,
    standalone_latency: Standalone | None,
) -> list[Task]:
    assert workload.trace_path is not None  # checked by params validation
    frame = load_trace(workload.trace_path)
    count = min(workload.total_tasks, len(frame))
    start = 0
    if workload.trace_window == "random":  # the first draw of the episode
        start = int(rng.integers(len(frame) - count + 1))
    frame = frame.iloc[start : start + count].reset_index(drop=True)
    arrivals = frame["arrival"].to_numpy(dtype=float)
    arrivals = arrivals - arrivals.min()
    span = arrivals.max()
    if len(arrivals) > 1 and span > 0:
        arrivals *= (len(arrivals) - 1) / span / rate  # mean rate becomes `rate`
    has_steps = "steps" in frame.columns
    tasks = []
    for task_id, (arrival, row) in enumerate(zip(arrivals, frame.itertuples(), strict=True)):
        model, resolution = str(row.model), int(row.resolution)
        if model not in workload.models:
            raise ValueError(f"trace row {task_id}: model {model!r} is not in workload.models")
        steps = int(row.steps) if has_steps and not pd.isna(row.steps) else None
        given = float(row.deadline) if "deadline" in frame.columns else math.nan
        draw = (workload, float(arrival), model, resolution)
        helpers = (rng, nominal_latency, standalone_latency)
        # the slack draw comes before the gang draw (the order of a seed's draws is fixed);
        # an SLO deadline draws nothing and needs the gang
        slo = workload.deadline.mode == "slo" and math.isnan(given)
        if not math.isnan(given):
            deadline = float(arrival) + given
        elif not slo:
            deadline = _draw_deadline(*draw, None, *helpers, steps)
        if "gang_size" in frame.columns and not pd.isna(row.gang_size):
            gang = int(row.gang_size)
        elif workload.gang_sizes:
            gang = int(rng.choice(workload.gang_sizes))
        else:
            gang = None
        if slo:
            deadline = _draw_deadline(*draw, gang, *helpers, steps)
        tasks.append(Task(task_id, float(arrival), model, resolution, deadline, gang, steps))
    return tasks

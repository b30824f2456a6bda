"""Run schedulers on simulated workloads: one episode, a warm lower bound, and sweeps."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from eat.evaluation.metrics import episode_metrics
from eat.params import PresetConfig
from eat.schedulers.base import Scheduler
from eat.sim.records import RecordFile
from eat.sim.simulator import Simulator, episode_rngs, make_tasks
from eat.sim.workload import Task


@dataclass
class EpisodeResult:
    """Everything one episode produced (frames in the schema of :mod:`eat.sim.simulator`)."""

    tasks: pd.DataFrame
    segments: pd.DataFrame
    n_servers: int
    horizon: float
    decision_seconds: list[float]

    def metrics(self) -> dict[str, float]:
        """The episode's metrics (:func:`eat.evaluation.metrics.episode_metrics`)."""
        return episode_metrics(
            self.tasks, self.segments, self.n_servers, self.horizon, self.decision_seconds
        )


def scheduler_rng(name: str, seed: int) -> np.random.Generator:
    """The scheduler's own stream: distinct per scheduler, fixed per workload seed."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def run_episode(
    preset: PresetConfig,
    scheduler: Scheduler,
    rate: float,
    seed: int,
    sim: Simulator | None = None,
    *,
    records_dir: Path | None = None,
) -> EpisodeResult:
    """Simulate one episode of ``preset`` at ``rate`` tasks/s with workload ``seed``.

    The workload depends on the seed only, so every scheduler sees the same tasks.
    Every task runs to completion (no time limit: the environment's truncation is a
    training device, not part of the evaluation). ``records_dir`` streams the records
    to CSV files there while the episode runs (:class:`~eat.sim.records.RecordFile`):
    the frames are read back from them, equal to those kept in memory, and a long
    episode holds its compact columns rather than a Python tuple per row."""
    sim = sim or Simulator(preset)
    workload_rng, noise_rng = episode_rngs(seed)
    tasks = make_tasks(sim, rate, workload_rng)
    decision_seconds = simulate(
        sim,
        scheduler,
        tasks,
        noise_rng,
        scheduler_rng(scheduler.name, seed),
        arrival_rate=rate,
        records_to=None if records_dir is None else RecordFile(records_dir),
    )
    return EpisodeResult(
        sim.records_frame(), sim.segments_frame(), sim.n_servers, sim.horizon, decision_seconds
    )


def simulate(
    sim: Simulator,
    scheduler: Scheduler,
    tasks: list[Task],
    noise_rng: np.random.Generator | None,
    scheduler_rng: np.random.Generator,
    *,
    arrival_rate: float | None = None,
    records_to: RecordFile | None = None,
) -> list[float]:
    """The episode loop: ``tasks`` on ``sim`` decided by ``scheduler`` until every task
    has completed; returns the wall-clock seconds of each decision (the records stay in
    ``sim``, or stream to ``records_to``). :func:`run_episode` draws the tasks and builds
    the frames around it."""
    sim.reset(tasks, noise_rng, arrival_rate=arrival_rate, records_to=records_to)
    scheduler.reset(sim, scheduler_rng)
    decision_seconds: list[float] = []
    clock = time.perf_counter
    ongoing = sim.advance()
    while ongoing:
        started = clock()
        decision = scheduler.decide(sim)
        decision_seconds.append(clock() - started)
        if decision is None:
            ongoing = sim.wait()
        else:
            sim.dispatch(decision)
            ongoing = sim.advance()
    if sim.n_records != len(sim.tasks):
        raise RuntimeError(f"{scheduler.name}: {len(sim.tasks) - sim.n_records} tasks never ran")
    return decision_seconds


def warm_floor_latency(preset: PresetConfig, rate: float, seed: int, steps: int) -> float:
    """Mean latency if every task ran at once, warm, on its fastest feasible gang, with
    ``steps`` steps: a lower bound that no scheduler can beat with those steps."""
    sim = Simulator(preset)
    workload_rng, _ = episode_rngs(seed)
    tasks = make_tasks(sim, rate, workload_rng)
    steps = min(max(steps, preset.min_steps), preset.max_steps)
    latencies = []
    for task in tasks:
        capable = sorted(
            (sim.servers[i] for i in sim.placement.capable(task, free_only=False)),
            key=lambda s: -s.speed,
        )
        best = np.inf
        for size in sim.placement.gang_sizes(task):
            if size > len(capable):
                break
            gpus = [s.gpu for s in capable[:size]]
            timing = sim.latency.gang_timing(task.model, task.resolution, gpus, [True] * size)
            best = min(best, timing.duration(steps))
        latencies.append(best)
    return float(np.mean(latencies))

"""Sweeps: many episodes (scheduler x rate x seed, and training seed for learned agents),
serially or in parallel through Ray, with the same results either way.

An :class:`EpisodeJob` names one episode; a :class:`SchedulerFactory` builds the
scheduler of a job in whatever process runs it (heuristics by name, planners from
``params.planners``, trained agents from ``models/``), so jobs travel to Ray workers as
plain data. :func:`run_sweep` groups the jobs of one scheduler and training seed into
chunks (a worker builds a scheduler, and loads a model, once per chunk), runs them
locally or on Ray (``parallel: ray``: a local instance on loopback, or the cluster at
``ray_address``), and returns the frames in the jobs' order, whatever the order in which
workers finish: every episode depends on its seeds only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import pandas as pd
from tqdm.auto import tqdm

from eat.evaluation.runner import EpisodeResult, run_episode
from eat.params import Params, PlannerName, PresetConfig
from eat.schedulers.base import Scheduler
from eat.sim.simulator import Simulator

PLANNERS: tuple[str, ...] = get_args(PlannerName)


@dataclass(frozen=True)
class EpisodeJob:
    """One episode of a sweep."""

    scheduler: str
    rate: float
    seed: int
    train_seed: int | None = None
    """The training seed of a learned scheduler (None for heuristics and planners)."""


@dataclass(frozen=True)
class SchedulerFactory:
    """Builds the scheduler of a job in any process (picklable: plain data)."""

    params: Params
    preset_name: str
    models_dir: Path | None = None
    """Where trained agents live (``models/<preset>/<agent>/seed<seed>``)."""

    def __call__(self, name: str, train_seed: int | None) -> Scheduler:
        from eat.schedulers import SCHEDULERS, make_scheduler

        if name in SCHEDULERS:
            return make_scheduler(name, self.params.schedulers)
        if name in PLANNERS:
            from eat.schedulers.rollout import make_planner

            return make_planner(name, self.params, self.preset_name)
        return self.trained(name, train_seed)

    def trained(self, name: str, train_seed: int | None) -> Scheduler:
        """A trained agent or ablation variant; FileNotFoundError names what is missing."""
        from eat.schedulers.rl.agent import load_scheduler  # torch only for learned agents
        from eat.stages.paths import model_dir

        if self.models_dir is None or train_seed is None:
            raise ValueError(f"scheduler {name!r} is learned: give models_dir and a train_seed")
        directory = model_dir(self.models_dir, self.preset_name, name, train_seed)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(
                f"no trained {name!r} on preset {self.preset_name!r} with training seed "
                f"{train_seed} at {directory}; run the train stage (dvc repro train) first"
            )
        return load_scheduler(directory, name=name)


@dataclass
class SweepResult:
    """Everything a sweep produced, in the jobs' order."""

    episodes: pd.DataFrame
    """One row of metrics per episode (with ``train_seed`` when any job has one)."""
    tasks: pd.DataFrame
    """Every task record, with preset, scheduler, rate and seed columns."""
    results: dict[EpisodeJob, EpisodeResult] = field(repr=False)
    nodes: dict[EpisodeJob, str] = field(default_factory=dict, repr=False)
    """The Ray node each job ran on (empty for a serial sweep): where, not what."""


MakeScheduler = Callable[[str, int | None], Scheduler]
"""What a sweep builds schedulers with: (name, training seed or None) -> a scheduler,
e.g. a :class:`SchedulerFactory`, or a function that knows a scheduler of one's own
(with ``parallel="ray"`` it must pickle: a module-level function or plain data)."""


def _run_chunk(
    preset: PresetConfig, factory: MakeScheduler, jobs: list[EpisodeJob]
) -> list[EpisodeResult]:
    """The episodes of one scheduler and training seed, on one simulator."""
    scheduler = factory(jobs[0].scheduler, jobs[0].train_seed)
    sim = Simulator(preset)
    return [run_episode(preset, scheduler, job.rate, job.seed, sim=sim) for job in jobs]


def _run_chunk_remote(
    preset: PresetConfig, factory: MakeScheduler, jobs: list[EpisodeJob]
) -> tuple[str, list[EpisodeResult]]:
    """A Ray task: :func:`_run_chunk`, and the id of the node it ran on."""
    import ray

    return ray.get_runtime_context().get_node_id(), _run_chunk(preset, factory, jobs)


def chunks(jobs: Sequence[EpisodeJob], size: int) -> list[list[EpisodeJob]]:
    """Consecutive runs of at most ``size`` jobs with one scheduler and training seed."""
    grouped: list[list[EpisodeJob]] = []
    for job in jobs:
        last = grouped[-1] if grouped else None
        same = last is not None and (last[0].scheduler, last[0].train_seed) == (
            job.scheduler,
            job.train_seed,
        )
        if same and len(last) < size:
            last.append(job)
        else:
            grouped.append([job])
    return grouped


def run_sweep(
    preset_name: str,
    preset: PresetConfig,
    jobs: Sequence[EpisodeJob],
    factory: MakeScheduler,
    *,
    parallel: Literal["serial", "ray"] = "serial",
    ray_address: str | None = None,
    num_cpus: int | None = None,
    chunk_size: int = 10,
    progress: bool = True,
    label: str | None = None,
) -> SweepResult:
    """Run ``jobs`` (module docstring); the result does not depend on ``parallel``."""
    groups = chunks(jobs, chunk_size)
    outcomes: list[list[EpisodeResult]] = []
    nodes: dict[EpisodeJob, str] = {}
    bar = tqdm(total=len(jobs), desc=label or f"evaluate {preset_name}", disable=not progress)
    if parallel == "serial":
        for group in groups:
            outcomes.append(_run_chunk(preset, factory, group))
            bar.update(len(group))
    elif parallel == "ray":
        from eat.distributed import import_ray, start_ray

        ray = import_ray()
        started = start_ray(ray_address, num_cpus=num_cpus)
        try:
            # SPREAD: a cluster's nodes share the chunks instead of the head running them
            remote = ray.remote(num_cpus=1, max_retries=2, scheduling_strategy="SPREAD")(
                _run_chunk_remote
            )
            preset_ref, factory_ref = ray.put(preset), ray.put(factory)
            pending = {
                remote.remote(preset_ref, factory_ref, group): i for i, group in enumerate(groups)
            }
            done_by_index: dict[int, list[EpisodeResult]] = {}
            waiting = list(pending)
            while waiting:
                finished, waiting = ray.wait(waiting, num_returns=1)
                index = pending[finished[0]]
                node, done_by_index[index] = ray.get(finished[0])
                nodes.update(dict.fromkeys(groups[index], node))
                bar.update(len(groups[index]))
            outcomes = [done_by_index[i] for i in range(len(groups))]
        finally:
            if started:
                ray.shutdown()
    else:
        raise ValueError(f"parallel {parallel!r} is not supported; choose one of ['ray', 'serial']")
    bar.close()
    rows, task_frames, results = [], [], {}
    with_train_seed = any(job.train_seed is not None for job in jobs)
    for group, group_results in zip(groups, outcomes, strict=True):
        for job, result in zip(group, group_results, strict=True):
            keys = {
                "preset": preset_name,
                "scheduler": job.scheduler,
                "rate": job.rate,
                "seed": job.seed,
            }
            if with_train_seed:
                keys["train_seed"] = job.train_seed
            rows.append({**keys, **result.metrics()})
            task_frames.append(result.tasks.assign(**keys))
            results[job] = result
    return SweepResult(
        pd.DataFrame(rows), pd.concat(task_frames, ignore_index=True), results, nodes
    )


def grid(
    schedulers: Sequence[str],
    rates: Sequence[float],
    seeds: Sequence[int],
    train_seeds: Sequence[int] | None = None,
) -> list[EpisodeJob]:
    """Every scheduler x rate x seed (x training seed, for learned schedulers)."""
    if train_seeds is None:
        return [EpisodeJob(s, rate, seed) for s in schedulers for rate in rates for seed in seeds]
    return [
        EpisodeJob(s, rate, seed, train_seed)
        for s in schedulers
        for train_seed in train_seeds
        for rate in rates
        for seed in seeds
    ]

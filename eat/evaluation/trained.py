"""Evaluating trained agents beside the heuristics: same test seeds, same metrics.

A learned agent has two sources of variation: its training seed and the test
workload. Every trained policy (``seeds.train[:n_seeds]``) runs every test workload
(``seeds.test[:n_seeds]``) at every rate, and :func:`aggregate_crossed` reports the
mean over all of them with a two-way (crossed) bootstrap interval: each resample
draws training seeds and test seeds independently with replacement, so the interval
covers both training variance and workload variance (a per-episode bootstrap would be
too narrow, a bootstrap over training seeds alone would ignore the workloads).

Also here: the structural latency floor of the ``paper`` preset.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from eat.params import PresetConfig
from eat.sim.simulator import Simulator, episode_rngs, make_tasks


def crossed_bootstrap_ci(
    matrix: np.ndarray, *, confidence: float, n_resamples: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    """Mean of a (training seeds x test seeds) matrix and its two-way bootstrap CI."""
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"matrix must be 2-D and non-empty, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("matrix has non-finite values")
    mean = float(matrix.mean())
    n_rows, n_cols = matrix.shape
    if n_rows * n_cols == 1:
        return mean, mean, mean
    rows = rng.integers(0, n_rows, size=(n_resamples, n_rows))
    cols = rng.integers(0, n_cols, size=(n_resamples, n_cols))
    means = matrix[rows[:, :, None], cols[:, None, :]].mean(axis=(1, 2))
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return mean, float(low), float(high)


def aggregate_crossed(
    episodes: pd.DataFrame,
    metrics: Sequence[str],
    *,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> pd.DataFrame:
    """Like :func:`eat.evaluation.metrics.aggregate` for rows with ``train_seed`` and ``seed``:
    one row per (preset, scheduler, rate) with ``n_seeds`` (test seeds),
    ``n_train_seeds``, and each metric's mean and crossed-bootstrap CI."""
    rows = []
    for (preset, scheduler, rate), group in episodes.groupby(
        ["preset", "scheduler", "rate"], sort=True
    ):
        if group.duplicated(["train_seed", "seed"]).any():
            raise ValueError(f"{preset}/{scheduler}/{rate}: a (train_seed, seed) pair repeats")
        row = {
            "preset": preset,
            "scheduler": scheduler,
            "rate": rate,
            "n_seeds": group["seed"].nunique(),
            "n_train_seeds": group["train_seed"].nunique(),
        }
        for metric in metrics:
            matrix = group.pivot(index="train_seed", columns="seed", values=metric).to_numpy(float)
            if np.isnan(matrix).any():
                raise ValueError(
                    f"{preset}/{scheduler}/{rate}: metric {metric!r} is NaN or the "
                    "train x test grid is incomplete"
                )
            key = repr((preset, scheduler, float(rate), metric)).encode()
            rng = np.random.default_rng([seed, zlib.crc32(key)])
            mean, low, high = crossed_bootstrap_ci(
                matrix, confidence=confidence, n_resamples=n_resamples, rng=rng
            )
            row[metric], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = mean, low, high
        rows.append(row)
    return pd.DataFrame(rows)


def paper_structural_floor(
    preset: PresetConfig, tasks: pd.DataFrame, rate: float, seeds: Sequence[int]
) -> dict[str, float]:
    """What no scheduler can remove on the ``paper`` preset, for the steps a scheduler
    chose (``tasks``: its task records at ``rate`` on ``seeds``).

    A provable per-task lower bound: every task runs warm at its own steps without
    waiting, except that the first task of each gang size in an episode is cold (a warm
    group of size c only exists after a task of size c ran on it). Returned with the
    scheduler's mean latency and the shares of it spent in reloads and waiting."""
    sim = Simulator(preset)
    latency = sim.latency
    gpus = [server.gpu for server in sim.servers]
    floors = []
    for seed in seeds:
        workload_rng, _ = episode_rngs(seed)
        workload = make_tasks(sim, rate, workload_rng)
        records = tasks[tasks["seed"] == seed].set_index("task_id")
        total = 0.0
        first_of_size: dict[int, str] = {}
        for task in workload:
            (size,) = sim.placement.gang_sizes(task)  # fixed per task on this preset
            steps = int(records.loc[task.task_id, "steps"])
            warm = latency.gang_timing(task.model, task.resolution, gpus[:size], [True] * size)
            total += warm.duration(steps)
            first_of_size.setdefault(size, task.model)
        total += sum(
            latency.cold_start_s(first_of_size[size], size) for size in sorted(first_of_size)
        )
        floors.append(total / len(workload))
    mean_latency = float(tasks["latency"].mean())
    return {
        "rate": rate,
        "latency_mean": mean_latency,
        "structural_floor": float(np.mean(floors)),
        "floor_share": float(np.mean(floors)) / mean_latency,
        "reload_share": float(tasks["cold_start_s"].mean()) / mean_latency,
        "waiting_share": float(tasks["waiting"].mean()) / mean_latency,
    }


__all__ = [
    "aggregate_crossed",
    "crossed_bootstrap_ci",
    "paper_structural_floor",
]

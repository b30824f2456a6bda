"""Evaluating trained agents beside the heuristics: same test seeds, same metrics.

A learned agent has two sources of variation: its training seed and the test
workload. Every trained policy (``seeds.train[:n_seeds]``) runs every test workload
(``seeds.test[:n_seeds]``) at every rate, and :func:`aggregate_crossed` reports the
mean over all of them with a two-way (crossed) bootstrap interval: each resample
draws training seeds and test seeds independently with replacement, so the interval
covers both training variance and workload variance (a per-episode bootstrap would be
too narrow, a bootstrap over training seeds alone would ignore the workloads).

Also here: the latency-reduction table of ``eat`` against every other scheduler, the
structural latency floor of the ``paper`` preset, and the ablation figure.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from eat.eval.runner import EpisodeResult, sweep
from eat.params import PresetConfig
from eat.sim.simulator import Simulator, episode_rngs, make_tasks

HEURISTIC_BASELINES = ("eft", "warm_first", "greedy")
"""The heuristics the issue names as 'the best heuristic' candidates."""


def model_dir(models_dir: Path, preset: str, agent: str, seed: int) -> Path:
    return Path(models_dir) / preset / agent / f"seed{seed}"


def evaluate_trained(
    preset_name: str,
    preset: PresetConfig,
    agent: str,
    models_dir: Path,
    train_seeds: Sequence[int],
    rates: Sequence[float],
    test_seeds: Sequence[int],
    episode_metrics: Callable[[EpisodeResult], dict[str, float]],
    *,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every trained policy of ``agent`` on every rate x test seed; rows carry
    ``train_seed``. Raises FileNotFoundError naming the missing model."""
    from eat.agents.rl.agent import load_scheduler  # torch only when agents are evaluated

    episode_frames, task_frames = [], []
    for train_seed in train_seeds:
        directory = model_dir(models_dir, preset_name, agent, train_seed)
        scheduler = load_scheduler(directory, name=agent)
        episodes, tasks, _ = sweep(
            preset_name,
            preset,
            [agent],
            lambda _name, scheduler=scheduler: scheduler,
            rates,
            test_seeds,
            episode_metrics,
            progress=progress,
        )
        episode_frames.append(episodes.assign(train_seed=train_seed))
        task_frames.append(tasks.assign(train_seed=train_seed))
    return pd.concat(episode_frames, ignore_index=True), pd.concat(task_frames, ignore_index=True)


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
    """Like :func:`eat.eval.metrics.aggregate` for rows with ``train_seed`` and ``seed``:
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


def reduction_table(aggregated: pd.DataFrame, preset: str, reference: str = "eat") -> pd.DataFrame:
    """Per rate: ``reference``'s mean latency, reward and quality beside every other
    scheduler's, the latency reduction ``1 - ref / other``, and which heuristic of
    :data:`HEURISTIC_BASELINES` is best (lowest latency) at that rate."""
    frame = aggregated[aggregated["preset"] == preset]
    ref = frame[frame["scheduler"] == reference].set_index("rate")
    rows = []
    for rate, group in frame.groupby("rate"):
        if rate not in ref.index:
            continue
        heuristics = group[group["scheduler"].isin(HEURISTIC_BASELINES)]
        best = (
            heuristics.loc[heuristics["latency_mean"].idxmin(), "scheduler"]
            if len(heuristics)
            else None
        )
        for _, other in group[group["scheduler"] != reference].iterrows():
            rows.append(
                {
                    "preset": preset,
                    "rate": rate,
                    "scheduler": other["scheduler"],
                    "best_heuristic": other["scheduler"] == best,
                    f"{reference}_latency": ref.loc[rate, "latency_mean"],
                    "latency": other["latency_mean"],
                    "latency_reduction": 1.0
                    - ref.loc[rate, "latency_mean"] / other["latency_mean"],
                    f"{reference}_reward": ref.loc[rate, "reward_mean"],
                    "reward": other["reward_mean"],
                    f"{reference}_quality": ref.loc[rate, "quality_mean"],
                    "quality": other["quality_mean"],
                }
            )
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
    floors = []
    for seed in seeds:
        workload_rng, _ = episode_rngs(seed)
        workload = make_tasks(sim, rate, workload_rng)
        records = tasks[tasks["seed"] == seed].set_index("task_id")
        total = 0.0
        for task in workload:
            size = task.gang_size or 1
            steps = int(records.loc[task.task_id, "steps"])
            total += latency.gang_timing(size, warm=True).duration(steps)  # type: ignore[call-arg]
        sizes = {task.gang_size or 1 for task in workload}
        total += sum(latency.reload_s[size] for size in sizes)  # type: ignore[union-attr]
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


def ablation_figure(aggregated: pd.DataFrame, labels: dict[str, str], path: Path) -> None:
    """Mean reward and latency (averaged over the rate sweep) of each ablation variant,
    with the crossed-bootstrap intervals averaged the same way."""
    names = [name for name in labels if name in set(aggregated["scheduler"])]
    frame = aggregated.set_index("scheduler")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, metric, title in (
        (axes[0], "reward_mean", "mean reward (higher is better)"),
        (axes[1], "latency_mean", "mean latency, s (lower is better)"),
        (axes[2], "quality_mean", "mean quality"),
    ):
        means, lows, highs = [], [], []
        for name in names:
            rows = frame.loc[[name]]
            means.append(rows[metric].mean())
            lows.append(rows[f"{metric}_ci_low"].mean())
            highs.append(rows[f"{metric}_ci_high"].mean())
        x = np.arange(len(names))
        errors = np.array([np.subtract(means, lows), np.subtract(highs, means)])
        ax.bar(x, means, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(x, [labels[name] for name in names], rotation=35, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        low = min(lows)
        ax.set_ylim(bottom=max(0.0, low - 0.15 * (max(highs) - low + 1e-9)))
    fig.suptitle("Ablation on the paper preset (mean over the arrival-rate sweep, 95% CI)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def training_curves(curves: pd.DataFrame, preset: str, path: Path) -> None:
    """Validation reward and latency against decisions, per agent: mean over training
    seeds with the min-max band (step 0 is the policy after behaviour cloning)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, metric, title in (
        (axes[0], "val/reward", "validation reward (higher is better)"),
        (axes[1], "val/latency", "validation latency, s (lower is better)"),
    ):
        for agent, frame in curves.groupby("agent", sort=True):
            stats = frame.groupby("global_step")[metric].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], marker="o", markersize=3, label=agent)
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15)
        ax.set_xlabel("decisions (SAC phase; 0 = after behaviour cloning)")
        ax.set_title(title, fontsize=10)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{preset}: training (validation seeds, every rate)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = [
    "HEURISTIC_BASELINES",
    "ablation_figure",
    "aggregate_crossed",
    "crossed_bootstrap_ci",
    "evaluate_trained",
    "model_dir",
    "paper_structural_floor",
    "reduction_table",
    "training_curves",
]

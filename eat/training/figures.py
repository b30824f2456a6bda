"""Training figures (the convention of :mod:`eat.plotting`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from eat.plotting import finish, new_figure_grid, outside_legend


def sac_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """The SAC phase's validation rows, with the last warm-start phase of each run (the
    policy SAC starts from) as step 0."""
    keys = [key for key in ("preset", "agent", "seed") if key in curves]
    warm = curves[curves["phase"] != "sac"]
    start = warm.groupby(keys, sort=False).tail(1) if keys else warm.tail(1)
    return pd.concat([start, curves[curves["phase"] == "sac"]], ignore_index=True)


def training_curves(curves: pd.DataFrame, preset: str, path: str | Path | None = None) -> Figure:
    """Validation reward and latency against SAC decisions, per agent: mean over training
    seeds with the min-max band (step 0 is the policy the warm start handed over)."""
    curves = sac_curves(curves)
    fig, axes = new_figure_grid((12, 4), 1, 2)
    for ax, metric, title in (
        (axes[0, 0], "val/reward", "validation reward (higher is better)"),
        (axes[0, 1], "val/latency", "validation latency, s (lower is better)"),
    ):
        for agent, frame in curves.groupby("agent", sort=True):
            stats = frame.groupby("global_step")[metric].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], marker="o", markersize=3, label=agent)
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15)
        ax.set_xlabel("decisions (SAC phase; 0 = after the warm start)")
        ax.set_title(title, fontsize=10)
    outside_legend(axes[0, 1])
    fig.suptitle(f"{preset}: training (validation seeds, every rate)")
    return finish(fig, path, dpi=110)


PHASE_ORDER = ("bc", "dagger", "sac")


def phase_order(phase: str) -> tuple[int, int]:
    """Sort key of training phases: bc, dagger1, dagger2, ..., sac."""
    for rank, prefix in enumerate(PHASE_ORDER):
        if phase.startswith(prefix):
            suffix = phase[len(prefix) :]
            return rank, int(suffix) if suffix.isdigit() else 0
    return len(PHASE_ORDER), 0


def phase_gains(phases: pd.DataFrame, preset: str, path: str | Path | None = None) -> Figure:
    """What each training phase adds: the validation reward after behaviour cloning,
    after every DAgger round and the best of SAC, per agent (mean over training seeds,
    min-max bars), beside the teacher's own validation reward when it is given."""
    fig, axes = new_figure_grid((7, 4), 1, 1)
    ax = axes[0, 0]
    order = sorted(phases["phase"].unique(), key=phase_order)
    positions = {phase: i for i, phase in enumerate(order)}
    agents = sorted(phases["agent"].unique())
    width = 0.8 / max(1, len(agents))
    for k, (agent, frame) in enumerate(phases.groupby("agent", sort=True)):
        stats = frame.groupby("phase")["val_reward"].agg(["mean", "min", "max"])
        stats = stats.loc[[p for p in order if p in stats.index]]
        x = [positions[p] + (k - (len(agents) - 1) / 2) * width for p in stats.index]
        ax.errorbar(
            x,
            stats["mean"],
            yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
            fmt="o-",
            capsize=3,
            label=agent,
        )
    if "teacher_val_reward" in phases and phases["teacher_val_reward"].notna().any():
        ax.axhline(
            float(phases["teacher_val_reward"].mean()),
            color="black",
            linestyle="--",
            linewidth=1,
            label="teacher",
        )
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel("training phase")
    ax.set_ylabel("validation reward (higher is better)")
    outside_legend(ax)
    fig.suptitle(f"{preset}: what each training phase adds (validation seeds, every rate)")
    return finish(fig, path, dpi=110)

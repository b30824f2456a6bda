"""Training figures (the convention of :mod:`eat.plotting`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from eat.plotting import finish, new_figure_grid, outside_legend


def training_curves(curves: pd.DataFrame, preset: str, path: str | Path | None = None) -> Figure:
    """Validation reward and latency against decisions, per agent: mean over training
    seeds with the min-max band (step 0 is the policy after behaviour cloning)."""
    fig, axes = new_figure_grid((12, 4), 1, 2)
    for ax, metric, title in (
        (axes[0, 0], "val/reward", "validation reward (higher is better)"),
        (axes[0, 1], "val/latency", "validation latency, s (lower is better)"),
    ):
        for agent, frame in curves.groupby("agent", sort=True):
            stats = frame.groupby("global_step")[metric].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], marker="o", markersize=3, label=agent)
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15)
        ax.set_xlabel("decisions (SAC phase; 0 = after behaviour cloning)")
        ax.set_title(title, fontsize=10)
    outside_legend(axes[0, 1])
    fig.suptitle(f"{preset}: training (validation seeds, every rate)")
    return finish(fig, path, dpi=110)

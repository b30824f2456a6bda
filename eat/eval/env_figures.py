"""Sanity figures of a built environment: latency table, sample workload, quality curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from eat.eval.figures import _finish, _new_figure, _outside_legend
from eat.sim.quality import QualityCurve


def latency_table_figure(
    table: pd.DataFrame, preset: str, path: str | Path | None = None
) -> Figure:
    """Per-step latency against gang size (patches), one line per GPU type, model and
    resolution (log y): how much patch parallelism buys on each GPU."""
    fig, ax = _new_figure((8.0, 4.5))
    for (model, resolution, gpu), rows in table.groupby(["model", "resolution", "gpu"]):
        rows = rows.sort_values("patches")
        ax.plot(
            rows["patches"],
            rows["step_s"] * 1e3,
            marker="o",
            label=f"{model} {resolution}px on {gpu}",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("gang size = patches")
    ax.set_ylabel("time per denoising step (ms)")
    ax.set_title(f"{preset}: per-step latency used by the simulator (warm)")
    _outside_legend(
        ax, ncols=1 if table.groupby(["model", "resolution", "gpu"]).ngroups < 16 else 2
    )
    return _finish(fig, path)


def workload_figure(workload: pd.DataFrame, preset: str, path: str | Path | None = None) -> Figure:
    """Cumulative arrivals of the sample episodes (one line per seed)."""
    fig, ax = _new_figure((8.0, 4.0))
    for seed, rows in workload.groupby("seed"):
        times = np.sort(rows["arrival"].to_numpy())
        ax.step(times, np.arange(1, len(times) + 1), where="post", label=f"seed {seed}")
    ax.set_xlabel("arrival time (s)")
    ax.set_ylabel("tasks arrived")
    mix = workload.groupby(["model", "resolution"]).size()
    shares = ", ".join(f"{m} {r}px: {n / mix.sum():.0%}" for (m, r), n in mix.items())
    ax.set_title(f"{preset}: sample workload ({shares})", fontsize="small")
    _outside_legend(ax)
    return _finish(fig, path)


def quality_curve_figure(
    curve: QualityCurve, min_steps: int, max_steps: int, path: str | Path | None = None
) -> Figure:
    """The steps-to-quality curve used by the reward and the metrics."""
    fig, ax = _new_figure((6.0, 3.5))
    steps = np.arange(0, max_steps + 1)
    ax.plot(steps, [curve(int(s)) for s in steps], marker=".", label=curve.config.curve)
    ax.axvspan(min_steps, max_steps, color="grey", alpha=0.1, label="allowed steps")
    ax.set_xlabel("denoising steps")
    ax.set_ylabel("quality q(steps)")
    ax.set_title("steps-to-quality curve")
    _outside_legend(ax)
    return _finish(fig, path)

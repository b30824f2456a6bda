"""Sanity figures of a built environment: latency table, sample workload, quality curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eat.plotting import finish, new_figure, outside_legend, plain_log_ticks
from eat.sim.quality import QualityCurve


def latency_table_figure(
    table: pd.DataFrame, preset: str, path: str | Path | None = None
) -> Figure:
    """Per-step latency against gang size (patches): one panel per model and resolution,
    one line per GPU type of the cluster (log y), i.e. how much patch parallelism buys
    on each GPU, communication included."""
    panels = list(table.groupby(["model", "resolution"]))
    gpus = list(dict.fromkeys(table["gpu"]))
    colours = dict(zip(gpus, sns.color_palette("colorblind", len(gpus)), strict=True))
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(3.2 * len(panels) + 1.5, 3.6), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, ((model, resolution), rows) in zip(axes, panels, strict=True):
        for gpu, per_gpu in rows.groupby("gpu", sort=False):
            per_gpu = per_gpu.sort_values("patches")
            ax.plot(
                per_gpu["patches"],
                per_gpu["step_s"] * 1e3,
                marker="o",
                label=gpu,
                color=colours[gpu],
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
        ax.set_xticks(sorted(rows["patches"].unique()))
        ax.set_xticklabels([str(p) for p in sorted(rows["patches"].unique())])
        ax.set_title(f"{model} {resolution} px", fontsize="medium")
        ax.set_xlabel("gang size = patches")
    axes[0].set_ylabel("time per denoising step (ms)")
    fig.suptitle(f"{preset}: per-step latency used by the simulator (warm)")
    outside_legend(axes[-1], title="GPU")
    return finish(fig, path)


def workload_figure(workload: pd.DataFrame, preset: str, path: str | Path | None = None) -> Figure:
    """Cumulative arrivals of the sample episodes (one line per seed)."""
    fig, ax = new_figure((8.0, 4.0))
    for seed, rows in workload.groupby("seed"):
        times = np.sort(rows["arrival"].to_numpy())
        ax.step(times, np.arange(1, len(times) + 1), where="post", label=f"seed {seed}")
    ax.set_xlabel("arrival time (s)")
    ax.set_ylabel("tasks arrived")
    mix = workload.groupby(["model", "resolution"]).size()
    shares = ", ".join(f"{m} {r}px: {n / mix.sum():.0%}" for (m, r), n in mix.items())
    ax.set_title(f"{preset}: sample workload ({shares})", fontsize="small")
    outside_legend(ax)
    return finish(fig, path)


def quality_curve_figure(
    curve: QualityCurve, min_steps: int, max_steps: int, path: str | Path | None = None
) -> Figure:
    """The steps-to-quality curve used by the reward and the metrics."""
    fig, ax = new_figure((6.0, 3.5))
    steps = np.arange(0, max_steps + 1)
    ax.plot(steps, [curve(int(s)) for s in steps], marker=".", label=curve.config.curve)
    ax.axvspan(min_steps, max_steps, color="grey", alpha=0.1, label="allowed steps")
    ax.set_xlabel("denoising steps")
    ax.set_ylabel("quality q(steps)")
    ax.set_title("steps-to-quality curve")
    outside_legend(ax)
    return finish(fig, path)

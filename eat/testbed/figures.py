"""Testbed figures (the convention of :mod:`eat.plotting`): real against simulated
latency, the sim-to-real gap per scheduler, where the service time goes, and a grid of
the images produced."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from eat.plotting import finish, new_figure, new_figure_grid
from eat.testbed import require


def latency_scatter(comparison: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Per task: testbed latency against simulated latency, by scheduler."""
    fig, ax = new_figure((5.5, 5))
    for name, frame in comparison.groupby("scheduler", sort=False):
        ax.scatter(frame["latency_sim"], frame["latency"], label=name, alpha=0.8)
    top = float(max(comparison["latency"].max(), comparison["latency_sim"].max())) * 1.05
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="real = sim")
    ax.set(
        xlabel="simulated latency (s)",
        ylabel="testbed latency (s)",
        title="Per task: testbed vs simulator",
        xlim=(0, top),
        ylim=(0, top),
    )
    ax.legend()
    return finish(fig, path)


def latency_bars(summary: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Mean latency per scheduler on the testbed and in the simulator, with their ratio."""
    fig, ax = new_figure((6.5, 4))
    x = np.arange(len(summary))
    width = 0.38
    ax.bar(x - width / 2, summary["real_latency_mean"], width, label="testbed")
    ax.bar(x + width / 2, summary["sim_latency_mean"], width, label="simulator")
    for i, ratio in enumerate(summary["latency_gap_ratio"]):
        top = max(summary["real_latency_mean"].iloc[i], summary["sim_latency_mean"].iloc[i])
        ax.annotate(f"x{ratio:.2f}", (i, top), ha="center", va="bottom")
    ax.set_xticks(x, summary["scheduler"])
    ax.set(ylabel="mean latency (s)", title="Sim-to-real gap per scheduler")
    ax.legend()
    return finish(fig, path)


def breakdown_bars(comparison: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Mean real service split into its measured phases, beside the predicted service."""
    parts = comparison.assign(
        compute=comparison["compute_s"],
        setup=comparison["leader_setup_s"],
        decode_png=comparison["decode_s"] + comparison["png_s"],
        dispatch_overhead=comparison["overhead_s"],
    )
    names = list(dict.fromkeys(comparison["scheduler"]))
    means = parts.groupby("scheduler")[
        ["setup", "compute", "decode_png", "dispatch_overhead", "predicted_service"]
    ].mean()
    means = means.loc[names]
    fig, ax = new_figure((7, 4))
    x = np.arange(len(names))
    bottom = np.zeros(len(names))
    for column in ("setup", "compute", "decode_png", "dispatch_overhead"):
        ax.bar(x - 0.2, means[column], 0.38, bottom=bottom, label=f"testbed: {column}")
        bottom += means[column].to_numpy()
    ax.bar(x + 0.2, means["predicted_service"], 0.38, label="shadow prediction", color="grey")
    ax.set_xticks(x, names)
    ax.set(ylabel="mean service time (s)", title="Where the service time goes")
    ax.legend(fontsize=8)
    return finish(fig, path)


def interleave(images: list[tuple[str, bytes]], count: int) -> list[tuple[str, bytes]]:
    """Up to ``count`` images taken in turn from each scheduler (titles start with it)."""
    by_scheduler: dict[str, list[tuple[str, bytes]]] = {}
    for image in images:
        by_scheduler.setdefault(image[0].split(" ")[0], []).append(image)
    chosen: list[tuple[str, bytes]] = []
    while len(chosen) < count and any(by_scheduler.values()):
        for queue in by_scheduler.values():
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen


def image_grid(
    images: list[tuple[str, bytes]], path: str | Path | None = None, columns: int = 4
) -> Figure | None:
    """The images (title, PNG bytes) in a grid; None when there is none."""
    if not images:
        return None
    pil = require("PIL.Image")
    rows = math.ceil(len(images) / columns)
    fig, axes = new_figure_grid((2.6 * columns, 2.9 * rows), rows, columns, style="white")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, png) in zip(axes.flat, images, strict=False):
        ax.imshow(pil.open(io.BytesIO(png)))
        ax.set_title(title, fontsize=7)
    return finish(fig, path, dpi=100)

"""Figures of the profile stage: measured and fitted per-step latency against patches,
speed-up against the ideal, cold-start cost per model, and fitted against measured.

Same conventions as :mod:`eat.evaluation.figures`: data frames in, a standalone ``Figure`` out,
a PNG at ``path`` when given one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eat.latency.fit import StepMode, fit_profile, step_points
from eat.plotting import finish, new_figure, outside_legend, plain_log_ticks

__all__ = ["cold_start_bars", "fitted_vs_measured", "speedup_vs_ideal", "steps_vs_patches"]


def _panels(n: int, width: float = 3.6) -> tuple[Figure, np.ndarray]:
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(width * n + 1.6, 3.6), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, n, squeeze=False)[0]
    return fig, axes


def _resolution_colours(points: pd.DataFrame) -> dict[int, tuple[float, float, float]]:
    """One colour per resolution, the same in every panel."""
    resolutions = sorted(points["resolution"].unique())
    return dict(zip(resolutions, sns.color_palette("viridis", len(resolutions)), strict=True))


def _widest(axes: np.ndarray, groups: list) -> object:
    """The panel with the most resolutions (its legend names them all)."""
    counts = [rows["resolution"].nunique() for _, rows in groups]
    return axes[int(np.argmax(counts))]


def steps_vs_patches(
    frame: pd.DataFrame,
    mode: StepMode,
    title: str = "",
    path: str | Path | None = None,
) -> Figure:
    """Per-step latency against patches (log-log): one panel per model and batch, one
    colour per resolution; dots are measured, lines the fitted curve."""
    points = step_points(frame, mode)
    fit = fit_profile(frame, mode)
    groups = list(points.groupby(["model", "batch"]))
    colour_of = _resolution_colours(points)
    fig, axes = _panels(len(groups))
    for ax, ((model, batch), rows) in zip(axes, groups, strict=True):
        curve = fit.step[(str(model), int(batch))]
        for resolution in sorted(rows["resolution"].unique()):
            colour = colour_of[resolution]
            measured = rows[rows["resolution"] == resolution].sort_values("patches")
            ax.plot(
                measured["patches"],
                measured["seconds"] * 1e3,
                "o",
                color=colour,
                label=f"{resolution} px",
            )
            dense = np.geomspace(measured["patches"].min(), measured["patches"].max(), 40)
            ax.plot(
                dense,
                [curve(resolution**2 / p, resolution) * 1e3 for p in dense],
                "-",
                color=colour,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
        patches = sorted(rows["patches"].unique())
        ax.set_xticks(patches)
        ax.set_xticklabels([str(p) for p in patches])
        ax.set_title(f"{model}, batch {batch}", fontsize="medium")
        ax.set_xlabel("row patches (servers)")
    axes[0].set_ylabel("time per denoising step (ms)")
    device = frame["device"].dropna().iloc[0] if frame["device"].notna().any() else ""
    fig.suptitle(f"{title}: per-step latency, {mode} ({device}); dots measured, lines fitted")
    outside_legend(_widest(axes, groups), title="resolution")
    return finish(fig, path)


def speedup_vs_ideal(
    frame: pd.DataFrame,
    mode: StepMode,
    title: str = "",
    path: str | Path | None = None,
) -> Figure:
    """Compute speed-up of a patch-parallel step, t(1 patch) / t(n patches), against the
    ideal n (communication excluded): the fixed per-step overhead caps it."""
    points = step_points(frame, mode)
    groups = list(points.groupby(["model", "batch"]))
    colour_of = _resolution_colours(points)
    fig, axes = _panels(len(groups))
    for ax, ((model, batch), rows) in zip(axes, groups, strict=True):
        top = int(rows["patches"].max())
        ax.plot([1, top], [1, top], "--", color="grey", label="ideal")
        for resolution in sorted(rows["resolution"].unique()):
            colour = colour_of[resolution]
            measured = rows[rows["resolution"] == resolution].set_index("patches")["seconds"]
            if 1 not in measured.index:
                continue
            ax.plot(
                measured.index,
                measured.loc[1] / measured,
                "o-",
                color=colour,
                label=f"{resolution} px",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ticks = sorted(rows["patches"].unique())
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(p) for p in ticks])
        ax.set_yticks(ticks)
        ax.set_yticklabels([str(p) for p in ticks])
        ax.set_title(f"{model}, batch {batch}", fontsize="medium")
        ax.set_xlabel("row patches (servers)")
    axes[0].set_ylabel("speed-up of one step (compute only)")
    fig.suptitle(f"{title}: measured speed-up of patch parallelism against the ideal")
    outside_legend(_widest(axes, groups))
    return finish(fig, path)


def cold_start_bars(profiles: Mapping[str, pd.DataFrame], path: str | Path | None = None) -> Figure:
    """Cold start (``from_pretrained`` from the page cache until on the device) per model,
    stacked by component, one bar per profile; bar labels give the bytes on disk."""
    rows = []
    for label, frame in profiles.items():
        loads = frame[frame["op"] == "cold_start_from_disk"]
        loads = loads.groupby(["model", "component"], as_index=False).agg(
            seconds=("seconds", "median"), bytes=("bytes", "median")
        )
        rows.append(loads.assign(profile=label))
    data = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    fig, ax = new_figure((7.5, 3.8))
    if data.empty:
        ax.set_title("no cold-start measurements")
        return finish(fig, path)
    components = list(dict.fromkeys(data["component"]))
    colours = dict(zip(components, sns.color_palette("colorblind", len(components)), strict=True))
    bars = list(data.groupby(["profile", "model"], sort=False))
    labelled: set[str] = set()
    for x, (_, group) in enumerate(bars):
        bottom = 0.0
        for component in components:
            part = group[group["component"] == component]
            if part.empty:
                continue
            seconds = float(part["seconds"].iloc[0])
            legend = component if component not in labelled else None
            labelled.add(component)
            ax.bar(x, seconds, bottom=bottom, color=colours[component], label=legend)
            bottom += seconds
        gigabytes = group["bytes"].sum() / 1e9
        ax.text(x, bottom, f"{gigabytes:.3g} GB", ha="center", va="bottom", fontsize="small")
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([f"{label}\n{model}" for (label, model), _ in bars], fontsize="small")
    ax.set_ylabel("cold start from page cache (s)")
    ax.set_title("cold start per model (from_pretrained until on the device)")
    outside_legend(ax, title="component")
    return finish(fig, path)


def fitted_vs_measured(held_out: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Held-out (leave-one-out) prediction against measurement per profile, with the
    ±10% band; the title gives each profile's mean absolute held-out error."""
    profiles = list(dict.fromkeys(held_out["profile"]))
    fig, axes = _panels(len(profiles), width=3.4)
    for ax, profile in zip(axes, profiles, strict=True):
        rows = held_out[held_out["profile"] == profile]
        low = rows[["measured", "predicted"]].min().min() * 1e3 * 0.8
        high = rows[["measured", "predicted"]].max().max() * 1e3 * 1.25
        line = np.geomspace(low, high, 10)
        ax.plot(line, line, "-", color="grey", lw=1)
        ax.fill_between(line, line * 0.9, line * 1.1, color="grey", alpha=0.15, label="±10%")
        for (model, batch), group in rows.groupby(["model", "batch"]):
            ax.plot(
                group["measured"] * 1e3,
                group["predicted"] * 1e3,
                "o",
                ms=4,
                label=f"{model} b{batch}",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        error = rows["error"].abs().mean()
        mode = rows["mode"].iloc[0]
        ax.set_title(f"{profile} ({mode}): mean |err| {error:.1%}", fontsize="medium")
        ax.set_xlabel("measured (ms)")
    axes[0].set_ylabel("held-out prediction (ms)")
    fig.suptitle("per-step fit: each point predicted without itself (leave-one-out)")
    outside_legend(axes[-1])
    return finish(fig, path)

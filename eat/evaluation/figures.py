"""Evaluation figures: latency/quality against arrival rate, their trade-off, CDFs, Gantt.

Every function takes data frames and follows :mod:`eat.plotting` (a returned
``Figure``, a PNG at ``path`` when given one).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from eat.plotting import (
    METRIC_LABELS,
    Color,
    finish,
    new_figure,
    new_figure_grid,
    outside_legend,
    plain_log_ticks,
    scheduler_palette,
)

__all__ = [
    "gantt",
    "latency_cdf",
    "latency_quality_scatter",
    "latency_vs_rate",
    "quality_vs_rate",
    "scheduler_palette",
]


def _select_preset(aggregated: pd.DataFrame, preset: str, columns: Sequence[str]) -> pd.DataFrame:
    required = ["preset", "scheduler", "rate", *columns]
    missing = [c for c in required if c not in aggregated.columns]
    if missing:
        raise ValueError(
            f"aggregated frame is missing column(s) {missing}; it has {list(aggregated.columns)}"
        )
    frame = aggregated[aggregated["preset"] == preset]
    if frame.empty:
        raise ValueError(
            f"preset {preset!r} not in aggregated; have {sorted(aggregated['preset'].unique())}"
        )
    return frame.sort_values(["scheduler", "rate"])


def _metric_vs_rate(
    aggregated: pd.DataFrame,
    preset: str,
    metric: str,
    *,
    title: str,
    log_y: bool = False,
    floor: pd.DataFrame | None = None,
    path: str | Path | None = None,
) -> Figure:
    frame = _select_preset(aggregated, preset, [metric, f"{metric}_ci_low", f"{metric}_ci_high"])
    palette = scheduler_palette(frame["scheduler"])
    fig, ax = new_figure((8.0, 4.5))
    for scheduler, group in frame.groupby("scheduler", sort=True):
        colour = palette[scheduler]
        ax.plot(group["rate"], group[metric], marker="o", color=colour, label=scheduler)
        ax.fill_between(
            group["rate"],
            group[f"{metric}_ci_low"],
            group[f"{metric}_ci_high"],
            color=colour,
            alpha=0.2,
            linewidth=0,
        )
    if floor is not None:
        missing = [c for c in ("rate", "latency_mean") if c not in floor.columns]
        if missing:
            raise ValueError(f"floor frame is missing column(s) {missing}")
        floor = floor.sort_values("rate")
        ax.plot(
            floor["rate"],
            floor["latency_mean"],
            linestyle="--",
            color="black",
            label="no-queue warm floor",
        )
    if log_y:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    ax.set_xlabel("arrival rate (tasks/s)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(f"{preset}: {title}")
    outside_legend(ax, title="scheduler")
    return finish(fig, path)


def latency_vs_rate(
    aggregated: pd.DataFrame,
    preset: str,
    *,
    metric: str = "latency_mean",
    floor: pd.DataFrame | None = None,
    log_y: bool = False,
    path: str | Path | None = None,
) -> Figure:
    """Latency against arrival rate, one line and CI band per scheduler.

    Args:
        aggregated: output of :func:`eat.evaluation.metrics.aggregate`.
        preset: preset to draw.
        metric: latency column (``latency_mean``, ``latency_p95``, ...).
        floor: optional frame with columns ``rate, latency_mean``, drawn dashed black as
            the latency a task would see with no queueing on warm servers.
        log_y: logarithmic latency axis (queueing blows latency up by orders of magnitude).
        path: where to save a PNG, if anywhere.
    """
    return _metric_vs_rate(
        aggregated,
        preset,
        metric,
        title=f"{METRIC_LABELS.get(metric, metric).split(' (')[0]} vs arrival rate",
        log_y=log_y,
        floor=floor,
        path=path,
    )


def quality_vs_rate(
    aggregated: pd.DataFrame, preset: str, path: str | Path | None = None
) -> Figure:
    """Mean image quality against arrival rate, one line and CI band per scheduler."""
    return _metric_vs_rate(
        aggregated, preset, "quality_mean", title="mean image quality vs arrival rate", path=path
    )


def _ci_err(frame: pd.DataFrame, metric: str) -> np.ndarray:
    centre = frame[metric].to_numpy(dtype=float)
    low = frame[f"{metric}_ci_low"].to_numpy(dtype=float)
    high = frame[f"{metric}_ci_high"].to_numpy(dtype=float)
    # errorbar needs non-negative extents; a percentile CI can, rarely, sit off the mean.
    return np.vstack([np.clip(centre - low, 0, None), np.clip(high - centre, 0, None)])


def latency_quality_scatter(
    aggregated: pd.DataFrame, preset: str, path: str | Path | None = None
) -> Figure:
    """Latency/quality trade-off: one point per scheduler and rate, sized by rate.

    Points of one scheduler are joined in rate order, so each scheduler traces a path
    as load grows; error bars are the CIs of both axes. The upper left is better (fast
    and high quality), which the title spells out.
    """
    metrics = ["latency_mean", "quality_mean"]
    cols = [c for m in metrics for c in (m, f"{m}_ci_low", f"{m}_ci_high")]
    frame = _select_preset(aggregated, preset, cols)
    palette = scheduler_palette(frame["scheduler"])
    rates = np.sort(frame["rate"].unique())
    # Marker area grows with the rate's rank: ranks keep small rates visible whatever
    # the spread of the rate grid.
    size_of = {r: 30.0 + 120.0 * i / max(len(rates) - 1, 1) for i, r in enumerate(rates)}

    fig, ax = new_figure((8.0, 5.0))
    for scheduler, group in frame.groupby("scheduler", sort=True):
        colour = palette[scheduler]
        x = group["latency_mean"].to_numpy(dtype=float)
        y = group["quality_mean"].to_numpy(dtype=float)
        ax.errorbar(
            x,
            y,
            xerr=_ci_err(group, "latency_mean"),
            yerr=_ci_err(group, "quality_mean"),
            fmt="none",
            ecolor=colour,
            alpha=0.6,
            linewidth=1,
        )
        ax.plot(x, y, color=colour, linewidth=0.8, alpha=0.6)
        ax.scatter(
            x,
            y,
            s=[size_of[r] for r in group["rate"]],
            color=colour,
            edgecolor="black",
            linewidth=0.5,
            label=scheduler,
            zorder=3,
        )
    ax.set_xlabel("mean response latency (s)")
    ax.set_ylabel("mean image quality (score)")
    # The reading direction goes in the title, where no data point can hide it.
    ax.set_title(
        f"{preset}: latency-quality trade-off across arrival rates\n"
        "(better = upper left: lower latency, higher quality)"
    )
    scheduler_legend = outside_legend(ax, title="scheduler")
    # A second ax.legend() call replaces the first; keep the scheduler legend as an artist.
    ax.add_artist(scheduler_legend)
    rate_handles = [
        Line2D(
            [],
            [],
            linestyle="none",
            marker="o",
            markersize=np.sqrt(size_of[r]),
            markerfacecolor="white",
            markeredgecolor="black",
            label=f"{r:g}",
        )
        for r in rates
    ]
    ax.legend(
        handles=rate_handles,
        title="rate (tasks/s)",
        fontsize="small",
        loc="lower left",
        bbox_to_anchor=(1.01, 0.0),
    )
    return finish(fig, path)


def latency_cdf(
    tasks: pd.DataFrame, preset: str, rate: float, path: str | Path | None = None
) -> Figure:
    """Empirical CDF of per-task latency per scheduler at one arrival rate (seeds pooled).

    Args:
        tasks: concatenated task frames with extra columns ``preset, scheduler, rate, seed``.
        preset: preset to draw.
        rate: arrival rate to draw (matched with a relative tolerance of 1e-9).
        path: where to save a PNG, if anywhere.
    """
    required = ["preset", "scheduler", "rate", "latency"]
    missing = [c for c in required if c not in tasks.columns]
    if missing:
        raise ValueError(
            f"tasks frame is missing column(s) {missing}; it has {list(tasks.columns)}"
        )
    # Rates come from YAML floats and arithmetic grids; exact equality is too brittle.
    selected = (tasks["preset"] == preset) & np.isclose(
        tasks["rate"].to_numpy(dtype=float), rate, rtol=1e-9, atol=0.0
    )
    frame = tasks[selected]
    if frame.empty:
        have = sorted(tasks.loc[tasks["preset"] == preset, "rate"].unique())
        raise ValueError(f"no tasks for preset {preset!r} at rate {rate:g}; rates present: {have}")
    if (frame["latency"] <= 0).any():
        raise ValueError(
            f"latency must be positive for a log-scale CDF; min is {frame['latency'].min()}"
        )
    order = sorted(frame["scheduler"].unique())
    fig, ax = new_figure((8.0, 4.5))
    sns.ecdfplot(
        data=frame,
        x="latency",
        hue="scheduler",
        hue_order=order,
        palette=scheduler_palette(order),
        log_scale=(True, False),
        ax=ax,
    )
    ax.set_xlabel("response latency (s, log scale)")
    ax.set_ylabel("share of tasks with latency ≤ x")
    ax.set_title(f"{preset}: latency CDF at {rate:g} tasks/s")
    plain_log_ticks(ax.xaxis)
    # Seaborn's hue legend sits inside; move it out like the other figures' legends.
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title="scheduler")
    return finish(fig, path)


def _darker(colour: Color, factor: float = 0.6) -> Color:
    h, l, s = colorsys.rgb_to_hls(*colour)
    return colorsys.hls_to_rgb(h, l * factor, s)


def gantt(
    segments: pd.DataFrame,
    tasks: pd.DataFrame,
    *,
    n_servers: int,
    title: str,
    server_labels: Sequence[str] | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Gantt chart of server occupancy: one bar per segment, coloured by task.

    The model-loading part of a bar (``start..compute_start``) is overlaid darker and
    hatched. Tasks that missed their deadline get a red outline. The task id is written
    on bars wide enough to hold it.

    Args:
        segments: server segments (``server, task_id, start, compute_start, finish``).
        tasks: task records of the same episode (``task_id, deadline_met``), used to
            outline deadline misses.
        n_servers: number of servers (rows), including idle ones.
        title: figure title; name the preset, scheduler and rate in it.
        server_labels: y tick labels (e.g. with the GPU type); "server i" by default.
        path: where to save a PNG, if anywhere.
    """
    required = ["server", "task_id", "start", "compute_start", "finish"]
    missing = [c for c in required if c not in segments.columns]
    if missing:
        raise ValueError(
            f"segments frame is missing column(s) {missing}; it has {list(segments.columns)}"
        )
    if segments.empty:
        raise ValueError("segments frame is empty: nothing to draw")
    if n_servers <= 0:
        raise ValueError(f"n_servers must be positive, got {n_servers}")
    out_of_range = segments.loc[(segments["server"] < 0) | (segments["server"] >= n_servers)]
    if not out_of_range.empty:
        raise ValueError(f"server id {out_of_range['server'].iloc[0]} outside 0..{n_servers - 1}")
    missed: set[int] = set()
    if "task_id" in tasks.columns and "deadline_met" in tasks.columns:
        missed = set(tasks.loc[~tasks["deadline_met"].astype(bool), "task_id"].tolist())

    cycle = [mcolors.to_rgb(c) for c in sns.color_palette("tab20")]
    task_ids = segments["task_id"].to_numpy()
    colours = [cycle[int(t) % len(cycle)] for t in task_ids]
    server = segments["server"].to_numpy(dtype=float)
    start = segments["start"].to_numpy(dtype=float)
    compute_start = segments["compute_start"].to_numpy(dtype=float)
    ends = segments["finish"].to_numpy(dtype=float)
    edge = ["red" if int(t) in missed else "black" for t in task_ids]
    edge_width = [2.0 if int(t) in missed else 0.8 for t in task_ids]

    fig, ax = new_figure((11.0, 0.5 * n_servers + 2.0))
    # One barh call: exactly one rectangle per segment, whole occupancy start..finish.
    ax.barh(
        server,
        ends - start,
        left=start,
        height=0.8,
        color=colours,
        edgecolor=edge,
        linewidth=edge_width,
    )
    cold = compute_start > start
    if cold.any():
        ax.barh(
            server[cold],
            (compute_start - start)[cold],
            left=start[cold],
            height=0.8,
            color=[_darker(c) for c, k in zip(colours, cold, strict=True) if k],
            edgecolor="black",
            linewidth=0.8,
            hatch="//",
        )
    span = float(ends.max() - start.min()) or 1.0
    for t, y, s, f in zip(task_ids, server, start, ends, strict=True):
        # ~3% of the axis fits a 2-3 digit id at this figure width.
        if (f - s) >= 0.03 * span:
            ax.text((s + f) / 2, y, str(t), ha="center", va="center", fontsize=7)

    if server_labels is None:
        server_labels = [f"server {i}" for i in range(n_servers)]
    elif len(server_labels) != n_servers:
        raise ValueError(f"{len(server_labels)} server labels for {n_servers} servers")
    ax.set_yticks(range(n_servers), list(server_labels))
    ax.set_ylim(n_servers - 0.5, -0.5)  # server 0 on top
    ax.set_xlabel("time (s)")
    ax.set_ylabel("server")
    ax.set_title(title)
    handles = [
        Patch(facecolor="0.8", edgecolor="black", label="compute (colour = task)"),
        Patch(facecolor="0.4", edgecolor="black", hatch="//", label="cold start (model load)"),
    ]
    if missed:
        handles.append(Patch(facecolor="white", edgecolor="red", label="missed deadline"))
    outside_legend(ax, handles=handles)
    return finish(fig, path)


def ablation_figure(
    aggregated: pd.DataFrame, labels: dict[str, str], path: str | Path | None = None
) -> Figure:
    """Mean reward, latency and quality (averaged over the rate sweep) of each ablation
    variant, with the crossed-bootstrap intervals averaged the same way."""
    names = [name for name in labels if name in set(aggregated["scheduler"])]
    frame = aggregated.set_index("scheduler")
    fig, axes = new_figure_grid((14, 4.5), 1, 3)
    for ax, metric, title in (
        (axes[0, 0], "reward_mean", "mean reward (higher is better)"),
        (axes[0, 1], "latency_mean", "mean latency, s (lower is better)"),
        (axes[0, 2], "quality_mean", "mean quality"),
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
    fig.suptitle("Ablation (mean over the arrival-rate sweep, 95% CI)")
    return finish(fig, path)


def gap_closed_vs_rate(
    aggregated: pd.DataFrame, preset: str, reference: str, path: str | Path | None = None
) -> Figure:
    """Every scheduler as a percentage of the reference against the rate: the share of
    the gap from Random (0%) to the reference (100%) it closes, on reward (left) and on
    latency (right), with the paired-bootstrap intervals."""
    fig, axes = new_figure_grid((13.0, 4.8), 1, 2)
    for ax, metric, title in (
        (axes[0, 0], "reward_gap_closed", "mean reward"),
        (axes[0, 1], "latency_gap_closed", "mean latency"),
    ):
        frame = _select_preset(
            aggregated, preset, [metric, f"{metric}_ci_low", f"{metric}_ci_high"]
        )
        palette = scheduler_palette(frame["scheduler"])
        for scheduler, group in frame.groupby("scheduler", sort=True):
            group = group.sort_values("rate")
            values = 100 * group[metric].to_numpy(float)
            low = 100 * group[f"{metric}_ci_low"].to_numpy(float)
            high = 100 * group[f"{metric}_ci_high"].to_numpy(float)
            ax.errorbar(
                group["rate"],
                values,
                yerr=[np.maximum(values - low, 0), np.maximum(high - values, 0)],
                color=palette[scheduler],
                marker="o",
                markersize=4,
                capsize=3,
                label=scheduler,
            )
        ax.axhline(100, color="black", linewidth=0.8, linestyle="--")
        ax.axhline(0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("arrival rate (tasks/s)")
        ax.set_ylabel(f"% of the gap random -> {reference} closed")
        ax.set_title(f"{preset}: {title}")
    outside_legend(axes[0, 1])
    return finish(fig, path)


def slo_attainment(table: pd.DataFrame, preset: str, path: str | Path | None = None) -> Figure:
    """SLO attainment of every scheduler against the SLO scale (left, at the middle rate)
    and against the arrival rate (right, at the load sweep's scale), with intervals."""
    frame = table[table["preset"] == preset]
    if frame.empty:
        raise ValueError(
            f"preset {preset!r} not in the SLO table; have {sorted(table['preset'].unique())}"
        )
    palette = scheduler_palette(frame["scheduler"])
    fig, axes = new_figure_grid((13.0, 4.8), 1, 2)
    for ax, sweep, x, label in (
        (axes[0, 0], ("scale", "both"), "slo_scale", "SLO scale (x standalone latency)"),
        (axes[0, 1], ("load", "both"), "rate", "arrival rate (tasks/s)"),
    ):
        part = frame[frame["sweep"].isin(sweep)]
        for scheduler, group in part.groupby("scheduler", sort=True):
            group = group.sort_values(x)
            y = 100 * group["deadline_attainment"].to_numpy(float)
            low = 100 * group["deadline_attainment_ci_low"].to_numpy(float)
            high = 100 * group["deadline_attainment_ci_high"].to_numpy(float)
            ax.errorbar(
                group[x],
                y,
                yerr=[np.maximum(y - low, 0), np.maximum(high - y, 0)],
                color=palette[scheduler],
                marker="o",
                markersize=4,
                capsize=3,
                label=scheduler,
            )
        ax.set_xlabel(label)
        ax.set_ylabel("SLO attainment (% of tasks)")
        ax.set_ylim(-2, 102)
    axes[0, 0].set_title(f"{preset}: against the SLO scale")
    axes[0, 1].set_title(f"{preset}: against the load")
    outside_legend(axes[0, 1])
    return finish(fig, path)


def robust_statistics_figure(table: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Per preset: the IQM of each scheduler's normalised reward (0: random, 1: the
    reference) and its probability of improvement over the best heuristic, with the
    stratified-bootstrap intervals."""
    presets = list(dict.fromkeys(table["preset"]))
    fig, axes = new_figure_grid(
        (12.0, 2.2 + 0.9 * len(presets) * table["scheduler"].nunique() / 3), 1, 2
    )
    labels = [f"{p} / {s}" for p, s in zip(table["preset"], table["scheduler"], strict=True)]
    y = np.arange(len(table))
    for ax, column, title, line in (
        (axes[0, 0], "iqm", "IQM of the normalised reward", 1.0),
        (axes[0, 1], "probability_of_improvement", "P(better than the best heuristic)", 0.5),
    ):
        values = table[column].to_numpy(float)
        errors = [values - table[f"{column}_ci_low"], table[f"{column}_ci_high"] - values]
        ax.errorbar(values, y, xerr=np.maximum(errors, 0), fmt="o", capsize=3, color="tab:blue")
        ax.axvline(line, color="grey", linestyle="--", linewidth=0.8)
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_title(title)
    return finish(fig, path)


def generalisation_figure(table: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Per training preset: each learned agent's mean reward relative to the best
    heuristic on every scenario (0: as good as the best heuristic), with its crossed
    bootstrap interval; a scenario an agent cannot read is marked ``n/a``. The best
    heuristic's name is beside each scenario."""
    required = {"preset", "scenario", "rate", "scheduler", "learned", "applicable"}
    missing = sorted(required - set(table.columns))
    if missing:
        raise ValueError(f"generalisation table is missing column(s) {missing}")
    presets = list(dict.fromkeys(table["preset"]))
    learned = table[table["learned"].astype(bool)]
    agents = list(dict.fromkeys(learned["scheduler"]))
    palette = scheduler_palette(agents)
    heights = [
        learned[learned["preset"] == p][["scenario", "rate"]].drop_duplicates().shape[0]
        for p in presets
    ]
    fig, axes = new_figure_grid((10.0, 1.5 + 0.45 * max(heights, default=1)), 1, len(presets))
    offsets = np.linspace(-0.25, 0.25, max(len(agents), 1))
    for ax, preset in zip(axes[0], presets, strict=True):
        rows = learned[learned["preset"] == preset]
        points = list(dict.fromkeys(zip(rows["scenario"], rows["rate"], strict=True)))
        best = (
            table[table["preset"] == preset].groupby(["scenario", "rate"])["best_heuristic"].first()
        )
        for offset, agent in zip(offsets, agents, strict=True):
            for y, (scenario, rate) in enumerate(points):
                row = rows[
                    (rows["scheduler"] == agent)
                    & (rows["scenario"] == scenario)
                    & (rows["rate"] == rate)
                ]
                if row.empty:
                    continue
                record = row.iloc[0]
                if not record["applicable"] or pd.isna(record["reward_relative"]):
                    ax.text(
                        0.99,  # at the right edge (axes coordinates), whatever the range
                        y + offset,
                        "n/a",
                        transform=ax.get_yaxis_transform(),
                        color=palette[agent],
                        fontsize=7,
                        ha="right",
                        va="center",
                    )
                    continue
                value = 100.0 * record["reward_relative"]
                low = 100.0 * record["reward_relative_ci_low"]
                high = 100.0 * record["reward_relative_ci_high"]
                ax.errorbar(
                    value,
                    y + offset,
                    xerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]],
                    fmt="o",
                    capsize=2,
                    color=palette[agent],
                )
        labels = [
            f"{scenario} @ {rate:g}\n(best: {best[(scenario, rate)]})" for scenario, rate in points
        ]
        ax.set_yticks(range(len(points)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0.0, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel("reward relative to the best heuristic (%)")
        ax.set_title(f"trained on {preset}")
    handles = [Line2D([], [], marker="o", linestyle="", color=palette[a], label=a) for a in agents]
    if handles:
        outside_legend(axes[0, -1], handles=handles)
    return finish(fig, path)

"""The package's one figure convention.

Every figure function builds a standalone :class:`matplotlib.figure.Figure` on an Agg
canvas (never through ``pyplot``), returns it, and saves a PNG when given a path. That
renders without a display, leaves the caller's backend alone (notebooks keep their
inline backend and still show a returned figure), and registers nothing with pyplot, so
there is nothing to close. No module switches the global backend.

Scheduler colours come from :func:`scheduler_palette`, which maps a name to the same
colour in every figure regardless of which other schedulers are drawn.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.ticker import LogFormatter

Color = tuple[float, float, float]

# Fixed colours for the schedulers in params.yaml (and likely learned ones), so the
# same scheduler looks the same in every figure, paper and notebook.
_KNOWN_COLOURS: dict[str, str] = {
    "random": "#7f7f7f",  # grey: the no-information baseline
    "fifo": "#1f77b4",
    "first_fit": "#ff7f0e",
    "greedy": "#2ca02c",
    "eft": "#d62728",
    "warm_first": "#9467bd",
    "edf": "#8c564b",
    "eat": "#e377c2",
    "sac": "#bcbd22",
    "ppo": "#17becf",
    "dqn": "#393b79",
    "d3qn": "#637939",
}
# Unknown names hash into this pool, which avoids the known colours above.
_FALLBACK_POOL: tuple[str, ...] = (
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
    "#31a354",
    "#756bb1",
    "#636363",
)

DPI = 120
METRIC_LABELS: dict[str, str] = {
    "latency_mean": "mean response latency (s)",
    "latency_p50": "median response latency (s)",
    "latency_p95": "p95 response latency (s)",
    "latency_p99": "p99 response latency (s)",
    "waiting_mean": "mean waiting time (s)",
    "service_mean": "mean service time (s)",
    "quality_mean": "mean image quality (score)",
    "reward_mean": "mean reward per task",
    "deadline_attainment": "deadline attainment (share of tasks)",
    "utilisation": "GPU utilisation (share of time)",
}


def scheduler_palette(names: Iterable[str]) -> dict[str, Color]:
    """Colour for each scheduler name, independent of the order of ``names``.

    Known schedulers get fixed colours. Other names hash (crc32) into a separate pool;
    should two of them collide, the alphabetically later one probes to the next free
    pool colour, so the mapping depends only on the *set* of unknown names present.
    """
    palette: dict[str, Color] = {}
    taken: set[int] = set()
    for name in sorted(set(names)):
        if name in _KNOWN_COLOURS:
            palette[name] = mcolors.to_rgb(_KNOWN_COLOURS[name])
            continue
        slot = zlib.crc32(name.encode("utf-8")) % len(_FALLBACK_POOL)
        # Only after the pool is exhausted do colours repeat.
        for _ in range(len(_FALLBACK_POOL)):
            if slot not in taken:
                break
            slot = (slot + 1) % len(_FALLBACK_POOL)
        taken.add(slot)
        palette[name] = mcolors.to_rgb(_FALLBACK_POOL[slot])
    return palette


def new_figure(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """A figure with one axes (whitegrid style, constrained layout)."""
    fig, axes = new_figure_grid(figsize, 1, 1)
    return fig, axes[0, 0]


def new_figure_grid(
    figsize: tuple[float, float], rows: int, columns: int, *, style: str = "whitegrid"
) -> tuple[Figure, np.ndarray]:
    """A figure with a ``rows x columns`` array of axes."""
    # axes_style as a context: style this figure without touching the caller's rcParams.
    with sns.axes_style(style):
        # Constrained layout makes room for the legends placed outside the axes.
        fig = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, columns, squeeze=False)
    return fig, axes


def plain_log_ticks(axis: Axis) -> None:
    # Plain numbers ("20", "600") instead of the default 2x10^1 mathtext on log axes;
    # minor ticks are labelled only when the axis spans less than about two decades.
    axis.set_major_formatter(LogFormatter())
    axis.set_minor_formatter(LogFormatter(minor_thresholds=(2, 0.4)))


def outside_legend(ax: Axes, **kwargs: object) -> Legend:
    # Outside the axes: a legend inside hides the curves it explains at some rate.
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", **kwargs)


def finish(fig: Figure, path: str | Path | None, dpi: int = DPI) -> Figure:
    """Save ``fig`` as a PNG at ``path`` (if given) and return it."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig

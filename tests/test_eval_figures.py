"""Tests of eat.evaluation.figures: artist counts, legends and PNG output on synthetic frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.patches import Rectangle

from eat.evaluation.figures import (
    gantt,
    latency_cdf,
    latency_quality_scatter,
    latency_vs_rate,
    quality_vs_rate,
    scheduler_palette,
)
from eat.evaluation.metrics import aggregate

SCHEDULERS = ("fifo", "eft", "greedy")
RATES = (0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def aggregated() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {
            "preset": "edge",
            "scheduler": s,
            "rate": r,
            "seed": seed,
            "latency_mean": (5.0 + 3.0 * i) * (1.0 + r) + rng.normal(scale=0.3),
            "quality_mean": 0.25 - 0.01 * i + 0.002 * rng.normal(),
        }
        for i, s in enumerate(SCHEDULERS)
        for r in RATES
        for seed in range(3)
    ]
    return aggregate(pd.DataFrame(rows), n_resamples=100)


@pytest.fixture(scope="module")
def task_records() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frames = [
        pd.DataFrame(
            {
                "preset": "edge",
                "scheduler": s,
                "rate": r,
                "seed": seed,
                "latency": rng.lognormal(mean=1.0 + 0.3 * i, sigma=0.5, size=40),
            }
        )
        for i, s in enumerate(SCHEDULERS)
        for r in RATES
        for seed in range(2)
    ]
    return pd.concat(frames, ignore_index=True)


def _png_ok(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0 and path.read_bytes()[:4] == b"\x89PNG"


def _legend_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_scheduler_palette_order_independent() -> None:
    a = scheduler_palette(["fifo", "eft", "my_agent", "other_agent"])
    b = scheduler_palette(["other_agent", "my_agent", "eft", "fifo"])
    assert a == b
    # Known names keep their colour whatever else is drawn.
    assert scheduler_palette(["eft"])["eft"] == a["eft"]
    assert len(set(a.values())) == 4


def test_latency_vs_rate(aggregated: pd.DataFrame, tmp_path: Path) -> None:
    floor = pd.DataFrame({"rate": list(RATES), "latency_mean": [4.0, 4.0, 4.0]})
    path = tmp_path / "sub" / "latency.png"
    fig = latency_vs_rate(aggregated, "edge", floor=floor, log_y=True, path=path)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == len(SCHEDULERS) + 1
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == len(SCHEDULERS)
    labels = _legend_labels(ax)
    assert set(SCHEDULERS) <= set(labels) and "no-queue warm floor" in labels
    assert ax.get_yscale() == "log"
    assert "edge" in ax.get_title() and "(s)" in ax.get_ylabel() and "tasks/s" in ax.get_xlabel()
    assert _png_ok(path)


def test_quality_vs_rate(aggregated: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "quality.png"
    fig = quality_vs_rate(aggregated, "edge", path=path)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == len(SCHEDULERS)
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == len(SCHEDULERS)
    assert sorted(_legend_labels(ax)) == sorted(SCHEDULERS)
    assert "edge" in ax.get_title()
    assert _png_ok(path)


def test_metric_figures_reject_unknown_preset(aggregated: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="'paper'"):
        latency_vs_rate(aggregated, "paper")


def test_latency_quality_scatter(aggregated: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "scatter.png"
    fig = latency_quality_scatter(aggregated, "edge", path=path)
    ax = fig.axes[0]
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == len(SCHEDULERS)
    assert all(len(s.get_offsets()) == len(RATES) for s in scatters)
    # Marker size grows with the rate.
    sizes = scatters[0].get_sizes()
    assert sizes[0] < sizes[-1]
    # Two legends: schedulers (kept as an artist) and the rate sizes.
    assert sorted(_legend_labels(ax)) == sorted(f"{r:g}" for r in RATES)
    kept = [a for a in ax.artists if a.__class__.__name__ == "Legend"]
    assert len(kept) == 1
    assert sorted(t.get_text() for t in kept[0].get_texts()) == sorted(SCHEDULERS)
    assert "edge" in ax.get_title()
    assert _png_ok(path)


def test_latency_cdf(task_records: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "cdf.png"
    fig = latency_cdf(task_records, "edge", 0.5, path=path)
    ax = fig.axes[0]
    assert len(ax.get_lines()) == len(SCHEDULERS)
    assert sorted(_legend_labels(ax)) == sorted(SCHEDULERS)
    assert ax.get_xscale() == "log"
    assert "edge" in ax.get_title() and "(s" in ax.get_xlabel()
    assert _png_ok(path)
    with pytest.raises(ValueError, match="rate 3"):
        latency_cdf(task_records, "edge", 3.0)


def test_gantt(tmp_path: Path) -> None:
    segments = pd.DataFrame(
        {
            "server": [0, 1, 2, 0, 3],
            "task_id": [0, 0, 1, 2, 3],
            "start": [0.0, 0.0, 2.0, 10.0, 4.0],
            "compute_start": [4.0, 4.0, 2.0, 13.0, 4.0],
            "finish": [10.0, 10.0, 6.0, 20.0, 9.0],
        }
    )
    tasks = pd.DataFrame({"task_id": [0, 1, 2, 3], "deadline_met": [True, True, False, True]})
    path = tmp_path / "gantt.png"
    fig = gantt(segments, tasks, n_servers=4, title="edge / eft / 1 task/s", path=path)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    plain = [p for p in bars if not p.get_hatch()]
    hatched = [p for p in bars if p.get_hatch()]
    assert len(plain) == len(segments)
    assert len(hatched) == int((segments["compute_start"] > segments["start"]).sum()) == 3
    labels = _legend_labels(ax)
    assert any("cold start" in t for t in labels) and "missed deadline" in labels
    assert "edge" in ax.get_title() and ax.get_xlabel() == "time (s)"
    assert len(ax.get_yticks()) == 4
    assert _png_ok(path)
    with pytest.raises(ValueError, match="server id 3"):
        gantt(segments, tasks, n_servers=3, title="x")

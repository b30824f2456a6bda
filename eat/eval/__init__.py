"""Evaluation: episode metrics, bootstrap aggregation across seeds, and figures."""

from eat.eval.figures import (
    gantt,
    latency_cdf,
    latency_quality_scatter,
    latency_vs_rate,
    quality_vs_rate,
    scheduler_palette,
)
from eat.eval.metrics import (
    aggregate,
    bootstrap_ci,
    episode_metrics,
    latency_reduction,
    metrics_json,
)

__all__ = [
    "aggregate",
    "bootstrap_ci",
    "episode_metrics",
    "gantt",
    "latency_cdf",
    "latency_quality_scatter",
    "latency_reduction",
    "latency_vs_rate",
    "metrics_json",
    "quality_vs_rate",
    "scheduler_palette",
]

"""Episode metrics, bootstrap confidence intervals and the DVC metrics summary.

The simulator hands over, per episode, a frame of completed tasks, a frame of server
segments (one row per server per dispatched task) and a few scalars. This module turns
those into one row of metrics per episode (:func:`episode_metrics`), aggregates the
per-seed rows into means with percentile-bootstrap confidence intervals
(:func:`aggregate`), and formats the result for DVC (:func:`metrics_json`) and for the
"x% lower latency than the baseline" statements (:func:`reduction_table`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from eat.sim.records import SEGMENT_COLUMNS

__all__ = [
    "SEGMENT_COLUMNS",
    "TASK_COLUMNS",
    "aggregate",
    "bootstrap_ci",
    "episode_metrics",
    "metrics_json",
    "reduction_table",
]

#: Columns of the task-records frame that the metrics read.
TASK_COLUMNS: tuple[str, ...] = (
    "task_id",
    "deadline",
    "gang_size",
    "steps",
    "waiting",
    "cold_start_s",
    "cold_starts",
    "service",
    "latency",
    "quality",
    "reward",
    "deadline_met",
)

# Columns that identify an episode rather than measure it; never aggregated as metrics.
_KEY_COLUMNS: frozenset[str] = frozenset({"preset", "scheduler", "rate", "seed"})


def _require_columns(frame: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} frame is missing column(s) {missing}; it has {list(frame.columns)}"
        )


def episode_metrics(
    tasks: pd.DataFrame,
    segments: pd.DataFrame,
    n_servers: int,
    horizon: float,
    decision_seconds: Sequence[float],
) -> dict[str, float]:
    """Summarise one episode as a flat dict of floats.

    Args:
        tasks: one row per completed task (simulator task-records schema).
        segments: one row per server per dispatched task (server-segments schema).
        n_servers: number of servers in the cluster.
        horizon: time of the last completion (s); the utilisation denominator.
        decision_seconds: wall-clock seconds the scheduler spent per decision.

    Returns:
        Metric name to value. Counts (``n_tasks``, ``n_deadline_tasks``) are floats too,
        so that every value can be averaged across seeds the same way. The decision-time
        metrics are NaN when ``decision_seconds`` is empty.

    Raises:
        ValueError: on an empty task frame, missing columns, a non-positive
            ``n_servers``/``horizon``, or segments whose times run backwards.
    """
    _require_columns(tasks, TASK_COLUMNS, "task records")
    _require_columns(segments, SEGMENT_COLUMNS, "server segments")
    if len(tasks) == 0:
        raise ValueError("task records frame is empty: an episode must complete at least one task")
    if n_servers <= 0:
        raise ValueError(f"n_servers must be positive, got {n_servers}")
    if not (math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon must be a positive finite time in seconds, got {horizon}")

    start = segments["start"].to_numpy(dtype=float)
    compute_start = segments["compute_start"].to_numpy(dtype=float)
    finish = segments["finish"].to_numpy(dtype=float)
    # A segment running backwards would silently lower utilisation; name the culprit.
    bad = (compute_start < start) | (finish < compute_start)
    if bad.any():
        row = segments.loc[bad].iloc[0]
        raise ValueError(
            "server segment must satisfy start <= compute_start <= finish; got "
            f"task_id={row['task_id']} server={row['server']} start={row['start']} "
            f"compute_start={row['compute_start']} finish={row['finish']}"
        )

    latency = tasks["latency"].to_numpy(dtype=float)
    deadline = tasks["deadline"].to_numpy(dtype=float)
    has_deadline = np.isfinite(deadline)
    # A task without a deadline cannot miss it, whatever the simulator wrote.
    met = tasks["deadline_met"].to_numpy(dtype=bool) | ~has_deadline
    cold_starts = tasks["cold_starts"].to_numpy(dtype=float)
    capacity = n_servers * float(horizon)
    decisions_ms = np.asarray(decision_seconds, dtype=float) * 1e3
    has_decisions = decisions_ms.size > 0

    return {
        "n_tasks": float(len(tasks)),
        "latency_mean": float(latency.mean()),
        "latency_p50": float(np.percentile(latency, 50)),
        "latency_p95": float(np.percentile(latency, 95)),
        "latency_p99": float(np.percentile(latency, 99)),
        "waiting_mean": float(tasks["waiting"].mean()),
        "service_mean": float(tasks["service"].mean()),
        # Gang-member loads per task: a 4-server gang that loads everywhere counts 4.
        "cold_starts_per_task": float(cold_starts.sum() / len(tasks)),
        "cold_start_task_share": float((cold_starts > 0).mean()),
        "cold_start_s_mean": float(tasks["cold_start_s"].mean()),
        "quality_mean": float(tasks["quality"].mean()),
        "reward_mean": float(tasks["reward"].mean()),
        "reward_sum": float(tasks["reward"].sum()),
        "deadline_attainment": float(met.mean()),
        "n_deadline_tasks": float(has_deadline.sum()),
        # Loading a model occupies the GPU, so it counts as busy time ...
        "utilisation": float((finish - start).sum() / capacity),
        # ... but only the denoising part is useful work.
        "utilisation_compute": float((finish - compute_start).sum() / capacity),
        "decision_ms_mean": float(decisions_ms.mean()) if has_decisions else math.nan,
        "decision_ms_p99": float(np.percentile(decisions_ms, 99)) if has_decisions else math.nan,
        "gang_size_mean": float(tasks["gang_size"].mean()),
        "steps_mean": float(tasks["steps"].mean()),
    }


def bootstrap_ci(
    values: ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    rng: np.random.Generator,
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval of the mean.

    Args:
        values: one value per seed (1-D).
        confidence: two-sided confidence level in (0, 1).
        n_resamples: number of bootstrap resamples.
        rng: source of the resampling indices (pass a seeded generator).

    Returns:
        ``(mean, low, high)``; ``(v, v, v)`` for a single value, which has no spread to
        resample.

    Raises:
        ValueError: on empty input, NaN/inf values, or out-of-range parameters.
    """
    data = np.asarray(values, dtype=float)
    if data.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {data.shape}")
    if data.size == 0:
        raise ValueError("values is empty: need at least one value to bootstrap")
    if not np.isfinite(data).all():
        bad = np.flatnonzero(~np.isfinite(data))
        raise ValueError(
            f"values must be finite; got {data[bad[0]]} at index {int(bad[0])} "
            f"({bad.size} non-finite of {data.size})"
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")

    mean = float(data.mean())
    if data.size == 1:
        return mean, mean, mean
    # One (n_resamples, n) index draw; a few seeds x 2000 resamples is tiny in memory.
    idx = rng.integers(0, data.size, size=(n_resamples, data.size))
    means = data[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return mean, float(low), float(high)


def _plain(value: Any) -> Any:
    """Numpy scalar -> Python scalar, so that reprs (and hence hashes) are stable."""
    return value.item() if isinstance(value, np.generic) else value


def _stable_seed(seed: int, key: Hashable) -> list[int]:
    # crc32 rather than hash(): Python salts str hashes per process.
    return [seed, zlib.crc32(repr(key).encode("utf-8"))]


def aggregate(
    episodes: pd.DataFrame,
    *,
    group_by: Sequence[str] = ("preset", "scheduler", "rate"),
    metrics: Sequence[str] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean and bootstrap CI across seeds of every metric, per group.

    Args:
        episodes: one row per (group, seed) with metric columns from :func:`episode_metrics`.
        group_by: columns that identify a group.
        metrics: metric columns to aggregate; default every numeric column other than the
            group and ``seed`` columns.
        confidence: two-sided CI level.
        n_resamples: bootstrap resamples per group and metric.
        seed: base seed of the CI generators.

    Returns:
        One row per group (sorted by the group columns) with the group columns,
        ``n_seeds``, and for each metric ``m``: ``m``, ``m_ci_low``, ``m_ci_high``.

    Raises:
        ValueError: on missing columns, an empty frame, a repeated seed within a group,
            or a NaN metric value (naming the group and metric).

    Each (group, metric) gets its own generator seeded from ``seed`` and a crc32 of the
    pair, and the values are sorted before resampling, so the output does not depend on
    row order, group order, or which other metrics are requested.
    """
    group_by = list(group_by)
    _require_columns(episodes, group_by, "episodes")
    if len(episodes) == 0:
        raise ValueError("episodes frame is empty: nothing to aggregate")
    if metrics is None:
        excluded = set(group_by) | _KEY_COLUMNS
        metrics = [
            c
            for c in episodes.columns
            if c not in excluded and pd.api.types.is_numeric_dtype(episodes[c])
        ]
        if not metrics:
            raise ValueError(
                f"episodes frame has no numeric metric column besides {sorted(excluded)}"
            )
    else:
        metrics = list(metrics)
        _require_columns(episodes, metrics, "episodes")

    rows: list[dict[str, Any]] = []
    for key, group in episodes.groupby(group_by, sort=True, dropna=False):
        key_t = tuple(_plain(k) for k in key)
        if "seed" in group.columns and group["seed"].duplicated().any():
            dup = sorted(group.loc[group["seed"].duplicated(), "seed"].unique().tolist())
            raise ValueError(
                f"group {dict(zip(group_by, key_t, strict=True))} repeats seed(s) {dup}"
            )
        row: dict[str, Any] = dict(zip(group_by, key_t, strict=True))
        row["n_seeds"] = len(group)
        for m in metrics:
            values = group[m].to_numpy(dtype=float)
            if np.isnan(values).any():
                raise ValueError(
                    f"metric {m!r} is NaN in group {dict(zip(group_by, key_t, strict=True))}; "
                    "drop it via metrics=[...] or fix the episode"
                )
            rng = np.random.default_rng(_stable_seed(seed, (key_t, m)))
            mean, low, high = bootstrap_ci(
                np.sort(values), confidence=confidence, n_resamples=n_resamples, rng=rng
            )
            row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = mean, low, high
        rows.append(row)
    return pd.DataFrame(rows)


def _json_float(value: Any) -> float | None:
    value = float(value)
    # JSON has no NaN/inf; DVC reads null as "missing".
    return value if math.isfinite(value) else None


def metrics_json(aggregated: pd.DataFrame, metrics: Sequence[str]) -> dict[str, dict]:
    """DVC metrics dict keyed ``"{preset}/{scheduler}/{rate:g}"``.

    Each value holds every metric ``m`` (float or None for NaN/inf), ``m_ci`` as
    ``[low, high]``, and ``n_seeds`` (int).

    Raises:
        ValueError: on missing columns or two groups that format to the same key.
    """
    metrics = list(metrics)
    required = ["preset", "scheduler", "rate", "n_seeds"]
    for m in metrics:
        required += [m, f"{m}_ci_low", f"{m}_ci_high"]
    _require_columns(aggregated, required, "aggregated")

    out: dict[str, dict] = {}
    for rec in aggregated.to_dict("records"):
        key = f"{rec['preset']}/{rec['scheduler']}/{float(rec['rate']):g}"
        if key in out:
            raise ValueError(
                f"two aggregated rows map to metrics key {key!r} (rate {rec['rate']!r}); "
                "rates must differ in their %g formatting"
            )
        entry: dict[str, Any] = {"n_seeds": int(rec["n_seeds"])}
        for m in metrics:
            entry[m] = _json_float(rec[m])
            entry[f"{m}_ci"] = [_json_float(rec[f"{m}_ci_low"]), _json_float(rec[f"{m}_ci_high"])]
        out[key] = entry
    return out


HEURISTIC_BASELINES = ("eft", "warm_first", "greedy")
"""The candidates for "the best heuristic" at a rate (the lowest mean latency)."""


def reduction_table(aggregated: pd.DataFrame, preset: str, reference: str = "eat") -> pd.DataFrame:
    """``reference`` against every other scheduler of ``preset``, per rate.

    ``latency_reduction = 1 - reference / other``: 0.3 means the reference scheduler's
    mean latency is 30% lower than the other's; negative means it is higher. Each row
    also carries both mean rewards and qualities, and ``best_heuristic`` marks the one
    of :data:`HEURISTIC_BASELINES` with the lowest latency at that rate.

    Raises:
        ValueError: on missing columns, an unknown preset, or a reference scheduler that
            the preset does not contain.
    """
    columns = ["preset", "scheduler", "rate", "latency_mean", "reward_mean", "quality_mean"]
    _require_columns(aggregated, columns, "aggregated")
    frame = aggregated[aggregated["preset"] == preset]
    if frame.empty:
        raise ValueError(
            f"preset {preset!r} not in aggregated; have {sorted(aggregated['preset'].unique())}"
        )
    if reference not in set(frame["scheduler"]):
        raise ValueError(
            f"reference scheduler {reference!r} not evaluated on preset {preset!r}; "
            f"have {sorted(frame['scheduler'].unique())}"
        )
    ref = frame[frame["scheduler"] == reference].set_index("rate")
    rows = []
    for rate, group in frame.groupby("rate"):
        if rate not in ref.index:
            continue
        heuristics = group[group["scheduler"].isin(HEURISTIC_BASELINES)]
        best = (
            heuristics.loc[heuristics["latency_mean"].idxmin(), "scheduler"]
            if len(heuristics)
            else None
        )
        for _, other in group[group["scheduler"] != reference].iterrows():
            rows.append(
                {
                    "preset": preset,
                    "rate": rate,
                    "scheduler": other["scheduler"],
                    "best_heuristic": other["scheduler"] == best,
                    f"{reference}_latency": ref.loc[rate, "latency_mean"],
                    "latency": other["latency_mean"],
                    "latency_reduction": 1.0
                    - ref.loc[rate, "latency_mean"] / other["latency_mean"],
                    f"{reference}_reward": ref.loc[rate, "reward_mean"],
                    "reward": other["reward_mean"],
                    f"{reference}_quality": ref.loc[rate, "quality_mean"],
                    "quality": other["quality_mean"],
                }
            )
    return pd.DataFrame(rows)


def summary_table(aggregated: pd.DataFrame, preset: str, metric: str) -> pd.DataFrame:
    """One row per scheduler, one column per rate of ``preset``: ``mean [low, high]``."""
    rows = aggregated[aggregated["preset"] == preset]
    cells = rows.apply(
        lambda row: (
            f"{row[metric]:.3g} [{row[metric + '_ci_low']:.3g}, {row[metric + '_ci_high']:.3g}]"
        ),
        axis=1,
    )
    return rows.assign(cell=cells).pivot(index="scheduler", columns="rate", values="cell")


def gap_closed(
    episodes: pd.DataFrame,
    *,
    baseline: str,
    reference: str,
    metrics: Sequence[str] = ("reward_mean", "latency_mean"),
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """The share of the gap from ``baseline`` to ``reference`` that each scheduler closes.

    Per preset, rate and metric: ``(mean_s - mean_baseline) / (mean_reference -
    mean_baseline)``, 0 for the baseline, 1 for the reference, above 1 beyond it (the same
    formula for a metric to maximise, reward, or to minimise, latency). The interval is a
    paired bootstrap: every resample draws the test seeds once for all three (they ran the
    same workloads) and, for a scheduler with training seeds, its training seeds too.

    Returns one row per preset, scheduler and rate with ``<metric>_gap_closed`` and its
    ``_ci_low``, ``_ci_high`` for each metric (NaN where the reference does not differ
    from the baseline on that metric).
    """
    _require_columns(episodes, ["preset", "scheduler", "rate", "seed", *metrics], "episodes")
    has_train = "train_seed" in episodes.columns
    alpha = 1.0 - confidence
    rows = []
    for (preset, rate), group in episodes.groupby(["preset", "rate"], sort=True):
        ends = {}
        for name in (baseline, reference):
            rows_of = group[group["scheduler"] == name]
            if rows_of.empty:
                raise ValueError(f"{preset}/{rate}: no episodes of {name!r} to measure gaps with")
            ends[name] = rows_of.set_index("seed")
        seeds = sorted(ends[baseline].index)
        for scheduler, rows_s in group.groupby("scheduler", sort=True):
            row: dict[str, Any] = {"preset": preset, "scheduler": scheduler, "rate": rate}
            trained = has_train and rows_s["train_seed"].notna().any()
            for metric in metrics:
                if trained:
                    matrix = rows_s.pivot(index="train_seed", columns="seed", values=metric)
                    matrix = matrix[seeds].to_numpy(float)
                else:
                    matrix = rows_s.set_index("seed").loc[seeds, metric].to_numpy(float)[None, :]
                low_end = ends[baseline].loc[seeds, metric].to_numpy(float)
                high_end = ends[reference].loc[seeds, metric].to_numpy(float)
                rng = np.random.default_rng(
                    _stable_seed(seed, (preset, float(rate), scheduler, metric))
                )
                cols = rng.integers(0, len(seeds), size=(n_resamples, len(seeds)))
                rows_i = rng.integers(0, matrix.shape[0], size=(n_resamples, matrix.shape[0]))

                def share(s: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
                    span = r - b
                    with np.errstate(divide="ignore", invalid="ignore"):
                        return np.where(span != 0, (s - b) / span, np.nan)

                point = float(share(matrix.mean(), low_end.mean(), high_end.mean()))
                resampled = share(
                    matrix[rows_i[:, :, None], cols[:, None, :]].mean(axis=(1, 2)),
                    low_end[cols].mean(axis=1),
                    high_end[cols].mean(axis=1),
                )
                finite = resampled[np.isfinite(resampled)]
                low, high = (
                    np.quantile(finite, [alpha / 2, 1 - alpha / 2])
                    if finite.size
                    else (np.nan, np.nan)
                )
                name = metric.removesuffix("_mean")
                row[f"{name}_gap_closed"] = point
                row[f"{name}_gap_closed_ci_low"] = float(low)
                row[f"{name}_gap_closed_ci_high"] = float(high)
            rows.append(row)
    return pd.DataFrame(rows)


def interquartile_mean(values: ArrayLike) -> float:
    """The mean of the middle 50% of ``values`` (IQM: robust to a few outlying runs,
    less noisy than the median; Agarwal et al., "Deep RL at the Edge of the Statistical
    Precipice", 2021), computed as rliable does: scipy's 25% trimmed mean."""
    data = np.asarray(values, dtype=float).ravel()
    if data.size == 0:
        raise ValueError("interquartile_mean of no values")
    return float(stats.trim_mean(data, 0.25))


def robust_statistics(
    episodes: pd.DataFrame,
    *,
    scheduler: str,
    versus: dict[float, str],
    baseline: str,
    reference: str,
    metric: str = "reward_mean",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """IQM of ``scheduler``'s normalised score, and its probability of improvement over
    ``versus[rate]`` (the best heuristic at each rate), on one preset, with stratified
    bootstrap intervals.

    Scores are normalised per rate (the task of RL evaluation) as the share of the gap
    from ``baseline`` to ``reference`` (:func:`gap_closed`'s units), one score per
    episode (training seed x test seed for a learned scheduler). The probability of
    improvement is the mean over rates of P(X > Y) + P(X = Y) / 2 for X the scheduler's
    episode and Y the other's on the same test seed. Each bootstrap resample draws, within
    every rate, the training seeds and the test seeds with replacement (stratified).
    """
    rates = sorted(versus)
    per_rate = []
    for rate in rates:
        group = episodes[episodes["rate"] == rate]
        b = group[group["scheduler"] == baseline].set_index("seed")[metric]
        r = group[group["scheduler"] == reference].set_index("seed")[metric]
        seeds = sorted(b.index)
        span = float(r.loc[seeds].mean() - b.loc[seeds].mean())
        if span == 0:
            raise ValueError(f"rate {rate}: {reference!r} and {baseline!r} do not differ")
        mine = group[group["scheduler"] == scheduler]
        if "train_seed" in mine and mine["train_seed"].notna().any():
            matrix = mine.pivot(index="train_seed", columns="seed", values=metric)[seeds]
        else:
            matrix = mine.set_index("seed")[metric].loc[seeds].to_frame().T
        other = group[group["scheduler"] == versus[rate]].set_index("seed")[metric].loc[seeds]
        base_mean = float(b.loc[seeds].mean())
        per_rate.append(
            (
                (matrix.to_numpy(float) - base_mean) / span,
                other.to_numpy(float),
                matrix.to_numpy(float),
            )
        )

    def statistics(pick: list[tuple[np.ndarray, np.ndarray]] | None) -> tuple[float, float]:
        scores, improvements = [], []
        for index, (normalised, other, raw) in enumerate(per_rate):
            rows, cols = (
                pick[index]
                if pick is not None
                else (np.arange(normalised.shape[0]), np.arange(normalised.shape[1]))
            )
            scores.append(normalised[np.ix_(rows, cols)].ravel())
            x, y = raw[np.ix_(rows, cols)], other[cols][None, :]
            improvements.append(float(np.mean((x > y) + 0.5 * (x == y))))
        return interquartile_mean(np.concatenate(scores)), float(np.mean(improvements))

    iqm, improvement = statistics(None)
    rng = np.random.default_rng(_stable_seed(seed, (scheduler, metric, tuple(rates))))
    draws = []
    for _ in range(n_resamples):
        pick = [
            (rng.integers(0, n.shape[0], n.shape[0]), rng.integers(0, n.shape[1], n.shape[1]))
            for n, _, _ in per_rate
        ]
        draws.append(statistics(pick))
    alpha = 1.0 - confidence
    iqms, improvements = np.array(draws).T
    return {
        "iqm": iqm,
        "iqm_ci_low": float(np.quantile(iqms, alpha / 2)),
        "iqm_ci_high": float(np.quantile(iqms, 1 - alpha / 2)),
        "probability_of_improvement": improvement,
        "probability_of_improvement_ci_low": float(np.quantile(improvements, alpha / 2)),
        "probability_of_improvement_ci_high": float(np.quantile(improvements, 1 - alpha / 2)),
    }

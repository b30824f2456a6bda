"""Tests of eat.evaluation.metrics on hand-built and seeded synthetic frames."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from eat.evaluation.metrics import (
    aggregate,
    bootstrap_ci,
    episode_metrics,
    metrics_json,
    reduction_table,
)

INF = math.inf


def _three_tasks() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three tasks on 4 servers over 20 s; values chosen to be checked by hand.

    task 0: gang of 2 on servers 0,1, both load the model for 4 s, no deadline.
    task 1: warm single server 2, deadline 8 met.
    task 2: server 0, loads for 3 s, deadline 15 missed (finishes at 20).
    """
    tasks = pd.DataFrame(
        {
            "task_id": [0, 1, 2],
            "arrival": [0.0, 1.0, 3.0],
            "model": ["sd15", "sd15", "sdxl"],
            "resolution": [512, 512, 1024],
            "deadline": [INF, 8.0, 15.0],
            "gang_size": [2, 1, 1],
            "servers": ["0,1", "2", "0"],
            "steps": [20, 25, 30],
            "start": [0.0, 2.0, 10.0],
            "finish": [10.0, 6.0, 20.0],
            "waiting": [0.0, 1.0, 7.0],
            "cold_start_s": [4.0, 0.0, 3.0],
            "cold_starts": [2, 0, 1],
            "service": [10.0, 4.0, 10.0],
            "latency": [10.0, 5.0, 17.0],
            "quality": [0.2, 0.25, 0.3],
            "reward": [1.0, 2.0, -0.5],
            "deadline_met": [True, True, False],
        }
    )
    segments = pd.DataFrame(
        {
            "server": [0, 1, 2, 0],
            "task_id": [0, 0, 1, 2],
            "start": [0.0, 0.0, 2.0, 10.0],
            "compute_start": [4.0, 4.0, 2.0, 13.0],
            "finish": [10.0, 10.0, 6.0, 20.0],
        }
    )
    return tasks, segments


def test_episode_metrics_hand_computed() -> None:
    tasks, segments = _three_tasks()
    m = episode_metrics(tasks, segments, 4, 20.0, [0.001, 0.002, 0.003])
    assert m["n_tasks"] == 3
    assert m["latency_mean"] == pytest.approx(32.0 / 3.0)
    assert m["latency_p50"] == pytest.approx(10.0)
    assert m["waiting_mean"] == pytest.approx(8.0 / 3.0)
    assert m["service_mean"] == pytest.approx(8.0)
    # 2 + 0 + 1 gang-member loads over 3 tasks; 2 of 3 tasks paid any.
    assert m["cold_starts_per_task"] == pytest.approx(1.0)
    assert m["cold_start_task_share"] == pytest.approx(2.0 / 3.0)
    assert m["cold_start_s_mean"] == pytest.approx(7.0 / 3.0)
    # busy 10 + 10 + 4 + 10 = 34, compute 6 + 6 + 4 + 7 = 23, capacity 4 * 20 = 80.
    assert m["utilisation"] == pytest.approx(34.0 / 80.0)
    assert m["utilisation_compute"] == pytest.approx(23.0 / 80.0)
    # The inf-deadline task counts as met; only 2 tasks have a finite deadline.
    assert m["deadline_attainment"] == pytest.approx(2.0 / 3.0)
    assert m["n_deadline_tasks"] == 2
    assert m["quality_mean"] == pytest.approx(0.25)
    assert m["reward_sum"] == pytest.approx(2.5)
    assert m["reward_mean"] == pytest.approx(2.5 / 3.0)
    assert m["decision_ms_mean"] == pytest.approx(2.0)
    assert m["decision_ms_p50"] == pytest.approx(2.0)
    assert m["decision_ms_p99"] == pytest.approx(2.98)
    assert m["gang_size_mean"] == pytest.approx(4.0 / 3.0)
    assert m["steps_mean"] == pytest.approx(25.0)
    assert all(isinstance(v, float) for v in m.values())


def test_episode_metrics_inf_deadline_is_met_even_if_flag_wrong() -> None:
    tasks, segments = _three_tasks()
    tasks.loc[0, "deadline_met"] = False
    m = episode_metrics(tasks, segments, 4, 20.0, [0.001])
    assert m["deadline_attainment"] == pytest.approx(2.0 / 3.0)


def test_episode_metrics_no_decisions_gives_nan() -> None:
    tasks, segments = _three_tasks()
    m = episode_metrics(tasks, segments, 4, 20.0, [])
    assert math.isnan(m["decision_ms_mean"]) and math.isnan(m["decision_ms_p99"])


def test_episode_metrics_errors_name_the_problem() -> None:
    tasks, segments = _three_tasks()
    with pytest.raises(ValueError, match="empty"):
        episode_metrics(tasks.iloc[0:0], segments, 4, 20.0, [0.001])
    with pytest.raises(ValueError, match="latency"):
        episode_metrics(tasks.drop(columns="latency"), segments, 4, 20.0, [0.001])
    with pytest.raises(ValueError, match="compute_start"):
        episode_metrics(tasks, segments.drop(columns="compute_start"), 4, 20.0, [0.001])
    with pytest.raises(ValueError, match="n_servers"):
        episode_metrics(tasks, segments, 0, 20.0, [0.001])
    with pytest.raises(ValueError, match="horizon"):
        episode_metrics(tasks, segments, 4, 0.0, [0.001])
    bad = segments.copy()
    bad.loc[3, "compute_start"] = 25.0
    with pytest.raises(ValueError, match="task_id=2"):
        episode_metrics(tasks, bad, 4, 20.0, [0.001])


def test_bootstrap_ci_deterministic_and_contains_mean() -> None:
    values = np.random.default_rng(1).normal(5.0, 2.0, size=20)
    a = bootstrap_ci(values, rng=np.random.default_rng(7))
    b = bootstrap_ci(values, rng=np.random.default_rng(7))
    assert a == b
    mean, low, high = a
    assert mean == pytest.approx(values.mean())
    assert low < mean < high


def test_bootstrap_ci_single_value_and_errors() -> None:
    rng = np.random.default_rng(0)
    assert bootstrap_ci([3.5], rng=rng) == (3.5, 3.5, 3.5)
    with pytest.raises(ValueError, match="nan"):
        bootstrap_ci([1.0, math.nan], rng=rng)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([], rng=rng)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.5, rng=rng)


def test_bootstrap_ci_narrows_with_more_samples() -> None:
    data = np.random.default_rng(3)
    small = data.normal(size=5)
    large = data.normal(size=200)
    _, lo_s, hi_s = bootstrap_ci(small, rng=np.random.default_rng(0))
    _, lo_l, hi_l = bootstrap_ci(large, rng=np.random.default_rng(0))
    assert hi_l - lo_l < hi_s - lo_s


def test_bootstrap_ci_coverage() -> None:
    data = np.random.default_rng(11)
    rng = np.random.default_rng(12)
    covered = 0
    for _ in range(200):
        _, low, high = bootstrap_ci(data.normal(size=30), n_resamples=400, rng=rng)
        covered += low <= 0.0 <= high
    assert 0.85 <= covered / 200 <= 0.99


def _episodes(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for preset, rates in (("paper", [0.01, 0.05]), ("edge", [0.5, 1.0])):
        for scheduler in ("fifo", "eft"):
            for rate in rates:
                for seed in range(4):
                    base = 10.0 if scheduler == "fifo" else 7.0
                    rows.append(
                        {
                            "preset": preset,
                            "scheduler": scheduler,
                            "rate": rate,
                            "seed": seed,
                            "latency_mean": base * (1 + rate) + rng.normal(),
                            "quality_mean": 0.25 + 0.01 * rng.normal(),
                        }
                    )
    return pd.DataFrame(rows)


def test_aggregate_columns_and_n_seeds() -> None:
    episodes = _episodes(np.random.default_rng(0))
    agg = aggregate(episodes, n_resamples=200)
    assert len(agg) == 8
    assert (agg["n_seeds"] == 4).all()
    for m in ("latency_mean", "quality_mean"):
        assert {m, f"{m}_ci_low", f"{m}_ci_high"} <= set(agg.columns)
        assert (agg[f"{m}_ci_low"] <= agg[m]).all() and (agg[m] <= agg[f"{m}_ci_high"]).all()
    assert "seed" not in agg.columns and "seed_ci_low" not in agg.columns
    row = agg[(agg["preset"] == "paper") & (agg["scheduler"] == "fifo") & (agg["rate"] == 0.05)]
    expected = episodes[
        (episodes["preset"] == "paper")
        & (episodes["scheduler"] == "fifo")
        & (episodes["rate"] == 0.05)
    ]["latency_mean"].mean()
    assert row["latency_mean"].item() == pytest.approx(expected)


def test_aggregate_independent_of_row_order_and_metric_selection() -> None:
    episodes = _episodes(np.random.default_rng(0))
    agg = aggregate(episodes, n_resamples=200, seed=5)
    shuffled = episodes.sample(frac=1.0, random_state=np.random.default_rng(9))
    pd.testing.assert_frame_equal(agg, aggregate(shuffled, n_resamples=200, seed=5))
    only = aggregate(episodes, metrics=["quality_mean"], n_resamples=200, seed=5)
    cols = ["quality_mean", "quality_mean_ci_low", "quality_mean_ci_high"]
    pd.testing.assert_frame_equal(agg[cols], only[cols])


def test_aggregate_rejects_nan_and_repeated_seed() -> None:
    episodes = _episodes(np.random.default_rng(0))
    bad = episodes.copy()
    bad.loc[5, "latency_mean"] = math.nan
    with pytest.raises(ValueError, match="latency_mean"):
        aggregate(bad, n_resamples=50)
    dup = pd.concat([episodes, episodes.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="repeats seed"):
        aggregate(dup, n_resamples=50)


def test_metrics_json_keys_and_round_trip() -> None:
    episodes = _episodes(np.random.default_rng(0))
    agg = aggregate(episodes, n_resamples=100)
    agg.loc[0, "quality_mean"] = math.nan  # must become null, not NaN
    out = metrics_json(agg, ["latency_mean", "quality_mean"])
    assert {"paper/fifo/0.05", "paper/eft/0.01", "edge/eft/0.5", "edge/fifo/1"} <= set(out)
    assert len(out) == len(agg) == 8
    entry = out["paper/fifo/0.05"]
    assert isinstance(entry["n_seeds"], int) and entry["n_seeds"] == 4
    assert isinstance(entry["latency_mean"], float)
    assert len(entry["latency_mean_ci"]) == 2
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text) == out
    assert any(v["quality_mean"] is None for v in out.values())


def test_reduction_table() -> None:
    agg = pd.DataFrame(
        {
            "preset": ["edge"] * 6 + ["paper"],
            "scheduler": ["eft", "fifo", "eat", "eft", "fifo", "eat", "eft"],
            "rate": [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 0.05],
            "latency_mean": [6.0, 8.0, 4.5, 9.0, 18.0, 12.0, 1.0],
            "reward_mean": [1.0, 0.5, 1.5, 0.8, 0.2, 0.6, 1.0],
            "quality_mean": [0.2, 0.25, 0.24, 0.2, 0.25, 0.23, 0.2],
        }
    )
    red = reduction_table(agg, "edge")
    assert list(red["rate"]) == [0.5, 0.5, 1.0, 1.0]
    assert list(red["scheduler"]) == ["eft", "fifo", "eft", "fifo"]
    assert list(red["latency_reduction"]) == pytest.approx([0.25, 1 - 4.5 / 8, -1 / 3, 1 / 3])
    assert list(red["best_heuristic"]) == [True, False, True, False]  # fifo is no candidate
    assert list(red["eat_reward"]) == [1.5, 1.5, 0.6, 0.6]
    with pytest.raises(ValueError, match="'sac'"):
        reduction_table(agg, "edge", reference="sac")
    with pytest.raises(ValueError, match="'nope'"):
        reduction_table(agg, "nope")

"""Workload generators and the data-driven latency model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eat.sim import ProfileLatency, QualityCurve, generate_tasks
from eat.sim.latency import StepTable, data_path
from eat.sim.workload import arrival_times
from tests.conftest import tweak


def interarrival_stats(times: np.ndarray, window: float) -> tuple[float, float]:
    """Mean rate and index of dispersion of counts in windows of `window` seconds."""
    counts = np.histogram(times, bins=np.arange(0.0, times[-1], window))[0]
    return len(times) / times[-1], counts.var() / counts.mean()


@pytest.mark.parametrize("process", ["poisson", "mmpp", "diurnal"])
def test_arrival_processes_hit_the_mean_rate(edge, process):
    workload = tweak(edge.workload, process=process)
    times = arrival_times(workload, 2.0, 40_000, np.random.default_rng(0))
    assert (np.diff(times) > 0).all()
    rate, dispersion = interarrival_stats(times, 30.0)
    assert rate == pytest.approx(2.0, rel=0.05)
    if process == "poisson":
        assert dispersion == pytest.approx(1.0, abs=0.15)
    else:  # bursts and the daily swing make counts over-dispersed
        assert dispersion > 2.0


def test_workload_is_seeded_and_mixes_models(edge):
    first = generate_tasks(edge.workload, 1.0, np.random.default_rng(4), lambda m, r: 10.0)
    second = generate_tasks(edge.workload, 1.0, np.random.default_rng(4), lambda m, r: 10.0)
    assert [vars(t) for t in first] == [vars(t) for t in second]
    frame = pd.DataFrame([vars(t) for t in first])
    assert set(frame["model"]) == {"sd15", "sdxl"}
    assert set(frame.loc[frame.model == "sdxl", "resolution"]) == {1024}
    slack = (frame["deadline"] - frame["arrival"]) / 10.0
    assert slack.between(1.5, 4.0).all()


def test_paper_workload_shape(paper):
    tasks = generate_tasks(paper.workload, 0.05, np.random.default_rng(0))
    assert len(tasks) == 32
    assert sum(t.arrival == 0.0 for t in tasks) == 10
    assert {t.gang_size for t in tasks} <= {1, 2, 4}
    assert all(t.deadline == np.inf for t in tasks)


def test_trace_replay_rescales_to_the_rate(edge, tmp_path):
    trace = pd.DataFrame(
        {
            "arrival": [0.0, 10.0, 20.0, 40.0],
            "model": ["sd15", "sdxl"] * 2,
            "resolution": [512, 1024, 768, 1024],
            "deadline": [5.0, 5.0, 5.0, 5.0],
        }
    )
    path = tmp_path / "trace.csv"
    trace.to_csv(path, index=False)
    workload = tweak(edge.workload, process="trace", trace_path=str(path), total_tasks=4)
    tasks = generate_tasks(workload, 0.15, np.random.default_rng(0), lambda m, r: 1.0)
    assert [t.arrival for t in tasks] == pytest.approx([0.0, 5.0, 10.0, 20.0])  # 3 gaps / 20 s
    assert [t.model for t in tasks] == ["sd15", "sdxl", "sd15", "sdxl"]
    assert [t.deadline - t.arrival for t in tasks] == pytest.approx([5.0] * 4)
    bad = tmp_path / "bad.csv"
    trace.drop(columns="model").to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"lacks columns \['model'\]"):
        generate_tasks(tweak(workload, trace_path=str(bad)), 1.0, np.random.default_rng(0))


def test_step_table_is_exact_on_measured_points_and_monotone_between(edge):
    frame = pd.read_csv(data_path("sd_profile_h200_cudagraph.csv"))
    table = StepTable(frame, batch=2)
    measured = frame[(frame.op == "step") & (frame.batch == 2)].iloc[0]
    assert table.seconds(measured.model, int(measured.resolution), int(measured.patches)) == (
        measured.seconds
    )
    # A larger image is never faster on the same patch count, and more patches never make
    # a member slower, inside and beyond the measured range (interpolated points included).
    resolutions, patches = (512, 640, 768, 896, 1024, 1440, 2048), (1, 2, 4, 8)
    for model in ("sd15", "sdxl"):
        grid = np.array([[table.seconds(model, r, p) for p in patches] for r in resolutions])
        assert (np.diff(grid, axis=0) >= -1e-12).all()
        assert (np.diff(grid, axis=1) <= 1e-12).all()


def test_profile_latency_terms(edge):
    latency = ProfileLatency(edge)
    assert latency.communication_s(1024, 1) == 0.0
    exchange = latency.communication_s(1024, 4)
    expected = 0.0005 + 1024.0 * 128 * 128 * 3 / 4 / 1.25e9
    assert exchange == pytest.approx(expected)
    # Slower GPUs take proportionally longer per step.
    ratio = latency.step_s("sd15", 768, 2, "t4") / latency.step_s("sd15", 768, 2, "rtx4090")
    assert ratio == pytest.approx(0.40 / 0.08)
    # Cold start: each component's bytes over 2 GB/s, never faster than its measured
    # page-cache load (the text encoder's 0.18 s), plus 2 s of overhead.
    unet, vae, text_encoder_measured = 1719127083, 167336106, 0.17985895399999663
    expected = 2.0 + unet / 2e9 + vae / 2e9 + text_encoder_measured
    assert latency.cold_start_s["sd15"] == pytest.approx(expected, rel=1e-6)
    assert latency.cold_start_s["sdxl"] > latency.cold_start_s["sd15"]


def test_reference_quality_curve():
    from eat.params import QualityConfig

    curve = QualityCurve(QualityConfig(curve="eat_reference", q_max=0.27, tau=10.0), 32)
    assert curve(4) == 0.0
    assert curve(6) == pytest.approx(0.14)
    assert curve(30) == pytest.approx(0.16 * np.log(30) / np.log(6) - 0.02)
    assert curve(31) == 0.27 < curve(30)  # the reference curve drops past 30 steps
    assert curve.fewest_steps_reaching(0.25, 1, 32) == 21

"""Workload generators and the data-driven latency model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eat.latency.calibration import read_architecture_table
from eat.latency.fit import load_profile
from eat.sim import ProfileLatency, QualityCurve, generate_tasks
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


def reference_latency(edge) -> ProfileLatency:
    """The edge preset on the shipped reference profiles, whatever the profile stage chose."""
    return ProfileLatency(tweak(edge, profile_latency={"stage_decision": None}))


def test_fitted_step_model_matches_the_profile_and_is_monotone(edge):
    latency = reference_latency(edge)
    h200 = latency.model.gpu("h200")
    frame = load_profile("sd_profile_h200_cudagraph.csv")
    measured = frame[(frame.op == "step") & (frame.batch == 2)]
    for row in measured.itertuples():
        fitted = h200.step_s(row.model, int(row.resolution), int(row.patches), 2)
        assert fitted == pytest.approx(row.seconds, rel=0.10), row
    # More pixels per patch are never faster and more patches never make a member slower,
    # on every GPU type, measured or derived, inside and beyond the measured range.
    resolutions, patches = (256, 512, 640, 768, 896, 1024, 1440, 2048), (1, 2, 3, 4, 8)
    for model in ("sd15", "sdxl"):
        for gpu in edge.gpu_types:
            grid = np.array(
                [[latency.step_s(model, r, p, gpu) for p in patches] for r in resolutions]
            )
            assert (np.diff(grid, axis=0) >= -1e-12).all(), (model, gpu)
            assert (np.diff(grid, axis=1) <= 1e-12).all(), (model, gpu)


def test_profile_latency_terms(edge):
    latency = reference_latency(edge)
    assert "shipped reference profiles" in latency.source
    # Communication: a member receives the K/V of every self-attention layer and the output
    # latent for the (n - 1) / n of the image it does not compute, plus conv boundary rows
    # and GroupNorm statistics from each peer (DistriFusion), batch 2 in fp16 over 10 GbE.
    table = read_architecture_table()

    def unet(quantity: str) -> float:
        rows = table[(table.model == "sd15") & (table.component == "unet")]
        return float(rows.loc[rows.quantity == f"exchange_{quantity}", "value"].iloc[0])

    # SD 1.x: 5 self-attention layers at each of the 3 attention levels (2 down, 3 up) and
    # 1 in the mid block, each all-gathering K and V (2 x channels per token).
    assert unet("kv_per_latent_px") == 2 * (5 * 320 + 5 * 640 / 4 + 5 * 1280 / 16 + 1280 / 64)
    assert latency.communication_s("sd15", 1024, 1) == 0.0
    side, peers = 128, 3
    elements = (unet("kv_per_latent_px") + unet("latent_per_latent_px")) * side**2 * 3 / 4
    elements += (unet("halo_per_latent_col") * side + unet("groupnorm")) * peers
    assert latency.communication_s("sd15", 1024, 4) == pytest.approx(
        0.0005 + elements * 2 * 2 / 1.25e9
    )
    assert latency.communication_s("sdxl", 1024, 2) > latency.communication_s("sd15", 1024, 2)
    # A derived GPU type follows the anchor (H200) by datasheet ratios: weights read at its
    # bandwidth, the rest of the fixed overhead at its clock, the growing work by the
    # compute ratio blended with the fitted memory-bound share.
    anchor = latency.model.fits["h200"].step[("sd15", 2)]
    h200, t4 = latency.catalogue.spec("h200"), latency.catalogue.spec("t4")
    weights = float(
        table[
            (table.model == "sd15") & (table.component == "unet") & (table.quantity == "fp16_bytes")
        ]["value"].iloc[0]
    )
    mu = latency.model.memory_share
    assert 0.0 < mu < 0.5  # the H100 (70% of the H200's bandwidth) runs only 2-6% slower
    factor = (1 - mu) * h200.fp16_tflops / t4.fp16_tflops
    factor += mu * h200.memory_bandwidth_gbs / t4.memory_bandwidth_gbs
    x = 768 * 768 / 2 / 1e6
    fixed = weights / (t4.memory_bandwidth_gbs * 1e9)
    fixed += (anchor.c0 - weights / (h200.memory_bandwidth_gbs * 1e9)) * 1980 / 1590
    # the anchor's per-resolution factor of the linear term carries over unchanged
    expected = fixed + (anchor.factor(768) * anchor.c1 * x + anchor.c2 * x * x) * factor
    assert latency.step_s("sd15", 768, 2, "t4") == pytest.approx(expected)
    assert latency.step_s("sd15", 768, 2, "t4") > latency.step_s("sd15", 768, 2, "rtx4090")
    # Cold start: each component's bytes over 2 GB/s, never faster than its measured
    # page-cache load (the text encoder's 0.18 s), plus 2 s of overhead.
    unet_bytes, vae, text_encoder_measured = 1719127083, 167336106, 0.17985895399999663
    expected = 2.0 + unet_bytes / 2e9 + vae / 2e9 + text_encoder_measured
    assert latency.cold_start_s("sd15", 1) == pytest.approx(expected, rel=1e-6)
    # SDXL adds its bigger UNet and the OpenCLIP bigG encoder (fp16 bytes of the
    # architecture, not in the reference profile).
    assert latency.cold_start_s("sdxl", 1) > latency.cold_start_s("sd15", 1) + 2.0
    # Memory comes from the catalogue, speed relative to the anchor.
    assert latency.memory_gb("rtx4070") == 12.0 and latency.memory_gb("t4") == 16.0
    assert latency.speed("h200") == pytest.approx(1.0)
    assert latency.speed("rtx4090") > latency.speed("l4")


def test_reference_quality_curve():
    from eat.params import QualityConfig

    curve = QualityCurve(QualityConfig(curve="eat_reference", q_max=0.27, tau=10.0), 32)
    assert curve(4) == 0.0
    assert curve(6) == pytest.approx(0.14)
    assert curve(30) == pytest.approx(0.16 * np.log(30) / np.log(6) - 0.02)
    assert curve(31) == 0.27 < curve(30)  # the reference curve drops past 30 steps
    assert curve.fewest_steps_reaching(0.25, 1, 32) == 21

"""The GenTD26 converter on a small synthetic file in the trace's format (the real data
is not shipped): filters, model ranking, architectures, images, steps, rate compression,
the preset that replays it, and the command line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eat.cli import main
from eat.evaluation.runner import run_episode
from eat.schedulers import make_scheduler
from eat.sim import Simulator, generate_tasks
from eat.sim.traces import (
    GENTD26_COLUMNS,
    convert_gentd26,
    preset_for_trace,
    synthetic_gentd26,
)

# (seconds after the first row, type, status, exec s, images, steps, base model)
ROWS = [
    (30, "TXT_2_IMG", "SUCCEED", 16.0, 1, 30, "M0007"),
    (0, "TXT_2_IMG", "SUCCEED", 15.0, 1, 30, "M0007"),  # out of order in the file
    (40, "IMG_2_IMG", "SUCCEED", 20.0, 1, 30, "M0009"),  # not text to image: dropped
    (41, "IMG_2_IMG", "SUCCEED", 20.0, 1, 30, "M0009"),
    (42, "INPAINTING", "SUCCEED", 20.0, 1, 30, "M0009"),
    (43, "IMG_2_IMG", "SUCCEED", 20.0, 1, 30, "M0009"),
    (50, "TXT_2_IMG", "SUCCEED", 60.0, 1, 40, "M0001"),  # 1.5 s/step: 3x M0007's
    (60, "TXT_2_IMG", "FAILED", 3.0, 4, 40, "M0001"),  # 4 images: 4 tasks
    (70, "TXT_2_IMG", "SUCCEED", 45.0, 1, 30, "M0001"),
    (80, "TXT_2_IMG", "SUCCEED", 14.0, 1, 25, "M0003"),
    (90, "TXT_2_IMG", "SUCCEED", 16.0, 2, 50, "M0003"),
    (100, "TXT_2_IMG", "SUCCEED", 12.0, 1, 30, "M0003"),
    (110, "TXT_2_IMG", "SUCCEED", 17.0, 8, 20, "M0007"),
    (120, "TXT_2_IMG", "SUCCEED", 15.0, 1, 30, "M0007"),
    (130, "TXT_2_IMG", "PROCESSING", 10.0, 1, 30, "M0009"),
]


@pytest.fixture
def gentd26(tmp_path):
    """A GenTD26-format request trace (every column of the real file) with known counts:
    text-to-image rows per base model M0007: 4, M0001: 3, M0003: 3, M0009: 1."""
    start = pd.Timestamp("2024-11-15 16:57:50")
    frame = pd.DataFrame(
        {
            "gmt_create": [
                (start + pd.Timedelta(seconds=row[0])).strftime("%Y-%m-%d %H:%M:%S") for row in ROWS
            ],
            "predict_type": [row[1] for row in ROWS],
            "predict_status": [row[2] for row in ROWS],
            "exec_time_seconds": [row[3] for row in ROWS],
            "groupId": "G0000",
            "prompt_length": 63.0,
            "negative_prompt_length": np.nan,
            "num_images_per_prompt": [float(row[4]) for row in ROWS],
            "num_inference_steps": [float(row[5]) for row in ROWS],
            "checkpoint_model_version_id": [row[6] for row in ROWS],
            "num_lora": 0,
        },
        columns=list(GENTD26_COLUMNS),
    )
    path = tmp_path / "lora_request_trace.csv"
    frame.to_csv(path, index=False)
    return path


def test_text_to_image_rows_of_the_most_frequent_models(gentd26):
    trace = convert_gentd26(gentd26, n_models=2)
    # M0007 (4 rows) and M0001 (3, the smaller id of the tie with M0003); M0009 has one
    # text-to-image row among its image-to-image ones
    assert list(dict.fromkeys(trace["model"])) == ["M0007", "M0001"]
    assert set(trace["request"]) == {0, 1, 6, 7, 8, 12, 13}
    three = convert_gentd26(gentd26, n_models=3)
    assert list(three["model"].value_counts().index[:1]) == ["M0007"]
    assert "M0003" in set(three["model"]) and "M0009" not in set(three["model"])
    succeeded = convert_gentd26(gentd26, n_models=2, statuses=["SUCCEED"])
    assert 7 not in set(succeeded["request"])  # the failed request is left out
    with pytest.raises(ValueError, match=r"n_models is 5 but .* only 4 base models"):
        convert_gentd26(gentd26, n_models=5)


def test_arrivals_images_and_steps(gentd26):
    trace = convert_gentd26(gentd26, n_models=2)
    assert trace["arrival"].is_monotonic_increasing and trace["arrival"].iloc[0] == 0.0
    assert trace["arrival"].tolist() == [0.0, 30.0, 50.0, 60, 60, 60, 60, 70.0] + [110] * 8 + [120]
    # a request for k images is k tasks at its arrival, each with the request's own steps
    assert trace["steps"].tolist() == [30, 30, 40, 40, 40, 40, 40, 30] + [20] * 8 + [30]
    one = convert_gentd26(gentd26, n_models=2, images="one")
    assert len(one) == 7 and one["request"].is_unique


def test_rate_compression_sets_the_mean_rate(gentd26):
    trace = convert_gentd26(gentd26, n_models=2, target_rate=0.5)
    span = trace["arrival"].iloc[-1]
    assert (len(trace) - 1) / span == pytest.approx(0.5)
    plain = convert_gentd26(gentd26, n_models=2)
    ratio = trace["arrival"].iloc[1:] / plain["arrival"].iloc[1:]
    assert np.allclose(ratio, ratio.iloc[0])  # one factor: the shape of the trace is kept


def test_architectures_from_the_seconds_per_step(gentd26):
    """M0001 takes 1.5 s per step on its single-image requests, M0007 and M0003 about
    0.4-0.5 s: a gap above 1.5x, so M0001 is SDXL (at 1024 px) and the rest SD 1.5."""
    trace = convert_gentd26(gentd26, n_models=3)
    kinds = trace.groupby("model")["architecture"].first().to_dict()
    assert kinds == {"M0001": "sdxl", "M0003": "sd15", "M0007": "sd15"}
    assert set(trace.loc[trace["model"] == "M0001", "resolution"]) == {1024}
    assert set(trace.loc[trace["model"] != "M0001", "resolution"]) == {512}
    forced = convert_gentd26(gentd26, n_models=3, architecture="sd15")
    assert set(forced["architecture"]) == {"sd15"}
    one_group = convert_gentd26(gentd26, n_models=3, sdxl_gap=4.0)
    assert set(one_group["architecture"]) == {"sd15"}


def test_bad_input_is_refused_with_what_is_wrong(gentd26, tmp_path):
    frame = pd.read_csv(gentd26)
    with pytest.raises(ValueError, match=r"columns \['num_inference_steps'\] are missing"):
        convert_gentd26(frame.drop(columns="num_inference_steps"), n_models=1)
    broken = frame.copy()
    broken.loc[1, "num_inference_steps"] = 2.5
    with pytest.raises(ValueError, match=r"row 1: num_inference_steps must be a positive integer"):
        convert_gentd26(broken, n_models=1)
    with pytest.raises(ValueError, match=r"images 'all' is not supported; choose one of"):
        convert_gentd26(frame, n_models=1, images="all")


def test_the_preset_replays_the_trace_and_honours_its_steps(params, edge, gentd26, tmp_path):
    trace = convert_gentd26(gentd26, n_models=3)
    path = tmp_path / "trace.csv"
    trace.to_csv(path, index=False)
    preset = preset_for_trace(edge, trace, path, trace_window="first")
    assert list(preset.models) == ["M0007", "M0001", "M0003"]  # by tasks: 11, 6, 4
    assert preset.models["M0001"].profile_model == "sdxl"
    assert preset.models["M0001"].memory_gb == edge.models["sdxl"].memory_gb
    assert preset.models["M0007"].memory_gb == edge.models["sd15"].memory_gb
    shares = {m: mix.share for m, mix in preset.workload.models.items()}
    assert shares == pytest.approx({"M0007": 11 / 21, "M0001": 6 / 21, "M0003": 4 / 21})
    assert preset.max_steps == 50 and preset.min_steps == edge.min_steps
    assert preset.model_slots == edge.model_slots
    tasks = generate_tasks(
        preset.workload, 1.0, np.random.default_rng(0), Simulator(preset).nominal_latency
    )
    assert [t.steps for t in tasks] == trace["steps"].tolist()
    for name in ("greedy", "eft", "warm_first"):
        records = run_episode(preset, make_scheduler(name, params.schedulers), 1.0, seed=1000).tasks
        records = records.sort_values("task_id")
        assert records["steps"].tolist() == trace["steps"].tolist()
        assert records["model"].tolist() == trace["model"].tolist()
    # paper has no SDXL model: its footprint is the fp16 weights of the architecture
    paper_preset = preset_for_trace(params.env.paper, trace, path)
    assert 6.0 < paper_preset.models["M0001"].memory_gb < 8.0


def test_synthetic_trace_is_seeded_and_in_the_format(tmp_path):
    first = synthetic_gentd26(300, seed=3)
    assert list(first.columns) == list(GENTD26_COLUMNS) and len(first) == 300
    assert first.equals(synthetic_gentd26(300, seed=3))
    assert not first.equals(synthetic_gentd26(300, seed=4))
    assert set(first["predict_type"]) <= {"TXT_2_IMG", "IMG_2_IMG", "INPAINTING"}
    trace = convert_gentd26(first, n_models=4)
    assert trace["model"].nunique() == 4


def test_command_line_converts(gentd26, tmp_path, capsys):
    out = tmp_path / "out" / "trace.csv"
    assert main(["convert-trace", str(gentd26), str(out), "--models", "2", "--rate", "0.5"]) == 0
    written = pd.read_csv(out)
    assert written.equals(convert_gentd26(gentd26, n_models=2, target_rate=0.5))
    assert "wrote 17 tasks from 7 requests" in capsys.readouterr().out
    assert main(["convert-trace", str(gentd26), str(out), "--models", "9"]) == 2

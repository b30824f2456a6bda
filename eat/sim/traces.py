"""Real request traces for trace replay: the Alibaba GenTD26 text-to-image trace.

GenTD26 (the GenAI Serving Top-Down Dataset 2026, ``cluster-trace-v2026-GenAI`` in
github.com/alibaba/clusterdata) records the requests of a production diffusion serving
system. Its ``lora_request_trace.csv`` has one row per request; the columns read here,
as its README documents them, are ``gmt_create`` (request creation time, seconds
resolution, shifted by an anonymising offset), ``predict_type`` (``TXT_2_IMG``,
``IMG_2_IMG`` or ``INPAINTING``), ``predict_status`` (``SUCCEED``, ``FAILED``,
``PROCESSING``, ...), ``exec_time_seconds`` (the request's execution time),
``num_images_per_prompt``, ``num_inference_steps`` and ``checkpoint_model_version_id``
(the base model, an anonymised id such as ``M0002``). The data is not shipped with
``eat``: its terms allow research use only and it has no licence file; download it
from the repository (docs/traces.md).

:func:`convert_gentd26` turns it into the trace format of :mod:`eat.sim.workload`
(``arrival``, ``model``, ``resolution``, ``steps``, plus ``architecture`` and
``request`` columns that replay ignores), by these rules:

1. Rows: text-to-image requests only (``predict_type == TXT_2_IMG``; image-to-image and
   inpainting start from an input image, another pipeline than the simulated one),
   of every status unless ``statuses`` names some (a request that failed still
   arrived, and would be served by the simulated cluster).
2. Models: the ``n_models`` most frequent ``checkpoint_model_version_id`` among those
   rows (ties: the smaller id) become ``n_models`` distinct models named by their id,
   most frequent first; the rows of every other base model are dropped. Distinct
   models of one architecture share its latency but not its residency, so cold starts
   follow the real popularity of the base models.
3. Architecture: the trace names none (the ids are hashed). ``architecture="auto"``
   decides per model from the trace's own times: the median of ``exec_time_seconds /
   num_inference_steps`` over the model's successful single-image rows (its seconds per
   step, overheads included); sorted, if the largest ratio between consecutive medians
   is at least ``sdxl_gap`` (1.5: an SDXL UNet step at 1024 px costs 3.5x an SD 1.5
   step at 512 px in the shipped H200 profile, which end-to-end times dilute with fixed
   costs and queueing), the models above it are ``sdxl`` and the rest ``sd15``; else
   (one group) all are ``sd15``, as are models without such rows. ``"sd15"`` or
   ``"sdxl"`` sets every model.
4. Resolution: the trace has none; every image is square at its architecture's native
   side (``sd15``: 512 px, ``sdxl``: 1024 px) unless ``resolutions`` says otherwise.
5. Images: a request for ``k`` images becomes ``k`` tasks arriving together
   (``images="tasks"``: a task of the simulator is one image, so the work is kept), or
   one task (``images="one"``: the request's other images are dropped).
6. Steps: ``num_inference_steps``, the request's own: replay runs every task with its
   steps whoever schedules it (:class:`~eat.sim.workload.Task`).
7. Time: ``arrival`` is seconds since the first kept request, in request order (ties
   keep file order); with ``target_rate`` every arrival is scaled so that the mean rate
   (tasks - 1 over the span) is ``target_rate`` tasks/s (replay rescales a trace to the
   swept rate anyway; this sets the file's own clock).

:func:`preset_for_trace` makes a preset replay such a trace: the trace's models become
the preset's (memory and latency family from their architecture), with their shares
and resolutions, and the step range covers the trace's steps. :func:`synthetic_gentd26`
writes a GenTD26-format file from a seed, for tests and for the pipeline when the real
file is absent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from eat.latency.calibration import read_architecture_table
from eat.params import PresetConfig

GENTD26_COLUMNS = (
    "gmt_create",
    "predict_type",
    "predict_status",
    "exec_time_seconds",
    "groupId",
    "prompt_length",
    "negative_prompt_length",
    "num_images_per_prompt",
    "num_inference_steps",
    "checkpoint_model_version_id",
    "num_lora",
)
"""The columns of ``lora_request_trace.csv`` (GenTD26 README, "Request-Level Performance
Data")."""
REQUIRED_COLUMNS = (
    "gmt_create",
    "predict_type",
    "num_images_per_prompt",
    "num_inference_steps",
    "checkpoint_model_version_id",
)
"""What the converter cannot do without (``exec_time_seconds`` and ``predict_status``
are needed only by ``architecture="auto"`` and ``statuses``)."""
TEXT_TO_IMAGE = "TXT_2_IMG"
NATIVE_RESOLUTION = {"sd15": 512, "sdxl": 1024}
"""Image side (px) each architecture was trained at: the default resolution of its tasks."""
ARCHITECTURE_TABLE = "sd_architecture.csv"
"""The shipped architecture table (``eat/data``), for presets without a latency profile."""
SDXL_GAP = 1.5
"""Default ratio of seconds per step between two groups of models that splits them into
SD 1.5 and SDXL (module docstring, rule 3)."""

Architecture = Literal["sd15", "sdxl"]
ArchitectureRule = Literal["auto", "sd15", "sdxl"]
ImagesRule = Literal["tasks", "one"]


def read_gentd26(path_or_frame: str | Path | pd.DataFrame) -> pd.DataFrame:
    """The GenTD26 request trace (a path to the CSV, or the frame), its required columns
    checked."""
    frame = (
        path_or_frame.copy()
        if isinstance(path_or_frame, pd.DataFrame)
        else pd.read_csv(path_or_frame)
    )
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"not a GenTD26 request trace: columns {missing} are missing (it has "
            f"{list(frame.columns)})"
        )
    return frame


def _checked_integers(values: pd.Series, column: str) -> np.ndarray:
    """``values`` as positive integers; ValueError naming the first row that is not."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers < 1) | (numbers != numbers.round())
    if bad.any():
        row = bad.idxmax()
        raise ValueError(f"row {row}: {column} must be a positive integer, got {values[row]!r}")
    return numbers.to_numpy(dtype=int)


def infer_architectures(
    frame: pd.DataFrame, models: Sequence[str], sdxl_gap: float = SDXL_GAP
) -> dict[str, Architecture]:
    """Rule 3 of the module docstring: each model's architecture from its seconds per step
    on successful single-image requests of ``frame`` (text-to-image rows)."""
    if sdxl_gap <= 1.0:
        raise ValueError(f"sdxl_gap must be > 1 (a ratio of seconds per step), got {sdxl_gap}")
    if "exec_time_seconds" not in frame.columns:
        raise ValueError(
            "architecture 'auto' reads exec_time_seconds, which the trace lacks; pass "
            "architecture='sd15' or 'sdxl'"
        )
    rows = frame[frame["num_images_per_prompt"] == 1]
    if "predict_status" in rows.columns:
        rows = rows[rows["predict_status"] == "SUCCEED"]
    per_step = rows["exec_time_seconds"] / rows["num_inference_steps"]
    medians = per_step.groupby(rows["checkpoint_model_version_id"]).median()
    timed = sorted(
        ((float(medians[m]), m) for m in models if m in medians.index and medians[m] > 0),
    )
    result: dict[str, Architecture] = dict.fromkeys(models, "sd15")
    if len(timed) < 2:
        return result
    ratios = [timed[i + 1][0] / timed[i][0] for i in range(len(timed) - 1)]
    split = int(np.argmax(ratios))
    if ratios[split] >= sdxl_gap:
        for _, model in timed[split + 1 :]:
            result[model] = "sdxl"
    return result


def convert_gentd26(
    path_or_frame: str | Path | pd.DataFrame,
    *,
    n_models: int,
    target_rate: float | None = None,
    images: ImagesRule = "tasks",
    architecture: ArchitectureRule = "auto",
    statuses: Sequence[str] | None = None,
    resolutions: Mapping[str, int] | None = None,
    sdxl_gap: float = SDXL_GAP,
) -> pd.DataFrame:
    """The GenTD26 request trace as a replay trace of :mod:`eat.sim.workload`, by the
    rules of the module docstring: columns ``arrival`` (s), ``model`` (the base model's
    trace id), ``resolution`` (px), ``steps``, ``architecture`` (``sd15`` / ``sdxl``) and
    ``request`` (the source row's index)."""
    if n_models < 1:
        raise ValueError(f"n_models must be >= 1, got {n_models}")
    if target_rate is not None and target_rate <= 0:
        raise ValueError(f"target_rate must be > 0 tasks/s, got {target_rate}")
    if images not in ("tasks", "one"):
        raise ValueError(f"images {images!r} is not supported; choose one of ['one', 'tasks']")
    if architecture not in ("auto", "sd15", "sdxl"):
        raise ValueError(
            f"architecture {architecture!r} is not supported; choose one of "
            "['auto', 'sd15', 'sdxl']"
        )
    sides = {**NATIVE_RESOLUTION, **(resolutions or {})}
    frame = read_gentd26(path_or_frame)
    # 1. text-to-image rows (of the given statuses)
    rows = frame[frame["predict_type"] == TEXT_TO_IMAGE]
    if statuses is not None:
        if "predict_status" not in rows.columns:
            raise ValueError("statuses filters on predict_status, which the trace lacks")
        rows = rows[rows["predict_status"].isin(list(statuses))]
    if rows.empty:
        raise ValueError("the trace has no text-to-image (TXT_2_IMG) request to convert")
    # 2. the n_models most frequent base models, most frequent first (ties: smaller id)
    counts = rows["checkpoint_model_version_id"].astype(str).value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    models = [model for model, _ in ranked[:n_models]]
    if len(models) < n_models:
        raise ValueError(
            f"n_models is {n_models} but the text-to-image requests use only "
            f"{len(models)} base models"
        )
    rows = rows[rows["checkpoint_model_version_id"].astype(str).isin(models)]
    ids = rows["checkpoint_model_version_id"].astype(str)
    # 3. architectures
    if architecture == "auto":
        kinds = infer_architectures(rows.assign(checkpoint_model_version_id=ids), models, sdxl_gap)
    else:
        kinds = dict.fromkeys(models, architecture)
    # 5, 6. images and steps, checked
    counts_per_request = _checked_integers(rows["num_images_per_prompt"], "num_images_per_prompt")
    steps = _checked_integers(rows["num_inference_steps"], "num_inference_steps")
    created = pd.to_datetime(rows["gmt_create"], errors="coerce")
    if created.isna().any():
        row = created.isna().idxmax()
        raise ValueError(
            f"row {row}: gmt_create is not a date and time: {rows['gmt_create'][row]!r}"
        )
    # 7. seconds since the first kept request, in request order (stable: file order on ties)
    seconds = (created - created.min()).dt.total_seconds().to_numpy(dtype=float)
    order = np.argsort(seconds, kind="stable")
    repeats = counts_per_request if images == "tasks" else np.ones(len(rows), dtype=int)
    order_repeated = np.repeat(order, repeats[order])
    model_names = ids.to_numpy()[order_repeated]
    trace = pd.DataFrame(
        {
            "arrival": seconds[order_repeated],
            "model": model_names,
            "resolution": [sides[kinds[m]] for m in model_names],
            "steps": steps[order_repeated],
            "architecture": [kinds[m] for m in model_names],
            "request": rows.index.to_numpy()[order_repeated],
        }
    )
    span = float(trace["arrival"].iloc[-1])
    if target_rate is not None and len(trace) > 1 and span > 0:
        trace["arrival"] *= (len(trace) - 1) / span / target_rate
    return trace


def architecture_memory_gb(base: PresetConfig, architecture: str) -> float:
    """A model's footprint (GB) for ``architecture``: the largest ``memory_gb`` among the
    ``base`` preset's models of that latency family (the preset's own accounting, working
    memory included), else the fp16 weights of its components in the shipped
    architecture table (``eat/data/sd_architecture.csv``: weights only)."""
    own = [spec.memory_gb for spec in base.models.values() if spec.profile_model == architecture]
    if own:
        return max(own)
    source = base.profile_latency.architecture if base.profile_latency else ARCHITECTURE_TABLE
    table = read_architecture_table(source)
    weights = table[(table["model"] == architecture) & (table["quantity"] == "fp16_bytes")]
    if weights.empty:
        raise ValueError(f"architecture {architecture!r} is not in the architecture table")
    return float(weights["value"].sum()) / 1e9


def preset_for_trace(
    base: PresetConfig,
    trace: pd.DataFrame,
    trace_path: str | Path,
    *,
    trace_window: Literal["first", "random"] = "random",
) -> PresetConfig:
    """``base`` replaying ``trace`` (a frame of :func:`convert_gentd26`, saved at
    ``trace_path``): its models become the preset's, in the trace's order of popularity,
    each with its architecture's latency family and footprint
    (:func:`architecture_memory_gb`), its share of the tasks and the resolutions it is
    asked at; ``model_slots`` grows to hold them if needed; the step range widens to the
    trace's steps (the tasks run at their own). Everything else is ``base``'s."""
    missing = [c for c in ("model", "architecture", "resolution", "steps") if c not in trace]
    if missing:
        raise ValueError(f"trace lacks columns {missing}: convert it with convert_gentd26")
    counts = trace["model"].astype(str).value_counts()
    models = sorted(counts.index, key=lambda m: (-counts[m], m))
    kinds = trace.groupby(trace["model"].astype(str))["architecture"].first()
    data = base.model_dump()
    data["models"] = {
        m: {"memory_gb": architecture_memory_gb(base, kinds[m]), "profile_model": kinds[m]}
        for m in models
    }
    total = float(counts.sum())
    data["workload"]["models"] = {
        m: {
            "share": float(counts[m]) / total,
            "resolutions": sorted(
                int(r) for r in trace.loc[trace["model"].astype(str) == m, "resolution"].unique()
            ),
        }
        for m in models
    }
    data["workload"].update(process="trace", trace_path=str(trace_path), trace_window=trace_window)
    data["model_slots"] = max(base.model_slots, len(models))
    data["min_steps"] = min(base.min_steps, int(trace["steps"].min()))
    data["max_steps"] = max(base.max_steps, int(trace["steps"].max()))
    return PresetConfig.model_validate(data)


def synthetic_gentd26(
    n_requests: int,
    *,
    n_base_models: int = 12,
    seed: int,
    start: str = "2024-11-15 00:00:00",
) -> pd.DataFrame:
    """A GenTD26-format request trace drawn from ``seed`` (not the real data): the
    columns of :data:`GENTD26_COLUMNS`, requests from a diurnal Poisson process (mean
    one per 20 s, peak-to-trough 3:1 over a day) in sessions of a user repeating one
    base model; base-model popularity Zipf-like (weight 1 / rank); request types,
    statuses, steps and image counts in proportions like the real trace's (the request
    types in the ratio of the shares that ``lora_request_processing.ipynb`` of
    alibaba/clusterdata prints, text to image 0.737, image to image 0.066, inpainting
    0.0056, normalised; steps and image counts among the values the trace's first rows
    show); one model in four of SDXL speed (3.5x the seconds per step)."""
    if n_requests < 1 or n_base_models < 1:
        raise ValueError(
            f"n_requests and n_base_models must be >= 1, got {n_requests} and {n_base_models}"
        )
    rng = np.random.default_rng(seed)
    # arrivals: thinning of a Poisson process with a daily sinusoidal rate
    mean_rate, amplitude, day = 1.0 / 20.0, 0.5, 86_400.0
    times: list[float] = []
    now = 0.0
    while len(times) < n_requests:
        now += rng.exponential(1.0 / (mean_rate * (1.0 + amplitude)))
        rate = mean_rate * (1.0 + amplitude * math.sin(2.0 * math.pi * now / day))
        if rng.random() * mean_rate * (1.0 + amplitude) <= rate:
            times.append(now)
    weights = 1.0 / np.arange(1, n_base_models + 1)
    ids = [f"M{i:04d}" for i in range(n_base_models)]
    slow = rng.random(n_base_models) < 0.25  # SDXL-like models
    seconds_per_step = np.where(slow, 1.75, 0.5)
    model_of_request = np.empty(n_requests, dtype=int)
    group_of_request = np.empty(n_requests, dtype=int)
    index, group = 0, 0
    while index < n_requests:  # sessions: one user, one model, a few requests
        length = min(n_requests - index, int(rng.geometric(0.3)))
        model_of_request[index : index + length] = rng.choice(
            n_base_models, p=weights / weights.sum()
        )
        group_of_request[index : index + length] = group
        index, group = index + length, group + 1
    type_shares = np.array([0.737, 0.066, 0.0056])
    kinds = rng.choice(
        ["TXT_2_IMG", "IMG_2_IMG", "INPAINTING"],
        size=n_requests,
        p=type_shares / type_shares.sum(),
    )
    statuses = rng.choice(
        ["SUCCEED", "FAILED", "PROCESSING"], size=n_requests, p=[0.96, 0.02, 0.02]
    )
    steps = rng.choice([20, 25, 30, 40, 50], size=n_requests, p=[0.05, 0.1, 0.65, 0.15, 0.05])
    images = rng.choice([1, 2, 4, 8], size=n_requests, p=[0.6, 0.1, 0.15, 0.15])
    compute = seconds_per_step[model_of_request] * steps * (1.0 + 0.1 * (images - 1))
    exec_time = np.round(compute * rng.lognormal(0.0, 0.25, size=n_requests) + 2.0)
    created = pd.Timestamp(start) + pd.to_timedelta(np.floor(times), unit="s")
    return pd.DataFrame(
        {
            "gmt_create": created.strftime("%Y-%m-%d %H:%M:%S"),
            "predict_type": kinds,
            "predict_status": statuses,
            "exec_time_seconds": exec_time.astype(float),
            "groupId": [f"G{g:04d}" for g in group_of_request],
            "prompt_length": rng.integers(5, 200, size=n_requests).astype(float),
            "negative_prompt_length": np.where(rng.random(n_requests) < 0.5, 26.0, np.nan),
            "num_images_per_prompt": images.astype(float),
            "num_inference_steps": steps.astype(float),
            "checkpoint_model_version_id": [ids[m] for m in model_of_request],
            "num_lora": rng.integers(0, 2, size=n_requests),
        },
        columns=list(GENTD26_COLUMNS),
    )


__all__ = [
    "GENTD26_COLUMNS",
    "NATIVE_RESOLUTION",
    "architecture_memory_gb",
    "convert_gentd26",
    "infer_architectures",
    "preset_for_trace",
    "read_gentd26",
    "synthetic_gentd26",
]

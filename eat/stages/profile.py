"""The ``profile`` stage: profile this machine, fit the latency model, decide the source.

:func:`profile` resolves ``params.profile`` against the machine (:func:`resolve_run`),
runs the profiler, fits the calibrated model to what it measured, and decides what the
``edge`` preset uses; :func:`run` writes the decision (``reports/latency_source.json``,
where ``env.edge.profile_latency.stage_decision`` points), the tables and figures:

- ``measured``: a CUDA run of the real architectures on a GPU type of the catalogue.
  Its profile replaces that type's and anchors the derived types.
- ``reference``: anything else (no CUDA device: the tiny smoke profile only exercises
  the code; a GPU the catalogue does not know; tiny configs forced on a GPU). The
  preset keeps the shipped reference profiles of ``env.edge.profile_latency.measured``.

Outputs in ``reports/profile/``: ``profile.csv`` (one row per measurement), ``fit.csv``
(the fitted curves), ``held_out.csv`` (leave-one-out errors), ``env_catalogue.csv`` (the
latency the environment will use per GPU type), ``derivation_check.csv`` (derived
against measured GPU types); in ``artifacts/profile/``: ``profile.json`` (metadata) and
the figures.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from eat.devices import cuda_available, resolve_device, resolve_dtype, resolve_model_size
from eat.latency import figures
from eat.latency.calibration import CalibratedLatency, read_architecture_table
from eat.latency.catalogue import GpuCatalogue
from eat.latency.decision import file_sha256
from eat.latency.fit import (
    Curve,
    ProfileFit,
    StepMode,
    error_summary,
    fit_profile,
    held_out_errors,
    load_profile,
)
from eat.params import Params, ProfileSection
from eat.profiling.profiler import ProfileRun, run_profile
from eat.stages.common import setup_logging, write_csv, write_json
from eat.stages.paths import Paths

log = logging.getLogger(__name__)


def resolve_run(settings: ProfileSection, has_cuda: bool) -> tuple[ProfileRun, dict[str, str]]:
    """The concrete run for this machine, and notes on every ``auto`` choice or skipped
    mode (recorded in the metadata and the stage summary)."""
    notes: dict[str, str] = {}
    device = resolve_device(settings.device, has_cuda=has_cuda)
    if settings.device == "auto":
        notes["device"] = f"auto -> {device} (torch.cuda.is_available() is {has_cuda})"
    size = resolve_model_size(settings.model_size, device)
    if settings.model_size == "auto":
        notes["model_size"] = f"auto -> {size} on {device}"
    dtype = resolve_dtype(settings.dtype, device)
    if settings.dtype == "auto":
        notes["dtype"] = f"auto -> {dtype} on {device}"
    modes = list(settings.step_modes)
    if device != "cuda" and "cuda_graph" in modes:
        modes.remove("cuda_graph")
        notes["step_modes"] = "cuda_graph skipped: CUDA graphs need a CUDA device"
    if not modes:
        raise ValueError("no step mode left to run on this device (cuda_graph needs CUDA)")
    grid = settings.real if size == "real" else settings.tiny
    run = ProfileRun(
        device=device,
        model_size=size,
        dtype=dtype,
        models=tuple(settings.models),
        resolutions={model: tuple(grid.resolutions[model]) for model in settings.models},
        patches=tuple(grid.patches),
        batches=tuple(grid.batches),
        step_modes=tuple(modes),
        warmup=grid.warmup,
        repeats=grid.repeats,
        cold_start_trials=grid.cold_start_trials,
        threads=settings.threads,
        seed=settings.seed,
        model_dirs={model: folder for model, folder in settings.model_dirs.items() if folder},
    )
    return run, notes


def decide_source(
    run: ProfileRun,
    device_name: str,
    catalogue: GpuCatalogue,
    profile_path: str,
    profile_sha256: str,
    mode: StepMode,
) -> dict[str, Any]:
    """What the ``edge`` preset should use after this run (see the module docstring).

    A ``reference`` decision names no machine (the summary metrics do): the stages that
    build the edge preset depend on this file, and the same decision on another machine
    must not make them stale."""
    if run.device != "cuda":
        return {
            "source": "reference",
            "reason": "no CUDA device: the tiny smoke profile only exercised the profiler",
        }
    if run.model_size != "real":
        return {
            "source": "reference",
            "reason": "profiled tiny configurations, not the real architectures",
        }
    if mode not in run.step_modes:
        return {
            "source": "reference",
            "reason": f"the run has no {mode} steps, which the edge preset fits",
        }
    gpu = catalogue.match(device_name)
    if gpu is None:
        return {
            "source": "reference",
            "reason": (
                f"{device_name!r} is not in the GPU catalogue; add a row with its "
                "datasheet numbers (eat/data/gpu_catalogue.csv) to use its profile"
            ),
        }
    return {
        "source": "measured",
        "gpu": gpu,
        "profile": profile_path,
        "profile_sha256": profile_sha256,
        "device": device_name,
    }


def fit_table(fit: ProfileFit) -> pd.DataFrame:
    """The fitted curves of a profile, one row per (what, model, batch); a step curve's
    per-resolution factors of its linear term are columns ``f_<resolution>``."""
    rows = [
        {"what": "step", "model": model, "batch": batch, **_curve_columns(curve)}
        for (model, batch), curve in sorted(fit.step.items())
    ]
    rows += [
        {"what": "decode", "model": model, "batch": 1, **_curve_columns(curve)}
        for model, curve in sorted(fit.decode.items())
    ]
    return pd.DataFrame(rows).rename(
        columns={"c0": "t0_s", "c1": "a_s_per_mpx", "c2": "b_s_per_mpx2"}
    )


def _curve_columns(curve: Curve) -> dict[str, float]:
    factors = {f"f_{resolution}": factor for resolution, factor in curve.factors}
    return {"c0": curve.c0, "c1": curve.c1, "c2": curve.c2, **factors}


@dataclass
class ProfileOutcome:
    """What :func:`profile` measured, fitted and decided."""

    run: ProfileRun
    frame: pd.DataFrame
    """One row per measurement."""
    local: pd.DataFrame
    """The measurement as the latency model reads it (:func:`eat.latency.fit.load_profile`)."""
    metadata: dict[str, Any]
    fits: pd.DataFrame
    """The fitted curves of this run, per step mode."""
    held_out: pd.DataFrame
    """Leave-one-out errors: this run, and every profile the environment uses."""
    errors: dict[str, dict[str, float]]
    decision: dict[str, Any]
    model: CalibratedLatency
    """The calibrated model the ``edge`` preset will build from the decision."""
    frames: dict[str, pd.DataFrame]
    """The profiles that model uses, by GPU type."""
    anchor: str


def profile(params: Params, profile_csv: Path, *, has_cuda: bool | None = None) -> ProfileOutcome:
    """Profile this machine, fit what it measured, and decide the ``edge`` preset's
    latency source (module docstring). The measurement is written to ``profile_csv``
    first, since the decision names that file and its hash. ``has_cuda`` overrides
    ``torch.cuda.is_available()`` (tests)."""
    has_cuda = cuda_available() if has_cuda is None else has_cuda
    run, notes = resolve_run(params.profile, has_cuda)
    log.info("profile run: %s (%s)", run, notes)
    result = run_profile(run)
    frame = result.frame
    profile_csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(profile_csv, index=False)
    metadata = {**result.metadata, "auto": notes}
    edge = params.env.edge.profile_latency
    if edge is None:  # pragma: no cover - the schema requires it for kind edge
        raise ValueError("env.edge.profile_latency is required")
    catalogue = GpuCatalogue.load(edge.catalogue)
    device_name = str(frame["device"].iloc[0])

    # 1. the fit of what was just measured, in every mode it has
    local = load_profile(profile_csv)
    fits, held_out, errors = [], [], {}
    for mode in run.step_modes:
        fits.append(fit_table(fit_profile(local, mode)).assign(mode=mode))
        loo = held_out_errors(local, mode)
        held_out.append(loo.assign(profile="this run", mode=mode))
        errors[f"this_run/{mode}"] = error_summary(loo)

    # 2. the decision, and the latency model the environment will build from it
    decision = decide_source(
        run, device_name, catalogue, str(profile_csv), file_sha256(profile_csv), edge.step_mode
    )
    decision["step_mode"] = edge.step_mode
    measured = {gpu: list(files) for gpu, files in edge.measured.items()}
    anchor = edge.anchor
    if decision["source"] == "measured":
        measured[decision["gpu"]] = [str(profile_csv)]
        anchor = decision["gpu"]
    frames = {gpu: load_profile(files) for gpu, files in measured.items()}
    model = CalibratedLatency(
        catalogue,
        frames,
        anchor,
        edge.step_mode,
        read_architecture_table(edge.architecture),
        sources={gpu: "+".join(files) for gpu, files in measured.items()},
    )
    for gpu, gpu_frame in frames.items():
        loo = held_out_errors(gpu_frame, edge.step_mode)
        held_out.append(loo.assign(profile=gpu, mode=edge.step_mode))
        errors[f"{gpu}/{edge.step_mode}"] = error_summary(loo)
    metadata["decision"] = decision
    metadata["memory_share"] = model.memory_share
    return ProfileOutcome(
        run,
        frame,
        local,
        metadata,
        pd.concat(fits, ignore_index=True),
        pd.concat(held_out, ignore_index=True),
        errors,
        decision,
        model,
        frames,
        anchor,
    )


def summarise(outcome: ProfileOutcome, check: pd.DataFrame) -> dict[str, Any]:
    """The stage's metrics."""
    run, decision = outcome.run, outcome.decision
    summary: dict[str, Any] = {
        "device": str(outcome.frame["device"].iloc[0]),
        "device_type": run.device,
        "model_size": run.model_size,
        "dtype": run.dtype,
        "step_modes": list(run.step_modes),
        "threads": run.threads,
        "rows": len(outcome.frame),
        "wall_seconds": float(outcome.metadata["wall_seconds"]),
        "latency_source": decision["source"],
        "latency_source_reason": decision.get("reason", ""),
        "env_anchor": outcome.anchor,
        "memory_share": outcome.model.memory_share,
        "fit": outcome.errors,
    }
    if not check.empty:
        summary["derivation_mean_abs_error"] = float(check["error"].abs().mean())
        summary["derivation_max_abs_error"] = float(check["error"].abs().max())
    return summary


def draw(outcome: ProfileOutcome, mode: StepMode, artifacts: Path) -> None:
    """This run's steps, and the anchor profile the environment uses."""
    local = outcome.local
    figures.steps_vs_patches(
        local, outcome.run.step_modes[-1], title="this run", path=artifacts / "steps_this_run.png"
    )
    anchor_frame = outcome.frames[outcome.anchor]
    figures.steps_vs_patches(
        anchor_frame,
        mode,
        title=f"environment anchor: {outcome.anchor}",
        path=artifacts / "steps_anchor.png",
    )
    figures.speedup_vs_ideal(
        anchor_frame, mode, title=f"{outcome.anchor}, {mode}", path=artifacts / "speedup.png"
    )
    figures.cold_start_bars(
        {"this run": local, outcome.anchor: anchor_frame}, path=artifacts / "cold_start.png"
    )
    figures.fitted_vs_measured(outcome.held_out, path=artifacts / "fitted_vs_measured.png")


def run(params: Params, paths: Paths, *, has_cuda: bool | None = None) -> dict[str, Any]:
    """Profile, decide, and write the stage's files (module docstring)."""
    stage = paths.profile
    setup_logging(stage.log)
    outcome = profile(params, stage.results / "profile.csv", has_cuda=has_cuda)
    edge = params.env.edge.profile_latency
    assert edge is not None  # checked by profile()
    write_json(paths.latency_source, outcome.decision)
    write_csv(outcome.fits, stage.results / "fit.csv")
    write_csv(outcome.held_out, stage.results / "held_out.csv")
    write_csv(outcome.model.catalogue_table(batch=edge.batch), stage.results / "env_catalogue.csv")
    check = outcome.model.derivation_check()
    write_csv(check, stage.results / "derivation_check.csv")
    stage.artifacts.mkdir(parents=True, exist_ok=True)
    (stage.artifacts / "profile.json").write_text(
        json.dumps(outcome.metadata, indent=2, default=str) + "\n"
    )
    draw(outcome, edge.step_mode, stage.artifacts)
    summary = summarise(outcome, check)
    write_json(stage.metrics, summary)
    return summary

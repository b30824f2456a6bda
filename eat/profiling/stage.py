"""The ``profile`` stage: profile this machine, fit the latency model, decide the source.

``profile_stage(params, out_dir)`` (the notebook ``01_profile.ipynb`` and ``eat profile``
call it) resolves ``params.profile`` against the machine (:func:`resolve_run`), runs the
profiler, fits the calibrated model to what it measured, and writes the decision the
``edge`` preset reads (``decision_path``, ``reports/latency_source.json`` in the
pipeline, where ``env.edge.profile_latency.stage_decision`` points):

- ``measured``: a CUDA run of the real architectures on a GPU type of the catalogue.
  Its profile replaces that type's and anchors the derived types.
- ``reference``: anything else (no CUDA device: the tiny smoke profile only exercises
  the code; a GPU the catalogue does not know; tiny configs forced on a GPU). The
  preset keeps the shipped reference profiles of ``env.edge.profile_latency.measured``.

Outputs in ``out_dir``: ``profile.csv`` (one row per measurement), ``profile.json``
(metadata), ``fit.csv`` (the fitted curves), ``held_out.csv`` (leave-one-out errors),
``env_catalogue.csv`` (the latency the environment will use per GPU type),
``derivation_check.csv`` (derived against measured GPU types) and figures.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from eat import calibration
from eat.params import Params, ProfileSection
from eat.profiling.profiler import ProfileRun, run_profile

log = logging.getLogger(__name__)


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_run(settings: ProfileSection, has_cuda: bool) -> tuple[ProfileRun, dict[str, str]]:
    """The concrete run for this machine, and notes on every ``auto`` choice or skipped
    mode (recorded in the metadata and the stage summary)."""
    notes: dict[str, str] = {}
    if settings.device == "auto":
        device = "cuda" if has_cuda else "cpu"
        notes["device"] = f"auto -> {device} (torch.cuda.is_available() is {has_cuda})"
    else:
        device = settings.device
        if device == "cuda" and not has_cuda:
            raise RuntimeError("profile.device is 'cuda' but torch sees no CUDA device")
    size = settings.model_size
    if size == "auto":
        size = "real" if device == "cuda" else "tiny"
        notes["model_size"] = f"auto -> {size} on {device}"
    dtype = settings.dtype
    if dtype == "auto":
        dtype = "float16" if device == "cuda" else "float32"
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
    catalogue: calibration.GpuCatalogue,
    profile_path: str,
    profile_sha256: str,
    mode: calibration.StepMode,
) -> dict[str, Any]:
    """What the ``edge`` preset should use after this run (see the module docstring)."""
    if run.device != "cuda":
        return {
            "source": "reference",
            "reason": "no CUDA device: the tiny smoke profile only exercised the profiler",
            "device": device_name,
        }
    if run.model_size != "real":
        return {
            "source": "reference",
            "reason": "profiled tiny configurations, not the real architectures",
            "device": device_name,
        }
    if mode not in run.step_modes:
        return {
            "source": "reference",
            "reason": f"the run has no {mode} steps, which the edge preset fits",
            "device": device_name,
        }
    gpu = catalogue.match(device_name)
    if gpu is None:
        return {
            "source": "reference",
            "reason": (
                f"{device_name!r} is not in the GPU catalogue; add a row with its "
                "datasheet numbers (eat/data/gpu_catalogue.csv) to use its profile"
            ),
            "device": device_name,
        }
    return {
        "source": "measured",
        "gpu": gpu,
        "profile": profile_path,
        "profile_sha256": profile_sha256,
        "device": device_name,
    }


def fit_table(fit: calibration.ProfileFit) -> pd.DataFrame:
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


def _curve_columns(curve: calibration.Curve) -> dict[str, float]:
    factors = {f"f_{resolution}": factor for resolution, factor in curve.factors}
    return {"c0": curve.c0, "c1": curve.c1, "c2": curve.c2, **factors}


def profile_stage(
    params: Params, out_dir: Path, decision_path: Path, *, has_cuda: bool | None = None
) -> dict[str, Any]:
    """Run the stage (see the module docstring); returns the metrics summary.

    The decision names ``out_dir / "profile.csv"`` as given (relative to the repository
    root in the pipeline). ``has_cuda`` overrides ``torch.cuda.is_available()`` (tests).
    """
    from eat.eval import profile_figures

    out_dir.mkdir(parents=True, exist_ok=True)
    has_cuda = cuda_available() if has_cuda is None else has_cuda
    run, notes = resolve_run(params.profile, has_cuda)
    log.info("profile run: %s (%s)", run, notes)
    result = run_profile(run)
    frame = result.frame
    csv_path = out_dir / "profile.csv"
    frame.to_csv(csv_path, index=False)
    metadata = {**result.metadata, "auto": notes}

    edge = params.env.edge.profile_latency
    if edge is None:  # pragma: no cover - the schema requires it for kind edge
        raise ValueError("env.edge.profile_latency is required")
    catalogue = calibration.GpuCatalogue.load(edge.catalogue)
    measured_modes = [mode for mode in run.step_modes]
    device_name = str(frame["device"].iloc[0])

    # 1. the fit of what was just measured, in every mode it has
    local = calibration.load_profile(csv_path)
    fits, held_out, errors = [], [], {}
    for mode in measured_modes:
        fit = calibration.fit_profile(local, mode)
        fits.append(fit_table(fit).assign(mode=mode))
        loo = calibration.held_out_errors(local, mode)
        held_out.append(loo.assign(profile="this run", mode=mode))
        errors[f"this_run/{mode}"] = calibration.error_summary(loo)
    fit_frame = pd.concat(fits, ignore_index=True)
    fit_frame.to_csv(out_dir / "fit.csv", index=False)

    # 2. the decision, and the latency model the environment will build from it
    decision = decide_source(
        run,
        device_name,
        catalogue,
        str(csv_path),
        calibration.file_sha256(csv_path),
        edge.step_mode,
    )
    decision["step_mode"] = edge.step_mode
    decision_path.parent.mkdir(parents=True, exist_ok=True)
    decision_path.write_text(json.dumps(decision, indent=2) + "\n")
    measured = {gpu: list(files) for gpu, files in edge.measured.items()}
    anchor = edge.anchor
    if decision["source"] == "measured":
        measured[decision["gpu"]] = [str(csv_path)]
        anchor = decision["gpu"]
    frames = {gpu: calibration.load_profile(files) for gpu, files in measured.items()}
    model = calibration.CalibratedLatency(
        catalogue,
        frames,
        anchor,
        edge.step_mode,
        calibration.exchange_table(edge.architecture),
        sources={gpu: "+".join(files) for gpu, files in measured.items()},
    )
    for gpu, gpu_frame in frames.items():
        loo = calibration.held_out_errors(gpu_frame, edge.step_mode)
        held_out.append(loo.assign(profile=gpu, mode=edge.step_mode))
        errors[f"{gpu}/{edge.step_mode}"] = calibration.error_summary(loo)
    held_frame = pd.concat(held_out, ignore_index=True)
    held_frame.to_csv(out_dir / "held_out.csv", index=False)
    env_table = model.catalogue_table(batch=edge.batch)
    env_table.to_csv(out_dir / "env_catalogue.csv", index=False)
    check = model.derivation_check()
    check.to_csv(out_dir / "derivation_check.csv", index=False)
    metadata["decision"] = decision
    metadata["memory_share"] = model.memory_share
    (out_dir / "profile.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")

    # 3. figures: this run, and the profile the environment uses for its anchor
    profile_figures.steps_vs_patches(
        local, measured_modes[-1], title="this run", path=out_dir / "steps_this_run.png"
    )
    anchor_frame = frames[anchor]
    profile_figures.steps_vs_patches(
        anchor_frame,
        edge.step_mode,
        title=f"environment anchor: {anchor}",
        path=out_dir / "steps_anchor.png",
    )
    profile_figures.speedup_vs_ideal(
        anchor_frame,
        edge.step_mode,
        title=f"{anchor}, {edge.step_mode}",
        path=out_dir / "speedup.png",
    )
    profile_figures.cold_start_bars(
        {"this run": local, anchor: anchor_frame}, path=out_dir / "cold_start.png"
    )
    profile_figures.fitted_vs_measured(held_frame, path=out_dir / "fitted_vs_measured.png")

    summary = {
        "device": device_name,
        "device_type": run.device,
        "model_size": run.model_size,
        "dtype": run.dtype,
        "step_modes": list(run.step_modes),
        "threads": run.threads,
        "rows": len(frame),
        "wall_seconds": float(result.metadata["wall_seconds"]),
        "latency_source": decision["source"],
        "latency_source_reason": decision.get("reason", ""),
        "env_anchor": anchor,
        "memory_share": model.memory_share,
        "fit": errors,
    }
    if not check.empty:
        summary["derivation_mean_abs_error"] = float(check["error"].abs().mean())
        summary["derivation_max_abs_error"] = float(check["error"].abs().max())
    return summary

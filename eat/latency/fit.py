"""Curves and profile fits: measured per-step, decode and encode times in, curves out.

Steps 1-2 of the calibrated latency model (:mod:`eat.latency.calibration` has the whole
derivation): the per-step time of one server as a function of the pixels per patch,
``t(p, R) = t0 + f_R a p + b p^2``, fitted in relative error under non-negativity, and
the leave-one-out error of that fit (:func:`held_out_errors`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import nnls

from eat.data import data_path

StepMode = Literal["eager", "cuda_graph"]


@dataclass(frozen=True)
class Curve:
    """``c0 + f c1 x + c2 x^2`` seconds, with ``x`` in millions (of pixels).

    ``f`` is the linear term's factor for the patches of one image resolution (the
    module docstring's ``f_R``): ``factors`` holds it for the resolutions the curve was
    fitted on; any other resolution, or a call without one, uses ``f = 1``.
    """

    c0: float
    c1: float
    c2: float
    factors: tuple[tuple[int, float], ...] = ()
    """(resolution, f_R) pairs, sorted by resolution; empty: one slope for all."""

    def factor(self, resolution: int | None) -> float:
        """``f_R`` of a resolution (1 for one the curve was not fitted on)."""
        return dict(self.factors).get(int(resolution), 1.0) if resolution is not None else 1.0

    def __call__(self, pixels: float, resolution: int | None = None) -> float:
        x = pixels / 1e6
        return self.c0 + self.factor(resolution) * self.c1 * x + self.c2 * x * x

    def scaled(self, fixed: float, variable: float) -> Curve:
        """This curve with ``c0`` replaced by ``fixed`` and ``c1``, ``c2`` times
        ``variable`` (a derived GPU type, step 4): ``f_R`` is a ratio of two of the
        anchor's slopes, so it carries over unchanged."""
        return Curve(fixed, self.c1 * variable, self.c2 * variable, self.factors)


#: Significance level of the F-test that admits per-resolution slopes (see fit_curve).
FACTOR_TEST_ALPHA = 0.05


def fit_curve(
    pixels: Sequence[float],
    seconds: Sequence[float],
    resolutions: Sequence[int] | None = None,
) -> Curve:
    """Non-negative least squares of :class:`Curve` in relative error.

    Three or more distinct ``pixels`` fit all three terms; two fit ``c0 + c1 x``; one
    gives a constant. Each row is divided by its measured time, so a 5% miss on a 10 ms
    step weighs as much as on a 100 ms one.

    With ``resolutions`` (the image resolution of each point), two or more of them, each
    measured at two or more pixel counts, and more distinct pixel counts than
    coefficients, the linear term may get one column per resolution (its ``f_R c1``).
    It does only where an F-test of the two nested fits (one slope against one per
    resolution, relative residuals, level :data:`FACTOR_TEST_ALPHA`) says the extra
    slopes explain more than noise: on the CUDA-graph profiles they cut the residuals
    fourfold; on eager ones, dominated by launch overhead, they would fit the noise.
    """
    x = np.asarray(pixels, dtype=float) / 1e6
    y = np.asarray(seconds, dtype=float)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"fit_curve needs matching, non-empty data (got {len(x)}, {len(y)})")
    if not (np.isfinite(y).all() and (y > 0).all()):
        raise ValueError(f"measured seconds must be positive and finite, got {y}")
    distinct = len(np.unique(x))
    if distinct == 1:
        return Curve(float(np.median(y)), 0.0, 0.0)
    pooled, pooled_rss = _nnls_relative([np.ones_like(x), x, x * x][: min(3, distinct)], y)
    curve = Curve(*[*pooled.tolist(), 0.0, 0.0][:3])
    levels = _resolution_levels(x, resolutions)
    n_coefficients = len(levels) + 2
    if not levels or n_coefficients >= len(y) or n_coefficients > distinct:
        return curve  # no residual degrees of freedom left to test the factors with
    if pooled_rss <= 1e-20 * len(y):
        return curve  # one slope already fits exactly (synthetic data): nothing to add
    r = np.asarray(resolutions, dtype=int)
    basis = [np.ones_like(x), *(x * (r == level) for level in levels), x * x]
    coefficients, rss = _nnls_relative(basis, y)
    extra, residual_dof = len(levels) - 1, len(y) - n_coefficients
    statistic = (pooled_rss - rss) / extra / max(rss / residual_dof, 1e-300)
    if statistic <= stats.f.ppf(1 - FACTOR_TEST_ALPHA, extra, residual_dof):
        return curve
    slopes = coefficients[1 : 1 + len(levels)]
    c1 = float(slopes.mean())
    # c1 = 0: no growing work at any resolution; a factor of 1 keeps the curve flat
    factors = tuple(
        (int(level), float(slope / c1) if c1 > 0 else 1.0)
        for level, slope in zip(levels, slopes, strict=True)
    )
    return Curve(float(coefficients[0]), c1, float(coefficients[-1]), factors)


def _nnls_relative(basis: list[np.ndarray], seconds: np.ndarray) -> tuple[np.ndarray, float]:
    """NNLS of ``seconds`` on ``basis`` in relative error: coefficients and the sum of
    squared relative residuals."""
    coefficients, norm = nnls(np.column_stack(basis) / seconds[:, None], np.ones_like(seconds))
    return coefficients, float(norm**2)


def _resolution_levels(x: np.ndarray, resolutions: Sequence[int] | None) -> list[int]:
    """The resolutions that get their own slope: all of them when there are two or more
    and each has two or more distinct pixel counts (a slope resting on one point would
    only absorb its noise), else none."""
    if resolutions is None:
        return []
    r = np.asarray(resolutions, dtype=int)
    if len(r) != len(x):
        raise ValueError(f"fit_curve got {len(r)} resolutions for {len(x)} points")
    levels = sorted(int(level) for level in np.unique(r))
    if len(levels) < 2 or any(len(np.unique(x[r == level])) < 2 for level in levels):
        return []
    return levels


def load_profile(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Read one or several profile CSVs (``eat/data`` names or paths) into one frame.

    The reference script wrote ``graph`` on step rows only, and no ``graph`` column at
    all in its first eager run (``sd_profile_h200_eager_run1.csv``). A row without a
    value takes the mode of the file's step rows when they all share one (the reference
    measured decode and encode in the same mode as the steps), else eager.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for path in paths:
        frame = pd.read_csv(data_path(path))
        if "graph" not in frame.columns:
            frame["graph"] = np.nan
        step_modes = frame.loc[frame["op"] == "step", "graph"].dropna().map(_as_bool).unique()
        fill = bool(step_modes[0]) if len(step_modes) == 1 else False
        frame["graph"] = [fill if _missing(v) else _as_bool(v) for v in frame["graph"]]
        frame["source"] = str(path)
        frames.append(frame)
    if not frames:
        raise ValueError("no profile files given")
    return pd.concat(frames, ignore_index=True)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _as_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def step_points(frame: pd.DataFrame, mode: StepMode) -> pd.DataFrame:
    """``op=step`` rows of one step mode, one row per (model, batch, resolution,
    patches): the median over repeated runs (the H200's two eager runs)."""
    graph = mode == "cuda_graph"
    steps = frame[(frame["op"] == "step") & (frame["graph"] == graph)]
    if steps.empty:
        return pd.DataFrame(
            columns=["model", "batch", "resolution", "patches", "pixels", "seconds"]
        )
    points = (
        steps.groupby(["model", "batch", "resolution", "patches"], as_index=False)["seconds"]
        .median()
        .astype({"batch": int, "resolution": int, "patches": int})
    )
    points["pixels"] = points["resolution"].astype(float) ** 2 / points["patches"]
    return points


@dataclass
class ProfileFit:
    """What one measured profile says about one GPU (one step mode)."""

    device: str
    mode: StepMode
    step: dict[tuple[str, int], Curve]
    """(model, batch) -> per-step curve in pixels per patch."""
    decode: dict[str, Curve]
    """model -> VAE decode curve in image pixels."""
    encode_s: dict[tuple[str, str], float]
    """(model, text encoder component) -> seconds per batch of prompts."""
    loads: pd.DataFrame
    """Cold starts: model, component, bytes, seconds (page-cache ``from_pretrained``)."""
    points: pd.DataFrame = field(repr=False)
    """The measured step points the fit used."""

    @property
    def models(self) -> list[str]:
        return sorted({model for model, _ in self.step})


def fit_profile(frame: pd.DataFrame, mode: StepMode) -> ProfileFit:
    """Fit steps (one mode), decode and encode, and collect the cold starts of a profile."""
    points = step_points(frame, mode)
    if points.empty:
        have = sorted(
            {"cuda_graph" if g else "eager" for g in frame.loc[frame.op == "step", "graph"]}
        )
        raise ValueError(f"profile has no op=step rows in mode {mode!r}; it has {have}")
    step = {
        (str(model), int(batch)): fit_curve(rows["pixels"], rows["seconds"], rows["resolution"])
        for (model, batch), rows in points.groupby(["model", "batch"])
    }
    graph = mode == "cuda_graph"
    decode = {}
    decodes = frame[frame["op"] == "decode"]
    for model, rows in decodes.groupby("model"):
        # decode rows of this mode if the profile has them (ours do), else whatever it has
        same_mode = rows[rows["graph"] == graph]
        rows = same_mode if not same_mode.empty else rows
        medians = rows.groupby("resolution")["seconds"].median()
        decode[str(model)] = fit_curve(medians.index.to_numpy(float) ** 2, medians.to_numpy())
    encode_s = {}
    encodes = frame[frame["op"] == "encode"]
    for (model, component), rows in encodes.groupby(["model", "component"]):
        same_mode = rows[rows["graph"] == graph]
        rows = same_mode if not same_mode.empty else rows
        encode_s[(str(model), str(component))] = float(rows["seconds"].median())
    loads = frame[frame["op"] == "cold_start_from_disk"]
    if not loads.empty:
        loads = loads.groupby(["model", "component"], as_index=False).agg(
            bytes=("bytes", "median"), seconds=("seconds", "median")
        )
    else:
        loads = pd.DataFrame(columns=["model", "component", "bytes", "seconds"])
    devices = frame["device"].dropna().unique() if "device" in frame else []
    return ProfileFit(
        device=str(devices[0]) if len(devices) else "unknown",
        mode=mode,
        step=step,
        decode=decode,
        encode_s=encode_s,
        loads=loads,
        points=points,
    )


def held_out_errors(frame: pd.DataFrame, mode: StepMode) -> pd.DataFrame:
    """Leave-one-out error of the per-step fit: every measured point predicted by the
    curve fitted to the other points of its (model, batch), at its resolution (its
    ``f_R`` comes from the other patch sizes of that resolution).

    Columns: model, batch, resolution, patches, pixels, measured, predicted, fitted
    (the all-points fit), error (predicted / measured - 1), and interpolated (the
    held-out pixels lie inside the range of the remaining points).
    """
    points = step_points(frame, mode)
    rows = []
    for (model, batch), group in points.groupby(["model", "batch"]):
        full = fit_curve(group["pixels"], group["seconds"], group["resolution"])
        for index in group.index:
            rest = group.drop(index)
            held = group.loc[index]
            if len(rest) < 2:
                continue
            curve = fit_curve(rest["pixels"], rest["seconds"], rest["resolution"])
            predicted = curve(held["pixels"], int(held["resolution"]))
            rows.append(
                {
                    "model": model,
                    "batch": int(batch),
                    "resolution": int(held["resolution"]),
                    "patches": int(held["patches"]),
                    "pixels": float(held["pixels"]),
                    "measured": float(held["seconds"]),
                    "predicted": float(predicted),
                    "fitted": float(full(held["pixels"], int(held["resolution"]))),
                    "error": float(predicted / held["seconds"] - 1.0),
                    "interpolated": bool(
                        rest["pixels"].min() <= held["pixels"] <= rest["pixels"].max()
                    ),
                }
            )
    return pd.DataFrame(rows)


def error_summary(errors: pd.DataFrame) -> dict[str, float]:
    """Mean and max absolute held-out error, over all points and interpolated ones."""
    if errors.empty:
        return {"n_points": 0}
    absolute = errors["error"].abs()
    inside = absolute[errors["interpolated"]]
    fitted = (errors["fitted"] / errors["measured"] - 1.0).abs()
    return {
        "n_points": len(errors),
        "loo_mean_abs_error": float(absolute.mean()),
        "loo_max_abs_error": float(absolute.max()),
        "loo_interpolated_mean_abs_error": float(inside.mean()) if len(inside) else 0.0,
        "loo_interpolated_max_abs_error": float(inside.max()) if len(inside) else 0.0,
        "fit_mean_abs_error": float(fitted.mean()),
    }

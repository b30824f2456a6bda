"""Calibrated latency model: measured GPU profiles in, the simulator's latency table out.

Pure numpy/pandas (no torch): the simulator imports it. The steps, numbered as in the
README's "Calibrated latency model" section:

1. **Per-step time** of one server, for one model family, batch and step mode
   (eager or CUDA graph), as a function of the image pixels per patch ``p`` (resolution^2
   over the number of row patches) and the image resolution ``R``::

       t(p, R) = t0 + f_R a p + b p^2        (p in megapixels; t0, a, b, f_R >= 0)

   ``t0`` is the fixed per-step overhead (kernel launches, reading the weights, small
   kernels that do not fill the GPU), ``a p`` the work that grows with the patch
   (convolutions, linear layers) and ``b p^2`` self-attention within the patch, whose
   cost grows with the square of its tokens. ``f_R`` is how efficiently the GPU runs
   that growing work on the patches of one resolution: a row patch of an ``R`` px image
   is ``R / 8`` latent columns wide whatever the number of patches, and the kernels'
   efficiency depends on that shape (tile quantisation, the kernels cuDNN and cuBLAS
   pick), not on the pixel count alone. The measured profiles show it: at equal pixels
   per patch the 1440 px patches (180 latent columns) run 10-15% slower, and the 768 px
   ones (96) a few % slower, than the 512 and 1024 px ones (64, 128); the fitted
   ``f_R`` is 0.82-0.90, 1.02-1.07, 0.89-0.91 and 1.18-1.23 for 512, 768, 1024 and
   1440 px, alike on the H200 and H100 and for batch 1 and 2. With one slope for all
   resolutions the held-out (leave-one-out) error was 3.8-3.9% mean and up to 11.1% on
   interpolated points; with ``f_R``, 1.8-2.1% and 4.2%. The effect is not monotone in
   ``R``, so a smooth term does not capture it: ``p R``, ``p R^2`` or ``R^2`` bring the
   interpolated maximum to 8.5-10% (a term in the patch's latent rows changes nothing),
   but predict the points of a resolution left out entirely worse than one slope (SD
   1.x: 5.1-5.9% mean against 4.8-5.2%), while ``f_R = 1`` (the typical efficiency) for
   the left-out resolution predicts them better (4.2-4.6%), and better than
   interpolating ``f_R`` between its neighbours (5.9-6.3%). Hence: one ``p`` column per
   measured resolution, ``a`` their mean slope (the mean ``f_R`` is 1), and ``f_R = 1``
   for a resolution that was not measured. The per-resolution slopes must earn their
   place (:func:`fit_curve`): two or more resolutions, each measured at two or more
   patch sizes, and an F-test against one slope; else one ``a`` for all (SDXL, measured
   at one resolution; the launch-bound eager profiles, whose noise they would fit).
   The coefficients minimise the squared *relative* error over the measured points
   under non-negativity (scipy's NNLS), so along any patch sweep (a fixed ``R``) the
   curve never decreases: more pixels per patch are never faster.
2. **VAE decode** of one image: the same basis in image pixels. **Text encoding**: the
   median measured time of each encoder, summed over the model's encoders.
3. **Cold start** of a model: per component, the larger of the measured page-cache load
   (``from_pretrained`` until the weights are on the GPU) and the bytes over the disk
   bandwidth, plus a fixed overhead (process start, CUDA context).
4. **GPU types without a profile** are derived from a measured *anchor* GPU with
   datasheet numbers (``eat/data/gpu_catalogue.csv``)::

       t0' = W / BW' + (t0 - W / BW) * clock / clock'
       a', b' = (a, b) * [(1 - mu) * TF / TF' + mu * BW / BW']        (f_R unchanged)

   ``W`` is the UNet's weight bytes (read once per step), ``TF`` dense FP16 tensor
   throughput, ``BW`` memory bandwidth, ``clock`` the boost clock, primes the target
   GPU. ``mu``, the memory-bound share of the growing work, is fitted on the measured
   GPU types that are not the anchor (the H100 against the H200 anchor: same compute,
   70% of the bandwidth); decode and text encoding scale with the same factor.
   A measured profile of a GPU type always replaces its derived numbers.
5. **Communication** of patch parallelism per step (DistriFusion): the bytes one member
   receives (``eat.profiling.architectures.ExchangeCoefficients``: K/V of every
   self-attention layer, conv boundary rows, GroupNorm statistics and the output latent,
   from the UNet's activation sizes) over the link bandwidth, plus its latency.

Held-out error: :func:`held_out_errors` refits the step curve without each measured
point in turn and predicts it (leave-one-out).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import nnls

StepMode = Literal["eager", "cuda_graph"]
#: Components of each model family (as in eat.profiling.architectures, without torch).
COMPONENTS: dict[str, tuple[str, ...]] = {
    "sd15": ("unet", "vae", "text_encoder"),
    "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2"),
}
VAE_SCALE = 8
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
CATALOGUE_COLUMNS = [
    "gpu",
    "name",
    "device_pattern",
    "architecture",
    "segment",
    "memory_gb",
    "fp16_tflops",
    "memory_bandwidth_gbs",
    "boost_clock_mhz",
    "sm_count",
    "tdp_w",
    "source",
]


def data_path(name: str | Path) -> Path:
    """Resolve a file shipped in ``eat/data`` (or return ``name`` if it is a real path)."""
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    shipped = Path(str(resources.files("eat") / "data" / str(name)))
    if not shipped.is_file():
        raise FileNotFoundError(f"{str(name)!r} is neither a file nor in eat/data")
    return shipped


# ---------------------------------------------------------------------------------------
# 1-2. Curves and profile fits
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# 4. The GPU catalogue
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet numbers of one GPU type (one row of the catalogue)."""

    gpu: str
    name: str
    memory_gb: float
    fp16_tflops: float
    """Dense FP16 tensor-core throughput with FP32 accumulation (what PyTorch uses)."""
    memory_bandwidth_gbs: float
    boost_clock_mhz: float
    source: str


class GpuCatalogue:
    """GPU types with datasheet numbers, and the device names that identify them."""

    def __init__(self, frame: pd.DataFrame, path: str = "") -> None:
        missing = sorted(set(CATALOGUE_COLUMNS) - set(frame.columns))
        if missing:
            raise ValueError(f"GPU catalogue {path!r} lacks columns {missing}")
        if frame["gpu"].duplicated().any():
            raise ValueError(f"GPU catalogue {path!r} repeats gpu ids")
        if frame["source"].isna().any() or (frame["source"].str.strip() == "").any():
            raise ValueError(f"GPU catalogue {path!r}: every row must name its source")
        self.frame = frame.reset_index(drop=True)
        self.path = path
        self._specs = {
            str(row["gpu"]): GpuSpec(
                gpu=str(row["gpu"]),
                name=str(row["name"]),
                memory_gb=float(row["memory_gb"]),
                fp16_tflops=float(row["fp16_tflops"]),
                memory_bandwidth_gbs=float(row["memory_bandwidth_gbs"]),
                boost_clock_mhz=float(row["boost_clock_mhz"]),
                source=str(row["source"]),
            )
            for _, row in self.frame.iterrows()
        }

    @classmethod
    def load(cls, name: str | Path = "gpu_catalogue.csv") -> GpuCatalogue:
        return cls(pd.read_csv(data_path(name)), str(name))

    @property
    def gpus(self) -> list[str]:
        return self.frame["gpu"].tolist()

    def spec(self, gpu: str) -> GpuSpec:
        if gpu not in self._specs:
            raise ValueError(f"GPU type {gpu!r} is not in the catalogue; choose one of {self.gpus}")
        return self._specs[gpu]

    def match(self, device_name: str) -> str | None:
        """The catalogue id whose ``device_pattern`` (a regular expression) matches a
        device name as torch reports it (``NVIDIA H100 80GB HBM3`` -> ``h100``); None if
        none does. Two matches are an error in the catalogue."""
        found = [
            row.gpu
            for row in self.frame.itertuples(index=False)
            if re.search(row.device_pattern, device_name, flags=re.IGNORECASE)
        ]
        if len(found) > 1:
            raise ValueError(f"device {device_name!r} matches several catalogue rows: {found}")
        return found[0] if found else None


# ---------------------------------------------------------------------------------------
# 3-5. The calibrated model
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuLatency:
    """Per-step, decode and encode times on one GPU type (measured or derived)."""

    gpu: str
    source: str
    """``measured (<files>)`` or ``derived from <anchor>``."""
    step: dict[tuple[str, int], Curve]
    decode: dict[str, Curve]
    encode_s: dict[str, float]
    """model -> seconds to encode one batch of prompts with all its text encoders."""

    def step_s(self, model: str, resolution: int, patches: int, batch: int) -> float:
        curve = self.step.get((model, batch))
        if curve is None:
            raise ValueError(
                f"{self.gpu} ({self.source}) has no per-step fit for model {model!r} with "
                f"batch {batch}; it has {sorted(self.step)}"
            )
        return curve(resolution * resolution / patches, resolution)

    def decode_s(self, model: str, resolution: int) -> float:
        return self.decode[model](resolution * resolution)


@dataclass(frozen=True)
class Scaling:
    """How a derived GPU type's times follow from the anchor's (step 4)."""

    weights_s_anchor: dict[str, float]
    """model -> UNet weight bytes over the anchor's bandwidth (s)."""
    weights_s_target: dict[str, float]
    clock_ratio: float
    """anchor boost clock / target boost clock."""
    variable_factor: float
    """(1 - mu) TF_anchor / TF_target + mu BW_anchor / BW_target."""


def exchange_table(name: str | Path = "sd_architecture.csv") -> pd.DataFrame:
    """The architecture table (``eat/data/sd_architecture.csv``): model, component,
    quantity, value."""
    return pd.read_csv(data_path(name))


def _architecture_value(table: pd.DataFrame, model: str, component: str, quantity: str) -> float:
    rows = table[
        (table["model"] == model)
        & (table["component"] == component)
        & (table["quantity"] == quantity)
    ]
    if rows.empty:
        raise ValueError(f"architecture table has no {quantity} for {model} {component}")
    return float(rows["value"].iloc[0])


class CalibratedLatency:
    """Latency of every GPU type of a catalogue from the measured profiles.

    ``measured`` maps catalogue GPU ids to their profile frames; ``anchor`` (one of them)
    is the GPU the derived types are scaled from. See the module docstring.
    """

    def __init__(
        self,
        catalogue: GpuCatalogue,
        measured: Mapping[str, pd.DataFrame],
        anchor: str,
        mode: StepMode,
        architecture: pd.DataFrame,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        if anchor not in measured:
            raise ValueError(
                f"anchor {anchor!r} has no measured profile; measured: {sorted(measured)}"
            )
        for gpu in measured:
            catalogue.spec(gpu)  # every measured GPU type must have datasheet numbers
        self.catalogue = catalogue
        self.mode = mode
        self.anchor = anchor
        self.architecture = architecture
        self.sources = dict(sources or {gpu: "profile" for gpu in measured})
        self.fits = {gpu: fit_profile(frame, mode) for gpu, frame in measured.items()}
        self.frames = dict(measured)
        self.memory_share = self._fit_memory_share()
        self._gpus: dict[str, GpuLatency] = {}
        self._cold_starts: dict[tuple[str, float, float], float] = {}

    # -- step 4: scaling -----------------------------------------------------------------
    def scaling(self, gpu: str, memory_share: float | None = None) -> Scaling:
        anchor, target = self.catalogue.spec(self.anchor), self.catalogue.spec(gpu)
        mu = self.memory_share if memory_share is None else memory_share
        weights = {
            model: _architecture_value(self.architecture, model, "unet", "fp16_bytes")
            for model in COMPONENTS
        }
        return Scaling(
            weights_s_anchor={
                m: w / (anchor.memory_bandwidth_gbs * 1e9) for m, w in weights.items()
            },
            weights_s_target={
                m: w / (target.memory_bandwidth_gbs * 1e9) for m, w in weights.items()
            },
            clock_ratio=anchor.boost_clock_mhz / target.boost_clock_mhz,
            variable_factor=(1 - mu) * anchor.fp16_tflops / target.fp16_tflops
            + mu * anchor.memory_bandwidth_gbs / target.memory_bandwidth_gbs,
        )

    def _derive(self, gpu: str, memory_share: float | None = None) -> GpuLatency:
        fit = self.fits[self.anchor]
        scale = self.scaling(gpu, memory_share)
        step = {}
        for (model, batch), curve in fit.step.items():
            weights_anchor = scale.weights_s_anchor.get(model, 0.0)
            weights_target = scale.weights_s_target.get(model, 0.0)
            if curve.c0 >= weights_anchor:
                c0 = weights_target + (curve.c0 - weights_anchor) * scale.clock_ratio
            else:  # the whole fixed part is below one read of the weights: memory-bound
                c0 = curve.c0 * weights_target / max(weights_anchor, 1e-12)
            step[(model, batch)] = curve.scaled(c0, scale.variable_factor)
        decode = {
            model: Curve(*(c * scale.variable_factor for c in (curve.c0, curve.c1, curve.c2)))
            for model, curve in fit.decode.items()
        }
        encode = {
            model: seconds * scale.variable_factor
            for model, seconds in self._encode_by_model(fit).items()
        }
        return GpuLatency(gpu, f"derived from {self.anchor}", step, decode, encode)

    def _fit_memory_share(self) -> float:
        """Least-squares ``mu`` in [0, 1] over the step points of the measured non-anchor
        GPU types (relative error); 0 (compute scaling only) when there are none."""
        numerator = denominator = 0.0
        for gpu, fit in self.fits.items():
            if gpu == self.anchor:
                continue
            compute_only = self._derive(gpu, memory_share=0.0)
            memory_only = self._derive(gpu, memory_share=1.0)
            for row in fit.points.itertuples(index=False):
                key = (str(row.model), int(row.batch))
                if key not in compute_only.step:
                    continue
                base = compute_only.step[key](row.pixels, int(row.resolution))
                slope = memory_only.step[key](row.pixels, int(row.resolution)) - base
                numerator += (row.seconds - base) * slope / row.seconds**2
                denominator += slope * slope / row.seconds**2
        if denominator == 0.0:
            return 0.0
        return float(np.clip(numerator / denominator, 0.0, 1.0))

    # -- per-GPU latency -----------------------------------------------------------------
    def _encode_by_model(self, fit: ProfileFit) -> dict[str, float]:
        """Seconds to encode a prompt batch per model: its encoders' measured times; an
        encoder the profile lacks (the reference profiles measured CLIP ViT-L only)
        takes the measured CLIP ViT-L time scaled by the parameter ratio."""
        measured_by_component: dict[str, float] = {}
        for (_, component), seconds in fit.encode_s.items():
            measured_by_component.setdefault(component, seconds)
        result = {}
        for model, components in COMPONENTS.items():
            total = 0.0
            for component in components:
                if component == "unet" or component == "vae":
                    continue
                seconds = fit.encode_s.get((model, component), measured_by_component.get(component))
                if seconds is None:
                    reference = fit.encode_s.get(
                        (model, "text_encoder"), measured_by_component.get("text_encoder")
                    )
                    if reference is None:
                        continue
                    ratio = _architecture_value(
                        self.architecture, model, component, "params"
                    ) / _architecture_value(self.architecture, model, "text_encoder", "params")
                    seconds = reference * ratio
                total += seconds
            result[model] = total
        return result

    def gpu(self, gpu: str) -> GpuLatency:
        """The latency of one GPU type: its own profile if measured, else derived."""
        if gpu not in self._gpus:
            self.catalogue.spec(gpu)
            if gpu in self.fits:
                fit = self.fits[gpu]
                if gpu != self.anchor:
                    # fill what this profile lacks (a model, decode) from the derivation
                    derived = self._derive(gpu)
                    step = {**derived.step, **fit.step}
                    decode = {**derived.decode, **fit.decode}
                else:
                    step, decode = dict(fit.step), dict(fit.decode)
                for model in COMPONENTS:  # the SD and SDXL VAEs share one architecture
                    if model not in decode and decode:
                        decode[model] = next(iter(decode.values()))
                self._gpus[gpu] = GpuLatency(
                    gpu,
                    f"measured ({self.sources.get(gpu, 'profile')})",
                    step,
                    decode,
                    self._encode_by_model(fit),
                )
            else:
                derived = self._derive(gpu)
                decode = dict(derived.decode)
                for model in COMPONENTS:
                    if model not in decode and decode:
                        decode[model] = next(iter(decode.values()))
                self._gpus[gpu] = GpuLatency(
                    gpu, derived.source, derived.step, decode, derived.encode_s
                )
        return self._gpus[gpu]

    # -- step 3: cold start ----------------------------------------------------------------
    def cold_start_s(self, model: str, disk_gbps: float, overhead_s: float) -> float:
        """Every component's load: never faster than the anchor's measured page-cache
        ``from_pretrained``, nor than its bytes over the disk bandwidth; plus overhead.

        A component the anchor's profile did not load for this model uses the same
        component of another model (SD and SDXL share the VAE and CLIP ViT-L); one not
        measured at all (SDXL's second text encoder in the reference profiles) takes its
        fp16 bytes from the architecture table at the anchor's measured load rate."""
        key = (model, disk_gbps, overhead_s)
        if key not in self._cold_starts:
            self._cold_starts[key] = self._cold_start_s(model, disk_gbps, overhead_s)
        return self._cold_starts[key]

    def _cold_start_s(self, model: str, disk_gbps: float, overhead_s: float) -> float:
        loads = self.fits[self.anchor].loads
        if loads.empty:
            raise ValueError(
                f"the anchor {self.anchor}'s profile has no op=cold_start_from_disk rows"
            )
        rate = float(loads["bytes"].sum() / loads["seconds"].sum())  # bytes per second
        total = 0.0
        for component in COMPONENTS[model]:
            rows = loads[(loads["model"] == model) & (loads["component"] == component)]
            if rows.empty:
                rows = loads[loads["component"] == component]
            if rows.empty:
                size = _architecture_value(self.architecture, model, component, "fp16_bytes")
                measured = size / rate
            else:
                size, measured = float(rows["bytes"].iloc[0]), float(rows["seconds"].iloc[0])
            total += max(measured, size / (disk_gbps * 1e9))
        return total + overhead_s

    # -- step 5: communication ---------------------------------------------------------------
    def exchange_bytes(self, model: str, resolution: int, patches: int, batch: int) -> float:
        """Bytes one member of a gang of ``patches`` receives per denoising step."""
        if patches <= 1:
            return 0.0

        def value(quantity: str) -> float:
            return _architecture_value(self.architecture, model, "unet", f"exchange_{quantity}")

        side = resolution // VAE_SCALE
        area = side * side * (patches - 1) / patches
        peers = patches - 1
        elements = (
            (value("kv_per_latent_px") + value("latent_per_latent_px")) * area
            + value("halo_per_latent_col") * side * peers
            + value("groupnorm") * peers
        )
        return elements * batch * DTYPE_BYTES["float16"]

    # -- reports ---------------------------------------------------------------------------
    def catalogue_table(self, gpus: Iterable[str] | None = None, batch: int = 2) -> pd.DataFrame:
        """Every GPU type: datasheet numbers, source of its latency, and its per-step time
        for SD 1.x at 512 px and SDXL at 1024 px on one server, with the speed relative to
        the anchor."""
        rows = []
        anchor = self.gpu(self.anchor)
        for gpu in gpus or self.catalogue.gpus:
            spec = self.catalogue.spec(gpu)
            latency = self.gpu(gpu)
            sd15 = latency.step_s("sd15", 512, 1, batch)
            sdxl = latency.step_s("sdxl", 1024, 1, batch)
            rows.append(
                {
                    "gpu": gpu,
                    "name": spec.name,
                    "memory_gb": spec.memory_gb,
                    "fp16_tflops": spec.fp16_tflops,
                    "memory_bandwidth_gbs": spec.memory_bandwidth_gbs,
                    "latency_source": latency.source,
                    "sd15_512_step_ms": sd15 * 1e3,
                    "sdxl_1024_step_ms": sdxl * 1e3,
                    "speed_vs_anchor": anchor.step_s("sd15", 512, 1, batch) / sd15,
                }
            )
        return pd.DataFrame(rows)

    def derivation_check(self) -> pd.DataFrame:
        """Every measured non-anchor GPU type's step points against what the catalogue
        would derive for it from the anchor, with the fitted ``mu`` and with ``mu = 0``
        (datasheet compute ratio only)."""
        rows = []
        for gpu, fit in self.fits.items():
            if gpu == self.anchor:
                continue
            fitted, compute_only = self._derive(gpu), self._derive(gpu, memory_share=0.0)
            for row in fit.points.itertuples(index=False):
                key = (str(row.model), int(row.batch))
                if key not in fitted.step:
                    continue
                rows.append(
                    {
                        "gpu": gpu,
                        "anchor": self.anchor,
                        "model": key[0],
                        "batch": key[1],
                        "resolution": int(row.resolution),
                        "patches": int(row.patches),
                        "measured": float(row.seconds),
                        "derived": fitted.step[key](row.pixels, int(row.resolution)),
                        "derived_compute_only": compute_only.step[key](
                            row.pixels, int(row.resolution)
                        ),
                    }
                )
        frame = pd.DataFrame(rows)
        if not frame.empty:
            frame["error"] = frame["derived"] / frame["measured"] - 1.0
            frame["error_compute_only"] = frame["derived_compute_only"] / frame["measured"] - 1.0
        return frame


# ---------------------------------------------------------------------------------------
# The profile stage's decision
# ---------------------------------------------------------------------------------------


def read_stage_decision(path: str | Path | None) -> dict | None:
    """The ``latency_source.json`` the profile stage wrote, or None when ``path`` is None
    or the file does not exist (the pipeline has not profiled: the shipped profiles)."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        return None
    decision = json.loads(path.read_text())
    if decision.get("source") not in ("measured", "reference"):
        raise ValueError(f"{path}: source must be 'measured' or 'reference', got {decision!r}")
    if decision["source"] == "measured":
        for key in ("gpu", "profile", "profile_sha256"):
            if not decision.get(key):
                raise ValueError(f"{path}: a measured decision needs {key!r}")
        digest = file_sha256(decision["profile"])
        if digest != decision["profile_sha256"]:
            raise ValueError(
                f"{decision['profile']} changed after the profile stage chose it "
                f"(sha256 {digest} != {decision['profile_sha256']}); rerun the profile stage"
            )
    return decision


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

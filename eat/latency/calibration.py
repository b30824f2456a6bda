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
   receives (``eat.architectures.ExchangeCoefficients``: K/V of every
   self-attention layer, conv boundary rows, GroupNorm statistics and the output latent,
   from the UNet's activation sizes) over the link bandwidth, plus its latency.

Held-out error: :func:`held_out_errors` refits the step curve without each measured
point in turn and predicts it (leave-one-out).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from eat.architectures import COMPONENTS, VAE_SCALE
from eat.data import data_path
from eat.latency.catalogue import GpuCatalogue
from eat.latency.fit import Curve, ProfileFit, StepMode, fit_profile

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


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


def read_architecture_table(name: str | Path = "sd_architecture.csv") -> pd.DataFrame:
    """The architecture table (``eat/data/sd_architecture.csv``, written by
    :func:`eat.architectures.architecture_table`): model, component, quantity, value."""
    return pd.read_csv(data_path(name))


def architecture_values(table: pd.DataFrame) -> dict[tuple[str, str, str], float]:
    """The architecture table as ``(model, component, quantity) -> value`` (looked up per
    simulated step: a dict, not a frame filter)."""
    return {
        (str(row.model), str(row.component), str(row.quantity)): float(row.value)
        for row in table.itertuples(index=False)
    }


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
        self._architecture = architecture_values(architecture)
        self.sources = dict(sources or {gpu: "profile" for gpu in measured})
        self.fits = {gpu: fit_profile(frame, mode) for gpu, frame in measured.items()}
        self.frames = dict(measured)
        self.memory_share = self._fit_memory_share()
        self._gpus: dict[str, GpuLatency] = {}
        self._cold_starts: dict[tuple[str, float, float], float] = {}

    def architecture_value(self, model: str, component: str, quantity: str) -> float:
        """One number of the architecture table (fp16 bytes, parameters, exchange sizes)."""
        value = self._architecture.get((model, component, quantity))
        if value is None:
            raise ValueError(f"architecture table has no {quantity} for {model} {component}")
        return value

    # -- step 4: scaling -----------------------------------------------------------------
    def scaling(self, gpu: str, memory_share: float | None = None) -> Scaling:
        anchor, target = self.catalogue.spec(self.anchor), self.catalogue.spec(gpu)
        mu = self.memory_share if memory_share is None else memory_share
        weights = {
            model: self.architecture_value(model, "unet", "fp16_bytes") for model in COMPONENTS
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
                    ratio = self.architecture_value(
                        model, component, "params"
                    ) / self.architecture_value(model, "text_encoder", "params")
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
                size = self.architecture_value(model, component, "fp16_bytes")
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
            return self.architecture_value(model, "unet", f"exchange_{quantity}")

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

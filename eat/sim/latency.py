"""Data-driven latency models: how long a gang takes to serve a task.

Two models share one interface (:class:`LatencyModel`):

- :class:`PaperLatency` is the reference simulator's typed-in table (per-step time
  and reload time by gang size; zzf1955/EAT), kept to reproduce the paper setting.
- :class:`ProfileLatency` is the calibrated model of :mod:`eat.calibration`: per-step
  time of each GPU type fitted on measured profiles (interpolated in pixels per patch,
  with the measured fixed overhead) or derived from an anchor GPU with datasheet
  numbers; explicit communication (the UNet's activation bytes over the link), VAE
  decode, text encoding and result transmission terms; cold starts from the bytes of
  the components over a load bandwidth, never faster than the measured page-cache load,
  plus a fixed overhead.

All times are in seconds.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eat.calibration import (
    CalibratedLatency,
    GpuCatalogue,
    data_path,
    exchange_table,
    load_profile,
    read_stage_decision,
)
from eat.params import PresetConfig

SimTime = float  # seconds of simulated time


@dataclass(frozen=True)
class GangTiming:
    """Expected timing of a task on a gang, before any noise."""

    member_cold_start_s: tuple[float, ...]
    """Model load time each member pays before compute (0 where the model is warm)."""
    setup_s: float
    """From dispatch to the first denoising step: the slowest member's cold start
    plus text encoding."""
    step_s: float
    """Pace of one denoising step of the gang: slowest member plus communication."""
    tail_s: float
    """After the last step: VAE decode and result transmission."""

    def duration(self, steps: int) -> float:
        return self.setup_s + steps * self.step_s + self.tail_s


__all__ = ["GangTiming", "PaperLatency", "ProfileLatency", "data_path"]


class PaperLatency:
    """The reference tables: per-step and reload seconds by gang size; no other terms."""

    def __init__(self, preset: PresetConfig) -> None:
        if preset.paper_latency is None:
            raise ValueError("PaperLatency needs preset.paper_latency")
        self.per_step_s = dict(preset.paper_latency.per_step_s)
        self.reload_s = dict(preset.paper_latency.reload_s)

    def gang_timing(self, gang_size: int, warm: bool) -> GangTiming:
        if gang_size not in self.per_step_s:
            raise ValueError(
                f"gang size {gang_size} has no reference latency; choose one of "
                f"{sorted(self.per_step_s)}"
            )
        reload = 0.0 if warm else self.reload_s[gang_size]
        return GangTiming(
            member_cold_start_s=(reload,) * gang_size,
            setup_s=reload,
            step_s=self.per_step_s[gang_size],
            tail_s=0.0,
        )


@functools.lru_cache(maxsize=16)
def _calibrated(
    catalogue: str,
    measured: tuple[tuple[str, tuple[str, ...]], ...],
    anchor: str,
    mode: str,
    architecture: str,
    decision: str,
) -> CalibratedLatency:
    """One fitted model per configuration, shared by every simulator of a process (the
    evaluation builds one per episode). ``decision`` only keys the cache: the stage's
    decision names its profile by content hash, so a new profile is a new entry."""
    return CalibratedLatency(
        GpuCatalogue.load(catalogue),
        {gpu: load_profile(files) for gpu, files in measured},
        anchor,
        mode,  # type: ignore[arg-type]
        exchange_table(architecture),
        sources={gpu: "+".join(files) for gpu, files in measured},
    )


class ProfileLatency:
    """Latency from the calibrated model over measured profiles (see module docstring).

    Which profiles: ``profile_latency.measured`` (GPU type -> CSVs) with its ``anchor``,
    unless the profile stage's decision (``profile_latency.stage_decision``) names a GPU
    profile it measured: that profile then replaces its type's and anchors the others.
    :attr:`source` says which was used.
    """

    def __init__(self, preset: PresetConfig) -> None:
        config = preset.profile_latency
        if config is None:
            raise ValueError("ProfileLatency needs preset.profile_latency")
        self.preset = preset
        self.network = preset.network
        self.batch = config.batch
        measured = {gpu: list(files) for gpu, files in config.measured.items()}
        anchor = config.anchor
        decision = read_stage_decision(config.stage_decision)
        if decision is not None and decision["source"] == "measured":
            measured[decision["gpu"]] = [decision["profile"]]
            anchor = decision["gpu"]
            self.source = (
                f"measured by the profile stage: {decision['gpu']} ({decision['profile']}), "
                f"anchor of the derived GPU types"
            )
        else:
            reason = f" ({decision['reason']})" if decision and decision.get("reason") else ""
            self.source = (
                f"shipped reference profiles{reason}: "
                + ", ".join(f"{gpu} ({'+'.join(files)})" for gpu, files in measured.items())
                + f"; anchor {anchor}"
            )
        self.anchor = anchor
        self.model = _calibrated(
            config.catalogue,
            tuple((gpu, tuple(files)) for gpu, files in measured.items()),
            anchor,
            config.step_mode,
            config.architecture,
            json.dumps(decision, sort_keys=True),
        )
        catalogue = self.model.catalogue
        for name in preset.gpu_types:
            if name not in catalogue.gpus:
                raise ValueError(
                    f"gpu_types: {name!r} is not in the GPU catalogue {config.catalogue}; "
                    f"choose one of {catalogue.gpus}"
                )
        self.catalogue = catalogue
        self.cold_start_s = {
            name: self.model.cold_start_s(
                spec.profile_model, config.load_bandwidth_gbps, config.cold_start_overhead_s
            )
            for name, spec in preset.models.items()
        }
        self._gpus = {name: self.model.gpu(name) for name in preset.gpu_types}
        for name, spec in preset.models.items():
            for gpu, latency in self._gpus.items():
                if (spec.profile_model, self.batch) not in latency.step:
                    raise ValueError(
                        f"models.{name}.profile_model {spec.profile_model!r} with batch "
                        f"{self.batch} has no per-step fit on {gpu}; it has {sorted(latency.step)}"
                    )
        self._step_cache: dict[tuple[str, int, int, str], float] = {}

    # -- what the simulator asks ---------------------------------------------------------
    def memory_gb(self, gpu: str) -> float:
        """The GPU type's memory: ``gpu_types`` if given there, else the catalogue's."""
        configured = self.preset.gpu_types[gpu].memory_gb
        return configured if configured is not None else self.catalogue.spec(gpu).memory_gb

    def speed(self, gpu: str) -> float:
        """Throughput relative to the anchor GPU: the geometric mean, over the workload's
        models and resolutions, of the anchor's per-step time over this type's (one
        server, warm)."""
        anchor, target = self.model.gpu(self.anchor), self.model.gpu(gpu)
        ratios = [
            anchor.step_s(self.preset.models[model].profile_model, resolution, 1, self.batch)
            / target.step_s(self.preset.models[model].profile_model, resolution, 1, self.batch)
            for model, mix in self.preset.workload.models.items()
            for resolution in mix.resolutions
        ]
        return float(np.exp(np.mean(np.log(ratios))))

    def decode_s(self, model: str, resolution: int, gpu: str) -> float:
        return self._gpus[gpu].decode_s(self.preset.models[model].profile_model, resolution)

    def encode_s(self, model: str, gpu: str) -> float:
        return self._gpus[gpu].encode_s[self.preset.models[model].profile_model]

    def communication_s(self, model: str, resolution: int, patches: int) -> float:
        """Per-step exchange of one member of a gang of ``patches``: the bytes it receives
        (all-gathers) over the link, plus one link latency."""
        if patches <= 1:
            return 0.0
        per_pixel = self.network.activation_bytes_per_latent_pixel
        if per_pixel is None:
            exchanged = self.model.exchange_bytes(
                self.preset.models[model].profile_model, resolution, patches, self.batch
            )
        else:  # a fixed volume per latent pixel (params override)
            exchanged = per_pixel * (resolution / 8) ** 2 * (patches - 1) / patches
        return self.network.latency_s + exchanged / (self.network.bandwidth_gbps * 1e9)

    def transmission_s(self, resolution: int) -> float:
        image_bytes = self.network.image_bytes_per_pixel * resolution * resolution
        return image_bytes / (self.network.client_bandwidth_gbps * 1e9)

    def step_s(self, model: str, resolution: int, patches: int, gpu: str) -> float:
        """Compute time of one member per denoising step (no communication)."""
        key = (model, resolution, patches, gpu)
        seconds = self._step_cache.get(key)
        if seconds is None:
            profile_model = self.preset.models[model].profile_model
            seconds = self._gpus[gpu].step_s(profile_model, resolution, patches, self.batch)
            self._step_cache[key] = seconds
        return seconds

    def gang_timing(
        self, model: str, resolution: int, gpus: Sequence[str], warm: Sequence[bool]
    ) -> GangTiming:
        patches = len(gpus)
        cold = tuple(0.0 if is_warm else self.cold_start_s[model] for is_warm in warm)
        compute = max(self.step_s(model, resolution, patches, gpu) for gpu in gpus)
        exchange = self.communication_s(model, resolution, patches)
        if self.network.overlap == "overlapped":
            pace = max(compute, exchange)
        else:
            pace = compute + exchange
        # The member that decodes fastest leads: it encodes the prompt and decodes.
        leader = min(gpus, key=lambda gpu: self.decode_s(model, resolution, gpu))
        return GangTiming(
            member_cold_start_s=cold,
            setup_s=max(cold) + self.encode_s(model, leader),
            step_s=pace,
            tail_s=self.decode_s(model, resolution, leader) + self.transmission_s(resolution),
        )

    def nominal_latency_s(self, model: str, resolution: int, gpu: str, steps: int) -> float:
        """Warm latency on one server of type ``gpu``: the deadline reference."""
        return self.gang_timing(model, resolution, [gpu], [True]).duration(steps)

"""The calibrated latency model of a preset: measured GPU profiles, fitted and derived by
:mod:`eat.latency.calibration`, plus the explicit terms a gang pays beyond compute.

Per-step time of each GPU type is fitted on its measured profile (interpolated in
pixels per patch, with the measured fixed overhead) or derived from an anchor GPU with
datasheet numbers; the gang adds the per-step exchange of patch parallelism (the UNet's
activation bytes over the link, overlapped with compute or not), VAE decode, text
encoding and the result's transmission; a cold start is the components' bytes over a
load bandwidth, never faster than the measured page-cache load, plus a fixed overhead.

With a ``topology`` every transfer pays the slowest link it crosses: the exchange of a
gang within one site goes over ``network`` (the link within a site), that of a gang
across sites over ``topology.inter_site``; the result leaves its site over
``inter_site`` and reaches the client over ``client_bandwidth_gbps``, so it pays one
inter-site latency and the smaller of the two bandwidths.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

import numpy as np

from eat.latency.base import GangTiming, GpuRating
from eat.latency.calibration import CalibratedLatency, read_architecture_table
from eat.latency.catalogue import GpuCatalogue
from eat.latency.decision import read_stage_decision
from eat.latency.fit import StepMode, load_profile
from eat.params import PresetConfig


@functools.lru_cache(maxsize=16)
def _calibrated(
    catalogue: str,
    measured: tuple[tuple[str, tuple[str, ...]], ...],
    anchor: str,
    mode: StepMode,
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
        mode,
        read_architecture_table(architecture),
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
        self.topology = preset.topology
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
        self.model_cold_start_s = {
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
        self._exchange_cache: dict[tuple[str, int, int, bool], float] = {}
        self._timing_cache: dict[tuple, GangTiming] = {}
        self._ratings: dict[str, GpuRating] = {}

    # -- the LatencyModel interface -------------------------------------------------------
    def gpu_rating(self, gpu: str) -> GpuRating:
        """Speed relative to the anchor GPU (:meth:`speed`) and memory (:meth:`memory_gb`)."""
        rating = self._ratings.get(gpu)
        if rating is None:
            rating = self._ratings[gpu] = GpuRating(self.speed(gpu), self.memory_gb(gpu))
        return rating

    def cold_start_s(self, model: str, gang_size: int) -> float:
        """Every member loads the whole model, whatever the gang size."""
        return self.model_cold_start_s[model]

    # -- the terms ------------------------------------------------------------------------
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

    def communication_s(
        self, model: str, resolution: int, patches: int, cross_site: bool = False
    ) -> float:
        """Per-step exchange of one member of a gang of ``patches``: the bytes it receives
        (all-gathers) over the slowest link of the gang (between sites when
        ``cross_site``, else within a site), plus one latency of that link."""
        if patches <= 1:
            return 0.0
        key = (model, resolution, patches, cross_site)
        seconds = self._exchange_cache.get(key)
        if seconds is None:
            seconds = self._communication_s(model, resolution, patches, cross_site)
            self._exchange_cache[key] = seconds
        return seconds

    def _communication_s(
        self, model: str, resolution: int, patches: int, cross_site: bool
    ) -> float:
        per_pixel = self.network.activation_bytes_per_latent_pixel
        if per_pixel is None:
            exchanged = self.model.exchange_bytes(
                self.preset.models[model].profile_model, resolution, patches, self.batch
            )
        else:  # a fixed volume per latent pixel (params override)
            exchanged = per_pixel * (resolution / 8) ** 2 * (patches - 1) / patches
        if cross_site:
            if self.topology is None:
                raise ValueError("a gang across sites needs a preset with a topology")
            link = self.topology.inter_site
            return link.latency_s + exchanged / (link.bandwidth_gbps * 1e9)
        return self.network.latency_s + exchanged / (self.network.bandwidth_gbps * 1e9)

    def transmission_s(self, resolution: int) -> float:
        """The result image to the client: over the client link, and with a topology
        first over the site's uplink (module docstring)."""
        image_bytes = self.network.image_bytes_per_pixel * resolution * resolution
        if self.topology is None:
            return image_bytes / (self.network.client_bandwidth_gbps * 1e9)
        uplink = self.topology.inter_site
        slowest = min(self.network.client_bandwidth_gbps, uplink.bandwidth_gbps)
        return uplink.latency_s + image_bytes / (slowest * 1e9)

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
        self,
        model: str,
        resolution: int,
        gpus: Sequence[str],
        warm: Sequence[bool],
        cross_site: bool = False,
    ) -> GangTiming:
        """Memoised: a simulator asks for the same few gangs at every dispatch."""
        key = (model, resolution, tuple(gpus), tuple(warm), cross_site)
        timing = self._timing_cache.get(key)
        if timing is None:
            timing = self._gang_timing(model, resolution, gpus, warm, cross_site)
            self._timing_cache[key] = timing
        return timing

    def _gang_timing(
        self,
        model: str,
        resolution: int,
        gpus: Sequence[str],
        warm: Sequence[bool],
        cross_site: bool,
    ) -> GangTiming:
        patches = len(gpus)
        cold = tuple(0.0 if is_warm else self.model_cold_start_s[model] for is_warm in warm)
        compute = max(self.step_s(model, resolution, patches, gpu) for gpu in gpus)
        exchange = self.communication_s(model, resolution, patches, cross_site)
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

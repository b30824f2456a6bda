"""Data-driven latency models: how long a gang takes to serve a task.

Two models share one interface (:class:`LatencyModel`):

- :class:`PaperLatency` is the reference simulator's typed-in table (per-step time
  and reload time by gang size; zzf1955/EAT), kept to reproduce the paper setting.
- :class:`ProfileLatency` looks per-step UNet time up in a measured profile (model,
  resolution, patch count; interpolated in pixels per patch), scales it by the GPU
  type's speed factor, and adds explicit communication, VAE decode, text encoding
  and result transmission terms. Cold starts come from the bytes on disk of the
  profiled components over a load bandwidth, plus a fixed overhead.

All times are in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

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


def data_path(name: str) -> Path:
    """Resolve a file shipped in ``eat/data`` (or return ``name`` if it is a real path)."""
    candidate = Path(name)
    if candidate.is_file():
        return candidate
    shipped = resources.files("eat") / "data" / name
    path = Path(str(shipped))
    if not path.is_file():
        raise FileNotFoundError(f"latency profile {name!r} is neither a path nor in eat/data")
    return path


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


class StepTable:
    """Per-step seconds of one profile by (model, resolution, patches), interpolated.

    Missing points are interpolated log-log in pixels per patch over every measured
    point of the model, which is how the compute of one member scales: the table
    shows equal times for equal pixels per patch (e.g. SD 1.x 512 px on 1 patch and
    1024 px on 4 patches both take 11.9 ms on the H200).
    """

    def __init__(self, frame: pd.DataFrame, batch: int) -> None:
        steps = frame[(frame["op"] == "step") & (frame["batch"] == batch)]
        if steps.empty:
            raise ValueError(f"profile has no op=step rows with batch={batch}")
        self._exact: dict[tuple[str, int, int], float] = {}
        self._curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for row in steps.itertuples(index=False):
            key = (str(row.model), int(row.resolution), int(row.patches))
            self._exact[key] = float(row.seconds)
        for model, rows in steps.groupby("model"):
            pixels = rows["resolution"].astype(float) ** 2 / rows["patches"].astype(float)
            curve = (
                pd.DataFrame({"log_px": np.log(pixels), "log_s": np.log(rows["seconds"])})
                .groupby("log_px", as_index=False)["log_s"]
                .mean()
                .sort_values("log_px")
            )
            self._curves[str(model)] = (curve["log_px"].to_numpy(), curve["log_s"].to_numpy())

    @property
    def models(self) -> list[str]:
        return sorted(self._curves)

    def seconds(self, model: str, resolution: int, patches: int) -> float:
        exact = self._exact.get((model, resolution, patches))
        if exact is not None:
            return exact
        if model not in self._curves:
            raise ValueError(f"profile has no step rows for model {model!r}; has {self.models}")
        log_px, log_s = self._curves[model]
        target = np.log(resolution * resolution / patches)
        if len(log_px) == 1:
            return float(np.exp(log_s[0]))
        # np.interp clamps outside the measured range; extrapolate linearly instead
        # so that a larger patch is never cheaper than the largest measured one.
        if target > log_px[-1]:
            slope = (log_s[-1] - log_s[-2]) / (log_px[-1] - log_px[-2])
            return float(np.exp(log_s[-1] + slope * (target - log_px[-1])))
        return float(np.exp(np.interp(target, log_px, log_s)))


class ProfileLatency:
    """Latency from a measured profile, scaled per GPU type (see module docstring)."""

    def __init__(self, preset: PresetConfig) -> None:
        config = preset.profile_latency
        if config is None:
            raise ValueError("ProfileLatency needs preset.profile_latency")
        self.preset = preset
        self.network = preset.network
        step_frame = pd.read_csv(data_path(config.step_profile))
        cold_frame = pd.read_csv(data_path(config.cold_start_profile))
        self.step_table = StepTable(step_frame, config.batch)
        for name, spec in preset.models.items():
            if spec.profile_model not in self.step_table.models:
                raise ValueError(
                    f"models.{name}.profile_model {spec.profile_model!r} is not in the "
                    f"profile; choose one of {self.step_table.models}"
                )
        decode = step_frame[step_frame["op"] == "decode"]
        if decode.empty:
            raise ValueError(f"{config.step_profile} has no op=decode rows")
        # The SD and SDXL VAEs share one architecture; the profile measures one of them.
        decode = decode.groupby("resolution")["seconds"].median().sort_index()
        self._decode_px = decode.index.to_numpy(dtype=float) ** 2
        self._decode_s = decode.to_numpy(dtype=float)
        encode = step_frame[step_frame["op"] == "encode"]
        self.encode_s = float(encode["seconds"].median()) if not encode.empty else 0.0
        self.cold_start_s = self._cold_starts(
            cold_frame, config.load_bandwidth_gbps, config.cold_start_overhead_s
        )
        self._speed = {name: gpu.speed for name, gpu in preset.gpu_types.items()}

    def _cold_starts(
        self, frame: pd.DataFrame, bandwidth_gbps: float, overhead_s: float
    ) -> dict[str, float]:
        """Cold start per model on the profiled GPU: every component's bytes over the
        load bandwidth (never faster than the page-cache load that was measured),
        plus the fixed overhead."""
        loads = frame[frame["op"] == "cold_start_from_disk"]
        if loads.empty:
            raise ValueError("cold-start profile has no op=cold_start_from_disk rows")
        per_component = loads.groupby(["model", "component"]).agg(
            bytes=("bytes", "median"), seconds=("seconds", "median")
        )
        shared = per_component.reset_index()
        result = {}
        for name, spec in self.preset.models.items():
            total = 0.0
            for component in ("unet", "vae", "text_encoder"):
                rows = shared[
                    (shared["component"] == component) & (shared["model"] == spec.profile_model)
                ]
                if rows.empty:  # the profile measured this component for another model only
                    rows = shared[shared["component"] == component]
                if rows.empty:
                    continue
                size, measured = float(rows["bytes"].iloc[0]), float(rows["seconds"].iloc[0])
                total += max(measured, size / (bandwidth_gbps * 1e9))
            result[name] = total + overhead_s
        return result

    def decode_s(self, resolution: int) -> float:
        return float(np.interp(resolution * resolution, self._decode_px, self._decode_s))

    def communication_s(self, resolution: int, patches: int) -> float:
        """Per-step exchange of one member: it receives the other members' share of the
        activations (an all-gather), plus one link latency."""
        if patches <= 1:
            return 0.0
        latent_pixels = (resolution / 8) ** 2
        exchanged = self.network.activation_bytes_per_latent_pixel * latent_pixels
        exchanged *= (patches - 1) / patches
        return self.network.latency_s + exchanged / (self.network.bandwidth_gbps * 1e9)

    def transmission_s(self, resolution: int) -> float:
        image_bytes = self.network.image_bytes_per_pixel * resolution * resolution
        return image_bytes / (self.network.client_bandwidth_gbps * 1e9)

    def step_s(self, model: str, resolution: int, patches: int, gpu: str) -> float:
        """Compute time of one member per denoising step (no communication)."""
        profile_model = self.preset.models[model].profile_model
        return self.step_table.seconds(profile_model, resolution, patches) / self._speed[gpu]

    def gang_timing(
        self, model: str, resolution: int, gpus: Sequence[str], warm: Sequence[bool]
    ) -> GangTiming:
        patches = len(gpus)
        cold = tuple(0.0 if is_warm else self.cold_start_s[model] for is_warm in warm)
        compute = max(self.step_s(model, resolution, patches, gpu) for gpu in gpus)
        exchange = self.communication_s(resolution, patches)
        if self.network.overlap == "overlapped":
            pace = max(compute, exchange)
        else:
            pace = compute + exchange
        # The fastest member leads: it encodes the prompt and decodes the image.
        leader_speed = max(self._speed[gpu] for gpu in gpus)
        return GangTiming(
            member_cold_start_s=cold,
            setup_s=max(cold) + self.encode_s / leader_speed,
            step_s=pace,
            tail_s=self.decode_s(resolution) / leader_speed + self.transmission_s(resolution),
        )

    def nominal_latency_s(self, model: str, resolution: int, gpu: str, steps: int) -> float:
        """Warm latency on one server of type ``gpu``: the deadline reference."""
        return self.gang_timing(model, resolution, [gpu], [True]).duration(steps)

"""The reference simulator's typed-in latency tables (zzf1955/EAT), kept to reproduce the
paper setting: per-step and reload seconds by gang size, no other terms."""

from __future__ import annotations

from collections.abc import Sequence

from eat.latency.base import GangTiming, GpuRating
from eat.params import PresetConfig


class PaperLatency:
    """Per-step and reload seconds by gang size (``paper_latency`` in params).

    A gang is warm or cold as a whole (the reference's warm groups): it pays the
    reload of its size unless every member is warm, and steps at the table's pace for
    its size divided by its slowest member's speed."""

    def __init__(self, preset: PresetConfig) -> None:
        if preset.paper_latency is None:
            raise ValueError("PaperLatency needs preset.paper_latency")
        self.preset = preset
        self.per_step_s = dict(preset.paper_latency.per_step_s)
        self.reload_s = dict(preset.paper_latency.reload_s)
        self.source = "reference tables (zzf1955/EAT)"

    def gpu_rating(self, gpu: str) -> GpuRating:
        spec = self.preset.gpu_types[gpu]
        assert spec.speed is not None and spec.memory_gb is not None  # params validation
        return GpuRating(spec.speed, spec.memory_gb)

    def _size(self, gang_size: int) -> int:
        if gang_size not in self.per_step_s:
            raise ValueError(
                f"gang size {gang_size} has no reference latency; choose one of "
                f"{sorted(self.per_step_s)}"
            )
        return gang_size

    def gang_timing(
        self,
        model: str,
        resolution: int,
        gpus: Sequence[str],
        warm: Sequence[bool],
        cross_site: bool = False,
    ) -> GangTiming:
        if cross_site:
            raise ValueError("the reference tables have no sites: a paper preset has no topology")
        size = self._size(len(gpus))
        reload = 0.0 if all(warm) else self.reload_s[size]
        slowest = min(self.gpu_rating(gpu).speed for gpu in gpus)
        return GangTiming(
            member_cold_start_s=(reload,) * size,
            setup_s=reload,
            step_s=self.per_step_s[size] / slowest,
            tail_s=0.0,
        )

    def cold_start_s(self, model: str, gang_size: int) -> float:
        return self.reload_s[self._size(gang_size)]

    def nominal_latency_s(self, model: str, resolution: int, gpu: str, steps: int) -> float:
        return self.gang_timing(model, resolution, [gpu], [True]).duration(steps)

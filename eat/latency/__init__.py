"""The latency model: how long a gang of GPU servers takes to serve a text-to-image task.

One interface (:class:`LatencyModel`, :mod:`eat.latency.base`) with two
implementations, chosen by the preset's latency block:

- :class:`PaperLatency` (``paper_latency``, :mod:`eat.latency.tables`): the EAT
  reference simulator's tables by gang size;
- :class:`ProfileLatency` (``profile_latency``, :mod:`eat.latency.profiled`): the
  calibrated model over measured GPU profiles (:mod:`eat.latency.fit`: curves and
  fits; :mod:`eat.latency.calibration`: GPU types measured or derived from the
  catalogue, cold starts, the exchange of patch parallelism;
  :mod:`eat.latency.catalogue`: datasheet numbers; :mod:`eat.latency.decision`: which
  profile the profile stage chose).

Pure numpy, pandas and scipy: no torch.
"""

from __future__ import annotations

from eat.latency.base import GangTiming, GpuRating, LatencyModel, SimTime
from eat.latency.profiled import ProfileLatency
from eat.latency.tables import PaperLatency
from eat.params import PresetConfig


def build_latency_model(preset: PresetConfig) -> LatencyModel:
    """The latency model a preset configures (exactly one of its two latency blocks is
    set; params validation checks that)."""
    if preset.paper_latency is not None:
        return PaperLatency(preset)
    return ProfileLatency(preset)


__all__ = [
    "GangTiming",
    "GpuRating",
    "LatencyModel",
    "PaperLatency",
    "ProfileLatency",
    "SimTime",
    "build_latency_model",
]

"""The interface every latency model implements, and what it answers with.

The simulator, the heuristics, the evaluation and the testbed ask a latency model four
questions and never which kind it is (:class:`LatencyModel`): the speed and memory of a
GPU type, the timing of a task on a gang (:class:`GangTiming`), the cold start one
member pays, and the warm single-server latency that deadlines are drawn from. The
preset builds the model (:func:`eat.latency.build_latency_model`).

All times are in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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


@dataclass(frozen=True)
class GpuRating:
    """What the simulator needs of a GPU type besides its timings."""

    speed: float
    """Per-step throughput relative to the preset's reference GPU (1 = as fast)."""
    memory_gb: float
    """GPU memory that resident models share (GB)."""


@runtime_checkable
class LatencyModel(Protocol):
    """How long a gang takes to serve a task (see the module docstring)."""

    source: str
    """Where the numbers come from, in words (shown in reports)."""

    def gpu_rating(self, gpu: str) -> GpuRating:
        """Speed and memory of GPU type ``gpu``."""
        ...

    def gang_timing(
        self,
        model: str,
        resolution: int,
        gpus: Sequence[str],
        warm: Sequence[bool],
        cross_site: bool = False,
    ) -> GangTiming:
        """Timing of ``model`` at ``resolution`` px on a gang of servers of types ``gpus``
        (one patch each), ``warm[i]`` when member ``i`` holds the model already;
        ``cross_site`` when the members are in two or more sites (the exchange then
        crosses the slower link between sites)."""
        ...

    def cold_start_s(self, model: str, gang_size: int) -> float:
        """What one member of a gang of ``gang_size`` pays to load ``model``."""
        ...

    def nominal_latency_s(self, model: str, resolution: int, gpu: str, steps: int) -> float:
        """Warm latency on one server of type ``gpu`` with ``steps`` steps: the reference
        that slack deadlines and the SLO scale multiply."""
        ...

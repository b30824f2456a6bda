"""eat: QoS-aware edge-collaborative AIGC task scheduling.

The data path, one subpackage each: ``profiling`` (measure GPUs) -> ``latency`` (the
latency model) -> ``sim`` (the event-driven simulator and its Gymnasium environment) ->
``schedulers`` (heuristics and learned agents) -> ``training`` -> ``evaluation`` ->
``testbed`` (real serving on Ray); ``stages`` runs them as the DVC pipeline.

``import eat`` registers the Gymnasium environments :data:`ENV_ID` and
:data:`DISCRETE_ENV_ID`, so ``gymnasium.make("eat/EdgeCluster-v3", preset="edge")`` works
without importing more.
"""

from __future__ import annotations

import os as _os
import platform as _platform

# Bitwise-reproducible numerics on any x86-64 machine. ATen dispatches its vectorised CPU
# kernels (LayerNorm, softmax, GELU: the attention encoder) on the CPU's widest ISA, so
# an AVX-512 machine and an AVX2 one train different `eat` networks from the same seed
# (measured: the MLP agents agree bitwise, the attention agent does not). Pinning ATen,
# MKL (conditional numerical reproducibility) and oneDNN to AVX2 makes every machine
# with AVX2 compute the same floats. Read when torch loads: eat sets them first, and a
# training run records the capability it ran with (eat.training.loop).
if _platform.machine().lower() in ("x86_64", "amd64"):
    _os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")
    _os.environ.setdefault("MKL_CBWR", "AVX2")
    _os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

from gymnasium.envs.registration import register as _register
from gymnasium.envs.registration import registry as _registry

ENV_ID = "eat/EdgeCluster-v3"
"""The Gymnasium id of :class:`eat.sim.env.EdgeClusterEnv` (version history there)."""
DISCRETE_ENV_ID = "eat/EdgeClusterDiscrete-v3"
"""The Gymnasium id of :class:`eat.sim.discrete.EdgeClusterDiscreteEnv`, the same episodes
with a ``Discrete`` action space and ``action_masks()``; its version follows the
observation's, which it shares with :data:`ENV_ID`."""
MAX_EPISODE_STEPS = 4096
"""Decisions after which Gymnasium's TimeLimit truncates an environment episode."""


def register_env() -> None:
    """Register :data:`ENV_ID` and :data:`DISCRETE_ENV_ID` with Gymnasium (idempotent; the
    entry points are imported only when an environment is made)."""
    entry_points = {
        ENV_ID: "eat.sim.env:EdgeClusterEnv",
        DISCRETE_ENV_ID: "eat.sim.discrete:EdgeClusterDiscreteEnv",
    }
    for env_id, entry_point in entry_points.items():
        if env_id not in _registry:
            _register(env_id, entry_point=entry_point, max_episode_steps=MAX_EPISODE_STEPS)


register_env()

__all__ = ["DISCRETE_ENV_ID", "ENV_ID", "MAX_EPISODE_STEPS", "register_env"]

"""eat: QoS-aware edge-collaborative AIGC task scheduling.

The data path, one subpackage each: ``profiling`` (measure GPUs) -> ``latency`` (the
latency model) -> ``sim`` (the event-driven simulator and its Gymnasium environment) ->
``schedulers`` (heuristics and learned agents) -> ``training`` -> ``evaluation`` ->
``testbed`` (real serving on Ray); ``stages`` runs them as the DVC pipeline.

``import eat`` registers the Gymnasium environment :data:`ENV_ID`, so
``gymnasium.make("eat/EdgeCluster-v1", preset="edge")`` works without importing more.
"""

from __future__ import annotations

from gymnasium.envs.registration import register as _register
from gymnasium.envs.registration import registry as _registry

ENV_ID = "eat/EdgeCluster-v1"
"""The Gymnasium id of :class:`eat.sim.env.EdgeClusterEnv` (version history there)."""
MAX_EPISODE_STEPS = 4096
"""Decisions after which Gymnasium's TimeLimit truncates an environment episode."""


def register_env() -> None:
    """Register :data:`ENV_ID` with Gymnasium (idempotent; the entry point is imported
    only when an environment is made)."""
    if ENV_ID not in _registry:
        _register(
            ENV_ID, entry_point="eat.sim.env:EdgeClusterEnv", max_episode_steps=MAX_EPISODE_STEPS
        )


register_env()

__all__ = ["ENV_ID", "MAX_EPISODE_STEPS", "register_env"]

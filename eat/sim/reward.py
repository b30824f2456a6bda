"""The reward of a dispatch: one formula for the simulator and the testbed.

``r = min(cap, scale / (avg_wait + duration + wait)) + quality_weight * q(steps)
- deadline_penalty * [missed]``, generalising the EAT reference's reward: ``wait`` is
the task's own waiting time, ``duration`` its service time, ``avg_wait`` the mean
waiting time of the first ``avg_wait_window`` tasks still queued after it leaves (the
congestion it leaves behind), ``missed`` whether it finishes after its deadline.
"""

from __future__ import annotations

from eat.params import RewardConfig


def dispatch_reward(
    config: RewardConfig,
    *,
    wait: float,
    avg_wait: float,
    duration: float,
    quality: float,
    missed: bool,
) -> float:
    """The reward of one dispatch (module docstring)."""
    latency_term = config.latency_scale / max(avg_wait + duration + wait, 1e-9)
    reward = min(config.latency_cap, latency_term)
    reward += config.quality_weight * quality
    if missed:
        reward -= config.deadline_penalty
    return reward

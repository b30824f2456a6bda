"""The reward of a dispatch: one formula for the simulator and the testbed.

``objective: latency`` (the default): ``r = min(cap, scale / (avg_wait + duration +
wait)) + quality_weight * q(steps) - deadline_penalty * [missed]``, generalising the EAT
reference's reward: ``wait`` is the task's own waiting time, ``duration`` its service
time, ``avg_wait`` the mean waiting time of the first ``avg_wait_window`` tasks still
queued after it leaves (the congestion it leaves behind), ``missed`` whether it
finishes after its deadline.

``objective: slo``: ``r = slo_met_reward * [not missed] + slo_quality_weight * q(steps)``:
what serving systems measured by SLO attainment maximise, quality breaking ties.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
    if config.objective == "slo":
        return (0.0 if missed else config.slo_met_reward) + config.slo_quality_weight * quality
    latency_term = config.latency_scale / max(avg_wait + duration + wait, 1e-9)
    reward = min(config.latency_cap, latency_term)
    reward += config.quality_weight * quality
    if missed:
        reward -= config.deadline_penalty
    return reward


def rewards_over_steps(
    config: RewardConfig,
    quality: Sequence[float],
    steps: range,
    *,
    wait: float,
    avg_wait: float,
    now: float,
    deadline: float,
    setup_s: float,
    step_s: float,
    tail_s: float,
) -> list[tuple[int, float]]:
    """``(steps, reward)`` for every steps value: :func:`dispatch_reward` of a gang whose
    duration is ``setup_s + steps * step_s + tail_s``, computed in the same order (the
    same floats) without a call per value: schedulers that search steps ask this for
    every candidate gang. ``quality[s]`` is the quality of ``s`` steps."""
    if config.objective == "slo":
        met, weight = config.slo_met_reward, config.slo_quality_weight
        return [
            (
                count,
                (0.0 if now + setup_s + count * step_s + tail_s > deadline else met)
                + weight * quality[count],
            )
            for count in steps
        ]
    scale, cap = config.latency_scale, config.latency_cap
    weight, penalty = config.quality_weight, config.deadline_penalty
    rewards = []
    for count in steps:
        duration = setup_s + count * step_s + tail_s
        reward = min(cap, scale / max(avg_wait + duration + wait, 1e-9))
        reward += weight * quality[count]
        if now + duration > deadline:
            reward -= penalty
        rewards.append((count, reward))
    return rewards


def reward_table(
    config: RewardConfig,
    quality: Sequence[float],
    steps: range,
    *,
    wait: np.ndarray,
    avg_wait: np.ndarray,
    now: float,
    deadline: np.ndarray,
    setup_s: np.ndarray,
    step_s: np.ndarray,
    tail_s: np.ndarray,
) -> np.ndarray:
    """:func:`rewards_over_steps` of many dispatches at once: row ``r`` is a task (its
    ``wait``, ``avg_wait`` and ``deadline``) on a gang (its ``setup_s``, ``step_s`` and
    ``tail_s``), column ``c`` the ``steps[c]`` steps; every entry is the float
    :func:`dispatch_reward` gives (numpy's float64 arithmetic in the same order), so a
    scheduler that ranks a thousand dispatches decides as one that ranks them one by
    one."""
    counts = np.arange(steps.start, steps.stop, steps.step, dtype=np.float64)[None, :]
    q = np.asarray(quality, dtype=np.float64)[steps.start : steps.stop : steps.step][None, :]
    setup, step, tail = setup_s[:, None], step_s[:, None], tail_s[:, None]
    if config.objective == "slo":
        missed = now + setup + counts * step + tail > deadline[:, None]
        met = np.where(missed, 0.0, config.slo_met_reward)
        return met + config.slo_quality_weight * q
    duration = setup + counts * step + tail
    total = avg_wait[:, None] + duration + wait[:, None]
    reward = np.minimum(config.latency_cap, config.latency_scale / np.maximum(total, 1e-9))
    reward = reward + config.quality_weight * q
    missed = now + duration > deadline[:, None]
    return np.where(missed, reward - config.deadline_penalty, reward)

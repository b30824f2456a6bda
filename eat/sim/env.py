"""Gymnasium environment over the event-driven simulator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from eat.params import PresetConfig, load_params, repo_params_path
from eat.sim.encoding import SLACK_CLIP, Encoder
from eat.sim.simulator import Simulator, make_tasks

ENV_ID = "eat/EdgeCluster-v0"
MAX_EPISODE_STEPS = 4096
# Every feature is >= -SLACK_CLIP; times divided by time_scale_s stay far below this bound
# (1e6 time scales), which is finite so that normalising wrappers behave.
OBSERVATION_HIGH = 1e6


class EdgeClusterEnv(gym.Env[np.ndarray, np.ndarray]):
    """Scheduling text-to-image tasks on an edge GPU cluster.

    ## Description
    Tasks (Stable Diffusion requests) arrive at a cluster of GPU servers. At each
    decision epoch (a visible queued task can start now) the agent picks a task, its
    gang of servers (patch parallelism; the ``paper`` preset fixes the gang size per
    task and picks the servers by the reference rule) and the number of denoising
    steps, or waits until the next event. Simulated time then jumps to the next
    decision epoch: there are no idle ticks. See :mod:`eat.sim.simulator`.

    ## Action Space
    ``Box(-1, 1, (3 + queue_window + n_servers,), float32)``: dispatch-or-wait gate,
    steps, gang size, one score per task slot, one score per server. The decoding and
    the meaning of invalid choices are documented in :mod:`eat.sim.encoding`.

    ## Observation Space
    ``Box(-10, 1e6, (queue_window + n_servers + 1, 13 + n_models), float32)``: one
    token per task slot, per server and one global token, all with the same columns
    (see :mod:`eat.sim.encoding` for the table). Times are relative (waiting time,
    time to deadline, remaining busy time, time since the episode start) and divided
    by ``time_scale_s``.

    | token | columns |
    |---|---|
    | task | type, present, waiting/tau, to-deadline/tau, has deadline, Mpixels, fixed gang/8, dispatchable, cold start now/tau, nominal service/tau, queue position/window, model one-hot |
    | server | type, present, busy remaining/tau, speed, memory/80 GB, free, warm group size/8, group free, 0, 0, 0, resident models |
    | global | type, present, now/tau, queue/window, share not yet arrived, free servers share |

    ## Rewards
    On a dispatch: ``min(cap, scale / (avg_wait + duration + wait)) + w_q * q(steps)
    - penalty * [finish > deadline]``; 0 on a wait. ``info["dt"]`` is the simulated
    time since the previous decision (for time-aware discounting).

    ## Starting State
    The workload of the episode (arrival times, models, resolutions, gang sizes,
    deadlines) is drawn from ``self.np_random`` at ``reset``; the simulator's latency
    noise uses an independent stream spawned from it. The first observation is at the
    first decision epoch.

    ## Episode End
    Termination: every task of the episode has completed (the steps after the last
    dispatch are simulated within that step). Truncation: simulated time passes
    ``time_limit_s`` (paper: 1024 s), or ``max_episode_steps`` of the registration.

    ## Arguments
    ``preset`` ("paper", "edge" or a :class:`PresetConfig`), ``rate`` (tasks/s, or a
    sequence to draw one per episode), ``params_path`` (defaults to the repository's
    ``params.yaml``).

    ## Version History
    - v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        preset: str | PresetConfig = "paper",
        rate: float | Sequence[float] = 0.05,
        params_path: str | None = None,
    ) -> None:
        if isinstance(preset, str):
            params = load_params(params_path or repo_params_path())
            preset = params.env.preset(preset)
        self.preset = preset
        rates = [rate] if isinstance(rate, int | float) else list(rate)
        if not rates or any(r <= 0 for r in rates):
            raise ValueError(f"rate must be > 0 tasks/s (or a list of such), got {rate!r}")
        self.rates = [float(r) for r in rates]
        self.sim = Simulator(preset)
        self.encoder = Encoder(self.sim)
        self.observation_space = gym.spaces.Box(
            -SLACK_CLIP,
            OBSERVATION_HIGH,
            (self.encoder.n_tokens, self.encoder.n_features),
            np.float32,
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.encoder.action_size,), np.float32)
        self.rate = self.rates[0]
        self._last_time = 0.0

    def _info(self, **extra: Any) -> dict[str, Any]:
        return {
            "action_mask": self.encoder.action_mask(),
            "time": self.sim.now,
            "rate": self.rate,
            **extra,
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "rate" in options:
            self.rate = float(options["rate"])
        else:
            self.rate = self.rates[int(self.np_random.integers(len(self.rates)))]
        workload_seq, noise_seq = np.random.SeedSequence(int(self.np_random.integers(2**63))).spawn(
            2
        )
        tasks = make_tasks(self.sim, self.rate, np.random.default_rng(workload_seq))
        self.sim.reset(tasks, np.random.default_rng(noise_seq))
        self.sim.advance()
        self._last_time = self.sim.now
        return self.encoder.observe(), self._info(dt=0.0)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        sim = self.sim
        if sim.done:
            raise RuntimeError("step() called after the episode terminated; call reset()")
        dispatch = self.encoder.decode(action)
        reward = 0.0
        if dispatch is None:
            ongoing = sim.wait()
        else:
            reward = sim.dispatch(dispatch).reward
            ongoing = sim.advance()
        terminated = not ongoing
        truncated = False
        limit = self.preset.time_limit_s
        if ongoing and limit is not None and sim.now > limit:
            truncated = True
        dt = sim.now - self._last_time
        self._last_time = sim.now
        info = self._info(dt=dt, dispatched=dispatch is not None)
        if terminated:
            info["records"] = sim.records_frame()
        return self.encoder.observe(), float(reward), terminated, truncated, info


def register() -> None:
    """Register :data:`ENV_ID` with Gymnasium (idempotent)."""
    if ENV_ID not in gym.registry:
        gym.register(
            ENV_ID, entry_point="eat.sim.env:EdgeClusterEnv", max_episode_steps=MAX_EPISODE_STEPS
        )

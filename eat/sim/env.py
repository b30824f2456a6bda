"""Gymnasium environment over the event-driven simulator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, get_args

import gymnasium as gym
import numpy as np

from eat import register_env
from eat.params import PresetConfig, load_params, repo_params_path
from eat.sim.encoding import SLACK_CLIP, Encoder, slot_rng
from eat.sim.simulator import Dispatch, Simulator, episode_rngs, make_tasks

# Every feature is >= -SLACK_CLIP; times divided by the latency scale stay far below this bound
# (1e6 time scales), which is finite so that normalising wrappers behave.
OBSERVATION_HIGH = 1e6

SlotAssignment = Literal["identity", "permuted"]
"""How models take the observation's model slots (:mod:`eat.sim.encoding`)."""
SLOT_ASSIGNMENTS: tuple[str, ...] = get_args(SlotAssignment)


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
    steps, gang size, one score per task slot, one score per server (with
    ``server_tokens: per_group``, one per group of servers of one GPU type at one site,
    and ``n_groups`` in place of ``n_servers`` here and below). The decoding and the
    meaning of invalid choices are documented in :mod:`eat.sim.encoding`.

    ## Observation Space
    ``Box(-10, 1e6, (queue_window + n_servers + 1, 13 + model_slots), float32)``: one
    token per task slot (the visible queue, oldest first), one per server, one global
    token, all with the same columns. Columns 0-2 are the one-hot token type; the last
    ``model_slots`` (the preset's) name models, one slot per model, so the width does
    not depend on how many models the preset serves. Every
    column is relative to the cluster and workload at hand (:mod:`eat.sim.encoding`):
    ``tau`` is the preset's latency scale (the mean standalone latency of its tasks,
    :meth:`~eat.sim.simulator.Simulator.latency_scale`), ``R`` the largest image side its
    workload asks for, ``v`` the fastest server's speed, ``M`` the largest model's
    footprint, ``G`` the largest allowed gang size; times are relative (never absolute
    clock times).

    | token | column | meaning | unit | range |
    |---|---|---|---|---|
    | all | 0-2 | token type: task, server, global | one-hot | {0, 1} |
    | all | 3 | the slot holds something (empty task slots: 0) | flag | {0, 1} |
    | task | 4 | waiting time | tau | [0, inf) |
    | task | 5 | time to the deadline, clipped (0 without one) | tau | [-10, 10] |
    | task | 6 | has a deadline | flag | {0, 1} |
    | task | 7 | image pixels | R^2 | (0, 1] |
    | task | 8 | fixed gang size (0 when the scheduler chooses) | G | [0, 1] |
    | task | 9 | can start now | flag | {0, 1} |
    | task | 10 | cold start it would pay on its best gang now | tau | [0, inf) |
    | task | 11 | nominal warm service time (deadline reference) | tau | (0, inf) |
    | task | 12 | position in the queue / window (0: oldest) | share | [0, 1) |
    | task | 13+ | its model's slot | one-hot | {0, 1} |
    | server | 4 | remaining busy time | tau | [0, inf) |
    | server | 5 | speed | v | (0, 1] |
    | server | 6 | memory | M | (0, inf) |
    | server | 7 | free now | flag | {0, 1} |
    | server | 8 | size of its warm group (rules with groups) | G | [0, 1] |
    | server | 9 | its whole warm group is free | flag | {0, 1} |
    | server | 10 | free servers of its site (0 without a topology) | G | [0, inf) |
    | server | 11 | servers of its site (0 without a topology) | G | [0, inf) |
    | server | 12 | its site's index / sites (0 without a topology) | share | [0, 1) |
    | server | 13+ | slots of the models it serves warm | flags | {0, 1} |
    | global | 4 | time since the episode start | tau | [0, inf) |
    | global | 5 | queue length / window | share | [0, inf) |
    | global | 6 | share of the episode's tasks not yet arrived | share | [0, 1] |
    | global | 7 | free servers / servers | share | [0, 1] |
    | global | 8 | 1 - inter-site / intra-site bandwidth (0 without a topology) | share | [0, 1) |

    With ``server_tokens: per_group`` a server token pools a group: column 4 is the
    mean remaining busy time of its servers, 7 the share of them free, 8 their number
    / G, 9 zero, 13+ the share of them holding each slot's model (:mod:`eat.sim.encoding`).

    ## Rewards
    On a dispatch: ``min(cap, scale / (avg_wait + duration + wait)) + w_q * q(steps)
    - penalty * [finish > deadline]``; 0 on a wait. ``info["dt"]`` is the simulated
    time since the previous decision (for time-aware discounting).

    ## Starting State
    The workload of the episode (arrival times, models, resolutions, gang sizes,
    deadlines) and the latency noise come from the *episode seed*:
    :func:`eat.sim.simulator.episode_rngs` of it, exactly as
    :func:`eat.evaluation.runner.run_episode` draws them, so ``reset(seed=s)`` gives the
    same tasks as ``run_episode(..., seed=s)`` and a policy trained on this environment is
    compared with the package's schedulers on the same workloads. ``reset(seed=s)`` uses
    ``s`` itself; a reset without a seed draws the next episode seed from
    ``self.np_random`` (``info["episode_seed"]`` says which). With several rates, the
    episode's rate is drawn from ``self.np_random``. The first observation is at the
    first decision epoch. The slot assignment of the models is the identity (model
    ``i`` of the preset in slot ``i``), or with ``slot_assignment="permuted"`` a random
    injective one drawn per episode from :func:`~eat.sim.encoding.slot_rng` of the
    episode seed (a stream of its own: the tasks stay those of ``episode_rngs``);
    ``info["model_slots"]`` says which.

    ## Episode End
    Termination: every task of the episode has completed (the steps after the last
    dispatch are simulated within that step). Truncation: simulated time passes
    ``time_limit_s`` (paper: 1024 s), or ``max_episode_steps`` of the registration.

    ## Arguments
    ``preset`` ("paper", "edge", "metro" or a :class:`PresetConfig`), ``rate`` (tasks/s, or a
    sequence to draw one per episode), ``params_path`` (defaults to the repository's
    ``params.yaml``), ``slot_assignment`` (``"identity"``, the default and what the
    evaluation's schedulers see, or ``"permuted"``, for training: every slot is trained
    and the policy learns slot equivariance, so it reads presets with more models).

    ## Version History
    - v3: the model columns are ``model_slots`` slots (the preset's) instead of one per
      model, so one network reads presets with more models than it was trained on;
      ``slot_assignment="permuted"`` draws a model-to-slot assignment per episode. A
      task with its own steps (a trace's request) runs with them whatever the action's
      steps value, its nominal time (task column 11) is at those steps, and the steps
      slot is masked when every visible task has its own. With sites, server columns
      10-12 and global column 8 describe the topology; they are zero without one, so
      presets without a topology observe exactly what they did, and
      ``server_tokens: per_group`` (off unless a preset sets it) pools the server tokens.
    - v2: every observation column is relative to the cluster and workload (the
      preset's latency scale instead of ``time_scale_s``; pixels, speed, memory and gang
      sizes relative to the largest of the preset), so a policy reads clusters, models
      and time scales other than those it was trained on.
    - v1: the task token gains its queue position (column 12), so tasks that arrived
      together are told apart; ``reset(seed=s)`` draws the workload of
      ``episode_rngs(s)``, the same as the evaluation's; registered by ``import eat``.
    - v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        preset: str | PresetConfig = "paper",
        rate: float | Sequence[float] = 0.05,
        params_path: str | None = None,
        slot_assignment: SlotAssignment = "identity",
    ) -> None:
        if isinstance(preset, str):
            params = load_params(params_path or repo_params_path())
            preset = params.env.preset(preset)
        self.preset = preset
        rates = [rate] if isinstance(rate, int | float) else list(rate)
        if not rates or any(r <= 0 for r in rates):
            raise ValueError(f"rate must be > 0 tasks/s (or a list of such), got {rate!r}")
        self.rates = [float(r) for r in rates]
        if slot_assignment not in SLOT_ASSIGNMENTS:
            raise ValueError(
                f"slot_assignment {slot_assignment!r} is not supported; choose one of "
                f"{list(SLOT_ASSIGNMENTS)}"
            )
        self.slot_assignment = slot_assignment
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
        self.episode_seed: int | None = None
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
        self.episode_seed = seed if seed is not None else int(self.np_random.integers(2**32))
        workload_rng, noise_rng = episode_rngs(self.episode_seed)
        permuted = self.slot_assignment == "permuted"
        self.encoder.assign_slots(slot_rng(self.episode_seed) if permuted else None)
        tasks = make_tasks(self.sim, self.rate, workload_rng)
        self.sim.reset(tasks, noise_rng, arrival_rate=self.rate)
        self.sim.advance()
        self._last_time = self.sim.now
        info = self._info(
            dt=0.0, episode_seed=self.episode_seed, model_slots=dict(self.encoder.slot_of)
        )
        return self.encoder.observe(), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.sim.done:
            raise RuntimeError("step() called after the episode terminated; call reset()")
        return self.apply(self.encoder.decode(action))

    def apply(
        self, dispatch: Dispatch | None
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One decision given as what it does (None: wait), as :meth:`step` applies its
        decoded action; other action spaces over the same episodes
        (:class:`eat.sim.discrete.EdgeClusterDiscreteEnv`) step through it."""
        sim = self.sim
        if sim.done:
            raise RuntimeError("apply() called after the episode terminated; call reset()")
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


register_env()  # importing this module directly registers the id too

"""Train the third-party learners through the package's environments, on ``eat``'s budget.

Two agents (:data:`eat.schedulers.rl.SB3_AGENTS`), MLP policies with the hyperparameters
of ``train.sb3``:

- ``ppo``: stable-baselines3 PPO on ``gymnasium.make(eat.ENV_ID, preset=..., rate=...)``,
  the continuous action of ``eat/EdgeCluster-v3``;
- ``maskable_ppo``: sb3-contrib MaskablePPO on ``gymnasium.make(eat.DISCRETE_ENV_ID,
  ...)``, the discrete view (:mod:`eat.sim.discrete`), masked by its ``action_masks()``.

Both see exactly what ``eat`` sees: the training episodes draw their arrival rate from the
preset's evaluation sweep (``evaluate.rates``) and their workload from the environment's
generator, seeded once by ``reset(seed=seed)`` (sb3's ``seed`` argument, which also seeds
``random``, numpy and torch); no validation or test workload is ever trained on.

One run (:func:`train_sb3_run`):

1. seeding in one place (the algorithm's ``seed``) and ``torch_threads`` threads;
2. ``learn`` for :func:`decision_budget` decisions, the environment decisions an ``eat``
   run of the same preset makes, rounded up to whole rollouts of ``n_steps`` (PPO updates
   after full rollouts only; the summary's ``decisions`` is the number made);
3. every ``train.eval_every`` decisions and at the end: deterministic validation episodes
   on ``seeds.validation[:validation_seeds]`` at every rate, as ``eat``'s runs do; the best
   policy by ``select_by`` is the run's output.

A run writes what an ``eat`` run writes (:func:`write_sb3_run`: ``config.json``, the
curves, the episodes and the summary with the same keys, ``bc_val_reward`` None) with the
policy in ``policy.pt`` (:mod:`eat.schedulers.rl.sb3`), so the ``train`` stage summarises
it and the ``evaluate`` stage loads it like the others. Runs are short and write no
resumable checkpoint: a Ray task that is retried trains again from the seed, to the same
result.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import pandas as pd
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from eat import DISCRETE_ENV_ID, ENV_ID
from eat.devices import resolve_device
from eat.evaluation.runner import run_episode
from eat.params import Params, PositiveInt, PresetConfig, Sb3Config, Seed
from eat.schedulers.base import Scheduler
from eat.schedulers.rl import SB3_AGENTS
from eat.schedulers.rl.sb3 import Sb3Scheduler, save_sb3_policy
from eat.sim.discrete import EdgeClusterDiscreteEnv
from eat.training.loop import CURVES_FILE, EPISODES_FILE, MEASURED_FIELDS, SUMMARY_FILE

ALGORITHMS: dict[str, type[PPO] | type[MaskablePPO]] = {"ppo": PPO, "maskable_ppo": MaskablePPO}
"""The algorithm of each agent of :data:`~eat.schedulers.rl.SB3_AGENTS`."""
ENV_IDS = {"ppo": ENV_ID, "maskable_ppo": DISCRETE_ENV_ID}
"""The environment each agent trains on."""


def decision_budget(params: Params, preset: str) -> int:
    """The environment decisions of an ``eat`` run on ``preset``: the dispatches of its
    warm-start episodes plus its SAC decisions.

    - warm start (``init: bc``): ``demo_episodes`` teacher-driven episodes and
      ``dagger_rounds`` x ``dagger_episodes`` learner-driven ones, each counted as
      ``workload.total_tasks`` dispatches (every task is dispatched once). Waits are not
      counted, and an episode the environment truncates (``time_limit_s``) dispatches
      fewer, so the count is close to, not exactly, an ``eat`` run's environment steps
      (its ``summary.json`` records ``warm_start_decisions``). ``init: scratch``: none.
    - SAC: ``total_steps`` decisions, its random warm-up (``learning_starts``) included.

    Gradient updates (behaviour cloning, critic warm-up, SAC updates) and the teacher's
    own simulations are compute, not decisions, and are not counted.
    """
    train = params.train
    warm_start = 0
    if train.resolve("init", preset) == "bc":
        tasks = params.env.preset(preset).workload.total_tasks
        episodes = train.resolve("demo_episodes", preset) + train.resolve(
            "dagger_rounds", preset
        ) * train.resolve("dagger_episodes", preset)
        warm_start = episodes * tasks
    return warm_start + train.resolve("total_steps", preset)


class Sb3RunConfig(Sb3Config):
    """Everything one run of a third-party learner is trained with: ``train.sb3`` and what
    the run sets (saved in its ``config.json``)."""

    seed: Seed
    """Training seed: networks, rollouts, minibatches and the training workloads."""
    device: Literal["cpu", "cuda"]
    """Resolved torch device (``train.device``)."""
    decisions: PositiveInt
    """The decision budget (:func:`decision_budget`)."""
    eval_every: PositiveInt
    """Validate (and keep the best policy) every this many decisions (``train.eval_every``)."""
    steps_levels: int | None
    """``maskable_ppo``: steps levels of the discrete view (``env.discrete.steps_levels``);
    None for ``ppo``."""


@dataclass
class Sb3RunSpec:
    """Everything one run needs (picklable: it travels to Ray workers)."""

    agent: str
    """``ppo`` or ``maskable_ppo``."""
    preset_name: str
    preset: PresetConfig
    config: Sb3RunConfig
    rates: list[float]
    validation_seeds: list[int]
    select_by: str
    torch_threads: int

    @property
    def env_id(self) -> str:
        return ENV_IDS[self.agent]

    @property
    def run_name(self) -> str:
        """CleanRL's ``{env_id}__{exp_name}__{seed}``, as :class:`~eat.training.loop.RunSpec`."""
        return f"{self.env_id}__{self.preset_name}-{self.agent}__{self.config.seed}"

    @property
    def relative_dir(self) -> Path:
        return Path(self.preset_name) / self.agent / f"seed{self.config.seed}"

    def cost(self) -> float:
        """Rough relative cost in :meth:`RunSpec.cost <eat.training.loop.RunSpec.cost>`'s
        unit (a decision, or one gradient step of 128 samples through an MLP): each
        decision, and ``n_epochs`` gradient passes over it."""
        return self.config.decisions * (1.0 + self.config.n_epochs / 128)


def resolve_sb3_runs(params: Params) -> list[Sb3RunSpec]:
    """The runs of the third-party learners in ``train.agents``: presets x
    ``seeds.train[:n_seeds]``, as :func:`eat.training.loop.resolve_runs` for the others."""
    train = params.train
    validation = params.seeds.validation[: train.validation_seeds]
    specs = []
    for preset in train.presets:
        for agent in train.agents:
            if agent not in SB3_AGENTS:
                continue
            for seed in params.seeds.train[: train.n_seeds]:
                config = Sb3RunConfig(
                    **train.sb3.model_dump(),
                    seed=seed,
                    device=resolve_device(train.device),
                    decisions=decision_budget(params, preset),
                    eval_every=train.resolve("eval_every", preset),
                    steps_levels=(
                        params.env.discrete.steps_levels if agent == "maskable_ppo" else None
                    ),
                )
                specs.append(
                    Sb3RunSpec(
                        agent=agent,
                        preset_name=preset,
                        preset=params.env.preset(preset),
                        config=config,
                        rates=list(params.evaluate.rates[preset]),
                        validation_seeds=list(validation),
                        select_by=train.select_by,
                        torch_threads=train.torch_threads,
                    )
                )
    return specs


@dataclass
class Sb3RunResult:
    """What a run hands back to the driver (the files are written from it)."""

    spec: Sb3RunSpec
    policy_state: dict[str, torch.Tensor]
    shapes: dict[str, int]
    action_view: dict[str, Any]
    curves: pd.DataFrame
    episodes: pd.DataFrame
    summary: dict[str, Any]


def validation_metrics(scheduler: Scheduler, spec: Sb3RunSpec) -> dict[str, float]:
    """Deterministic episodes on the validation seeds at every training rate: the metrics
    of :func:`eat.training.loop.validate`, for any scheduler."""
    rewards, latencies, qualities = [], [], []
    for rate in spec.rates:
        for seed in spec.validation_seeds:
            tasks = run_episode(spec.preset, scheduler, rate, seed).tasks
            rewards.append(tasks["reward"].mean())
            latencies.append(tasks["latency"].mean())
            qualities.append(tasks["quality"].mean())
    return {
        "val/reward": float(np.mean(rewards)),
        "val/latency": float(np.mean(latencies)),
        "val/quality": float(np.mean(qualities)),
    }


class ValidationCallback(BaseCallback):
    """Step 3 of the module docstring, and the episode and loss logs of the run."""

    def __init__(self, spec: Sb3RunSpec, action_view: dict[str, Any], bar: tqdm) -> None:
        super().__init__()
        self.spec = spec
        self.action_view = action_view
        self.bar = bar
        self.next_eval = spec.config.eval_every
        self.curves: list[dict[str, Any]] = []
        self.episodes: list[dict[str, Any]] = []
        self.losses: list[dict[str, float]] = []
        """sb3's ``train/`` scalars of each update since the last validation."""
        self.best_score, self.best_step = -math.inf, -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.episode_return, self.episode_length = 0.0, 0

    def _on_rollout_start(self) -> None:
        self.record_losses()

    def record_losses(self) -> None:
        """Keep the scalars of the last update (sb3 records them after dumping its logs,
        so they are still there when the next rollout starts)."""
        values = {
            k: float(v) for k, v in self.logger.name_to_value.items() if k.startswith("train/")
        }
        if values:  # learn(log_interval=1) clears them before every update
            self.losses.append(values)

    def _on_step(self) -> bool:
        self.episode_return += float(self.locals["rewards"][0])
        self.episode_length += 1
        self.bar.update(1)
        if self.locals["dones"][0]:
            self.episodes.append(
                {
                    "global_step": self.num_timesteps,
                    "episode": len(self.episodes) + 1,
                    "charts/episodic_return": self.episode_return,
                    "charts/episodic_length": self.episode_length,
                    "charts/rate": self.locals["infos"][0]["rate"],
                }
            )
            self.episode_return, self.episode_length = 0.0, 0
        if self.num_timesteps >= self.next_eval:
            self.next_eval += self.spec.config.eval_every
            self.validate()
        return True

    def validate(self) -> None:
        """One validation of the current policy; keep it if it is the best."""
        row: dict[str, Any] = {"global_step": self.num_timesteps, "phase": self.spec.agent}
        if self.losses:
            row.update(pd.DataFrame(self.losses).mean().to_dict())
            self.losses = []
        recent = self.episodes[-10:]
        if recent:
            row["charts/episodic_return"] = float(
                np.mean([e["charts/episodic_return"] for e in recent])
            )
        policy = self.model.policy
        scheduler = Sb3Scheduler(policy, self.action_view, self.spec.agent)
        row.update(validation_metrics(scheduler, self.spec))
        self.curves.append(row)
        score = row["val/reward"] if self.spec.select_by == "reward" else self.num_timesteps
        if score > self.best_score:
            self.best_score, self.best_step = score, self.num_timesteps
            self.best_state = copy.deepcopy(policy.state_dict())
        self.bar.set_postfix(val_reward=f"{row['val/reward']:.2f}")


def make_env(spec: Sb3RunSpec) -> gym.Env:
    """The run's environment, through the Gymnasium registry as any user would make it."""
    kwargs: dict[str, Any] = {"preset": spec.preset, "rate": spec.rates}
    if spec.agent == "maskable_ppo":
        kwargs["steps_levels"] = spec.config.steps_levels
    return gym.make(spec.env_id, **kwargs)


def train_sb3_run(spec: Sb3RunSpec, *, progress_bar: bool = False) -> Sb3RunResult:
    """Train one third-party learner (module docstring)."""
    config = spec.config
    if spec.agent not in ALGORITHMS:
        raise ValueError(
            f"agent {spec.agent!r} is not supported; choose one of {sorted(ALGORITHMS)}"
        )
    torch.set_num_threads(spec.torch_threads)
    started = time.perf_counter()

    # 1. seeding, in one place: sb3 seeds random, numpy, torch, the action space and the
    # environment's first reset (reset(seed=seed); later episodes follow its generator)
    env = make_env(spec)
    model = ALGORITHMS[spec.agent](
        "MlpPolicy",
        env,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        n_epochs=config.n_epochs,
        gamma=config.gamma,
        ent_coef=config.ent_coef,
        seed=config.seed,
        device=config.device,
        verbose=0,
    )
    unwrapped = env.unwrapped
    if isinstance(unwrapped, EdgeClusterDiscreteEnv):
        action_view = unwrapped.actions.describe()
    else:
        action_view = {"kind": "continuous", "size": int(np.prod(env.action_space.shape))}
    shape = env.observation_space.shape
    assert shape is not None and len(shape) == 2  # the token grid of eat/EdgeCluster-v3
    shapes = {"n_tokens": int(shape[0]), "in_features": int(shape[1])}

    # 2.-3. learn, validating every eval_every decisions
    bar = tqdm(total=config.decisions, desc=spec.run_name, disable=not progress_bar)
    callback = ValidationCallback(spec, action_view, bar)
    model.learn(total_timesteps=config.decisions, callback=callback, log_interval=1)
    callback.record_losses()
    if not callback.curves or callback.curves[-1]["global_step"] != model.num_timesteps:
        callback.validate()  # the policy the run ends with is a candidate too
    bar.close()
    env.close()

    assert callback.best_state is not None  # validate() ran at least once
    curves = callback.curves
    last = curves[-1]
    best = next(c for c in curves if c["global_step"] == callback.best_step)
    summary = {
        "run_name": spec.run_name,
        "agent": spec.agent,
        "preset": spec.preset_name,
        "seed": config.seed,
        "device": config.device,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "wall_s": time.perf_counter() - started,
        "decisions": model.num_timesteps,
        "episodes": len(callback.episodes),
        # gradient steps (minibatches); sb3's own counter counts epochs
        "updates": model._n_updates * (config.n_steps // config.batch_size),
        "best_step": callback.best_step,
        "val_reward": best["val/reward"],
        "val_latency": best["val/latency"],
        "val_quality": best["val/quality"],
        "final_val_reward": last["val/reward"],
        "bc_val_reward": None,
    }
    return Sb3RunResult(
        spec,
        {k: v.detach().cpu().clone() for k, v in callback.best_state.items()},
        shapes,
        action_view,
        pd.DataFrame(curves),
        pd.DataFrame(callback.episodes),
        summary,
    )


def write_sb3_run(result: Sb3RunResult, out_dir: Path) -> Path:
    """Write a run's policy, config, curves and summary under ``out_dir``, the files of
    :func:`eat.training.loop.write_run`."""
    spec = result.spec
    directory = out_dir / spec.relative_dir
    save_sb3_policy(
        directory,
        result.policy_state,
        shapes=result.shapes,
        agent=spec.agent,
        preset=spec.preset_name,
        algorithm=SB3_AGENTS[spec.agent],
        hyperparameters=spec.config.model_dump(),
        action_view=result.action_view,
        extra={
            "run_name": spec.run_name,
            "env_id": spec.env_id,
            "rates": spec.rates,
            "validation_seeds": spec.validation_seeds,
            "select_by": spec.select_by,
        },
    )
    result.curves.to_csv(directory / CURVES_FILE, index=False)
    result.episodes.to_csv(directory / EPISODES_FILE, index=False)
    # as write_run: the wall time is a measurement of this machine, kept out of models/
    deterministic = {k: v for k, v in result.summary.items() if k not in MEASURED_FIELDS}
    (directory / SUMMARY_FILE).write_text(json.dumps(deterministic, indent=2) + "\n")
    return directory


__all__ = [
    "ALGORITHMS",
    "Sb3RunConfig",
    "Sb3RunResult",
    "Sb3RunSpec",
    "decision_budget",
    "resolve_sb3_runs",
    "train_sb3_run",
    "validation_metrics",
    "write_sb3_run",
]

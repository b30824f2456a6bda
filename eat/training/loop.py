"""Train the learned schedulers: one run per (preset, agent, seed), and the matrix of runs.

One run (:func:`train_run`) is CleanRL's loop around :class:`~eat.schedulers.rl.sac.SAC`:

1. seeding in one place (:func:`~eat.schedulers.rl.sac.seed_everything`, then
   ``env.reset(seed=seed)`` and ``action_space.seed(seed)``); every training workload
   comes from the environment's generator, which no validation or test workload uses
   (those are ``episode_rngs(seed)`` of ``seeds.validation`` / ``seeds.test``);
2. ``init: bc`` (optional warm start from demonstrations): ``demo_episodes`` episodes
   driven by the teacher (:func:`demonstrate`) go into the replay buffer with their
   actions as demonstrations (``Encoder.encode``), then ``bc_updates`` steps of behaviour cloning
   of the actor and as many critic-only steps (policy evaluation of the cloned actor);
   ``init: scratch``: ``learning_starts`` decisions with uniformly random actions;
3. SAC: act (sampled actions), label the state with the teacher's decision when
   ``bc_weight > 0``, store time-aware n-step transitions, update
   ``updates_per_step`` times per decision;
   the learner's own decisions (DAgger's and SAC's) are completed by ``completion``
   as the deployed checkpoint completes them, the teacher's run as they are;
4. every ``eval_every`` decisions: deterministic validation episodes on
   ``seeds.validation`` at every training rate (simulator reward, latency, quality);
   the best policy by ``select_by`` is the run's output;
5. at the end of an episode, at most every ``checkpoint_every`` decisions, a
   resumable checkpoint (networks, optimisers, replay buffer and every random state)
   is written; a run started again resumes from it and ends exactly as an
   uninterrupted one (tested).

The matrix of runs (every agent x preset x seed and the ablation variants) is
:mod:`eat.training.matrix`; the third-party learners (``ppo``, ``maskable_ppo``) train in
:mod:`eat.training.sb3`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from eat import ENV_ID
from eat.devices import resolve_device
from eat.evaluation.runner import run_episode, scheduler_rng
from eat.params import (
    HYPERPARAMETERS,
    Params,
    PresetConfig,
    RolloutSettings,
    SACConfig,
    SchedulerSettings,
)
from eat.schedulers import make_scheduler
from eat.schedulers.base import Scheduler
from eat.schedulers.policy import decode_completed, make_completion
from eat.schedulers.rl import AGENTS, SB3_AGENTS
from eat.schedulers.rl.agent import RLScheduler, build_actor, save_actor
from eat.schedulers.rl.sac import (
    SAC,
    NStepAccumulator,
    ReplayBuffer,
    seed_everything,
)
from eat.sim.env import EdgeClusterEnv

log = logging.getLogger(__name__)

RESUME_FILE = "resume.pt"
CURVES_FILE = "curves.csv"
EPISODES_FILE = "episodes.csv"
SUMMARY_FILE = "summary.json"
MEASURED_FIELDS = ("wall_s", "demonstrations_s", "node")
"""Run-summary fields that measure this machine (and, on a cluster, the Ray node a run
ran on) rather than follow from the seed."""


# ---------------------------------------------------------------------------
# Run specifications
# ---------------------------------------------------------------------------


@dataclass
class RunSpec:
    """Everything one training run needs (picklable: it travels to Ray workers)."""

    agent: str
    """Agent name (``eat``, ``d2sac``, ``sac``) or ablation variant name."""
    preset_name: str
    preset: PresetConfig
    config: SACConfig
    rates: list[float]
    validation_seeds: list[int]
    teacher: str | None
    """A heuristic, or ``rollout`` (the online planner with ``teacher_search``)."""
    settings: SchedulerSettings
    teacher_search: RolloutSettings | None
    """The planner's settings when the teacher is ``rollout`` (``planners.rollout``)."""
    select_by: str
    checkpoint_every: int
    torch_threads: int

    @property
    def run_name(self) -> str:
        """CleanRL's ``{env_id}__{exp_name}__{seed}`` (no wall time: outputs stay
        deterministic)."""
        return f"{ENV_ID}__{self.preset_name}-{self.agent}__{self.config.seed}"

    @property
    def relative_dir(self) -> Path:
        return Path(self.preset_name) / self.agent / f"seed{self.config.seed}"

    def cost(self) -> float:
        """Rough relative cost, to start the longest runs first."""
        c = self.config
        per_update = (4.0 if c.encoder == "attention" else 1.0) * (
            1.0 + (0.3 * c.denoising_steps if c.actor == "diffusion" else 0.0)
        )
        return c.total_steps * (c.updates_per_step * per_update + 1.0)


def sac_config(params: Params, preset: str, seed: int, overrides: dict[str, Any]) -> SACConfig:
    """The :class:`SACConfig` of one run: ``params.train`` resolved for one preset, with
    the agent's (or ablation variant's) ``overrides``."""
    train = params.train
    values: dict[str, Any] = {name: train.resolve(name, preset) for name in HYPERPARAMETERS}
    values.update(overrides)
    return SACConfig(seed=seed, device=resolve_device(train.device), **values)


def training_preset(params: Params, name: str) -> PresetConfig:
    """The preset a run trains and validates on: the large preset of ``train.scale``
    with its ``tasks`` per episode, any other as it is."""
    preset = params.env.preset(name)
    scale = params.train.scale
    if scale is None or name != scale.preset:
        return preset
    return preset.with_tasks(scale.tasks)


def resolve_runs(params: Params, *, include_ablation: bool = True) -> list[RunSpec]:
    """Every SAC run of ``params.train``: agents x presets x ``seeds.train[:n_seeds]``,
    then the ablation variants on their preset, then the runs of ``train.scale`` (the
    third-party learners' runs are :func:`eat.training.sb3.resolve_sb3_runs`). Training
    episodes draw their arrival rate from the preset's evaluation sweep
    (``evaluate.rates``); the workloads differ."""
    train = params.train
    validation = params.seeds.validation[: train.validation_seeds]
    runs: list[tuple[str, str, int, dict[str, Any]]] = []
    for preset in train.presets:
        for agent in train.agents:
            if agent in SB3_AGENTS:
                continue  # third-party learners: eat.training.sb3.resolve_sb3_runs
            for seed in params.seeds.train[: train.n_seeds]:
                runs.append((agent, preset, seed, dict(AGENTS[agent])))
    ablation = train.ablation
    if include_ablation and ablation is not None:
        for variant, override in ablation.variants.items():
            for seed in params.seeds.train[: ablation.n_seeds]:
                runs.append((variant, ablation.preset, seed, override.model_dump()))
    if train.scale is not None:
        for agent in train.scale.agents:
            for seed in params.seeds.train[: train.scale.n_seeds]:
                runs.append((agent, train.scale.preset, seed, dict(AGENTS[agent])))
    specs = []
    for agent, preset, seed, overrides in runs:
        teacher = train.teacher[preset]
        specs.append(
            RunSpec(
                agent=agent,
                preset_name=preset,
                preset=training_preset(params, preset),
                config=sac_config(params, preset, seed, overrides),
                rates=list(params.evaluate.rates[preset]),
                validation_seeds=list(validation),
                teacher=teacher,
                settings=params.schedulers,
                teacher_search=params.planners.rollout if teacher == "rollout" else None,
                select_by=train.select_by,
                checkpoint_every=train.checkpoint_every,
                torch_threads=train.torch_threads,
            )
        )
    return specs


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------


@dataclass
class RunResult:
    """What a run hands back to the driver (the files are written from it)."""

    spec: RunSpec
    actor_state: dict[str, torch.Tensor]
    shapes: dict[str, int]
    curves: pd.DataFrame
    episodes: pd.DataFrame
    summary: dict[str, Any]


@dataclass
class Progress:
    """Counters of a run (saved in the resumable checkpoint)."""

    global_step: int = 0
    episode: int = 0
    demo_done: bool = False
    update_budget: float = 0.0
    last_checkpoint_step: int = 0
    next_eval_step: int = 0
    best_score: float = -float("inf")
    best_step: int = -1
    best_phase: str = ""
    teacher_episodes: int = 0
    """Episodes the teacher was reset for (its random stream is seeded by this count)."""
    labels: int = 0
    """Teacher decisions so far (demonstrations and labels of the learner's states)."""
    warm_start_decisions: int = 0
    """Environment decisions of the demonstrations and the DAgger rounds."""
    wall_s: float = 0.0
    demonstrations_s: float = 0.0
    """Wall time of demonstrations played elsewhere and given to the run (shared with
    the other runs they were given to; those played in the run are in ``wall_s``)."""
    curves: list[dict] = field(default_factory=list)
    episodes: list[dict] = field(default_factory=list)


def validation_scores(
    preset: PresetConfig, scheduler: Scheduler, rates: list[float], seeds: list[int]
) -> dict[str, float]:
    """Mean reward, latency and quality of ``scheduler`` on the validation episodes:
    every seed of ``seeds`` at every rate of ``rates``."""
    rewards, latencies, qualities = [], [], []
    for rate in rates:
        for seed in seeds:
            tasks = run_episode(preset, scheduler, rate, seed).tasks
            rewards.append(tasks["reward"].mean())
            latencies.append(tasks["latency"].mean())
            qualities.append(tasks["quality"].mean())
    return {
        "val/reward": float(np.mean(rewards)),
        "val/latency": float(np.mean(latencies)),
        "val/quality": float(np.mean(qualities)),
    }


def validate(actor: torch.nn.Module, spec: RunSpec, device: str) -> dict[str, float]:
    """Deterministic episodes on the validation seeds at every training rate."""
    was_training = actor.training  # before RLScheduler, which puts the actor in eval mode
    scheduler = RLScheduler(actor, spec.agent, device, completion=spec.config.completion)
    scores = validation_scores(spec.preset, scheduler, spec.rates, spec.validation_seeds)
    actor.train(was_training)
    return scores


def make_teacher(spec: RunSpec) -> Scheduler | None:
    """The run's teacher: a heuristic, or the rollout planner over its base heuristic."""
    if spec.teacher is None:
        return None
    if spec.teacher == "rollout":
        from eat.schedulers.rollout import planner_for

        if spec.teacher_search is None:
            raise ValueError(f"{spec.run_name}: teacher 'rollout' needs its search settings")
        return planner_for("rollout", spec.settings, spec.teacher_search, spec.preset_name)
    return make_scheduler(spec.teacher, spec.settings)


def teacher_validation(spec: RunSpec) -> dict[str, float]:
    """The teacher's own scores on the run's validation episodes (what cloning aims at)."""
    teacher = make_teacher(spec)
    if teacher is None:
        raise ValueError(f"{spec.run_name} has no teacher")
    return validation_scores(spec.preset, teacher, spec.rates, spec.validation_seeds)


class DemoStep(NamedTuple):
    """One decision of a demonstration: what the replay buffer stores of it."""

    obs: np.ndarray
    action_mask: np.ndarray
    time: float
    action: np.ndarray
    """The teacher's decision, encoded (:meth:`~eat.sim.encoding.Encoder.encode`)."""
    reward: float
    next_obs: np.ndarray
    next_action_mask: np.ndarray
    next_time: float
    terminated: bool
    truncated: bool


@dataclass
class Demonstrations:
    """The teacher's demonstration episodes of a run with ``init: bc``, as
    :func:`demonstrate` plays them, and where they leave the environment.

    They follow from the training workloads (preset, rates, seed) and the teacher alone,
    not from the agent, so every run of the same :func:`demonstration_identity` gets the
    same ones: the matrix plays them once for all of those runs (a planner teacher's
    decisions are most of what a warm start costs), and a run given them ends exactly as
    one that played its own (tested)."""

    identity: dict[str, Any]
    steps: list[DemoStep]
    env_rng: dict | None
    """The environment generator's state before the reset that follows the last episode
    (None without episodes)."""
    episodes: int
    wall_s: float


def demonstration_identity(spec: RunSpec) -> dict[str, Any]:
    """What a run's demonstrations follow from: runs that agree on it share them."""
    return {
        "preset_name": spec.preset_name,
        "preset": spec.preset.model_dump(),
        "seed": spec.config.seed,
        "rates": spec.rates,
        "slot_assignment": spec.config.slot_assignment,
        "demo_episodes": spec.config.demo_episodes,
        "teacher": spec.teacher,
        "teacher_search": spec.teacher_search.model_dump() if spec.teacher_search else None,
        "settings": spec.settings.model_dump(),
    }


def differing_keys(theirs: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The keys of identity ``wanted`` on which ``theirs`` differs, sorted."""
    return sorted(key for key in wanted if theirs.get(key) != wanted[key])


def needs_demonstrations(spec: RunSpec) -> bool:
    """The run warms up from a teacher's demonstrations (``init: bc`` with a teacher)."""
    return spec.config.init == "bc" and spec.teacher is not None


def training_env(spec: RunSpec) -> tuple[EdgeClusterEnv, np.ndarray, dict[str, Any]]:
    """The run's environment, seeded as the run seeds it, and its first observation."""
    config = spec.config
    env = EdgeClusterEnv(spec.preset, rate=spec.rates, slot_assignment=config.slot_assignment)
    obs, info = env.reset(seed=config.seed)
    env.action_space.seed(config.seed)
    return env, obs, info


def demonstrate(spec: RunSpec) -> Demonstrations:
    """The run's ``demo_episodes`` teacher-driven episodes from its seeded environment
    (the first episodes the run's own environment would play)."""
    started = time.perf_counter()
    teacher = make_teacher(spec)
    if teacher is None:
        raise ValueError(f"{spec.run_name}: init 'bc' needs a teacher (train.teacher)")
    env, obs, info = training_env(spec)
    steps: list[DemoStep] = []
    env_rng: dict | None = None
    for episode in range(spec.config.demo_episodes):
        # the teacher's stream is seeded by its episode count, as in the run's later rounds
        teacher.reset(env.sim, scheduler_rng(teacher.name, episode))
        done = False
        while not done:
            action = env.encoder.encode(teacher.decide(env.sim))
            next_obs, reward, terminated, truncated, next_info = env.step(action)
            steps.append(
                DemoStep(
                    obs,
                    info["action_mask"],
                    info["time"],
                    action,
                    reward,
                    next_obs,
                    next_info["action_mask"],
                    next_info["time"],
                    terminated,
                    truncated,
                )
            )
            done = terminated or truncated
            if done:
                env_rng = env.np_random.bit_generator.state
                obs, info = env.reset()
            else:
                obs, info = next_obs, next_info
    return Demonstrations(
        demonstration_identity(spec),
        steps,
        env_rng,
        spec.config.demo_episodes,
        time.perf_counter() - started,
    )


def _as_tensor(array: np.ndarray, device: str) -> torch.Tensor:
    return torch.as_tensor(array, device=device).unsqueeze(0)


def run_identity(spec: RunSpec) -> dict[str, Any]:
    """What makes a run this run: a checkpoint of another identity is never resumed."""
    return {
        "run_name": spec.run_name,
        "config": spec.config.model_dump(),
        "preset": spec.preset.model_dump(),
        "rates": spec.rates,
        "validation_seeds": spec.validation_seeds,
        "teacher": spec.teacher,
        "teacher_search": spec.teacher_search.model_dump() if spec.teacher_search else None,
        "settings": spec.settings.model_dump(),
        "select_by": spec.select_by,
    }


def _save_resume(
    path: Path,
    identity: dict[str, Any],
    sac: SAC,
    buffer: ReplayBuffer,
    env: EdgeClusterEnv,
    rng: np.random.Generator,
    progress: Progress,
    best_actor: dict | None,
    *,
    env_rng: dict | None = None,
) -> None:
    """Everything a resumed run needs; ``env_rng``: the environment generator's state to
    resume from (default: its state now, which must be between episodes)."""
    state = {
        "identity": identity,
        "sac": sac.state_dict(),
        "buffer": buffer.state_dict(),
        "env_rng": env_rng if env_rng is not None else env.np_random.bit_generator.state,
        "action_space_rng": env.action_space.np_random.bit_generator.state,
        "rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
        "progress": asdict(progress),
        "best_actor": best_actor,
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves half a checkpoint


def train_run(
    spec: RunSpec,
    *,
    checkpoint_dir: Path | None = None,
    progress_bar: bool = False,
    stop_after_episodes: int | None = None,
    demonstrations: Demonstrations | None = None,
) -> RunResult:
    """Train one agent (module docstring). With ``checkpoint_dir``, resume from its
    checkpoint if there is one and write checkpoints there. ``stop_after_episodes``
    stops early after that many SAC episodes (with a checkpoint), as an interruption
    would. ``demonstrations`` (:func:`demonstrate` of a run of the same
    :func:`demonstration_identity`) are used instead of playing them again."""
    config = spec.config
    device = config.device
    torch.set_num_threads(spec.torch_threads)
    started = time.perf_counter()

    # 1. seeding, in one place
    rng = seed_everything(config.seed, device)
    env, obs, info = training_env(spec)
    n_tokens, in_features = obs.shape
    action_size = int(env.action_space.shape[0])
    shapes = {"n_tokens": n_tokens, "in_features": in_features, "action_size": action_size}
    sac = SAC(config, n_tokens, in_features, action_size)
    buffer = ReplayBuffer(config.buffer_size, obs.shape, action_size, rng)
    nstep = NStepAccumulator(config.n_step, config.gamma, config.discount_time_s)
    teacher = make_teacher(spec)
    completion = make_completion(config.completion)
    progress = Progress(next_eval_step=config.eval_every)
    best_actor: dict | None = None
    resume_path = checkpoint_dir / RESUME_FILE if checkpoint_dir is not None else None

    if resume_path is not None and resume_path.exists():
        state = torch.load(resume_path, map_location=device, weights_only=False)
        saved, wanted = state.get("identity", {}), run_identity(spec)
        if saved != wanted:
            differing = differing_keys(saved, wanted) or ["format"]
            raise ValueError(
                f"{resume_path} is the checkpoint of another run (it differs in "
                f"{differing}): it cannot be resumed; delete it to start this run afresh"
            )
        sac.load_state_dict(state["sac"])
        buffer.load_state_dict(state["buffer"])
        env.np_random.bit_generator.state = state["env_rng"]
        env.action_space.np_random.bit_generator.state = state["action_space_rng"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        progress = Progress(**state["progress"])
        best_actor = state["best_actor"]
        obs, info = env.reset()  # checkpoints are taken between episodes
        log.info("%s: resumed at step %d", spec.run_name, progress.global_step)
    else:
        log.info(
            "%s: hyperparameters\n%s",
            spec.run_name,
            "\n".join(f"|{k}|{v}|" for k, v in config.model_dump().items()),
        )

    label_sac = config.bc_weight > 0 and config.label_during_sac and teacher is not None
    # The env generator's state before the last reset: a checkpoint taken between
    # episodes restores it and resets again, so a resumed run sees the same episodes.
    env_rng_before_reset = env.np_random.bit_generator.state

    def start_teacher() -> None:
        if teacher is not None:
            teacher.reset(env.sim, scheduler_rng(teacher.name, progress.teacher_episodes))
            progress.teacher_episodes += 1

    def teacher_action() -> np.ndarray | None:
        if teacher is None:
            return None
        progress.labels += 1
        return env.encoder.encode(teacher.decide(env.sim))

    def learner_action(observation: np.ndarray) -> np.ndarray:
        """The deployed (deterministic) policy's action, as evaluation runs it."""
        was_training = sac.actor.training
        sac.actor.eval()
        with torch.inference_mode():
            out = sac.actor(_as_tensor(observation, device), None, deterministic=True)
        sac.actor.train(was_training)
        return out.action[0].cpu().numpy()

    def learner_step(action: np.ndarray) -> tuple:
        """``env.step`` of the learner's action, completed as deployment completes it
        (the teacher's own decisions run as they are)."""
        return env.apply(decode_completed(env.encoder, action, completion))

    def store(obs, info, action, demo, reward, next_obs, next_info, terminated, truncated):
        for transition in nstep.push(
            obs,
            info["action_mask"].astype(np.float32),
            action.astype(np.float32),
            demo,
            reward * config.reward_scale,
            info["time"],
            next_obs,
            next_info["action_mask"].astype(np.float32),
            next_info["time"],
            terminated,
            truncated,
        ):
            buffer.add(transition)

    def batch():
        return buffer.sample(config.batch_size, device)

    def next_episode() -> None:
        nonlocal obs, info, env_rng_before_reset
        env_rng_before_reset = env.np_random.bit_generator.state
        obs, info = env.reset()

    def replay(demonstrations: Demonstrations) -> None:
        """Store the demonstrations and leave the environment, the teacher's episode
        count and the counters where playing them here would have left them."""
        for step in demonstrations.steps:
            store(
                step.obs,
                {"action_mask": step.action_mask, "time": step.time},
                step.action,
                step.action,
                step.reward,
                step.next_obs,
                {"action_mask": step.next_action_mask, "time": step.next_time},
                step.terminated,
                step.truncated,
            )
        progress.teacher_episodes += demonstrations.episodes
        progress.labels += len(demonstrations.steps)
        progress.warm_start_decisions += len(demonstrations.steps)
        if demonstrations.env_rng is not None:
            env.np_random.bit_generator.state = demonstrations.env_rng
            next_episode()

    def dagger_episode() -> None:
        """One episode the learner drives while the teacher labels every state."""
        nonlocal obs, info
        start_teacher()
        done = False
        while not done:
            label = teacher_action()
            assert label is not None
            action = learner_action(obs)
            next_obs, reward, terminated, truncated, next_info = learner_step(action)
            store(obs, info, action, label, reward, next_obs, next_info, terminated, truncated)
            progress.warm_start_decisions += 1
            done = terminated or truncated
            if done:
                next_episode()
            else:
                obs, info = next_obs, next_info

    def phase_row(phase: str, logs: dict[str, float]) -> dict[str, Any]:
        """Validate after a warm-start phase; the policy is a candidate output."""
        nonlocal best_actor
        row = {
            "global_step": 0,
            "phase": phase,
            "labels": progress.labels,
            **logs,
            **validate(sac.actor, spec, device),
        }
        progress.curves.append(row)
        if spec.select_by == "reward" and row["val/reward"] > progress.best_score:
            progress.best_score, progress.best_step = row["val/reward"], 0
            progress.best_phase = phase
            best_actor = copy.deepcopy(sac.actor.state_dict())
        log.info("%s: %s done: %s", spec.run_name, phase, row)
        return row

    # 2. warm start: behaviour cloning of the teacher's demonstrations, then expert
    # iteration (DAgger): the clone drives, the teacher labels, the actor is cloned again
    warm_start = config.init == "bc" and not progress.demo_done
    if warm_start:
        if teacher is None:
            raise ValueError(f"{spec.run_name}: init 'bc' needs a teacher (train.teacher)")
        if demonstrations is None:
            demonstrations = demonstrate(spec)
        elif differing := differing_keys(demonstrations.identity, demonstration_identity(spec)):
            raise ValueError(
                f"{spec.run_name}: the demonstrations given are another run's (they differ "
                f"in {differing})"
            )
        else:
            progress.demonstrations_s = demonstrations.wall_s
        replay(demonstrations)
        logs: dict[str, float] = {}
        for _ in range(config.bc_updates):
            logs = sac.bc_update(batch())
        phase_row("bc", logs)
        for round_ in range(1, config.dagger_rounds + 1):
            for _ in range(config.dagger_episodes):
                dagger_episode()
            for _ in range(config.dagger_updates):
                logs = sac.bc_update(batch())
            phase_row(f"dagger{round_}", logs)
        for _ in range(config.critic_warmup_updates):
            sac.update(batch(), train_actor=False)
        progress.demo_done = True
        if resume_path is not None:  # the warm start is the costly part with a planner
            resume_path.parent.mkdir(parents=True, exist_ok=True)
            _save_resume(
                resume_path,
                run_identity(spec),
                sac,
                buffer,
                env,
                rng,
                progress,
                best_actor,
                env_rng=env_rng_before_reset,
            )

    # 3. SAC
    if label_sac:
        start_teacher()
    window_logs: list[dict[str, float]] = []
    episode_return, episode_length = 0.0, 0
    episodes_this_call = 0
    bar = tqdm(
        total=config.total_steps,
        initial=progress.global_step,
        desc=spec.run_name,
        disable=not progress_bar,
    )
    while progress.global_step < config.total_steps:
        warming_up = config.init == "scratch" and progress.global_step < config.learning_starts
        if warming_up:
            action = env.action_space.sample()
        else:
            with torch.no_grad():
                mask = torch.as_tensor(info["action_mask"], dtype=torch.float32, device=device)
                out = sac.actor(_as_tensor(obs, device), mask.unsqueeze(0))
            action = out.action[0].cpu().numpy()
        demo = teacher_action() if label_sac else None
        next_obs, reward, terminated, truncated, next_info = learner_step(action)
        store(obs, info, action, demo, reward, next_obs, next_info, terminated, truncated)
        episode_return += reward
        episode_length += 1
        progress.global_step += 1
        bar.update(1)

        if not warming_up and len(buffer) >= config.batch_size:
            progress.update_budget += config.updates_per_step
            while progress.update_budget >= 1.0:
                window_logs.append(sac.update(batch()))
                progress.update_budget -= 1.0

        # 4. periodic validation; keep the best policy
        if progress.global_step >= progress.next_eval_step or (
            progress.global_step == config.total_steps
        ):
            progress.next_eval_step += config.eval_every
            row: dict[str, Any] = {"global_step": progress.global_step, "phase": "sac"}
            if window_logs:
                row.update(pd.DataFrame(window_logs).mean().to_dict())
                window_logs = []
            recent = progress.episodes[-10:]
            if recent:
                row["charts/episodic_return"] = float(
                    np.mean([e["charts/episodic_return"] for e in recent])
                )
            row.update(validate(sac.actor, spec, device))
            progress.curves.append(row)
            score = row["val/reward"] if spec.select_by == "reward" else progress.global_step
            if score > progress.best_score:
                progress.best_score, progress.best_step = score, progress.global_step
                progress.best_phase = "sac"
                best_actor = copy.deepcopy(sac.actor.state_dict())
            bar.set_postfix(
                val_reward=f"{row['val/reward']:.2f}", val_latency=f"{row['val/latency']:.1f}"
            )

        if terminated or truncated:
            progress.episode += 1
            episodes_this_call += 1
            progress.episodes.append(
                {
                    "global_step": progress.global_step,
                    "episode": progress.episode,
                    "charts/episodic_return": episode_return,
                    "charts/episodic_length": episode_length,
                    "charts/rate": info["rate"],
                }
            )
            episode_return, episode_length = 0.0, 0
            # 5. resumable checkpoint between episodes
            due = progress.global_step - progress.last_checkpoint_step >= spec.checkpoint_every
            stopping = stop_after_episodes is not None and episodes_this_call >= stop_after_episodes
            if resume_path is not None and (due or stopping):
                progress.last_checkpoint_step = progress.global_step
                progress.wall_s += time.perf_counter() - started
                started = time.perf_counter()
                resume_path.parent.mkdir(parents=True, exist_ok=True)
                _save_resume(
                    resume_path, run_identity(spec), sac, buffer, env, rng, progress, best_actor
                )
            if stopping:
                bar.close()
                raise RunInterrupted(spec.run_name, progress.global_step)
            next_episode()
            if label_sac:
                start_teacher()
        else:
            obs, info = next_obs, next_info
    bar.close()

    progress.wall_s += time.perf_counter() - started
    final_state = best_actor if best_actor is not None else sac.actor.state_dict()
    curves = pd.DataFrame(progress.curves)
    last = progress.curves[-1] if progress.curves else {}
    best = next(
        (
            c
            for c in progress.curves
            if c["global_step"] == progress.best_step and c["phase"] == progress.best_phase
        ),
        last,
    )
    sac_rows = [c for c in progress.curves if c["phase"] == "sac"]
    summary = {
        "run_name": spec.run_name,
        "agent": spec.agent,
        "preset": spec.preset_name,
        "seed": config.seed,
        "device": device,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "wall_s": progress.wall_s,
        "demonstrations_s": progress.demonstrations_s,
        "decisions": progress.global_step,
        "warm_start_decisions": progress.warm_start_decisions,
        "teacher_labels": progress.labels,
        "episodes": progress.episode,
        "updates": sac.n_updates,
        "best_step": progress.best_step,
        "best_phase": progress.best_phase,
        "val_reward": best.get("val/reward"),
        "val_latency": best.get("val/latency"),
        "val_quality": best.get("val/quality"),
        "final_val_reward": last.get("val/reward"),
        **phase_rewards(progress.curves, config.dagger_rounds if config.init == "bc" else 0),
        "sac_val_reward": max(c["val/reward"] for c in sac_rows) if sac_rows else None,
    }
    if resume_path is not None and resume_path.exists():
        resume_path.unlink()  # the run is complete: its outputs replace the checkpoint
    return RunResult(
        spec,
        {k: v.detach().cpu().clone() for k, v in final_state.items()},
        shapes,
        curves,
        pd.DataFrame(progress.episodes),
        summary,
    )


def phase_rewards(curves: list[dict[str, Any]], dagger_rounds: int) -> dict[str, float | None]:
    """The validation reward after each warm-start phase: ``bc_val_reward`` (the clone)
    and ``dagger<r>_val_reward`` for every round (None where a phase did not run)."""
    by_phase = {c["phase"]: c["val/reward"] for c in curves if c["phase"] != "sac"}
    phases = ["bc"] + [f"dagger{r}" for r in range(1, dagger_rounds + 1)]
    return {f"{phase}_val_reward": by_phase.get(phase) for phase in phases}


class RunInterrupted(RuntimeError):
    """``stop_after_episodes`` was reached (a checkpoint was written)."""

    def __init__(self, run_name: str, step: int) -> None:
        super().__init__(f"{run_name} stopped at step {step}; run again to resume")


def write_run(result: RunResult, out_dir: Path) -> Path:
    """Write a run's model, config, curves and summary under ``out_dir``."""
    spec = result.spec
    directory = out_dir / spec.relative_dir
    model = build_actor(spec.config, result.shapes)
    model.load_state_dict(result.actor_state)
    save_actor(
        directory,
        model,
        spec.config,
        result.shapes,
        agent=spec.agent,
        preset=spec.preset_name,
        extra={
            "run_name": spec.run_name,
            "teacher": spec.teacher,
            "rates": spec.rates,
            "validation_seeds": spec.validation_seeds,
            "select_by": spec.select_by,
        },
    )
    result.curves.to_csv(directory / CURVES_FILE, index=False)
    result.episodes.to_csv(directory / EPISODES_FILE, index=False)
    # The model folder holds what the seed determines; the wall time (a measurement of
    # this machine) goes to the run table only, so a repro reproduces models/ bitwise.
    deterministic = {k: v for k, v in result.summary.items() if k not in MEASURED_FIELDS}
    (directory / SUMMARY_FILE).write_text(json.dumps(deterministic, indent=2) + "\n")
    return directory

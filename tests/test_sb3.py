"""Third-party learners through the package's environments: the discrete view and its
masks, both environments under Gymnasium's and stable-baselines3's checkers, PPO and
MaskablePPO trained on tiny budgets (real sb3, real environments), saved, loaded and
evaluated like the other agents, their determinism, and the decision budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from eat import DISCRETE_ENV_ID, ENV_ID
from eat.evaluation.runner import run_episode
from eat.evaluation.sweep import SchedulerFactory, grid, run_sweep
from eat.params import load_params_with_overrides, validate_params
from eat.schedulers.rl import LEARNED_AGENTS, SB3_AGENTS
from eat.schedulers.rl.agent import load_scheduler
from eat.schedulers.rl.sb3 import Sb3Scheduler, load_sb3_policy
from eat.sim.discrete import (
    WAIT,
    DiscreteActions,
    EdgeClusterDiscreteEnv,
    GangChoice,
    MaskedActionError,
    spaced_steps,
)
from eat.sim.encoding import Encoder
from eat.sim.env import EdgeClusterEnv
from eat.sim.simulator import RECORD_COLUMNS, Simulator
from eat.sim.workload import Task
from eat.stages.train import Training, summarise
from eat.training.loop import resolve_runs
from eat.training.matrix import resolve_matrix, run_matrix
from eat.training.sb3 import decision_budget, resolve_sb3_runs, train_sb3_run, write_sb3_run
from tests.conftest import REPO, tweak

torch.set_num_threads(1)

# Warnings of the checkers that follow from documented choices: the observation is a grid
# of tokens (sb3's MlpPolicy flattens it with its FlattenExtractor; eat's attention
# encoder reads the tokens), there are no render modes, and envs are checked unwrapped.
EXPECTED_WARNINGS = ("unconventional shape", "not having a spec", "render")
RATES = {"paper": 0.05, "edge": 1.0}


def with_sb3_agents(raw: dict) -> dict:
    agents = raw["train"]["agents"]
    raw["train"]["agents"] = [*agents, *(agent for agent in SB3_AGENTS if agent not in agents)]
    return raw


@pytest.fixture(scope="module")
def sb3_params():
    """params.yaml with ppo and maskable_ppo in train.agents."""
    return validate_params(with_sb3_agents(yaml.safe_load((REPO / "params.yaml").read_text())))


def tiny_spec(sb3_params, agent: str, preset: str = "paper", seed: int = 0, **changes):
    """A run of a few hundred decisions, validated on one seed at one rate."""
    spec = next(
        s
        for s in resolve_sb3_runs(sb3_params)
        if s.agent == agent and s.preset_name == preset and s.config.seed == seed
    )
    tiny = {"decisions": 192, "n_steps": 64, "batch_size": 32, "n_epochs": 2, "eval_every": 96}
    spec.config = spec.config.model_validate(
        {**spec.config.model_dump(), "device": "cpu", **tiny, **changes}
    )
    spec.validation_seeds = spec.validation_seeds[:1]
    spec.rates = spec.rates[1:2]
    if preset == "edge":
        spec.preset = tweak(spec.preset, workload={"total_tasks": 30})
    return spec


# ---------------------------------------------------------------------------
# Both environments under both checkers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", [ENV_ID, DISCRETE_ENV_ID])
@pytest.mark.parametrize("preset_name", ["paper", "edge"])
def test_gymnasium_and_sb3_env_checkers_pass(env_id, preset_name):
    env = gym.make(env_id, preset=preset_name, rate=RATES[preset_name]).unwrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gymnasium_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    unexpected = [
        str(w.message)
        for w in caught
        if not any(text in str(w.message) for text in EXPECTED_WARNINGS)
    ]
    assert not unexpected


def test_import_eat_registers_the_discrete_view(params):
    env = gym.make(DISCRETE_ENV_ID, preset="edge", rate=0.5)
    assert env.spec.max_episode_steps == gym.spec(ENV_ID).max_episode_steps
    obs, info = env.reset(seed=0)
    assert env.observation_space == gym.make(ENV_ID, preset="edge").observation_space
    assert env.observation_space.contains(obs)
    assert info["action_mask"].dtype == bool
    assert np.array_equal(info["action_mask"], env.unwrapped.action_masks())


# ---------------------------------------------------------------------------
# The discrete view
# ---------------------------------------------------------------------------


def test_discrete_space_is_fixed_per_preset(params):
    paper = EdgeClusterDiscreteEnv(params.env.paper, 0.05)
    edge = EdgeClusterDiscreteEnv(params.env.edge, 1.0)
    assert paper.actions.steps_levels == (1, 9, 16, 24, 32)
    assert edge.actions.steps_levels == (5, 11, 18, 24, 30)
    assert paper.actions.gangs == (GangChoice(None, "reference"),)
    assert [str(g) for g in edge.actions.gangs[:2]] == ["fastest gang of 1", "warm gang of 1"]
    assert paper.action_space == gym.spaces.Discrete(1 + 10 * 1 * 5)
    assert edge.action_space == gym.spaces.Discrete(1 + 10 * 8 * 5)
    meaning = edge.actions.meaning(edge.actions.index(slot=3, gang=5, level=2))
    assert (meaning.slot, meaning.gang, meaning.steps) == (3, GangChoice(4, "warm"), 18)
    assert edge.actions.meaning(WAIT) is None
    with pytest.raises(ValueError, match=r"steps_levels must be in \[2, 26\].*got 27"):
        spaced_steps(params.env.edge, 27)
    with pytest.raises(ValueError, match=r"action 401 is not in Discrete\(401\)"):
        edge.actions.meaning(401)


def random_states(env: EdgeClusterDiscreteEnv, seed: int, episodes: int, every: int):
    """Reachable states: episodes driven by random feasible actions, single servers when
    there are (whole-cluster gangs would soon make every server hold every model); yields
    every ``every``-th decision epoch, then applies the action."""
    rng = np.random.default_rng(seed)
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        done, step = False, 0
        while not done:
            if step % every == 0:
                yield env
            feasible = np.flatnonzero(env.action_masks())
            single = [
                a for a in feasible if a != WAIT and env.actions.meaning(a).gang.size in (None, 1)
            ]
            action = int(rng.choice(single if single and rng.random() < 0.9 else feasible))
            expected = env.actions.dispatch(action)
            _, _, terminated, truncated, info = env.step(action)
            assert "refused" not in info
            if expected is not None:  # the step applied exactly the dispatch it names
                record = dict(zip(RECORD_COLUMNS, env.sim.records[-1], strict=True))
                assert (record["task_id"], record["steps"]) == (expected.task_id, expected.steps)
                assert record["servers"] == ",".join(map(str, expected.servers))
            done, step = terminated or truncated, step + 1


@pytest.mark.parametrize("preset_name", ["paper", "edge"])
def test_unmasked_actions_are_the_dispatches_the_simulator_accepts(params, preset_name):
    """For reachable states: every unmasked action is a dispatch the simulator accepts as
    exactly that (task of its slot, its gang, its steps); every masked one is refused
    with why; wait is unmasked exactly when the continuous env can wait."""
    preset = tweak(params.env.preset(preset_name), workload={"total_tasks": 30})
    env = EdgeClusterDiscreteEnv(preset, {"paper": 0.1, "edge": 0.5}[preset_name])
    actions = env.actions
    checked = masked = warm_differs = 0
    for state in random_states(env, seed=7, episodes=2, every=3):
        sim = state.sim
        mask = state.action_masks()
        can_wait = Encoder(sim).decode(np.full(Encoder(sim).action_size, -1.0)) is None
        assert mask[WAIT] == can_wait == (sim.next_event_time() is not None)
        window = sim.window()
        for action in range(actions.n):
            meaning = actions.meaning(action)
            if not mask[action]:
                masked += 1
                with pytest.raises(MaskedActionError, match=rf"action {action} .* is masked at t="):
                    actions.dispatch(action)
                continue
            dispatch = actions.dispatch(action)
            if meaning is None:
                assert dispatch is None
                continue
            task = window[meaning.slot]
            outcome = sim.fork(records=False).dispatch(dispatch)  # accepted, or it raises
            assert (outcome.task, outcome.steps, outcome.servers) == (
                task,
                meaning.steps,
                dispatch.servers,
            )
            if meaning.gang.rule != "reference":
                free = sim.placement.capable(task, free_only=True)
                candidates = sim.placement.candidate_gangs(task, meaning.gang.size, free)
                assert dispatch.servers in candidates  # the candidate gangs of the heuristics
                if meaning.gang.rule == "fastest":
                    assert dispatch.servers == candidates[0]
                elif dispatch.servers != candidates[0]:
                    warm_differs += 1
            checked += 1
    assert checked > 100 and masked > 100
    if preset_name == "edge":
        assert warm_differs > 0  # the warm rule is a choice of its own


def test_a_masked_action_is_refused_and_changes_nothing(params):
    env = EdgeClusterDiscreteEnv(params.env.edge, 1.0)
    obs, _ = env.reset(seed=3)
    assert len(env.sim.window()) == 1  # the first arrival: slots 1-9 are empty
    empty = env.actions.index(slot=5, gang=0, level=0)
    assert not env.action_masks()[empty]
    with pytest.raises(MaskedActionError, match=r"slot 5, fastest gang of 1, 5 steps\) is masked"):
        env.actions.dispatch(empty)
    now = env.sim.now
    again, reward, terminated, truncated, info = env.step(empty)
    assert np.array_equal(obs, again) and reward == 0.0 and not (terminated or truncated)
    assert env.sim.now == now and not env.sim.records and info["dt"] == 0.0
    assert "task slot 5 is empty (the visible queue holds 1)" in info["refused"]
    with pytest.raises(ValueError, match=r"not in Discrete\(401\)"):
        env.step(401)


def test_wait_is_masked_when_no_event_is_pending(paper):
    sim = Simulator(paper)
    sim.reset([Task(0, 0.0, "sd14", 1440, math.inf, 4)], None)
    sim.advance()
    actions = DiscreteActions(sim, spaced_steps(paper, 5))
    mask = actions.mask()
    assert not mask[WAIT] and mask[1:6].all() and not mask[6:].any()
    with pytest.raises(MaskedActionError, match="no event is pending"):
        actions.dispatch(WAIT)
    sim.dispatch(actions.dispatch(1))  # the gang of 4 takes every server
    assert sim.n_free == 0


def test_a_task_with_its_own_steps_runs_with_them_at_every_level(paper):
    """A trace's request brings its steps: every steps level of its slot dispatches it
    with those, as the continuous environment ignores its steps value."""
    sim = Simulator(paper)
    sim.reset([Task(0, 0.0, "sd14", 1440, math.inf, 4, steps=20)], None)
    sim.advance()
    actions = DiscreteActions(sim, spaced_steps(paper, 5))
    dispatches = [actions.dispatch(action) for action in range(1, 6)]  # slot 0, every level
    assert {d.steps for d in dispatches} == {20} and 20 not in actions.steps_levels
    assert sim.fork(records=False).dispatch(dispatches[0]).steps == 20  # accepted


def test_discrete_reset_draws_the_evaluation_workload_and_is_reproducible(params):
    preset = params.env.edge
    discrete = EdgeClusterDiscreteEnv(preset, 0.5)
    continuous = EdgeClusterEnv(preset, 0.5)
    obs_d, _ = discrete.reset(seed=1000)
    obs_c, _ = continuous.reset(seed=1000)
    assert np.array_equal(obs_d, obs_c)
    assert discrete.sim.tasks == continuous.sim.tasks

    def trajectory(seed: int) -> list:
        env = EdgeClusterDiscreteEnv(preset, [0.5, 1.0])
        rng = np.random.default_rng(0)
        obs, info = env.reset(seed=seed)
        out = [obs]
        for _ in range(150):
            action = int(rng.choice(np.flatnonzero(info["action_mask"])))
            obs, reward, terminated, truncated, info = env.step(action)
            out += [obs, np.array([reward, info["dt"]])]
            if terminated or truncated:
                obs, info = env.reset()
                out.append(obs)
        return out

    first, second = trajectory(5), trajectory(5)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


# ---------------------------------------------------------------------------
# Training, checkpoints, evaluation
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(sb3_params):
    """One tiny run of each learner on paper (shared by several tests)."""
    return {agent: train_sb3_run(tiny_spec(sb3_params, agent)) for agent in SB3_AGENTS}


def test_runs_write_what_eat_runs_write_and_load_as_schedulers(trained, sb3_params, tmp_path):
    eat_keys = None
    for agent, result in trained.items():
        spec = result.spec
        summary = result.summary
        assert summary["decisions"] == 192 and summary["bc_val_reward"] is None
        assert summary["updates"] == 3 * 2 * (64 // 32)  # rollouts x epochs x minibatches
        assert set(result.curves["global_step"]) == {96, 192}
        assert {"val/reward", "val/latency", "val/quality", "train/value_loss"} <= set(
            result.curves.columns
        )
        eat_keys = eat_keys or set(summary)
        assert set(summary) == eat_keys
        directory = write_sb3_run(result, tmp_path / "models")
        assert directory == tmp_path / "models" / "paper" / agent / "seed0"
        for name in ("config.json", "policy.pt", "curves.csv", "episodes.csv", "summary.json"):
            assert (directory / name).is_file(), name
        record = json.loads((directory / "config.json").read_text())
        assert record["algorithm"] == SB3_AGENTS[agent] and record["agent"] == agent
        assert record["sb3"]["n_steps"] == 64 and record["env_id"] == spec.env_id
        assert "wall_s" not in json.loads((directory / "summary.json").read_text())

        scheduler = load_scheduler(directory)
        assert isinstance(scheduler, Sb3Scheduler) and scheduler.name == agent
        episode = run_episode(spec.preset, scheduler, 0.05, seed=1000)
        assert len(episode.tasks) == spec.preset.workload.total_tasks
        # the loaded policy decides as the trained one did
        policy, _ = load_sb3_policy(directory)
        for name, tensor in result.policy_state.items():
            assert torch.equal(policy.state_dict()[name], tensor), name
        in_memory = Sb3Scheduler(policy, result.action_view, agent)
        again = run_episode(spec.preset, in_memory, 0.05, seed=1000)
        assert again.tasks.equals(episode.tasks)
    # the evaluation builds them by name and training seed, like eat's agents
    factory = SchedulerFactory(sb3_params, "paper", tmp_path / "models")
    assert set(SB3_AGENTS) <= set(LEARNED_AGENTS)
    swept = run_sweep(
        "paper",
        sb3_params.env.paper,
        grid(list(SB3_AGENTS), [0.05], [1000, 1001], [0]),
        factory,
        progress=False,
        parallel="serial",
        ray_address=None,
        num_cpus=None,
    )
    assert set(swept.episodes["scheduler"]) == set(SB3_AGENTS)
    assert set(swept.episodes["train_seed"]) == {0}


def test_maskable_ppo_decides_only_feasible_actions_on_edge(sb3_params):
    result = train_sb3_run(tiny_spec(sb3_params, "maskable_ppo", preset="edge", decisions=64))
    scheduler = Sb3Scheduler(
        load_policy_from(result), result.action_view, "maskable_ppo", trained_on="edge"
    )
    episode = run_episode(result.spec.preset, scheduler, 1.0, seed=1000)  # raises if masked
    assert len(episode.tasks) == 30
    assert set(episode.tasks["gang_size"]) <= {1, 2, 4, 8}
    other = tweak(result.spec.preset, allowed_gang_sizes=[1, 2, 4])
    with pytest.raises(ValueError, match="trained on preset 'edge' on the discrete actions"):
        run_episode(other, scheduler, 1.0, seed=1000)


def load_policy_from(result):
    """The policy of a run result, rebuilt through its checkpoint format."""
    from stable_baselines3.common.utils import ConstantSchedule

    from eat.schedulers.rl.sb3 import POLICY_CLASSES, action_space, observation_space

    shapes = result.shapes
    policy = POLICY_CLASSES[SB3_AGENTS[result.spec.agent]](
        observation_space((shapes["n_tokens"], shapes["in_features"])),
        action_space(result.action_view),
        ConstantSchedule(0.0),
    )
    policy.load_state_dict(result.policy_state)
    return policy


def test_training_is_deterministic_for_a_seed(sb3_params, trained):
    for agent, first in trained.items():
        again = train_sb3_run(tiny_spec(sb3_params, agent))
        for name, tensor in first.policy_state.items():
            assert torch.equal(tensor, again.policy_state[name]), (agent, name)
        assert first.curves.equals(again.curves)
        assert first.episodes.equals(again.episodes)
    other = train_sb3_run(tiny_spec(sb3_params, "ppo", seed=1))
    assert not all(
        torch.equal(tensor, other.policy_state[name])
        for name, tensor in trained["ppo"].policy_state.items()
    )


def test_the_ray_matrix_trains_them_like_the_other_agents(sb3_params, tmp_path):
    """Through Ray (worker processes) the runs write the same bytes as in this process,
    and the train stage summarises them beside eat's."""
    specs = [tiny_spec(sb3_params, agent, decisions=64, eval_every=64) for agent in SB3_AGENTS]
    summaries = run_matrix(
        specs, tmp_path / "ray", parallel="ray", ray_address=None, num_cpus=2, progress=False
    )
    assert [s["agent"] for s in summaries] == ["ppo", "maskable_ppo"]  # by run name
    run_matrix(
        specs,
        tmp_path / "serial",
        parallel="serial",
        ray_address=None,
        num_cpus=None,
        progress=False,
    )
    for agent in SB3_AGENTS:
        for name in ("policy.pt", "config.json", "curves.csv", "episodes.csv", "summary.json"):
            ray_file = tmp_path / "ray" / "paper" / agent / "seed0" / name
            serial = tmp_path / "serial" / "paper" / agent / "seed0" / name
            assert ray_file.read_bytes() == serial.read_bytes(), (agent, name)
    import pandas as pd

    training = Training(pd.DataFrame(summaries), pd.DataFrame(), 0.0)
    summary = summarise(training)
    assert summary["paper/ppo"]["bc_val_reward"] is None
    assert summary["paper/maskable_ppo"]["n_seeds"] == 1


# ---------------------------------------------------------------------------
# Budget and params
# ---------------------------------------------------------------------------


def test_decision_budget_is_eats_warm_start_and_sac_decisions(params, sb3_params):
    for preset in ("paper", "edge"):
        train, tasks = params.train, params.env.preset(preset).workload.total_tasks
        episodes = train.resolve("demo_episodes", preset) + train.resolve(
            "dagger_rounds", preset
        ) * train.resolve("dagger_episodes", preset)
        assert episodes > train.resolve("demo_episodes", preset) > 0  # DAgger counted
        expected = episodes * tasks + train.resolve("total_steps", preset)
        assert decision_budget(params, preset) == expected
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["init"] = "scratch"
    raw["train"]["bc_weight"] = 0.0
    scratch = decision_budget(validate_params(raw), "paper")
    assert scratch == raw["train"]["total_steps"]["paper"]  # warm-up included
    quick = validate_params(
        load_params_with_overrides(REPO / "params.yaml", REPO / "params.quick.yaml")
    )
    for preset in ("paper", "edge"):
        train, tasks = quick.train, quick.env.preset(preset).workload.total_tasks
        episodes = train.resolve("demo_episodes", preset) + train.resolve(
            "dagger_rounds", preset
        ) * train.resolve("dagger_episodes", preset)
        expected = episodes * tasks + train.resolve("total_steps", preset)
        assert decision_budget(quick, preset) == expected
    # every run of a learner gets its preset's budget, and eat's other run settings
    specs = resolve_sb3_runs(sb3_params)
    train = sb3_params.train
    assert len(specs) == len(SB3_AGENTS) * len(train.presets) * train.n_seeds
    for spec in specs:
        assert spec.config.decisions == decision_budget(sb3_params, spec.preset_name)
        assert spec.config.eval_every == train.resolve("eval_every", spec.preset_name)
        assert spec.rates == list(sb3_params.evaluate.rates[spec.preset_name])
        assert (spec.config.steps_levels is None) == (spec.agent == "ppo")
    assert not {s.agent for s in resolve_runs(sb3_params)} & set(SB3_AGENTS)
    assert len(resolve_matrix(sb3_params)) == len(resolve_runs(sb3_params)) + len(specs)


def test_params_accept_the_learners_and_check_their_settings():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(SB3_AGENTS) <= set(raw["train"]["agents"]) & set(raw["evaluate"]["schedulers"])
    validate_params(raw)
    raw["train"]["sb3"]["batch_size"] = 60
    with pytest.raises(ValueError, match=r"batch_size \(60\) must divide n_steps \(512\)"):
        validate_params(raw)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["agents"] = [a for a in raw["train"]["agents"] if a != "ppo"]
    with pytest.raises(ValueError, match=r"has 'ppo', which train\.agents does not train"):
        validate_params(raw)


def test_train_entry_point_trains_one_learner(tmp_path):
    raw = with_sb3_agents(yaml.safe_load((REPO / "params.yaml").read_text()))
    raw["train"].update(
        demo_episodes={"paper": 1, "edge": 1},
        dagger_rounds=0,
        total_steps={"paper": 40, "edge": 40},
        eval_every={"paper": 40, "edge": 40},
        validation_seeds=1,
        sb3={**raw["train"]["sb3"], "n_steps": 32, "batch_size": 16, "n_epochs": 1},
        scale=None,  # the overrides above give no metro values
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "eat", "--params", str(path), "--root", str(tmp_path)]
    command += ["train", "--agent", "ppo", "--preset", "paper", "--seed", "0", "--no-progress"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"agent": "ppo"' in out.stdout and '"decisions": 96' in out.stdout  # 72 -> 3 x 32
    assert (tmp_path / "models" / "paper" / "ppo" / "seed0" / "policy.pt").is_file()

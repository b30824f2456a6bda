"""Third-party learners through the package's environments: the discrete view and its
masks, and both environments under Gymnasium's and stable-baselines3's checkers."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from eat import DISCRETE_ENV_ID, ENV_ID
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
from tests.conftest import tweak

torch.set_num_threads(1)

# Warnings of the checkers that follow from documented choices: the observation is a grid
# of tokens (sb3's MlpPolicy flattens it with its FlattenExtractor; eat's attention
# encoder reads the tokens), there are no render modes, and envs are checked unwrapped.
EXPECTED_WARNINGS = ("unconventional shape", "not having a spec", "render")
RATES = {"paper": 0.05, "edge": 1.0}


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

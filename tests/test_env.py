"""Gymnasium environment: API conformance, reproducibility, token layout, action decoding."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from eat.evaluation.runner import run_episode
from eat.schedulers import make_scheduler
from eat.schedulers.policy import PolicyScheduler
from eat.sim import ENV_ID, Dispatch, EdgeClusterEnv, Encoder, Simulator, Task
from eat.sim.encoding import N_FEATURES, N_GLOBAL_ACTIONS
from tests.conftest import tweak

# check_env's warnings that follow from documented choices: the env has no render modes
# and is checked unwrapped (no spec).
EXPECTED_WARNINGS = ("not having a spec", "render")


@pytest.mark.parametrize(("preset_name", "rate"), [("paper", 0.05), ("edge", 1.0)])
def test_check_env_passes(params, preset_name, rate):
    env = EdgeClusterEnv(params.env.preset(preset_name), rate)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    unexpected = [
        str(w.message)
        for w in caught
        if not any(text in str(w.message) for text in EXPECTED_WARNINGS)
    ]
    assert not unexpected


def test_registered_id_makes_the_env():
    env = gym.make(ENV_ID, preset="edge", rate=0.5)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["action_mask"].dtype == bool


def test_import_eat_alone_registers_the_env():
    """In a fresh interpreter: ``import eat`` and gymnasium.make, nothing else."""
    code = (
        "import gymnasium, eat; env = gymnasium.make('eat/EdgeCluster-v3', preset='paper'); "
        "print(env.reset(seed=3)[0].shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("(")


@pytest.mark.parametrize("preset_name", ["paper", "edge"])
def test_env_and_run_episode_draw_the_same_workload_for_a_seed(params, preset_name):
    """reset(seed=s) and run_episode(seed=s) give the same tasks, and an outside policy
    wrapped as a Scheduler is evaluated on exactly the environment's episodes."""
    preset = params.env.preset(preset_name)
    rate = params.evaluate.rates[preset_name][1]
    env = EdgeClusterEnv(preset, rate)
    env.reset(seed=1000)
    env_tasks = sorted(vars(t).items() for t in env.sim.tasks.values())
    scheduler = make_scheduler("fifo", params.schedulers)
    result = run_episode(preset, scheduler, rate, seed=1000)
    episode_tasks = result.tasks.sort_values("task_id")
    assert len(env_tasks) == len(episode_tasks)
    arrivals = [dict(items)["arrival"] for items in env_tasks]
    assert arrivals == episode_tasks["arrival"].tolist()

    # A policy acting on the environment's observations, wrapped as a Scheduler, reaches
    # the same rewards in both APIs.
    def head_first(obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        action = np.full(env.action_space.shape, -1.0, np.float32)
        action[:2] = 1.0
        action[3] = 1.0  # the oldest task slot
        return action

    wrapped = run_episode(preset, PolicyScheduler(head_first, "head_first"), rate, seed=1000)
    obs, info = env.reset(seed=1000)
    rewards, done = [], False
    while not done:
        obs, reward, terminated, truncated, info = env.step(head_first(obs, info["action_mask"]))
        if info["dispatched"]:
            rewards.append(reward)
        done = terminated or truncated
    assert rewards == pytest.approx(wrapped.tasks.sort_values("start")["reward"].tolist())


def rollout(env: EdgeClusterEnv, seed: int, steps: int = 200):
    obs, info = env.reset(seed=seed)
    action_rng = np.random.default_rng(123)
    trajectory = [obs]
    for _ in range(steps):
        action = action_rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        trajectory += [obs, np.array([reward, info["dt"]])]
        if terminated or truncated:
            obs, info = env.reset()
            trajectory.append(obs)
    return trajectory


@pytest.mark.parametrize("preset_name", ["paper", "edge"])
def test_same_seed_same_rollout_across_two_envs(params, preset_name):
    preset = params.env.preset(preset_name)
    first = rollout(EdgeClusterEnv(preset, [0.03, 0.07] if preset_name == "paper" else 1.0), 5)
    second = rollout(EdgeClusterEnv(preset, [0.03, 0.07] if preset_name == "paper" else 1.0), 5)
    assert len(first) == len(second)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    third = rollout(EdgeClusterEnv(preset, 1.0 if preset_name == "edge" else 0.05), 6)
    assert not all(np.array_equal(a, b) for a, b in zip(first, third, strict=False))


def test_token_layout_is_the_same_for_any_cluster_and_window(edge):
    small = EdgeClusterEnv(tweak(edge, servers=[{"gpu": "l4", "count": 4}], queue_window=5), 1.0)
    large = EdgeClusterEnv(tweak(edge, queue_window=16), 1.0)
    obs_small, _ = small.reset(seed=0)
    obs_large, _ = large.reset(seed=0)
    # the columns are the model slots, not the models (v3): edge.model_slots for both
    assert obs_small.shape == (5 + 4 + 1, N_FEATURES + edge.model_slots)
    assert obs_large.shape == (16 + 8 + 1, N_FEATURES + edge.model_slots)
    for obs, window, servers in ((obs_small, 5, 4), (obs_large, 16, 8)):
        types = obs[:, :3].argmax(axis=1)
        assert (types[:window] == 0).all()
        assert (types[window : window + servers] == 1).all()
        assert types[-1] == 2
    assert small.action_space.shape == (N_GLOBAL_ACTIONS + 5 + 4,)


def test_observation_has_relative_times_not_absolute(paper):
    tasks = [Task(0, 0.0, "sd14", 1440, math.inf, 4), Task(1, 0.0, "sd14", 1440, math.inf, 1)]
    sim = Simulator(paper)
    sim.reset(tasks, np.random.default_rng(0))
    encoder = Encoder(sim)
    sim.advance()
    first = sim.dispatch(Dispatch(0, 10))
    sim.advance()  # the gang of 4 completes; task 1 has waited `first.finish` seconds
    obs = encoder.observe()
    assert obs[0, 4] == pytest.approx(first.finish / encoder.tau, rel=1e-6)  # waiting
    assert obs[-1, 4] == pytest.approx(sim.now / encoder.tau, rel=1e-6)  # current time


@pytest.mark.parametrize("preset_name", ["paper", "edge"])
def test_observation_columns_are_relative_to_the_cluster(params, preset_name):
    """Scaling every time, memory and speed of a preset leaves the observation alone:
    it reads the cluster on its own scales (v2), not in seconds, GB or pixels."""
    preset = params.env.preset(preset_name)
    env = EdgeClusterEnv(preset, params.evaluate.rates[preset_name][1])
    obs, _ = env.reset(seed=1001)
    sim = env.sim
    encoder = env.encoder
    assert encoder.tau == pytest.approx(sim.latency_scale())
    servers = obs[preset.queue_window : preset.queue_window + sim.n_servers]
    assert servers[:, 5].max() == pytest.approx(1.0)  # the fastest server's speed is 1
    largest = max(r for mix in preset.workload.models.values() for r in mix.resolutions)
    present = obs[: preset.queue_window, 3] > 0
    pixels = obs[: preset.queue_window, 7][present]
    assert (pixels > 0).all() and (pixels <= 1.0).all()
    assert largest * largest == encoder.pixel_unit


def crafted_edge(edge) -> tuple[Simulator, Encoder]:
    tasks = [Task(0, 0.0, "sd15", 512, math.inf, None), Task(1, 0.0, "sdxl", 1024, math.inf, None)]
    sim = Simulator(edge)
    sim.reset(tasks, np.random.default_rng(0))
    sim.advance()
    return sim, Encoder(sim)


def test_decode_ignores_masked_task_slots(edge):
    _sim, encoder = crafted_edge(edge)
    action = np.zeros(encoder.action_size, dtype=np.float32)
    action[0] = 1.0
    action[N_GLOBAL_ACTIONS + 5] = 1.0  # an empty slot scores highest: ignored
    action[N_GLOBAL_ACTIONS + 1] = 0.5
    mask = encoder.action_mask()
    assert not mask[N_GLOBAL_ACTIONS + 5] and mask[N_GLOBAL_ACTIONS + 1]
    assert encoder.decode(action).task_id == 1


def test_decode_shrinks_infeasible_gang_and_picks_top_servers(edge):
    sim, encoder = crafted_edge(edge)
    sim.dispatch(Dispatch(0, 10, (0, 1, 2, 3)))  # 4 of 8 servers busy
    action = np.full(encoder.action_size, -1.0, dtype=np.float32)
    action[0] = 1.0
    action[2] = 1.0  # asks for a gang of 8: only 4 servers are free
    action[N_GLOBAL_ACTIONS + 0] = 1.0  # task 1 is now the head (slot 0)
    server_scores = {4: 0.9, 5: -0.5, 6: 0.8, 7: 0.1, 0: 1.0}  # server 0 is busy: masked
    base = N_GLOBAL_ACTIONS + encoder.window
    for server, score in server_scores.items():
        action[base + server] = score
    dispatch = encoder.decode(action)
    assert dispatch.servers == (4, 5, 6, 7)
    action[2] = -0.2  # index 1 of [1, 2, 4, 8]: a gang of 2, the two best free servers
    assert encoder.decode(action).servers == (4, 6)


def test_wait_decodes_to_none_unless_nothing_is_pending(paper, edge):
    sim, encoder = crafted_edge(edge)
    action = np.full(encoder.action_size, -1.0, dtype=np.float32)
    assert sim.next_event_time() is None  # both tasks arrived at t=0, nothing running
    assert encoder.decode(action) is not None  # a wait would deadlock: dispatched instead
    sim.dispatch(Dispatch(0, 10, (0,)))
    assert encoder.decode(action) is None  # a completion is pending: a real wait


def test_encode_decode_round_trip(edge):
    _sim, encoder = crafted_edge(edge)
    for dispatch in (
        Dispatch(1, 17, (2, 5)),
        Dispatch(0, 5, (0, 1, 2, 3, 4, 5, 6, 7)),
        Dispatch(0, 30, (3,)),
    ):
        assert encoder.decode(encoder.encode(dispatch)) == dispatch


def test_step_after_termination_raises(paper):
    env = EdgeClusterEnv(tweak(paper, workload={"total_tasks": 3, "initial_tasks": 3}), 0.05)
    env.reset(seed=0)
    terminated = False
    while not terminated:
        action = np.ones(env.action_space.shape, dtype=np.float32)
        _, _, terminated, _truncated, info = env.step(action)
    assert len(info["records"]) == 3
    with pytest.raises(RuntimeError, match="after the episode terminated"):
        env.step(action)


def test_time_limit_truncates(paper):
    env = EdgeClusterEnv(tweak(paper, time_limit_s=30.0), 0.05)
    env.reset(seed=0)
    truncated = terminated = False
    while not (truncated or terminated):
        _, _, terminated, truncated, info = env.step(np.ones(env.action_space.shape, np.float32))
    assert truncated and not terminated and info["time"] > 30.0


# ---------------------------------------------------------------------------
# Model slots (v3)
# ---------------------------------------------------------------------------


def more_models(edge, copies: int):
    """``edge`` with every model served as ``copies`` distinct models (same architecture)."""
    models, mix = {}, {}
    for name, spec in edge.models.items():
        for copy in range(copies):
            key = name if copy == 0 else f"{name}_v{copy}"
            models[key] = spec.model_dump()
            share = edge.workload.models[name]
            mix[key] = {"share": share.share / copies, "resolutions": share.resolutions}
    data = edge.model_dump()
    data["models"], data["workload"]["models"] = models, mix
    return type(edge).model_validate(data)


def test_observation_width_is_the_slot_count_whatever_the_models(edge):
    """One network reads 2 or 6 models: the model columns are the preset's slots."""
    six = more_models(edge, 3)
    assert len(six.models) == 6 <= edge.model_slots == six.model_slots
    shapes = []
    for preset in (edge, six):
        env = EdgeClusterEnv(preset, 1.0)
        obs, info = env.reset(seed=1000)
        shapes.append(obs.shape)
        assert info["model_slots"] == {name: i for i, name in enumerate(preset.models)}
        sim = env.sim
        for row, task in enumerate(sim.window()):  # identity: model i in slot i
            slot = list(preset.models).index(task.model)
            expected = [float(i == slot) for i in range(preset.model_slots)]
            assert obs[row, N_FEATURES:].tolist() == expected
    assert shapes[0] == shapes[1] == (10 + 8 + 1, N_FEATURES + edge.model_slots)
    with pytest.raises(ValueError, match=r"has 2 model slot\(s\); the preset serves 6 models"):
        Encoder(Simulator(six), model_slots=2)


def test_permuted_slots_are_drawn_from_the_episode_seed(edge):
    """The training env permutes slots per episode from the seed: the same seed gives the
    same assignment and the same tasks as the identity env, only the slot columns move."""
    six = more_models(edge, 3)
    identity = EdgeClusterEnv(six, 1.0)
    permuted = EdgeClusterEnv(six, 1.0, slot_assignment="permuted")
    again = EdgeClusterEnv(six, 1.0, slot_assignment="permuted")
    used, assignments = set(), set()
    for seed in range(20):
        plain, _ = identity.reset(seed=seed)
        obs, info = permuted.reset(seed=seed)
        repeat, info_again = again.reset(seed=seed)
        assert info["model_slots"] == info_again["model_slots"] and np.array_equal(obs, repeat)
        slots = info["model_slots"]
        assert len(set(slots.values())) == 6 and set(slots.values()) <= set(range(8))
        assignments.add(tuple(slots.values()))
        used.update(slots.values())
        assert [vars(t) for t in permuted.sim.tasks.values()] == [
            vars(t) for t in identity.sim.tasks.values()
        ]
        # the observation is the identity's with the model columns moved to their slots
        moved = plain.copy()
        moved[:, N_FEATURES:] = 0.0
        for i, name in enumerate(six.models):
            moved[:, N_FEATURES + slots[name]] = plain[:, N_FEATURES + i]
        assert np.array_equal(obs, moved)
    assert used == set(range(8)) and len(assignments) == 20  # every slot is trained
    with pytest.raises(ValueError, match=r"slot_assignment 'shuffled' is not supported; choose"):
        EdgeClusterEnv(six, 1.0, slot_assignment="shuffled")


def test_model_slots_must_hold_the_models(edge):
    with pytest.raises(
        ValueError, match=r"model_slots \(1\) must be at least the number of models \(2\)"
    ):
        tweak(edge, model_slots=1)

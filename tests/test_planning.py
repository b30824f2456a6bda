"""Forking the simulator and the rollout planners built on it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eat.evaluation.runner import run_episode, scheduler_rng, simulate
from eat.schedulers import make_scheduler
from eat.schedulers.rollout import RolloutScheduler, make_planner
from eat.sim.simulator import Dispatch, Simulator, episode_rngs, make_tasks
from eat.sim.workload import Task, sample_future_tasks
from tests.conftest import tweak


@pytest.fixture(scope="module")
def edge0(edge):
    return tweak(edge, latency_noise_cv=0.0, profile_latency={"stage_decision": None})


def half_episode(preset, settings, seed: int = 3, rate: float = 1.0):
    """A simulator half-way through an episode driven by greedy, and its scheduler."""
    sim = Simulator(preset)
    workload_rng, noise_rng = episode_rngs(seed)
    tasks = make_tasks(sim, rate, workload_rng)
    sim.reset(tasks, noise_rng, arrival_rate=rate)
    scheduler = make_scheduler("greedy", settings)
    scheduler.reset(sim, scheduler_rng("greedy", seed))
    sim.advance()
    while len(sim.records) < len(tasks) // 2:
        decision = scheduler.decide(sim)
        if decision is None:
            sim.wait()
        else:
            sim.dispatch(decision)
            sim.advance()
    return sim, scheduler


def drive_to_end(sim: Simulator, scheduler) -> None:
    ongoing = True
    while ongoing:
        decision = scheduler.decide(sim)
        if decision is None:
            ongoing = sim.wait()
        else:
            sim.dispatch(decision)
            ongoing = sim.advance()


@pytest.mark.parametrize("preset_name", ["paper", "edge"])
def test_a_fork_driven_alike_reproduces_the_original(params, preset_name):
    preset = params.env.preset(preset_name)
    sim, scheduler = half_episode(preset, params.schedulers)
    fork = sim.fork()
    twin = make_scheduler("greedy", params.schedulers)
    twin.reset(fork, scheduler_rng("greedy", 3))
    drive_to_end(sim, scheduler)
    drive_to_end(fork, twin)
    assert fork.records == sim.records and fork.segments == sim.segments
    assert fork.now == sim.now and fork.done and sim.done


def test_changing_a_fork_leaves_the_original_alone(params, edge0):
    sim, scheduler = half_episode(edge0, params.schedulers)
    before = (
        sim.now,
        [t.task_id for t in sim.queue],
        [(s.task_id, s.busy_until, tuple(s.resident)) for s in sim.servers],
        list(sim.records),
        list(sim._events),
        sim.rng.bit_generator.state,
    )
    fork = sim.fork(records=False)
    assert fork.records == []
    rogue = make_scheduler("random", params.schedulers)
    rogue.reset(fork, np.random.default_rng(9))
    drive_to_end(fork, rogue)
    fork.replace_future_arrivals([])
    fork.schedule_wakeup(fork.now + 1.0)
    after = (
        sim.now,
        [t.task_id for t in sim.queue],
        [(s.task_id, s.busy_until, tuple(s.resident)) for s in sim.servers],
        list(sim.records),
        list(sim._events),
        sim.rng.bit_generator.state,
    )
    assert after == before
    drive_to_end(sim, scheduler)  # the original still runs to its end
    assert sim.done


def test_replacing_the_future_keeps_what_has_arrived(params, edge0):
    sim, _ = half_episode(edge0, params.schedulers)
    arrived = sim.n_arrived
    real_future = sim.future_arrivals()
    assert real_future
    sampled = sample_future_tasks(
        edge0.workload, 1.0, sim.now, 5, 10_000, np.random.default_rng(0), sim.nominal_latency
    )
    fork = sim.fork()
    fork.replace_future_arrivals(sampled)
    assert [t.task_id for t in fork.future_arrivals()] == [t.task_id for t in sampled]
    assert all(t.arrival > sim.now for t in sampled)
    assert len(fork.tasks) == arrived + 5 and fork.n_arrived == arrived
    assert len(sim.future_arrivals()) == len(real_future)


def crafted_edge_state(edge0) -> Simulator:
    """The known mistake of greedy, which never waits: task 1 arrives 0.2 s before the
    fast RTX 4090, which holds SDXL, frees up; the only free server is a slow T4 without
    the model, where the task would pay a cold start and run several times slower."""
    preset = tweak(
        edge0,
        servers=[{"gpu": "rtx4090", "count": 1}, {"gpu": "t4", "count": 1}],
        allowed_gang_sizes=[1, 2],
        workload={"total_tasks": 2},
    )
    probe = Simulator(preset)
    probe.reset([Task(0, 0.0, "sdxl", 1024, math.inf, None)], None)
    probe.advance()
    busy_until = probe.dispatch(Dispatch(0, 20, (0,))).finish
    sim = Simulator(preset)
    tasks = [
        Task(0, 0.0, "sdxl", 1024, math.inf, None),
        Task(1, busy_until - 0.2, "sdxl", 1024, math.inf, None),
    ]
    sim.reset(tasks, None, arrival_rate=1.0)
    sim.advance()
    sim.dispatch(Dispatch(0, 20, (0,)))  # the 4090 loads sdxl and runs task 0
    assert sim.advance() and sim.now == pytest.approx(busy_until - 0.2)
    assert sim.free_servers() == [1]
    return sim


def test_rollout_waits_where_its_base_makes_a_known_mistake(params, edge0):
    sim = crafted_edge_state(edge0)
    greedy = make_scheduler("greedy", params.schedulers)
    greedy.reset(sim, np.random.default_rng(0))
    mistake = greedy.decide(sim)
    assert mistake is not None and mistake.servers == (1,)  # the slow cold T4, at once
    planner = make_planner("rollout", params, "edge")
    planner.reset(sim, np.random.default_rng(0))
    assert planner.decide(sim) is None  # wait for the warm 4090
    # and the wait pays: the whole episode's reward
    greedy_fork, planner_fork = sim.fork(), sim.fork()
    drive_to_end(greedy_fork, greedy)
    drive_to_end(planner_fork, planner)
    assert planner_fork.records[-1][16] > greedy_fork.records[-1][16]  # task 1's reward


@pytest.mark.parametrize("preset_name", ["paper", "edge"])
def test_planners_improve_on_their_base_over_a_few_episodes(params, preset_name):
    preset = tweak(params.env.preset(preset_name), workload={"total_tasks": 24})
    rate = params.evaluate.rates[preset_name][-1]
    base = params.planners.rollout.base[preset_name]
    seeds = range(1000, 1004)

    def mean_reward(make) -> float:
        return float(
            np.mean([run_episode(preset, make(), rate, s).tasks["reward"].mean() for s in seeds])
        )

    base_reward = mean_reward(lambda: make_scheduler(base, params.schedulers))
    rollout = mean_reward(lambda: make_planner("rollout", params, preset_name))
    clairvoyant = mean_reward(lambda: make_planner("clairvoyant", params, preset_name))
    assert rollout > base_reward
    assert clairvoyant > base_reward


def test_rollout_never_sees_the_real_future(params, edge0):
    """The online planner's decisions do not change when the unarrived tasks change."""
    sim, _ = half_episode(edge0, params.schedulers)
    planner = make_planner("rollout", params, "edge")
    planner.reset(sim, np.random.default_rng(5))
    decision = planner.decide(sim)
    other = sim.fork()
    shifted = [
        Task(t.task_id, t.arrival + 0.5, "sdxl", 1024, t.deadline, t.gang_size)
        for t in other.future_arrivals()
    ]
    other.replace_future_arrivals(shifted)
    twin = make_planner("rollout", params, "edge")
    twin.reset(other, np.random.default_rng(5))
    assert twin.decide(other) == decision
    with pytest.raises(ValueError, match="arrival rate"):
        blind = sim.fork()
        blind.arrival_rate = None
        RolloutScheduler(params.schedulers, params.planners.rollout, "greedy", 8).reset(
            blind, np.random.default_rng(0)
        )


def test_simulate_is_run_episode_without_frames(params):
    preset = params.env.paper
    result = run_episode(preset, make_scheduler("eft", params.schedulers), 0.05, 1000)
    sim = Simulator(preset)
    workload_rng, noise_rng = episode_rngs(1000)
    tasks = make_tasks(sim, 0.05, workload_rng)
    simulate(
        sim, make_scheduler("eft", params.schedulers), tasks, noise_rng, scheduler_rng("eft", 1000)
    )
    assert result.tasks.equals(sim.records_frame())


def test_the_horizon_is_resolved_per_preset(params):
    search = params.planners.rollout.model_copy(update={"horizon": {"paper": 16, "edge": 3}})
    planners = params.model_copy(
        update={"planners": params.planners.model_copy(update={"rollout": search})}
    )
    assert make_planner("rollout", planners, "edge").horizon == 3
    assert make_planner("rollout", planners, "paper").horizon == 16
    with pytest.raises(ValueError, match="horizon has no value for preset 'metro'"):
        make_planner("rollout", planners, "metro")


def test_the_training_teacher_is_the_evaluated_planner(params):
    from eat.training.loop import make_teacher, resolve_runs

    for spec in resolve_runs(params, include_ablation=False):
        if spec.teacher != "rollout" or spec.agent != "eat" or spec.config.seed != 0:
            continue
        teacher, planner = make_teacher(spec), make_planner("rollout", params, spec.preset_name)
        assert isinstance(teacher, RolloutScheduler) and teacher.name == planner.name
        assert (teacher.base.name, teacher.horizon, teacher.search) == (
            planner.base.name,
            planner.horizon,
            planner.search,
        )
        assert not teacher.clairvoyant

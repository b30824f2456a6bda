"""Tests of the heuristic schedulers: each one's defining behaviour on crafted states,
validity and optimality checks against brute force, and full episodes on both presets."""

from __future__ import annotations

import itertools
import math
import time
import typing

import numpy as np
import pytest

from eat.params import AgentName, HeuristicName, PlannerName, SchedulerName
from eat.schedulers import SCHEDULERS, make_scheduler
from eat.schedulers.heuristics import (
    EarliestFinishTimeScheduler,
    EdfScheduler,
    FifoScheduler,
    FirstFitScheduler,
    GreedyScheduler,
    RandomScheduler,
    RewardCompletion,
    TimingCache,
    WarmFirstScheduler,
    candidate_gangs,
    rewards_by_steps,
)
from eat.sim.simulator import Dispatch, SimulationError, Simulator, episode_rngs, make_tasks
from eat.sim.workload import Task
from tests.conftest import tweak

INF = math.inf


def by_rule(sim: Simulator, task_id: int, steps: int) -> Dispatch:
    """A paper-preset dispatch: the task on the servers the reference rule picks now."""
    task = next(t for t in sim.window() if t.task_id == task_id)
    return Dispatch(task_id, steps, sim.placement.rule_gang(task.gang_size or 1)[0])


@pytest.fixture(scope="module")
def edge0(edge):
    """The edge preset without latency noise, so that crafted states are exact, on the
    shipped reference profiles whatever the profile stage chose."""
    return tweak(edge, latency_noise_cv=0.0, profile_latency={"stage_decision": None})


@pytest.fixture(scope="module")
def settings(params):
    return params.schedulers


def make_sim(preset, tasks: list[Task]) -> Simulator:
    sim = Simulator(preset)
    sim.reset(tasks, np.random.default_rng(0))
    assert sim.advance()
    return sim


def edge_task(
    task_id: int, arrival: float, model: str = "sd15", resolution: int = 1024, deadline: float = INF
) -> Task:
    return Task(task_id, arrival, model, resolution, deadline, None)


def paper_task(task_id: int, arrival: float, gang: int, deadline: float = INF) -> Task:
    return Task(task_id, arrival, "sd14", 1440, deadline, gang)


def snapshot(sim: Simulator) -> tuple:
    return (
        sim.now,
        [t.task_id for t in sim.queue],
        sim.n_free,
        len(sim.records),
        sim.next_event_time(),
        [(s.task_id, s.busy_until, tuple(s.resident), s.group) for s in sim.servers],
    )


def free_subsets(sim: Simulator, task: Task):
    """Every valid edge gang for ``task`` now (brute force)."""
    memory = sim.preset.models[task.model].memory_gb
    free = [s.server_id for s in sim.servers if s.task_id is None and s.memory_gb >= memory]
    for size in sim.allowed_gang_sizes:
        yield from itertools.combinations(free, size)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


def test_registry_covers_every_scheduler_name(settings):
    assert set(SCHEDULERS) == set(typing.get_args(HeuristicName))
    # Every scheduler name is a heuristic, a planner or a learned agent (eat.schedulers.rl).
    assert set(typing.get_args(SchedulerName)) == (
        set(SCHEDULERS) | set(typing.get_args(PlannerName)) | set(typing.get_args(AgentName))
    )
    for name, cls in SCHEDULERS.items():
        scheduler = make_scheduler(name, settings)
        assert isinstance(scheduler, cls) and scheduler.name == name
        assert cls.__doc__ and len(cls.__doc__) > 80, f"{name} must document its rule"
    with pytest.raises(ValueError, match="unknown scheduler 'nope'; choose one of"):
        make_scheduler("nope", settings)


# ---------------------------------------------------------------------------
# random
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("preset_name", ["paper", "edge"])
def test_random_is_always_valid_and_never_idles(params, settings, preset_name):
    preset = params.env.preset(preset_name)
    rate = {"paper": 0.05, "edge": 1.0}[preset_name]
    scheduler = RandomScheduler(settings)
    positions, sizes, steps, decisions, seed = set(), set(), [], 0, 0
    while decisions < 200:
        sim = Simulator(preset)
        workload_rng, noise_rng = episode_rngs(seed)
        sim.reset(make_tasks(sim, rate, workload_rng), noise_rng)
        scheduler.reset(sim, np.random.default_rng(seed))
        while sim.advance():
            dispatch = scheduler.decide(sim)
            assert dispatch is not None, "random must not wait while a dispatch is valid"
            outcome = sim.preview(dispatch)  # raises SimulationError if invalid
            ids = [t.task_id for t in sim.window()]
            positions.add(ids.index(dispatch.task_id))
            sizes.add(len(outcome.servers))
            steps.append(dispatch.steps)
            sim.dispatch(dispatch)
            decisions += 1
        seed += 1
    assert len(positions) >= 3
    assert min(steps) == preset.min_steps and max(steps) == preset.max_steps
    expected_sizes = {1, 2, 4} if preset_name == "edge" else set(preset.workload.gang_sizes)
    assert expected_sizes <= sizes


def test_random_draws_are_uniform(edge0, settings):
    sim = make_sim(edge0, [edge_task(i, 0.0, resolution=512) for i in range(5)])
    before = snapshot(sim)
    scheduler = RandomScheduler(settings)
    scheduler.reset(sim, np.random.default_rng(1))
    n = 2600
    tasks, sizes, steps, servers = {}, {}, {}, {}
    for _ in range(n):
        d = scheduler.decide(sim)
        tasks[d.task_id] = tasks.get(d.task_id, 0) + 1
        sizes[len(d.servers)] = sizes.get(len(d.servers), 0) + 1
        steps[d.steps] = steps.get(d.steps, 0) + 1
        for server in d.servers:
            servers[server] = servers.get(server, 0) + 1
    assert snapshot(sim) == before, "decide must not change the simulator"

    def chi2(counts: dict, categories: list) -> float:
        expected = sum(counts.values()) / len(categories)
        return sum((counts.get(c, 0) - expected) ** 2 / expected for c in categories)

    # Loose bounds: ~99.9% quantiles of chi-square with 4, 3 and 25 degrees of freedom.
    assert chi2(tasks, list(range(5))) < 18.5
    assert chi2(sizes, [1, 2, 4, 8]) < 16.3
    assert chi2(steps, list(range(edge0.min_steps, edge0.max_steps + 1))) < 52.6
    # Each server is in a gang with probability mean(size) / 8: all equally often.
    assert chi2(servers, list(range(8))) < 24.3


# ---------------------------------------------------------------------------
# fifo and first_fit
# ---------------------------------------------------------------------------


def test_fifo_waits_for_the_head_first_fit_skips_it_paper(paper, settings):
    # Task 0 takes two of the four servers; the head (task 1) needs 4, task 2 needs 1.
    sim = make_sim(paper, [paper_task(0, 0.0, 2), paper_task(1, 0.0, 4), paper_task(2, 0.0, 1)])
    sim.dispatch(Dispatch(0, 10))
    assert sim.has_decision() and sim.n_free == 2
    assert FifoScheduler(settings).decide(sim) is None
    d = FirstFitScheduler(settings).decide(sim)
    assert d == by_rule(sim, 2, settings.fixed_steps)
    sim.preview(d)


def test_fifo_keeps_its_fixed_gang_size_edge(edge0, settings):
    tasks = [edge_task(0, 0.0), edge_task(1, 0.0), edge_task(2, 0.0), edge_task(3, 0.0, "sdxl")]
    sim = make_sim(edge0, tasks)
    sim.dispatch(Dispatch(0, 30, (0, 1, 2, 3)))
    sim.dispatch(Dispatch(1, 30, (4, 5)))
    assert sim.free_servers() == [6, 7] and sim.has_decision()  # the sim would allow 1 or 2
    four = settings.model_copy(update={"fixed_gang_size": 4})
    assert FifoScheduler(four).decide(sim) is None
    assert FirstFitScheduler(four).decide(sim) is None
    three = settings.model_copy(update={"fixed_gang_size": 3})  # not allowed: largest below
    assert FifoScheduler(three).decide(sim) == Dispatch(2, settings.fixed_steps, (6, 7))


def test_fifo_servers_resident_first_then_fastest(edge0, settings):
    # Task 0 leaves sd15 resident on server 4 (an L4); tasks 1 and 2 arrive later.
    sim = make_sim(
        edge0, [edge_task(0, 0.0, resolution=512), edge_task(1, 50.0), edge_task(2, 50.0, "sdxl")]
    )
    sim.dispatch(Dispatch(0, 5, (4,)))
    assert sim.advance() and sim.now == 50.0 and sim.n_free == 8
    steps = settings.fixed_steps
    assert FifoScheduler(settings).decide(sim) == Dispatch(1, steps, (4,))
    two = settings.model_copy(update={"fixed_gang_size": 2})
    assert FifoScheduler(two).decide(sim) == Dispatch(1, steps, (0, 4))
    # Steps are clipped into range.
    many = settings.model_copy(update={"fixed_steps": 99})
    assert FirstFitScheduler(many).decide(sim).steps == edge0.max_steps
    sim.dispatch(Dispatch(1, 10, (4,)))
    assert FifoScheduler(settings).decide(sim) == Dispatch(2, steps, (0,))  # fastest: 4090


# ---------------------------------------------------------------------------
# greedy
# ---------------------------------------------------------------------------


def greedy_edge_state(edge0) -> Simulator:
    """t = 5: server 0 busy (sdxl), server 4 free with sd15 resident, three queued tasks
    with different waits and deadlines (one tight)."""
    tasks = [
        edge_task(0, 0.0, resolution=512),
        edge_task(1, 0.0, "sdxl"),
        edge_task(2, 4.0, resolution=768, deadline=8.0),
        edge_task(3, 4.5, "sdxl"),
        edge_task(4, 5.0, resolution=512, deadline=7.0),
    ]
    sim = make_sim(edge0, tasks)
    sim.dispatch(Dispatch(0, 5, (4,)))
    sim.dispatch(Dispatch(1, 30, (0,)))
    while sim.now < 5.0:
        assert sim.wait()
    assert sim.now == 5.0 and [t.task_id for t in sim.window()] == [2, 3, 4]
    assert sim.servers[4].task_id is None and sim.is_warm(4, "sd15")
    assert sim.servers[0].task_id is not None
    return sim


def greedy_paper_state(paper) -> Simulator:
    """t = 40: the warm group {0, 1} is free, then tasks of sizes 1, 4 and 2 queued."""
    tasks = [
        paper_task(0, 0.0, 2),
        paper_task(1, 30.0, 1),
        paper_task(2, 35.0, 4),
        paper_task(3, 40.0, 2),
    ]
    sim = make_sim(paper, tasks)
    sim.dispatch(Dispatch(0, 10))
    while sim.now < 40.0:
        assert sim.wait()
    assert [t.task_id for t in sim.window()] == [1, 2, 3]
    return sim


def test_greedy_matches_brute_force_edge(edge0, settings):
    sim = greedy_edge_state(edge0)
    d = GreedyScheduler(settings).decide(sim)
    chosen = sim.preview(d).reward
    best = max(
        sim.preview(Dispatch(task.task_id, steps, gang)).reward
        for task in sim.window()
        for gang in free_subsets(sim, task)
        for steps in range(edge0.min_steps, edge0.max_steps + 1)
    )
    assert chosen == pytest.approx(best, abs=1e-9)


def test_reward_completion_is_the_best_dispatch_of_the_chosen_task(edge0, settings):
    sim = greedy_edge_state(edge0)
    complete = RewardCompletion()
    for task in sim.window():
        # whatever gang and steps the policy asked for, the task is kept
        asked = Dispatch(task.task_id, edge0.max_steps, next(free_subsets(sim, task)))
        completed = complete(sim, asked)
        best = max(
            sim.preview(Dispatch(task.task_id, steps, gang)).reward
            for gang in free_subsets(sim, task)
            for steps in range(edge0.min_steps, edge0.max_steps + 1)
        )
        assert completed.task_id == task.task_id
        assert sim.preview(completed).reward == pytest.approx(best, abs=1e-9)
    # completing greedy's own choice of task gives greedy's dispatch (same tie-break)
    chosen = GreedyScheduler(settings).decide(sim)
    assert chosen is not None
    asked = Dispatch(
        chosen.task_id, edge0.min_steps, next(free_subsets(sim, sim.tasks[chosen.task_id]))
    )
    assert complete(sim, asked) == chosen


def test_greedy_matches_brute_force_paper(paper, settings):
    sim = greedy_paper_state(paper)
    d = GreedyScheduler(settings).decide(sim)
    best = max(
        sim.preview(Dispatch(task.task_id, steps)).reward
        for task in sim.dispatchable()
        for steps in range(paper.min_steps, paper.max_steps + 1)
    )
    assert sim.preview(d).reward == pytest.approx(best, abs=1e-9)
    # It takes the warm group (no reload) with the size-2 task, over the older tasks.
    assert d.task_id == 3 and sim.preview(d).timing.setup_s == 0.0


def test_fast_reward_path_equals_preview(edge0, paper):
    cache = TimingCache()
    sim = greedy_edge_state(edge0)
    checked = 0
    for task in sim.window():
        for gang in [(4,), (1,), (4, 5), (1, 2, 3, 4), (5, 6), (2, 3, 6, 7)]:
            fast = rewards_by_steps(sim, task, cache.now(sim, task, gang))
            for steps, reward in fast:
                assert reward == pytest.approx(
                    sim.preview(Dispatch(task.task_id, steps, gang)).reward, abs=1e-12
                )
                checked += 1
    # Some of those dispatches miss a deadline (task 4 cold on server 1) and some meet
    # it (task 4 on server 4, where sd15 is resident).
    met = {sim.preview(Dispatch(4, 5, gang)).deadline_met for gang in [(4,), (1,)]}
    assert met == {True, False} and checked > 300
    sim = greedy_paper_state(paper)
    for task in sim.dispatchable():
        gang, _ = sim.placement.rule_gang(task.gang_size)
        fast = rewards_by_steps(sim, task, cache.now(sim, task, gang))
        for steps, reward in fast:
            assert reward == pytest.approx(
                sim.preview(Dispatch(task.task_id, steps)).reward, abs=1e-12
            )


def test_candidate_gangs_contain_a_fastest_gang(edge0):
    """The two candidates per size are exact: no other subset is faster at any steps."""
    sim = greedy_edge_state(edge0)
    for task in sim.window():
        free = [s.server_id for s in sim.servers if s.task_id is None]
        for size in (1, 2, 4):
            candidates = candidate_gangs(sim, task, free, size)
            for steps in (5, 17, 30):
                best = min(
                    sim.gang_timing(task, g).duration(steps)
                    for g in itertools.combinations(free, size)
                )
                ours = min(sim.gang_timing(task, g).duration(steps) for g in candidates)
                assert ours == pytest.approx(best, rel=1e-12)


# ---------------------------------------------------------------------------
# eft
# ---------------------------------------------------------------------------


def eft_edge_state(edge0, arrival: float, queued: list[Task]) -> Simulator:
    """Server 0 (4090) runs sd15 until :func:`server0_free_at`; servers 1-3 run sdxl
    until later; servers 4-7 (L4, T4) are free and cold. ``queued`` arrive at
    ``arrival``."""
    warmups = [
        edge_task(0, 0.0),
        edge_task(1, 0.0, "sdxl"),
        edge_task(2, 0.0, "sdxl"),
        edge_task(3, 0.0, "sdxl"),
    ]
    sim = make_sim(edge0, warmups + queued)
    for task_id in range(4):
        sim.dispatch(Dispatch(task_id, 30, (task_id,)))
    assert sim.advance() and sim.now == arrival
    return sim


def server0_free_at(edge0) -> float:
    """When server 0 of :func:`eft_edge_state` frees (cold sd15 1024 px, 30 steps)."""
    sim = eft_edge_state(edge0, 0.5, [edge_task(10, 0.5)])
    assert sim.servers[1].busy_until > sim.servers[0].busy_until
    return sim.servers[0].busy_until


def test_eft_waits_for_a_nearly_free_fast_warm_server_edge(edge0, settings):
    eft = EarliestFinishTimeScheduler(settings)
    free_at = server0_free_at(edge0)
    sim = eft_edge_state(edge0, free_at - 0.5, [edge_task(10, free_at - 0.5)])
    assert sim.servers[0].busy_until == pytest.approx(free_at)
    assert sim.has_decision()  # it could start now on the slow cold servers 4-7
    assert eft.decide(sim) is None
    assert sim.wait() and sim.now == pytest.approx(free_at)
    assert eft.decide(sim) == Dispatch(10, eft.steps(sim), (0,))
    # Far from free: it starts now on the fastest free gang (the two L4s).
    sim = eft_edge_state(edge0, 0.5, [edge_task(10, 0.5)])
    d = eft.decide(sim)
    assert d == Dispatch(10, eft.steps(sim), (4, 5))
    # The option it took is the earliest finish over every gang, busy servers included.
    option = eft.earliest_option(sim, sim.window()[0], d.steps)
    brute = min(
        max(
            sim.now,
            *(
                sim.servers[i].busy_until if sim.servers[i].task_id is not None else sim.now
                for i in gang
            ),
        )
        + sim.gang_timing(sim.window()[0], gang).duration(d.steps)
        for size in (1, 2, 4, 8)
        for gang in itertools.combinations(range(8), size)
    )
    assert option.finish == pytest.approx(brute) and option.start == sim.now


def test_eft_min_min_reserves_the_fast_server_for_one_task(edge0, settings):
    # Two identical tasks shortly before server 0 frees: the first finishes earliest by
    # waiting for it (warm); with server 0 reserved, the second finishes earliest by
    # starting now on the L4s (cold).
    free_at = server0_free_at(edge0)
    eft = EarliestFinishTimeScheduler(settings)
    probe = eft_edge_state(edge0, 0.5, [edge_task(10, 0.5)])
    steps = eft.steps(probe)
    warm = probe.gang_timing(probe.window()[0], (0,)).duration(steps)
    cold_pair = probe.gang_timing(probe.window()[0], (4, 5)).duration(steps)
    assert cold_pair > warm  # the premise: the cold start costs more than the warm pace
    arrival = free_at - (cold_pair - warm) / 2  # waiting beats the L4s for one task only
    sim = eft_edge_state(edge0, arrival, [edge_task(10, arrival), edge_task(11, arrival)])
    assert eft.decide(sim) == Dispatch(11, steps, (4, 5))


def test_eft_picks_the_task_that_finishes_first(edge0, paper, settings):
    eft = EarliestFinishTimeScheduler(settings)
    sim = make_sim(edge0, [edge_task(0, 0.0, "sdxl"), edge_task(1, 0.0, resolution=512)])
    assert eft.decide(sim).task_id == 1
    # paper: a cold gang of 1 (24 s reload) beats a cold gang of 4 (32 s reload).
    sim = make_sim(paper, [paper_task(0, 0.0, 4), paper_task(1, 0.0, 1)])
    assert eft.steps(sim) == sim.quality.fewest_steps_reaching(settings.target_quality, 1, 32)
    assert eft.decide(sim) == by_rule(sim, 1, eft.steps(sim))


def test_eft_waits_for_a_busy_warm_group_paper(paper, settings):
    eft = EarliestFinishTimeScheduler(settings)
    warm_free_at = 24.0 + 10 * 0.15625  # task 0 loads (24 s) then runs 10 steps
    sim = make_sim(paper, [paper_task(0, 0.0, 2), paper_task(1, warm_free_at - 3.0, 2)])
    sim.dispatch(Dispatch(0, 10))
    assert sim.advance() and sim.has_decision()
    assert sim.placement.busy_warm_group_free_at(2) == pytest.approx(warm_free_at)
    assert eft.decide(sim) is None
    assert sim.wait()
    d = eft.decide(sim)
    assert d == by_rule(sim, 1, eft.steps(sim)) and sim.preview(d).timing.setup_s == 0.0
    # 25 s away the cold start now (24 s) finishes first.
    sim = make_sim(paper, [paper_task(0, 0.0, 2), paper_task(1, 0.5, 2)])
    sim.dispatch(Dispatch(0, 10))
    assert sim.advance()
    assert eft.decide(sim) == by_rule(sim, 1, eft.steps(sim))


# ---------------------------------------------------------------------------
# warm_first
# ---------------------------------------------------------------------------


def test_warm_first_waits_for_a_warm_group_paper(paper, settings):
    warm_first = WarmFirstScheduler(settings)
    warm_free_at = 24.0 + 10 * 0.15625
    sim = make_sim(paper, [paper_task(0, 0.0, 2), paper_task(1, warm_free_at - 3.0, 2)])
    sim.dispatch(Dispatch(0, 10))
    assert sim.advance() and sim.has_decision()
    assert warm_first.decide(sim) is None  # 3 s wait rather than a 24 s reload
    assert sim.wait()
    d = warm_first.decide(sim)
    assert d == by_rule(sim, 1, settings.fixed_steps) and sim.preview(d).timing.setup_s == 0.0
    # The warm group frees in 25 s > 24 s reload: dispatch cold now.
    sim = make_sim(paper, [paper_task(0, 0.0, 2), paper_task(1, 0.5, 2)])
    sim.dispatch(Dispatch(0, 10))
    assert sim.advance()
    d = warm_first.decide(sim)
    assert d == by_rule(sim, 1, settings.fixed_steps) and sim.preview(d).timing.setup_s == 24.0


def test_warm_first_prefers_a_younger_warm_task_paper(paper, settings):
    sim = make_sim(paper, [paper_task(0, 0.0, 2), paper_task(1, 100.0, 4), paper_task(2, 100.0, 2)])
    sim.dispatch(Dispatch(0, 10))
    assert sim.advance() and sim.now == 100.0 and sim.n_free == 4
    assert FifoScheduler(settings).decide(sim).task_id == 1  # the older one, cold
    d = WarmFirstScheduler(settings).decide(sim)
    assert d == by_rule(sim, 2, settings.fixed_steps) and sim.preview(d).timing.setup_s == 0.0


def test_warm_first_edge_waits_unless_the_warm_server_is_overloaded(edge0, settings):
    warm_first = WarmFirstScheduler(settings)
    free_at = server0_free_at(edge0)  # server 0 holds sd15 and frees then
    sim = eft_edge_state(edge0, free_at - 1.0, [edge_task(10, free_at - 1.0)])
    assert sim.latency.cold_start_s("sd15", 1) > 1.0
    assert warm_first.decide(sim) is None  # 1 s < the cold start
    assert sim.wait()
    assert warm_first.decide(sim) == Dispatch(10, settings.fixed_steps, (0,))
    # Four sd15 tasks queue for that one server: the last would start ~8 s later, so
    # the oldest goes cold now on the best free server (the fastest, an L4).
    queued = [edge_task(10 + i, free_at - 1.0) for i in range(4)]
    sim = eft_edge_state(edge0, free_at - 1.0, queued)
    assert warm_first.decide(sim) == Dispatch(10, settings.fixed_steps, (4,))
    # A warm server free now is taken at once, even by a younger task.
    sim = make_sim(
        edge0,
        [
            edge_task(0, 0.0, resolution=512),
            edge_task(1, 50.0, "sdxl"),
            edge_task(2, 50.0, resolution=512),
        ],
    )
    sim.dispatch(Dispatch(0, 5, (6,)))
    assert sim.advance() and sim.now == 50.0
    assert warm_first.decide(sim) == Dispatch(2, settings.fixed_steps, (6,))


# ---------------------------------------------------------------------------
# edf
# ---------------------------------------------------------------------------


def test_edf_earliest_deadline_with_the_most_steps_that_meet_it_edge(edge0, settings):
    edf = EdfScheduler(settings)
    # A deadline halfway between the earliest finishes with the fewest and the most steps.
    probe = make_sim(edge0, [edge_task(1, 0.0)])
    reach = [
        min(
            probe.preview(Dispatch(1, steps, gang)).finish
            for gang in free_subsets(probe, probe.window()[0])
        )
        for steps in (edge0.min_steps, edge0.max_steps)
    ]
    deadline = sum(reach) / 2
    tasks = [
        edge_task(0, 0.0, resolution=512, deadline=deadline + 1.5),
        edge_task(1, 0.0, deadline=deadline),
        edge_task(2, 0.0, "sdxl"),
    ]
    sim = make_sim(edge0, tasks)
    d = edf.decide(sim)
    assert d.task_id == 1
    task = sim.window()[1]
    assert sim.preview(d).finish <= task.deadline
    assert edge0.min_steps < d.steps < edge0.max_steps
    # No gang meets the deadline with more steps.
    for gang in free_subsets(sim, task):
        assert sim.preview(Dispatch(1, d.steps + 1, gang)).finish > task.deadline
    # Unreachable deadline: fewest steps on the gang that finishes earliest.
    assert reach[0] > 2.5
    sim = make_sim(
        edge0, [edge_task(0, 0.0, resolution=512, deadline=6.0), edge_task(1, 0.0, deadline=2.5)]
    )
    d = edf.decide(sim)
    assert d.task_id == 1 and d.steps == edge0.min_steps
    earliest = min(sim.preview(Dispatch(1, d.steps, g)).finish for g in free_subsets(sim, task))
    assert sim.preview(d).finish == pytest.approx(earliest)


def test_edf_paper(paper, settings):
    edf = EdfScheduler(settings)
    # Task 2 (size 1) has the tightest deadline: 24 s reload + 0.315 s per step.
    tasks = [
        paper_task(0, 0.0, 2, deadline=100.0),
        paper_task(1, 0.0, 1),
        paper_task(2, 0.0, 1, deadline=30.0),
    ]
    sim = make_sim(paper, tasks)
    d = edf.decide(sim)
    assert d == by_rule(sim, 2, math.floor((30.0 - 24.0) / 0.315))
    assert sim.preview(d).deadline_met
    assert not sim.preview(Dispatch(2, d.steps + 1)).deadline_met
    # Without deadlines: FIFO at the best-quality steps (30: the reference curve peaks).
    sim = make_sim(paper, [paper_task(0, 0.0, 4), paper_task(1, 0.0, 1)])
    assert edf.decide(sim) == by_rule(sim, 0, 30)


# ---------------------------------------------------------------------------
# Full episodes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("preset_name,rate", [("paper", 0.05), ("edge", 1.0)])
def test_full_episode(params, settings, name, preset_name, rate):
    preset = params.env.preset(preset_name)
    scheduler = make_scheduler(name, settings)
    for seed in (0, 1):
        sim = Simulator(preset)
        workload_rng, noise_rng = episode_rngs(seed)
        tasks = make_tasks(sim, rate, workload_rng)
        sim.reset(tasks, noise_rng)
        scheduler.reset(sim, np.random.default_rng(seed))
        start = time.perf_counter()
        ongoing = sim.advance()
        while ongoing:
            before = snapshot(sim)
            dispatch = scheduler.decide(sim)
            assert snapshot(sim) == before, "decide must not change the simulator"
            if dispatch is None:
                ongoing = sim.wait()
            else:
                sim.dispatch(dispatch)
                ongoing = sim.advance()
        elapsed = time.perf_counter() - start
        assert sim.done
        records = sim.records_frame()
        assert sorted(records["task_id"]) == sorted(t.task_id for t in tasks)
        assert elapsed < 5.0, f"{name} on {preset_name}: {elapsed:.1f} s per episode"


def test_invalid_dispatch_is_caught_by_preview(edge0):
    """The validity checks above rely on preview raising for invalid dispatches."""
    sim = make_sim(edge0, [edge_task(0, 0.0)])
    with pytest.raises(SimulationError):
        sim.preview(Dispatch(0, 10, (0, 1, 2)))

"""Simulator: queueing theory, cold starts, gang pace, determinism, conservation, misuse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eat.sim import Dispatch, SimulationError, Simulator, Task, episode_rngs, make_tasks
from tests.conftest import tweak


def run_head_of_line(sim: Simulator, steps: int) -> None:
    """Dispatch the head of the queue with fixed steps whenever it fits (work-conserving
    FIFO for gang size 1); the edge preset gets the lowest free server."""
    while sim.advance():
        head = sim.window()[0]
        if not sim.can_dispatch(head):
            sim.wait()
            continue
        servers = sim.placement.choose_servers(head, 1, lambda free, size: free[:size])
        sim.dispatch(Dispatch(head.task_id, steps, servers))


def queueing_preset(paper, *, servers: int, noise_cv: float, total: int):
    """Identical servers, gang size 1, 0.1 s per step, no reload: an M/G/c queue."""
    return tweak(
        paper,
        servers=[{"gpu": "reference", "count": servers}],
        paper_latency={"per_step_s": {1: 0.1}, "reload_s": {1: 0.0}},
        latency_noise_cv=noise_cv,
        workload={"initial_tasks": 0, "total_tasks": total, "gang_sizes": [1]},
    )


def erlang_c_wait(arrival_rate: float, service_rate: float, servers: int) -> float:
    """Mean waiting time in an M/M/c queue (Erlang C)."""
    load = arrival_rate / service_rate
    rho = load / servers
    head = sum(load**k / math.factorial(k) for k in range(servers))
    tail = load**servers / (math.factorial(servers) * (1 - rho))
    p_wait = tail / (head + tail)
    return p_wait / (servers * service_rate - arrival_rate)


def mean_wait(preset, rate: float, seeds: range, steps: int) -> float:
    waits = []
    for seed in seeds:
        sim = Simulator(preset)
        workload_rng, noise_rng = episode_rngs(seed)
        sim.reset(make_tasks(sim, rate, workload_rng), noise_rng)
        run_head_of_line(sim, steps)
        waits.append(sim.records_frame()["waiting"].to_numpy())
    return float(np.concatenate(waits).mean())


def test_mm4_mean_wait_matches_erlang_c(paper):
    # Exponential service (gamma noise with cv = 1) around a 1 s mean: M/M/4 at rho 0.7.
    preset = queueing_preset(paper, servers=4, noise_cv=1.0, total=60_000)
    rate, service = 2.8, 1.0
    simulated = mean_wait(preset, rate, range(3), steps=10)
    theory = erlang_c_wait(rate, 1 / service, 4)
    assert simulated == pytest.approx(theory, rel=0.05)


def test_md1_mean_wait_matches_pollaczek_khinchine(paper):
    # Deterministic 1 s service on one server at rho 0.7: Wq = rho / (2 mu (1 - rho)).
    preset = queueing_preset(paper, servers=1, noise_cv=0.0, total=60_000)
    rate, rho = 0.7, 0.7
    simulated = mean_wait(preset, rate, range(3), steps=10)
    assert simulated == pytest.approx(rho / (2 * 1.0 * (1 - rho)), rel=0.05)


def make_sim(preset, tasks: list[Task]) -> Simulator:
    sim = Simulator(preset)
    sim.reset(tasks, np.random.default_rng(0))
    return sim


def test_paper_warm_group_rule_and_reload_accounting(paper):
    tasks = [Task(i, 0.0, "sd14", 1440, math.inf, size) for i, size in enumerate([2, 2, 1])]
    sim = make_sim(paper, tasks)
    assert sim.advance()
    first = sim.dispatch(Dispatch(0, 10))
    assert first.servers == (0, 1)
    assert first.cold_start_s == 24.0  # no group exists yet: reload(2)
    assert first.finish == pytest.approx(24.0 + 10 * 0.15625)
    sim.dispatch(Dispatch(1, 10))  # servers 2, 3 form a second group
    assert sim.n_free == 0
    assert sim.advance()  # both finish; task 2 (gang 1) can start
    assert sim.now == pytest.approx(first.finish)
    third = sim.dispatch(Dispatch(2, 10))
    # No warm group of size 1 exists: first free server, reload(1), and the group
    # {0, 1} it touched dissolves.
    assert third.servers == (0,)
    assert third.cold_start_s == 24.0
    assert sim.servers[1].group is None
    assert sim.servers[2].group is not None and sim.servers[2].group == sim.servers[3].group


def test_paper_reuses_warm_group_without_reload(paper):
    tasks = [Task(0, 0.0, "sd14", 1440, math.inf, 2), Task(1, 100.0, "sd14", 1440, math.inf, 2)]
    sim = make_sim(paper, tasks)
    sim.advance()
    sim.dispatch(Dispatch(0, 10))
    assert sim.advance() and sim.now == 100.0
    second = sim.dispatch(Dispatch(1, 32))
    assert second.servers == (0, 1)
    assert second.cold_start_s == 0.0
    assert second.finish - second.start == pytest.approx(32 * 0.15625)
    records = sim.records_frame()
    assert records["cold_starts"].tolist() == [2, 0]


def test_edge_cold_start_residency_and_lru_eviction(edge):
    tasks = [
        Task(0, 0.0, "sdxl", 1024, math.inf, None),
        Task(1, 50.0, "sd15", 512, math.inf, None),
        Task(2, 100.0, "sdxl", 1024, math.inf, None),
        Task(3, 150.0, "sd15", 512, math.inf, None),
    ]
    sim = make_sim(edge, tasks)
    small = next(s.server_id for s in sim.servers if s.memory_gb == 12.0)  # rtx4070
    cold = sim.latency.model_cold_start_s
    outcomes = []
    for task_id in range(4):
        assert sim.advance()
        outcomes.append(sim.dispatch(Dispatch(task_id, 20, (small,))))
    # 12 GB hold sdxl (10 GB) or sd15 (4 GB), not both: every switch evicts and reloads.
    assert [o.cold_start_s for o in outcomes] == [
        cold["sdxl"],
        cold["sd15"],
        cold["sdxl"],
        cold["sd15"],
    ]
    assert list(sim.servers[small].resident) == ["sd15"]
    segments = sim.segments_frame()
    assert (segments["compute_start"] - segments["start"]).tolist() == pytest.approx(
        [cold["sdxl"], cold["sd15"], cold["sdxl"], cold["sd15"]]
    )
    # A 24 GB server keeps both models: the second sd15 task there is warm.
    big = next(s.server_id for s in sim.servers if s.memory_gb == 24.0)
    sim2 = make_sim(
        edge,
        [
            Task(0, 0, "sdxl", 1024, math.inf, None),
            Task(1, 60, "sd15", 512, math.inf, None),
            Task(2, 120, "sdxl", 1024, math.inf, None),
        ],
    )
    for task_id in range(3):
        sim2.advance()
        last = sim2.dispatch(Dispatch(task_id, 20, (big,)))
    assert last.cold_start_s == 0.0


def test_gang_runs_at_slowest_member_pace(edge):
    tasks = [Task(0, 0.0, "sd15", 1024, math.inf, None)]
    sim = make_sim(edge, tasks)
    sim.advance()
    fast = next(s for s in sim.servers if s.gpu == "rtx4090")
    slow = next(s for s in sim.servers if s.gpu == "t4")
    timing = sim.gang_timing(tasks[0], (fast.server_id, slow.server_id))
    latency = sim.latency
    slow_step = latency.step_s("sd15", 1024, 2, "t4")
    assert slow_step > latency.step_s("sd15", 1024, 2, "rtx4090")
    # Overlapped exchange: the pace is the slower of compute and communication.
    assert timing.step_s == pytest.approx(max(slow_step, latency.communication_s("sd15", 1024, 2)))
    outcome = sim.dispatch(Dispatch(0, 20, (fast.server_id, slow.server_id)))
    compute = outcome.finish - outcome.start - timing.setup_s - timing.tail_s
    assert compute == pytest.approx(20 * timing.step_s, rel=0.3)  # 5% noise on compute


def test_same_seed_same_episode_and_conservation(paper, edge):
    for preset, rate in ((paper, 0.05), (edge, 1.0)):
        frames = []
        for _ in range(2):
            sim = Simulator(preset)
            workload_rng, noise_rng = episode_rngs(7)
            tasks = make_tasks(sim, rate, workload_rng)
            sim.reset(tasks, noise_rng)
            run_head_of_line(sim, steps=20)
            frames.append(sim.records_frame())
        assert frames[0].equals(frames[1])
        ids = frames[0]["task_id"]
        assert sorted(ids) == list(range(preset.workload.total_tasks))  # none lost, none twice
        assert (frames[0]["finish"] >= frames[0]["start"]).all()
        assert (frames[0]["start"] >= frames[0]["arrival"]).all()


def test_no_server_runs_two_tasks_at_once(edge):
    sim = Simulator(edge)
    workload_rng, noise_rng = episode_rngs(3)
    sim.reset(make_tasks(sim, 2.0, workload_rng), noise_rng)
    rng = np.random.default_rng(0)
    while sim.advance():
        task = sim.dispatchable()[0]
        size = int(rng.choice(sim.feasible_gang_sizes(task)))
        servers = tuple(rng.choice(sim.free_servers(), size=size, replace=False).tolist())
        sim.dispatch(Dispatch(task.task_id, 10, servers))
    segments = sim.segments_frame().sort_values(["server", "start"])
    for _, per_server in segments.groupby("server"):
        starts, finishes = per_server["start"].to_numpy(), per_server["finish"].to_numpy()
        assert (starts[1:] >= finishes[:-1] - 1e-9).all()


def test_misuse_raises_with_the_bad_value(edge, paper):
    sim = make_sim(
        edge, [Task(0, 0.0, "sd15", 512, math.inf, None), Task(1, 0.0, "sd15", 512, math.inf, None)]
    )
    sim.advance()
    sim.dispatch(Dispatch(0, 10, (0,)))
    with pytest.raises(SimulationError, match="server 0 is busy"):
        sim.dispatch(Dispatch(1, 10, (0,)))
    with pytest.raises(SimulationError, match="steps 99 outside"):
        sim.dispatch(Dispatch(1, 99, (1,)))
    with pytest.raises(SimulationError, match="gang size 3 not allowed"):
        sim.dispatch(Dispatch(1, 10, (1, 2, 3)))
    with pytest.raises(SimulationError, match="task 7 is not in the visible queue"):
        sim.dispatch(Dispatch(7, 10, (1,)))
    with pytest.raises(SimulationError, match="negative time -1"):
        make_sim(edge, [Task(0, -1.0, "sd15", 512, math.inf, None)])
    idle = make_sim(paper, [Task(0, 0.0, "sd14", 1440, math.inf, 1)])
    idle.advance()
    with pytest.raises(SimulationError, match="no pending event"):
        idle.wait()
    with pytest.raises(SimulationError, match=r"rule places task 0 on \(0,\), not \(1,\)"):
        idle.dispatch(Dispatch(0, 10, (1,)))
    assert idle.dispatch(Dispatch(0, 10, (0,))).servers == (0,)  # the rule's own choice


def test_decision_epochs_only_when_a_dispatch_is_possible(paper):
    # Three gang-4 tasks: after the first starts nothing fits until it completes, so the
    # next decision epoch is exactly its completion time (no ticks in between).
    tasks = [Task(i, 0.0, "sd14", 1440, math.inf, 4) for i in range(3)]
    sim = make_sim(paper, tasks)
    assert sim.advance() and sim.now == 0.0
    first = sim.dispatch(Dispatch(0, 10))
    assert not sim.has_decision()
    assert sim.advance() and sim.now == pytest.approx(first.finish)


def test_episode_ends_after_last_completion(paper):
    sim = make_sim(paper, [Task(0, 0.0, "sd14", 1440, math.inf, 1)])
    sim.advance()
    outcome = sim.dispatch(Dispatch(0, 10))
    assert not sim.advance()
    assert sim.done and sim.now == pytest.approx(outcome.finish)
    assert sim.horizon == pytest.approx(outcome.finish)

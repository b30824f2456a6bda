"""Trace requests with their own steps: kept by the replay, honoured by every scheduler,
refused by the simulator when a dispatch ignores them; and the trace window per seed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from eat.evaluation.runner import run_episode
from eat.schedulers import SCHEDULERS, make_scheduler
from eat.schedulers.rollout import make_planner
from eat.sim import Dispatch, Encoder, SimulationError, Simulator, Task, generate_tasks
from eat.sim.encoding import ACTION_STEPS, N_GLOBAL_ACTIONS
from tests.conftest import tweak


def trace_preset(edge, tmp_path, *, steps: bool = True, rows: int = 12, **workload):
    """``edge`` replaying a small trace whose requests ask for 6, 17 or 29 steps."""
    frame = pd.DataFrame(
        {
            "arrival": np.arange(rows, dtype=float),
            "model": ["sd15", "sdxl", "sd15"] * (rows // 3),
            "resolution": [512, 1024, 768] * (rows // 3),
        }
    )
    if steps:
        frame["steps"] = [6, 17, 29] * (rows // 3)
    path = tmp_path / "trace.csv"
    frame.to_csv(path, index=False)
    changes = {"process": "trace", "trace_path": str(path), "total_tasks": rows, **workload}
    return tweak(edge, workload=changes)


def test_trace_steps_are_the_tasks_own_and_absent_otherwise(edge, tmp_path):
    preset = trace_preset(edge, tmp_path)
    sim = Simulator(preset)
    tasks = generate_tasks(preset.workload, 1.0, np.random.default_rng(0), sim.nominal_latency)
    assert [task.steps for task in tasks] == [6, 17, 29] * 4
    # a slack deadline is measured against the latency at the task's own steps
    for task in tasks:
        nominal = sim.nominal_latency(task.model, task.resolution, task.steps)
        slack = (task.deadline - task.arrival) / nominal
        assert preset.workload.deadline.slack_min <= slack <= preset.workload.deadline.slack_max
    plain = trace_preset(edge, tmp_path, steps=False)
    tasks = generate_tasks(plain.workload, 1.0, np.random.default_rng(0), sim.nominal_latency)
    assert all(task.steps is None for task in tasks)


@pytest.mark.parametrize("name", [*SCHEDULERS, "rollout"])
def test_every_scheduler_runs_a_task_at_its_own_steps(params, edge, tmp_path, name):
    preset = trace_preset(edge, tmp_path)
    scheduler = (
        make_planner(name, params, "edge")
        if name == "rollout"
        else make_scheduler(name, params.schedulers)
    )
    records = run_episode(preset, scheduler, 2.0, seed=1000).tasks.sort_values("task_id")
    assert records["steps"].tolist() == [6, 17, 29] * 4


def test_a_dispatch_that_ignores_the_tasks_steps_is_refused(edge):
    sim = Simulator(edge)
    sim.reset([Task(0, 0.0, "sd15", 512, math.inf, None, steps=17)], np.random.default_rng(0))
    sim.advance()
    assert sim.steps_range(sim.queue[0]) == range(17, 18)
    with pytest.raises(
        SimulationError, match=r"task 0 asks for 17 steps \(its own\); the dispatch has 20"
    ):
        sim.dispatch(Dispatch(0, 20, (0,)))
    assert sim.dispatch(Dispatch(0, 17, (0,))).steps == 17


def test_steps_outside_the_preset_range_are_refused_at_reset(edge):
    sim = Simulator(edge)
    task = Task(3, 0.0, "sd15", 512, math.inf, None, steps=edge.max_steps + 1)
    with pytest.raises(
        SimulationError, match=r"task 3 asks for 31 steps, outside the preset's \[5, 30\]"
    ):
        sim.reset([task], np.random.default_rng(0))


def test_the_action_decodes_to_the_tasks_own_steps(edge):
    sim = Simulator(edge)
    tasks = [Task(0, 0.0, "sd15", 512, math.inf, None, steps=12)]
    sim.reset(tasks, np.random.default_rng(0))
    sim.advance()
    encoder = Encoder(sim)
    action = np.ones(encoder.action_size, dtype=np.float32)  # a[1] = 1: max_steps
    assert encoder.decode(action).steps == 12
    mask = encoder.action_mask()
    assert not mask[ACTION_STEPS]  # every visible task has its own steps
    assert mask[N_GLOBAL_ACTIONS]
    sim.reset([*tasks, Task(1, 0.0, "sd15", 512, math.inf, None)], np.random.default_rng(0))
    sim.advance()
    assert Encoder(sim).action_mask()[ACTION_STEPS]  # task 1's steps are the action's


def one_second(model: str, resolution: int, steps: int | None = None) -> float:
    return 1.0


def test_trace_window_random_replays_another_part_per_seed(edge, tmp_path):
    first = trace_preset(edge, tmp_path, rows=30, total_tasks=6)
    tasks = generate_tasks(first.workload, 1.0, np.random.default_rng(0), one_second)
    assert [t.steps for t in tasks] == [6, 17, 29] * 2  # ``first``: the first rows
    random = tweak(first, workload={"trace_window": "random"})
    windows = set()
    for seed in range(8):
        tasks = generate_tasks(random.workload, 1.0, np.random.default_rng(seed), one_second)
        assert len(tasks) == 6 and tasks[0].arrival == 0.0
        windows.add(tuple(t.steps for t in tasks))
        again = generate_tasks(random.workload, 1.0, np.random.default_rng(seed), one_second)
        assert [vars(t) for t in again] == [vars(t) for t in tasks]
    assert len(windows) == 3  # windows start at every phase of the 3-row pattern

"""The testbed's decisions against its simulator twin's on the same history
(eat.testbed.compare.history_agreement), on simulated "testbed" runs whose truth is known."""

from __future__ import annotations

import pytest

from eat.evaluation.runner import episode_rngs, make_tasks, run_episode, scheduler_rng
from eat.schedulers import make_scheduler
from eat.sim.simulator import Simulator
from eat.testbed.compare import history_agreement
from tests.conftest import tweak

SEED, RATE = 1000, 1.0


@pytest.fixture(scope="module")
def exact(edge):
    """edge without latency noise: a run's timings are the twin's predictions."""
    return tweak(edge, latency_noise_cv=0.0, workload={"total_tasks": 40})


def tasks_of(preset):
    workload_rng, _ = episode_rngs(SEED)
    return make_tasks(Simulator(preset), RATE, workload_rng)


def run_of(params, preset, name):
    """A simulated "testbed" run of ``name``: its task records."""
    return run_episode(preset, make_scheduler(name, params.schedulers), RATE, SEED).tasks


def agreement(params, preset, name, real):
    """``name``'s decisions on the twin of ``preset`` after the history of ``real``."""
    scheduler = make_scheduler(name, params.schedulers)
    return history_agreement(preset, scheduler, tasks_of(preset), real, scheduler_rng(name, SEED))


@pytest.mark.parametrize("name", ["greedy", "eft", "warm_first"])
def test_a_run_whose_timings_are_the_predictions_agrees_everywhere(params, exact, name):
    real = run_of(params, exact, name)
    rows = agreement(params, exact, name, real)
    assert len(rows) == len(real) == 40
    assert rows["same"].all(), rows[~rows["same"]]


def test_another_schedulers_run_disagrees(params, exact):
    rows = agreement(params, exact, "greedy", run_of(params, exact, "first_fit"))
    assert (rows["steps"] == params.schedulers.fixed_steps).all()  # first_fit's fixed steps
    assert (rows["twin_steps"] != params.schedulers.fixed_steps).any()  # greedy's own
    assert not rows["same"].all() and rows["twin_task_id"].notna().all()


@pytest.mark.parametrize("speed", [0.7, 1.3])
def test_a_testbed_off_the_predictions_is_followed_and_disagrees_somewhere(params, exact, speed):
    """The same run on a testbed faster (0.7) or slower (1.3) than predicted: the twin
    still follows every real dispatch (finishing what it thought still ran on the
    servers the testbed used), and its own decisions differ somewhere."""
    real = run_of(params, exact, "greedy")
    shifted = real.assign(
        start=real["start"] * speed,
        arrival=real["arrival"] * speed,
        deadline=real["deadline"] * speed,
    )
    rows = agreement(params, exact, "greedy", shifted)
    assert list(rows["task_id"]) == list(shifted.sort_values("start")["task_id"])
    assert 0 < rows["same"].mean() < 1

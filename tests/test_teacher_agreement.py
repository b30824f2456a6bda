"""A policy's decisions against its teacher's in the same states
(eat.training.agreement), on heuristics whose agreement is known."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from eat.evaluation.runner import run_episode, scheduler_rng
from eat.schedulers import make_scheduler
from eat.schedulers.rollout import RolloutScheduler
from eat.training.agreement import (
    AGREEMENT_FIELDS,
    Shadowed,
    summarise_pairs,
    teacher_agreement,
)
from tests.conftest import tweak

RATES, SEEDS = [0.5, 1.0], [1000, 1001]


@pytest.fixture(scope="module")
def short_edge(edge):
    return tweak(edge, workload={"total_tasks": 40})


def test_a_scheduler_agrees_with_itself_on_every_decision(params, short_edge):
    greedy = make_scheduler("greedy", params.schedulers)
    same = teacher_agreement(
        short_edge, greedy, make_scheduler("greedy", params.schedulers), RATES, SEEDS
    )
    assert same["decisions"] >= 4 * 40  # every task dispatched once, in every episode
    for field in ("same_decision", "same_gate", "same_task", "same_servers", "same_steps"):
        assert same[field] == 1.0, field
    assert same["steps_error"] == 0.0
    assert same["teacher_waits"] == same["learner_waits"] == 0.0  # greedy never waits


def test_different_schedulers_disagree_where_they_differ(params, short_edge):
    """EDF serves the earliest deadline at the best quality that meets it; greedy, the
    highest reward: neither waits, and they agree on some decisions, not on others."""
    learner = make_scheduler("greedy", params.schedulers)
    teacher = make_scheduler("edf", params.schedulers)
    found = teacher_agreement(short_edge, learner, teacher, RATES, SEEDS)
    assert set(found) == set(AGREEMENT_FIELDS)
    assert found["same_gate"] == 1.0 and found["teacher_waits"] == found["learner_waits"] == 0.0
    assert 0.0 < found["same_decision"] < 1.0
    assert 0.0 < found["same_steps"] < 1.0 and found["steps_error"] > 0.0
    assert found["same_task"] < 1.0 and found["same_servers"] < 1.0


def test_the_teacher_changes_nothing_the_learner_sees(params, short_edge):
    """The policy's episode with a teacher asked at each decision is the episode it plays
    alone: the planner forks the state it is shown and draws from its own stream."""
    alone = run_episode(short_edge, make_scheduler("greedy", params.schedulers), 1.0, 1000)
    teacher = RolloutScheduler(params.schedulers, params.planners.rollout, "greedy", 4)
    learner = make_scheduler("greedy", params.schedulers)
    shadowed = Shadowed(learner, teacher, scheduler_rng(teacher.name, 1000))
    watched = run_episode(short_edge, shadowed, 1.0, 1000)
    pd.testing.assert_frame_equal(alone.tasks, watched.tasks)
    assert len(shadowed.pairs) == len(alone.decision_seconds)  # one pair per decision


def test_shares_count_only_the_decisions_they_apply_to():
    a = (1, (0, 1), 20)
    pairs = [
        (None, None, True),  # both wait
        (a, None, True),  # the teacher waits
        (a, a, True),  # the same
        (a, (1, (0, 2), 22), True),  # same task, other servers and steps
        (a, (1, (0, 1), 30), False),  # the task's own steps: not a steps question
        (a, (2, (0, 1), 20), True),  # another task
    ]
    found = summarise_pairs(pairs)
    assert found["decisions"] == 6
    assert found["same_decision"] == pytest.approx(2 / 6)
    assert found["same_gate"] == pytest.approx(5 / 6)
    assert found["same_task"] == pytest.approx(3 / 4)
    assert found["same_servers"] == pytest.approx(2 / 3)
    assert found["same_steps"] == pytest.approx(1 / 2) and found["steps_error"] == 1.0
    assert found["teacher_waits"] == pytest.approx(2 / 6)
    assert found["learner_waits"] == pytest.approx(1 / 6)
    nothing = summarise_pairs([(None, None, True)])
    assert nothing["same_decision"] == 1.0 and math.isnan(nothing["same_task"])

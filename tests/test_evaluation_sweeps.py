"""The SLO definition and objective, the gap-closed shares, and sweeps that run the same
in parallel as serially."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from eat.evaluation.metrics import gap_closed, interquartile_mean, robust_statistics
from eat.evaluation.sweep import EpisodeJob, SchedulerFactory, grid, run_sweep
from eat.sim.reward import dispatch_reward, rewards_over_steps
from eat.sim.simulator import Simulator, episode_rngs, make_tasks
from eat.stages.evaluate import slo_preset
from tests.conftest import tweak


@pytest.mark.parametrize("preset_name", ["paper", "edge"])
def test_slo_deadline_is_the_scale_times_the_standalone_latency(params, preset_name):
    """deadline - arrival = scale x the fastest warm service of the task on an empty
    cluster at the reference steps, checked against every gang the cluster could form."""
    preset = slo_preset(params.env.preset(preset_name), 2.0, "slo")
    sim = Simulator(preset)
    workload_rng, _ = episode_rngs(1000)
    tasks = make_tasks(sim, params.evaluate.rates[preset_name][0], workload_rng)
    steps = preset.workload.deadline.reference_steps
    for task in tasks[:12]:
        best = math.inf
        capable = sim.placement.capable(task, free_only=False)
        for size in sim.placement.gang_sizes(task):
            for gang in itertools.combinations(capable, size):
                gpus = [sim.servers[i].gpu for i in gang]
                duration = sim.latency.gang_timing(task.model, task.resolution, gpus, [True] * size)
                best = min(best, duration.duration(steps))
        assert task.deadline - task.arrival == pytest.approx(2.0 * best, rel=1e-12)
        assert sim.standalone_latency(task.model, task.resolution, task.gang_size) == best


def test_slo_objective_rewards_meeting_the_deadline(params):
    config = params.env.edge.reward.model_copy(update={"objective": "slo"})
    met = dispatch_reward(config, wait=9.0, avg_wait=3.0, duration=1.0, quality=0.2, missed=False)
    missed = dispatch_reward(
        config, wait=0.0, avg_wait=0.0, duration=1.0, quality=0.27, missed=True
    )
    assert met == config.slo_met_reward + config.slo_quality_weight * 0.2
    assert missed == config.slo_quality_weight * 0.27  # quality only breaks ties
    quality = [0.0] + [0.1 * s for s in range(1, 31)]
    rows = rewards_over_steps(
        config,
        quality,
        range(5, 31),
        wait=0.0,
        avg_wait=0.0,
        now=0.0,
        deadline=2.0,
        setup_s=0.5,
        step_s=0.1,
        tail_s=0.0,
    )
    by_steps = dict(rows)
    assert by_steps[15] == config.slo_met_reward + config.slo_quality_weight * quality[15]
    assert by_steps[16] == config.slo_quality_weight * quality[16]  # 0.5 + 1.6 > 2


def test_gap_closed_runs_from_the_baseline_to_the_reference():
    seeds = range(6)
    rows = []
    for seed in seeds:
        noise = 0.1 * seed
        rows += [
            {
                "preset": "p",
                "scheduler": "random",
                "rate": 1.0,
                "seed": seed,
                "reward_mean": 2.0 + noise,
                "latency_mean": 10.0,
            },
            {
                "preset": "p",
                "scheduler": "ref",
                "rate": 1.0,
                "seed": seed,
                "reward_mean": 12.0 + noise,
                "latency_mean": 4.0,
            },
            {
                "preset": "p",
                "scheduler": "mid",
                "rate": 1.0,
                "seed": seed,
                "reward_mean": 7.0 + noise,
                "latency_mean": 8.5,
            },
        ]
    gaps = gap_closed(
        pd.DataFrame(rows), baseline="random", reference="ref", n_resamples=300
    ).set_index("scheduler")
    assert (
        gaps.loc["random", "reward_gap_closed"] == 0.0
        and gaps.loc["ref", "reward_gap_closed"] == 1.0
    )
    assert gaps.loc["mid", "reward_gap_closed"] == pytest.approx(0.5)
    assert gaps.loc["mid", "latency_gap_closed"] == pytest.approx(0.25)  # 1.5 of 6 s
    # paired resampling: the common noise cancels, the interval is tight around 0.5
    assert gaps.loc["mid", "reward_gap_closed_ci_low"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no episodes of 'ref'"):
        gap_closed(pd.DataFrame(rows[:1]), baseline="random", reference="ref")


def test_a_parallel_sweep_equals_a_serial_one(params):
    """Episodes through Ray (chunks finishing in any order) give the frames of a serial
    run, but for the wall-clock decision times."""
    name = "edge"
    preset = tweak(params.env.edge, workload={"total_tasks": 15})
    jobs = [
        *grid(["fifo", "greedy", "rollout"], [0.5, 1.0], [1000, 1001]),
        EpisodeJob("random", 1.0, 1002),
    ]
    factory = SchedulerFactory(params, name)
    serial = run_sweep(name, preset, jobs, factory, parallel="serial", chunk_size=3, progress=False)
    parallel = run_sweep(
        name, preset, jobs, factory, parallel="ray", num_cpus=2, chunk_size=3, progress=False
    )
    timing = [c for c in serial.episodes.columns if c.startswith("decision_ms")]
    pd.testing.assert_frame_equal(
        serial.episodes.drop(columns=timing), parallel.episodes.drop(columns=timing)
    )
    pd.testing.assert_frame_equal(serial.tasks, parallel.tasks)
    assert list(serial.results) == jobs
    assert np.isfinite(serial.episodes["reward_mean"]).all()


def test_robust_statistics_iqm_and_probability_of_improvement():
    """Two rates, two training seeds x four test seeds of an agent that beats the best
    heuristic on 3 of 4 seeds at each rate; scores normalised from random to the reference."""
    rows = []
    for rate in (0.5, 1.0):
        for seed in range(4):
            rows.append({"scheduler": "random", "rate": rate, "seed": seed, "reward_mean": 0.0})
            rows.append({"scheduler": "ref", "rate": rate, "seed": seed, "reward_mean": 10.0})
            rows.append({"scheduler": "best", "rate": rate, "seed": seed, "reward_mean": 5.0})
            for train_seed in (0, 1):
                value = 6.0 if seed < 3 else 4.0
                rows.append(
                    {
                        "scheduler": "agent",
                        "rate": rate,
                        "seed": seed,
                        "train_seed": train_seed,
                        "reward_mean": value,
                    }
                )
    frame = pd.DataFrame(rows)
    result = robust_statistics(
        frame,
        scheduler="agent",
        versus={0.5: "best", 1.0: "best"},
        baseline="random",
        reference="ref",
        n_resamples=400,
    )
    assert result["iqm"] == pytest.approx(0.6)  # the middle half of {0.4 x4, 0.6 x12}
    assert result["probability_of_improvement"] == pytest.approx(0.75)
    assert (
        result["probability_of_improvement_ci_low"]
        <= 0.75
        <= result["probability_of_improvement_ci_high"]
    )
    assert interquartile_mean([1, 2, 3, 4, 100, -100, 2.5, 3.5]) == pytest.approx(2.75)

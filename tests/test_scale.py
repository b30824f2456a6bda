"""Tests of the cluster at scale: sites and their links, the metro preset, pooled server
tokens, and records streamed to disk."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from eat.evaluation.runner import run_episode
from eat.params import metro_preset
from eat.schedulers import make_scheduler
from eat.sim.encoding import Encoder, server_token_count
from eat.sim.simulator import Simulator
from eat.sim.workload import Task
from tests.conftest import tweak

SLOW_METRO = {"bandwidth_gbps": 0.01, "latency_s": 0.01}  # 80 Mb/s between sites


def two_servers(edge, site_sizes: list[int] | None):
    """Two identical GPUs, noiseless, in one site or (``[1, 1]``) in two sites."""
    topology = None if site_sizes is None else {"site_sizes": site_sizes, "inter_site": SLOW_METRO}
    return tweak(
        edge,
        servers=[{"gpu": "t4", "count": 2}],
        topology=topology,
        latency_noise_cv=0.0,
        profile_latency={"stage_decision": None},
        workload={"gang_sizes": []},
    )


def started(preset, task: Task) -> Simulator:
    sim = Simulator(preset)
    sim.reset([task], np.random.default_rng(0))
    assert sim.advance()
    return sim


def big_task() -> Task:
    return Task(0, 0.0, "sd15", 1024, math.inf, None)


def duration(sim: Simulator, servers: list[int], steps: int = 25) -> float:
    task = sim.window()[0]
    return sim.gang_timing(task, tuple(servers)).duration(steps)


def test_a_gang_across_sites_is_slower_than_one_gpu(edge, params):
    """In one site two GPUs beat one; split over two sites by a slow link the same gang is
    slower than one GPU, and greedy and eft see it (they pick one GPU)."""
    one_site = started(two_servers(edge, [2]), big_task())
    two_sites = started(two_servers(edge, [1, 1]), big_task())
    assert duration(one_site, [0, 1]) < duration(one_site, [0])
    assert duration(two_sites, [0, 1]) > duration(two_sites, [0])
    assert two_sites.cross_site([0, 1]) and not one_site.cross_site([0, 1])
    # the result leaves its site over the uplink too: one GPU pays more than without sites
    no_sites = started(two_servers(edge, None), big_task())
    assert duration(two_sites, [0]) > duration(no_sites, [0])
    for name in ("greedy", "eft"):
        for sim, size in ((one_site, 2), (two_sites, 1)):
            scheduler = make_scheduler(name, params.schedulers)
            scheduler.reset(sim, np.random.default_rng(0))
            decision = scheduler.decide(sim)
            assert decision is not None and len(decision.servers) == size, (name, size)


def test_sites_in_the_observation(edge):
    """Server columns 10-12 and global column 8 describe the sites, zero without them."""
    for site_sizes in (None, [1, 1]):
        sim = started(two_servers(edge, site_sizes), big_task())
        obs = Encoder(sim).observe()
        servers = obs[sim.preset.queue_window : sim.preset.queue_window + 2]
        if site_sizes is None:
            assert not servers[:, 10:13].any() and obs[-1, 8] == 0.0
        else:
            assert list(servers[:, 12]) == [0.0, 0.5]  # site index / sites
            assert (servers[:, 11] > 0).all() and obs[-1, 8] > 0.0


@pytest.fixture(scope="module")
def metro(params):
    return params.env.preset("metro")


def test_metro_preset_shape(params, metro):
    """About 1,000 GPUs in 100-300 sites of 1-8 mixed GPUs, several models, deadlines,
    not in the default presets; smaller clusters of the same seed nest."""
    sizes = metro.topology.site_sizes
    assert metro.n_servers == params.env.metro.gpus == sum(sizes)
    assert 100 <= len(sizes) <= 300 and max(sizes) <= 8
    assert len({group.gpu for group in metro.servers}) >= 4
    assert len(metro.models) >= 4 and metro.workload.deadline.mode != "none"
    assert "metro" not in params.env.presets
    small = metro_preset(params.env.metro, params.env.edge, gpus=64)
    assert small.n_servers == 64
    assert small.topology.site_sizes[:-1] == sizes[: len(small.topology.site_sizes) - 1]


def test_pooled_tokens_read_the_cluster(metro, params):
    """per_group: one token per (site, GPU type), far fewer than the servers; actions
    decode to valid dispatches and encode back to the same task and gang size."""
    sim = Simulator(metro)
    tasks = [Task(i, 0.0, model, 512, math.inf, None) for i, model in enumerate(metro.models)]
    sim.reset(tasks, np.random.default_rng(0))
    assert sim.advance()
    encoder = Encoder(sim)
    assert encoder.n_server_tokens == server_token_count(sim) < sim.n_servers
    obs = encoder.observe()
    assert obs.shape == (encoder.n_tokens, encoder.n_features)
    assert np.isfinite(obs).all()
    mask = encoder.action_mask()
    assert mask.shape == (encoder.action_size,) and mask.any()
    greedy = make_scheduler("greedy", params.schedulers)
    greedy.reset(sim, np.random.default_rng(0))
    decision = greedy.decide(sim)
    decoded = encoder.decode(encoder.encode(decision))
    assert decoded is not None and decoded.task_id == decision.task_id
    assert len(decoded.servers) == len(decision.servers)
    groups = {int(encoder.group_of[i]) for i in decision.servers}
    assert {int(encoder.group_of[i]) for i in decoded.servers} <= groups


def test_streamed_records_equal_kept_ones(edge, params, tmp_path):
    """Records streamed to disk read back equal to those kept in memory."""
    scheduler = make_scheduler("greedy", params.schedulers)
    kept = run_episode(edge, scheduler, 1.0, seed=3)
    streamed = run_episode(edge, scheduler, 1.0, seed=3, records_dir=tmp_path)
    pd.testing.assert_frame_equal(kept.tasks, streamed.tasks)
    pd.testing.assert_frame_equal(kept.segments, streamed.segments)
    assert kept.horizon == streamed.horizon


def _episode(scenario, preset, scheduler, rate, seed, reward, n_servers, train_seed=None):
    return {
        "scenario": scenario,
        "preset": preset,
        "scheduler": scheduler,
        "rate": rate,
        "seed": seed,
        "train_seed": train_seed,
        "reward_mean": reward,
        "n_servers": n_servers,
        "n_tasks": 10,
        "deadline_attainment": 1.0,
        "latency_mean": 1.0,
        "utilisation": 0.5,
    }


def test_advantage_is_relative_to_first_fit_on_the_same_episodes():
    from eat.evaluation.scale import advantage, comparison

    rows = [
        _episode("heuristics", "edge", "first_fit", 1.0, 0, 10.0, 8),
        _episode("heuristics", "edge", "first_fit", 1.0, 1, 20.0, 8),
        # +10% and +30%: a mean of +20%, not the ratio of the means
        _episode("heuristics", "edge", "greedy", 1.0, 0, 11.0, 8),
        _episode("heuristics", "edge", "greedy", 1.0, 1, 26.0, 8),
        # two training seeds of one episode are averaged first: (9 + 11) / 2 = 10 -> none
        _episode("heuristics", "edge", "eat", 1.0, 0, 9.0, 8, train_seed=0),
        _episode("heuristics", "edge", "eat", 1.0, 0, 11.0, 8, train_seed=1),
        _episode("heuristics", "edge", "eat", 1.0, 1, 20.0, 8, train_seed=0),
        _episode("heuristics", "metro", "first_fit", 5.0, 0, 4.0, 1000),
        _episode("heuristics", "metro", "greedy", 5.0, 0, 6.0, 1000),
        _episode("heuristics", "metro", "eat", 5.0, 0, 3.0, 1000, train_seed=0),
    ]
    table = advantage(pd.DataFrame(rows))
    got = table.set_index(["preset", "scheduler"])["advantage"]
    assert got["edge", "greedy"] == pytest.approx(0.2)
    assert got["edge", "eat"] == pytest.approx(0.0)
    assert got["edge", "first_fit"] == 0.0
    assert got["metro", "greedy"] == pytest.approx(0.5)
    assert got["metro", "eat"] == pytest.approx(-0.25)
    held = comparison(table, "edge", "metro").set_index("scheduler")
    assert held.loc["greedy", "holds"] == "yes"  # better on both
    assert held.loc["eat", "holds"] == "no"  # none on edge, worse on metro
    assert "first_fit" not in held.index
    # an agent trained on metro is set beside the one trained on edge
    own = pd.DataFrame([_episode("heuristics", "metro", "eat_metro", 5.0, 0, 5.0, 1000)])
    wider = advantage(pd.concat([pd.DataFrame(rows), own], ignore_index=True))
    beside = comparison(wider, "edge", "metro", {"eat_metro": "eat"}).set_index("scheduler")
    assert beside.loc["eat_metro", "advantage_small"] == pytest.approx(0.0)
    assert beside.loc["eat_metro", "advantage_large"] == pytest.approx(0.25)
    assert "eat_metro" not in comparison(wider, "edge", "metro").set_index("scheduler").index
    with pytest.raises(ValueError, match="first_fit did not"):
        advantage(pd.DataFrame([*rows, _episode("heuristics", "metro", "fifo", 9.0, 0, 1.0, 1000)]))


def test_scale_table_runs_metro_beside_the_small_presets_episodes(params, tmp_path):
    from eat.evaluation.sweep import SchedulerFactory, grid, run_sweep
    from eat.stages.evaluate import scale_table

    spec = params.evaluate.scale.model_copy(
        update={"schedulers": ["first_fit", "greedy"], "tasks": 40, "planner_tasks": 8}
    )
    quick = params.model_copy(
        update={
            "evaluate": params.evaluate.model_copy(update={"scale": spec, "parallel": "serial"}),
            "train": params.train.model_copy(update={"scale": None}),  # no metro models here
        }
    )
    edge = params.env.preset("edge")
    rates = params.evaluate.rates["edge"]
    small = tweak(edge, workload={"total_tasks": 20})
    names = ["first_fit", "greedy", "rollout"]
    episodes = run_sweep(
        "edge", small, grid(names, rates, params.seeds.test[:1]), SchedulerFactory(quick, "edge")
    ).episodes
    both, table = scale_table(quick, tmp_path, episodes, progress=False)
    assert set(both["preset"]) == {"edge", "metro"}
    metro = both[both["preset"] == "metro"]
    assert (metro["n_servers"] >= 900).all() and (metro["n_tasks"] <= 40).all()
    planner = metro[metro["scenario"] == "planner"]
    assert sorted(planner["scheduler"]) == ["first_fit", "greedy", "rollout"]
    assert set(planner["rate"]) == {params.evaluate.rates["metro"][1]}
    small_planner = both[(both["preset"] == "edge") & (both["scenario"] == "planner")]
    assert set(small_planner["rate"]) == {rates[len(rates) // 2]}
    reference = table[table["scheduler"] == "first_fit"]
    assert (reference["advantage"] == 0).all() and len(reference) == 4  # 2 scenarios x 2
    with pytest.raises(ValueError, match=r"no episodes of \['greedy'\]"):
        scale_table(quick, tmp_path, episodes[episodes["scheduler"] != "greedy"], progress=False)


def test_an_agent_trained_on_metro_runs_there_under_its_own_name(params, tmp_path):
    from eat.evaluation.scale import scale_episodes
    from eat.training.loop import resolve_runs, train_run, write_run

    spec = next(s for s in resolve_runs(params) if s.preset_name == "metro")
    assert spec.agent == "eat" and spec.preset.workload.total_tasks == params.train.scale.tasks
    assert spec.config.buffer_size == params.train.buffer_size["metro"]
    tiny = {"total_steps": 8, "eval_every": 8, "bc_updates": 4, "critic_warmup_updates": 2}
    tiny |= {"dagger_updates": 2, "batch_size": 4, "learning_starts": 4, "width": 8}
    spec.config = spec.config.model_validate({**spec.config.model_dump(), **tiny})
    spec.preset = tweak(spec.preset, workload={"total_tasks": 12})
    spec.rates, spec.validation_seeds = spec.rates[:1], spec.validation_seeds[:1]
    write_run(train_run(spec), tmp_path)
    assert (tmp_path / "metro" / "eat" / "seed0" / "actor.pt").is_file()
    evaluation = params.evaluate.scale.model_copy(
        update={"schedulers": ["first_fit"], "tasks": 12, "planner_tasks": 4}
    )
    episodes = scale_episodes(params, evaluation, tmp_path)
    own = episodes[episodes["scheduler"] == "eat_metro"]
    assert len(own) == len(params.evaluate.rates["metro"]) and (own["train_seed"] == 0).all()
    assert (own["n_tasks"] == 12).all()

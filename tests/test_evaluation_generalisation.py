"""Generalisation without retraining: the scenario builders, the relative table with its
crossed intervals and its not-applicable rows, the stage's report, and the params."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from eat.evaluation.generalisation import (
    TABLE_COLUMNS,
    build_scenarios,
    cluster_size_scenario,
    crossed_ratio_ci,
    model_mix_scenario,
    relative_table,
    run_generalisation,
    scaled_servers,
)
from eat.params import ParamsError, apply_overrides, validate_params
from eat.schedulers.rl import AGENTS, SB3_AGENTS
from eat.schedulers.rl.agent import build_actor, save_actor
from eat.sim import Encoder, Simulator
from eat.stages import evaluate
from eat.stages.paths import Paths, model_dir
from eat.training.loop import sac_config
from eat.training.sb3 import resolve_sb3_runs, train_sb3_run, write_sb3_run
from tests.conftest import REPO, tweak

TINY = {
    "env": {"edge": {"workload": {"total_tasks": 16}}},
    "evaluate": {
        "parallel": "serial",
        "bootstrap_resamples": 200,
        "generalisation": {
            "presets": ["edge"],
            "schedulers": ["fifo", "greedy", "eat", "sac"],
            "rates": {"edge": [1.0]},
            "n_seeds": 2,
            "n_train_seeds": 1,
            "workloads": ["mmpp", "trace"],
            "cluster_sizes": [4],
            "gpu_mix": {},
            "model_variants": [2],
            "trace": {"synthetic_requests": 300, "n_models": {"paper": 2, "edge": 3}},
        },
    },
}


def raw_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(scope="module")
def tiny():
    return validate_params(apply_overrides(raw_params(), TINY))


def test_scaled_servers_keep_the_mix(params, edge, paper):
    assert scaled_servers(edge, 4) == [
        {"gpu": gpu, "count": 1} for gpu in ("rtx4090", "rtx4070", "l4", "t4")
    ]
    assert [g["count"] for g in scaled_servers(edge, 32)] == [8, 8, 8, 8]
    assert scaled_servers(paper, 16) == [{"gpu": "reference", "count": 16}]
    uneven = tweak(edge, servers=[{"gpu": "l4", "count": 3}, {"gpu": "t4", "count": 1}])
    # 6 servers: exact shares 4.5 and 1.5; the tie of remainders goes to the earlier group
    assert scaled_servers(uneven, 6) == [{"gpu": "l4", "count": 5}, {"gpu": "t4", "count": 1}]
    assert scaled_servers(uneven, 2) == [{"gpu": "l4", "count": 2}]  # t4 gets none


def test_scenarios_of_the_default_params(params, edge, tmp_path):
    scenarios = {s.name: s for s in build_scenarios(params, "edge", tmp_path)}
    assert list(scenarios) == [
        "training",
        "mmpp",
        "diurnal",
        "trace",
        "servers_4",
        "servers_16",
        "servers_32",
        "gpu_mix",
        "models_x3",
    ]
    assert scenarios["training"].preset == edge
    assert scenarios["mmpp"].preset.workload.process == "mmpp"
    for n in (4, 16, 32):
        scenario = scenarios[f"servers_{n}"]
        assert scenario.preset.n_servers == n and scenario.shift == "cluster"
        assert scenario.rates == pytest.approx([0.75 * n / 8])  # the same load per server
    unseen = {group.gpu for group in scenarios["gpu_mix"].preset.servers}
    assert unseen == {"a10", "a100", "h100"} and not unseen & {g.gpu for g in edge.servers}
    trace = scenarios["trace"].preset
    assert trace.workload.process == "trace" and trace.workload.trace_window == "random"
    assert len(trace.models) == 4 and (tmp_path / "edge" / "gentd26_synthetic.csv").is_file()
    assert trace.model_slots == edge.model_slots  # the width the agents were trained on


def test_model_mix_keeps_the_originals_first(edge):
    scenario = model_mix_scenario(edge, 3, [1.0])
    preset = scenario.preset
    assert list(preset.models) == ["sd15", "sdxl", "sd15_v2", "sdxl_v2", "sd15_v3", "sdxl_v3"]
    shares = {m: mix.share for m, mix in preset.workload.models.items()}
    assert shares["sd15_v2"] == pytest.approx(0.7 / 3) and sum(shares.values()) == pytest.approx(1)
    assert preset.models["sdxl_v3"] == edge.models["sdxl"]
    assert scenario.shift == "models" and preset.model_slots == edge.model_slots
    many = model_mix_scenario(edge, 5, [1.0]).preset  # 10 models: the slots grow with them
    assert many.model_slots == 10
    assert cluster_size_scenario(edge, 8, [1.0]).description.startswith("8 servers (the training")


def test_crossed_ratio_interval():
    reference = np.array([10.0, 20.0, 30.0])
    value, low, high = crossed_ratio_ci(
        np.array([[11.0, 22.0, 33.0]]),
        reference,
        confidence=0.95,
        n_resamples=500,
        rng=np.random.default_rng(0),
    )
    assert [value, low, high] == pytest.approx([0.1] * 3)  # paired: +10% on every seed
    value, low, high = crossed_ratio_ci(
        np.array([[9.0, 18.0, 27.0], [11.0, 22.0, 33.0]]),
        reference,
        confidence=0.95,
        n_resamples=500,
        rng=np.random.default_rng(0),
    )
    assert value == pytest.approx(0.0) and low < 0.0 < high  # the training seeds disagree
    with pytest.raises(ValueError, match=r"reference's mean reward is -1 <= 0"):
        crossed_ratio_ci(
            np.ones((1, 2)),
            np.array([-1.0, -1.0]),
            confidence=0.95,
            n_resamples=10,
            rng=np.random.default_rng(0),
        )


def untrained_models(params, root):
    """Random-weight checkpoints of ``eat`` (attention) and ``sac`` (MLP) trained "on"
    edge, saved as the train stage saves its models."""
    encoder = Encoder(Simulator(params.env.edge))
    shapes = {
        "n_tokens": encoder.n_tokens,
        "in_features": encoder.n_features,
        "action_size": encoder.action_size,
    }
    for agent in ("eat", "sac"):
        config = sac_config(params, "edge", 0, dict(AGENTS[agent]))
        directory = model_dir(root, "edge", agent, params.seeds.train[0])
        save_actor(
            directory, build_actor(config, shapes), config, shapes, agent=agent, preset="edge"
        )


def test_a_run_marks_what_an_agent_cannot_read_and_drops_nothing(tiny, tmp_path):
    untrained_models(tiny, tmp_path / "models")
    run = run_generalisation(tiny, "edge", tmp_path / "models", tmp_path / "work", progress=False)
    names = [scenario.name for scenario in run.scenarios]
    assert names == ["training", "mmpp", "trace", "servers_4", "models_x2"]
    # the MLP agent reads a fixed number of tokens: not on 4 servers, and says why
    assert set(run.not_applicable) == {("servers_4", "sac")}
    assert "MLP encoder" in run.not_applicable[("servers_4", "sac")]
    table = relative_table(
        run, ["fifo", "greedy", "eat", "sac"], confidence=0.95, n_resamples=200, seed=1000
    )
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == len(names) * 4  # every scheduler on every scenario, none dropped
    sac = table[(table["scheduler"] == "sac") & (table["scenario"] == "servers_4")].iloc[0]
    assert not sac["applicable"] and "15 tokens" in sac["reason"] and math.isnan(sac["reward_mean"])
    ran = table[table["applicable"]]
    for row in ran.itertuples():
        assert row.reward_relative_ci_low <= row.reward_relative <= row.reward_relative_ci_high
        best = table[
            (table["scenario"] == row.scenario) & (table["scheduler"] == row.best_heuristic)
        ]
        assert best["reward_relative"].iloc[0] == pytest.approx(0.0)
        expected = row.reward_mean / row.best_reward_mean - 1.0
        assert row.reward_relative == pytest.approx(expected)
    eat_rows = ran[ran["scheduler"] == "eat"]
    assert set(eat_rows["scenario"]) == set(names) and (eat_rows["n_train_seeds"] == 1).all()
    again = run_generalisation(tiny, "edge", tmp_path / "models", tmp_path / "work", progress=False)
    assert again.episodes.drop(
        columns=[c for c in again.episodes if c.startswith("decision")]
    ).equals(run.episodes.drop(columns=[c for c in run.episodes if c.startswith("decision")]))


def test_the_stage_writes_the_report_metrics_and_figure(tiny, tmp_path):
    paths = Paths(tmp_path)
    untrained_models(tiny, paths.models)
    table = evaluate.generalisation_report(tiny, paths, progress=False)
    written = paths.evaluate.results / "generalisation.csv"
    assert (
        written.is_file() and (paths.evaluate.artifacts / "plots" / "generalisation.png").is_file()
    )
    metrics = json.loads(paths.generalisation_metrics.read_text())
    assert len(metrics) == len(table)
    entry = metrics["edge/servers_4/sac/0.5"]
    assert entry["applicable"] is False and "MLP encoder" in entry["reason"]
    assert metrics["edge/training/eat/1"]["applicable"] is True


def test_params_reject_planners_seen_gpus_and_clusters_too_small():
    raw = raw_params()
    spec = raw["evaluate"]["generalisation"]
    with pytest.raises(ParamsError, match=r"schedulers has planners \['rollout'\]"):
        validate_params(
            apply_overrides(
                raw,
                {"evaluate": {"generalisation": {"schedulers": [*spec["schedulers"], "rollout"]}}},
            )
        )
    seen = {
        "gpu_types": {"a10": {"memory_gb": None, "speed": None}},
        "servers": [{"gpu": "a10", "count": 4}, {"gpu": "l4", "count": 4}],
    }
    with pytest.raises(
        ParamsError, match=r"gpu_mix\.edge uses \['l4'\], which the training cluster"
    ):
        validate_params(
            apply_overrides(raw, {"evaluate": {"generalisation": {"gpu_mix": {"edge": seen}}}})
        )
    with pytest.raises(ParamsError, match=r"cluster_sizes \[2\] are smaller than preset 'paper'"):
        validate_params(
            apply_overrides(raw, {"evaluate": {"generalisation": {"cluster_sizes": [2, 16]}}})
        )
    none = apply_overrides(raw, {"evaluate": {"generalisation": None}})
    assert validate_params(none).evaluate.generalisation is None


def test_the_third_party_learners_run_where_their_policy_reads_the_cluster(tmp_path):
    """``ppo`` and ``maskable_ppo`` (an MLP on the flattened observation; MaskablePPO on a
    discrete table of the cluster's gangs) run on the scenarios of their training
    cluster's shape and are marked not applicable, with the reason, elsewhere."""
    raw = apply_overrides(raw_params(), TINY)
    raw["evaluate"]["generalisation"]["schedulers"] = ["fifo", "greedy", *SB3_AGENTS]
    params = validate_params(raw)
    tiny_run = {"device": "cpu", "decisions": 64, "n_steps": 64, "batch_size": 32}
    for spec in resolve_sb3_runs(params):
        if spec.preset_name != "edge" or spec.config.seed != params.seeds.train[0]:
            continue
        spec.config = spec.config.model_validate(
            {**spec.config.model_dump(), **tiny_run, "n_epochs": 1, "eval_every": 64}
        )
        spec.validation_seeds, spec.rates = spec.validation_seeds[:1], spec.rates[:1]
        write_sb3_run(train_sb3_run(spec), tmp_path / "models")
    run = run_generalisation(params, "edge", tmp_path / "models", tmp_path / "work", progress=False)
    for agent in SB3_AGENTS:
        assert ("servers_4", agent) in run.not_applicable
        assert "MLP policy" in run.not_applicable[("servers_4", agent)]
        assert ("training", agent) not in run.not_applicable
    table = relative_table(
        run, ["fifo", "greedy", *SB3_AGENTS], confidence=0.95, n_resamples=50, seed=1000
    )
    assert len(table) == len(run.scenarios) * 4  # none dropped
    learned = table[table["scheduler"].isin(list(SB3_AGENTS))]
    ran = learned[learned["applicable"]]
    assert set(ran["scenario"]) >= {"training", "mmpp"}
    assert np.isfinite(ran["reward_relative"].astype(float)).all()
    skipped = learned[~learned["applicable"]]
    assert len(skipped) == len(run.not_applicable) and (skipped["reason"] != "").all()

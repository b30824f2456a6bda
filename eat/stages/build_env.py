"""The ``build_env`` stage: build every selected preset, check it, and describe it.

:func:`describe_preset` builds one preset's simulator and Gymnasium environment, checks
the environment with Gymnasium's ``check_env``, and returns its latency table, a sample
of its workload, and a few sample episodes of ``build_env.sample_scheduler``;
:func:`run` writes them (``reports/build_env/``) with their figures
(``artifacts/build_env/``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from gymnasium.utils.env_checker import check_env

from eat.evaluation.runner import run_episode
from eat.params import Params, PresetConfig
from eat.schedulers import make_scheduler
from eat.sim import figures
from eat.sim.env import EdgeClusterEnv
from eat.sim.simulator import Simulator, episode_rngs, make_tasks
from eat.stages.common import setup_logging, write_csv, write_json
from eat.stages.paths import Paths

log = logging.getLogger(__name__)


def latency_table(preset: PresetConfig) -> pd.DataFrame:
    """The per-step latency the simulator uses, for every model, resolution, GPU type of
    the cluster and gang size (warm, one member's compute plus the exchange), with the
    cold start one member pays."""
    sim = Simulator(preset)
    rows = []
    for model, spec in preset.workload.models.items():
        for resolution in spec.resolutions:
            for gpu in dict.fromkeys(group.gpu for group in preset.servers):
                for size in sim.allowed_gang_sizes:
                    timing = sim.latency.gang_timing(model, resolution, [gpu] * size, [True] * size)
                    rows.append(
                        {
                            "model": model,
                            "resolution": resolution,
                            "gpu": gpu,
                            "patches": size,
                            "step_s": timing.step_s,
                            "cold_start_s": sim.latency.cold_start_s(model, size),
                        }
                    )
    return pd.DataFrame(rows)


def describe_workload(preset: PresetConfig, rate: float, seeds: list[int]) -> pd.DataFrame:
    """The tasks of a few sample episodes, with their seed."""
    sim = Simulator(preset)
    frames = []
    for seed in seeds:
        workload_rng, _ = episode_rngs(seed)
        tasks = make_tasks(sim, rate, workload_rng)
        frames.append(pd.DataFrame([vars(task) for task in tasks]).assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


@dataclass
class PresetDescription:
    """What :func:`describe_preset` finds out about one preset."""

    latency: pd.DataFrame
    workload: pd.DataFrame
    summary: dict[str, Any]


def describe_preset(params: Params, name: str) -> PresetDescription:
    """Build, check and describe preset ``name`` (module docstring)."""
    settings = params.build_env
    seeds = params.seeds.validation[: settings.sample_episodes]
    preset = params.env.preset(name)
    rate = settings.sample_rate[name]
    env = EdgeClusterEnv(preset, rate)
    check_env(env, skip_render_check=True)
    table = latency_table(preset)
    workload = describe_workload(preset, rate, seeds)
    episodes = []
    for seed in seeds:
        scheduler = make_scheduler(settings.sample_scheduler, params.schedulers)
        result = run_episode(preset, scheduler, rate, seed)
        episodes.append(result.metrics())
    arrivals = workload[workload["arrival"] > 0].groupby("seed")["arrival"]
    spans = arrivals.max() - arrivals.min()
    counts = arrivals.count() - 1
    summary = {
        "servers": preset.n_servers,
        "gpu_types": sorted({group.gpu for group in preset.servers}),
        "models": sorted(preset.workload.models),
        "observation_shape": list(env.observation_space.shape),
        "action_size": int(env.action_space.shape[0]),
        "sample_rate": rate,
        "measured_rate": float(counts.sum() / spans.sum()) if spans.sum() > 0 else 0.0,
        "tasks_per_episode": preset.workload.total_tasks,
        "sample_scheduler": settings.sample_scheduler,
        "sample_latency_mean": float(np.mean([e["latency_mean"] for e in episodes])),
        "sample_quality_mean": float(np.mean([e["quality_mean"] for e in episodes])),
        "latency_source": env.sim.latency.source,
    }
    return PresetDescription(table, workload, summary)


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Describe every preset of ``env.presets``; write tables, figures and the summary."""
    stage = paths.build_env
    setup_logging(stage.log)
    summary: dict[str, Any] = {}
    for name in params.env.presets:
        described = describe_preset(params, name)
        write_csv(described.latency, stage.results / f"{name}_latency_table.csv")
        write_csv(described.workload, stage.artifacts / f"{name}_sample_workload.csv")
        figures.latency_table_figure(
            described.latency, name, path=stage.artifacts / f"{name}_latency_table.png"
        )
        figures.workload_figure(
            described.workload, name, path=stage.artifacts / f"{name}_workload.png"
        )
        summary[name] = described.summary
        log.info("built preset %s: %s", name, described.summary)
    preset = params.env.preset(params.env.presets[0])
    figures.quality_curve_figure(
        Simulator(preset).quality,
        preset.min_steps,
        preset.max_steps,
        path=stage.artifacts / "quality_curve.png",
    )
    write_json(stage.metrics, summary)
    return summary

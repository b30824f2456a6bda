"""The computations behind the DVC stages; notebooks and the CLI only call these.

Each stage function takes validated :class:`~eat.params.Params` and an output folder,
writes its files there and returns a small summary. Paths are the ones ``dvc.yaml``
declares.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gymnasium.utils.env_checker import check_env

from eat.agents import make_scheduler
from eat.agents.rl import AGENTS
from eat.eval import env_figures, figures, trained
from eat.eval.metrics import aggregate, episode_metrics, metrics_json
from eat.eval.runner import EpisodeResult, run_episode, sweep, warm_floor_latency
from eat.params import Params, PresetConfig
from eat.sim.env import EdgeClusterEnv
from eat.sim.simulator import Simulator, episode_rngs, make_tasks

log = logging.getLogger(__name__)

#: Metrics written to reports/metrics.json for every preset/scheduler/rate.
REPORTED_METRICS = [
    "latency_mean",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "waiting_mean",
    "cold_starts_per_task",
    "quality_mean",
    "reward_mean",
    "deadline_attainment",
    "utilisation",
    "decision_ms_mean",
]


def _metrics_of(result: EpisodeResult) -> dict[str, float]:
    return episode_metrics(
        result.tasks, result.segments, result.n_servers, result.horizon, result.decision_seconds
    )


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def setup_logging(log_file: Path) -> None:
    """Send the package's log records to a file (notebooks stay free of log floods)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("eat")
    root.handlers = [handler]
    root.setLevel(logging.INFO)


# ---------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------


def profile(params: Params, out_dir: Path, decision_path: Path) -> dict[str, Any]:
    """Profile this machine's device and decide the edge preset's latency source
    (:func:`eat.profiling.stage.profile_stage`, imported on use: torch and diffusers)."""
    from eat.profiling.stage import profile_stage

    return profile_stage(params, out_dir, decision_path)


# ---------------------------------------------------------------------------
# build_env
# ---------------------------------------------------------------------------


def latency_table(preset: PresetConfig) -> pd.DataFrame:
    """The per-step latency the simulator uses, for every model, resolution, gang size
    and GPU type of the preset (warm, one member's compute plus the exchange)."""
    sim = Simulator(preset)
    rows = []
    if preset.kind == "paper":
        for size in sorted(preset.paper_latency.per_step_s):  # type: ignore[union-attr]
            timing = sim.latency.gang_timing(size, warm=True)  # type: ignore[call-arg]
            cold = sim.latency.gang_timing(size, warm=False)  # type: ignore[call-arg]
            rows.append(
                {
                    "model": model,
                    "resolution": res,
                    "gpu": gpu,
                    "patches": size,
                    "step_s": timing.step_s,
                    "cold_start_s": cold.setup_s,
                }
                for model, spec in preset.workload.models.items()
                for res in spec.resolutions
                for gpu in preset.gpu_types
            )
        return pd.DataFrame([row for group in rows for row in group])
    for model, spec in preset.workload.models.items():
        for resolution in spec.resolutions:
            for gpu in dict.fromkeys(group.gpu for group in preset.servers):
                for size in sim.allowed_gang_sizes:
                    timing = sim.latency.gang_timing(  # type: ignore[call-arg]
                        model, resolution, [gpu] * size, [True] * size
                    )
                    rows.append(
                        {
                            "model": model,
                            "resolution": resolution,
                            "gpu": gpu,
                            "patches": size,
                            "step_s": timing.step_s,
                            "cold_start_s": sim.latency.cold_start_s[model],
                        }
                    )  # type: ignore[union-attr]
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


def build_env(params: Params, out_dir: Path) -> dict[str, Any]:
    """Build every selected preset, check it, and describe it with tables and figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = params.build_env
    seeds = params.seeds.validation[: settings.sample_episodes]
    summary: dict[str, Any] = {}
    for name in params.env.presets:
        preset = params.env.preset(name)
        rate = settings.sample_rate[name]
        env = EdgeClusterEnv(preset, rate)
        check_env(env, skip_render_check=True)
        table = latency_table(preset)
        table.to_csv(out_dir / f"{name}_latency_table.csv", index=False)
        workload = describe_workload(preset, rate, seeds)
        workload.to_csv(out_dir / f"{name}_sample_workload.csv", index=False)
        episodes = []
        for seed in seeds:
            scheduler = make_scheduler(settings.sample_scheduler, params.schedulers)
            episodes.append(_metrics_of(run_episode(preset, scheduler, rate, seed)))
        arrivals = workload[workload["arrival"] > 0].groupby("seed")["arrival"]
        spans = arrivals.max() - arrivals.min()
        counts = arrivals.count() - 1
        summary[name] = {
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
            "latency_source": (
                "reference tables (zzf1955/EAT)"
                if preset.kind == "paper"
                else Simulator(preset).latency.source  # type: ignore[union-attr]
            ),
        }
        env_figures.latency_table_figure(table, name, path=out_dir / f"{name}_latency_table.png")
        env_figures.workload_figure(workload, name, path=out_dir / f"{name}_workload.png")
        log.info("built preset %s: %s", name, summary[name])
    any_preset = params.env.preset(params.env.presets[0])
    env_figures.quality_curve_figure(
        Simulator(any_preset).quality,
        any_preset.min_steps,
        any_preset.max_steps,
        path=out_dir / "quality_curve.png",
    )
    return summary


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------


def train(
    params: Params, models_dir: Path, out_dir: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Train every run of ``params.train`` (:func:`eat.train.train_matrix`) into
    ``models_dir``; write the run table, the validation curves (CSV for ``dvc plots``
    and figures) into ``out_dir``; return the summary metrics."""
    from eat.train import CURVES_FILE, train_matrix  # torch and ray only for this stage

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    runs = train_matrix(params, models_dir, progress=progress)
    wall_s = runs.attrs["wall_s"]
    runs.to_csv(out_dir / "runs.csv", index=False)
    curves = []
    for record in runs.to_dict("records"):
        path = (
            models_dir / record["preset"] / record["agent"] / f"seed{record['seed']}" / CURVES_FILE
        )
        curves.append(
            pd.read_csv(path).assign(**{k: record[k] for k in ("preset", "agent", "seed")})
        )
    curves_frame = pd.concat(curves, ignore_index=True)
    curves_frame.to_csv(out_dir / "curves.csv", index=False)
    summary: dict[str, Any] = {"wall_s": wall_s, "runs": len(runs)}
    for preset, frame in curves_frame.groupby("preset"):
        for metric in ("val/reward", "val/latency"):
            wide = frame.pivot_table(index="global_step", columns="agent", values=metric)
            wide.reset_index().to_csv(
                plots / f"{preset}_{metric.split('/')[1]}_curve.csv", index=False
            )
        trained.training_curves(frame, str(preset), path=plots / f"{preset}_training.png")
    for (preset, agent), frame in runs.groupby(["preset", "agent"]):
        summary[f"{preset}/{agent}"] = {
            "n_seeds": len(frame),
            "wall_s_mean": float(frame["wall_s"].mean()),
            "wall_s_max": float(frame["wall_s"].max()),
            "val_reward": float(frame["val_reward"].mean()),
            "val_latency": float(frame["val_latency"].mean()),
            "val_quality": float(frame["val_quality"].mean()),
            "bc_val_reward": (
                float(frame["bc_val_reward"].mean())
                if frame["bc_val_reward"].notna().all()
                else None
            ),
        }
    return summary


# ---------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------


def evaluate(
    params: Params, out_dir: Path, *, progress: bool = True, models_dir: Path = Path("models")
) -> dict[str, Any]:
    """Every scheduler over every preset's rate sweep on held-out test seeds; learned
    agents (``eat.agents.rl.AGENTS``) from their ``train`` stage models in
    ``models_dir``, every training seed on the same test seeds (:mod:`eat.eval.trained`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    config = params.evaluate
    seeds = params.seeds.test[: config.n_seeds]
    heuristics = [name for name in config.schedulers if name not in AGENTS]
    agents = [name for name in config.schedulers if name in AGENTS]
    train_seeds = params.seeds.train[: params.train.n_seeds]
    all_episodes, all_tasks, aggregated_frames, floors = [], [], [], []
    gantt_result = None
    for name in params.env.presets:
        preset = params.env.preset(name)
        rates = config.rates[name]
        started = time.perf_counter()
        episodes, tasks, results = sweep(
            name,
            preset,
            heuristics,
            lambda scheduler: make_scheduler(scheduler, params.schedulers),
            rates,
            seeds,
            _metrics_of,
            progress=progress,
        )
        log.info(
            "preset %s: %d episodes in %.1f s", name, len(episodes), time.perf_counter() - started
        )
        aggregated = aggregate(
            episodes,
            confidence=config.confidence,
            n_resamples=config.bootstrap_resamples,
            seed=seeds[0],
        )
        if agents:
            metric_columns = list(aggregated.columns[aggregated.columns.str.endswith("_ci_low")])
            metric_columns = [column.removesuffix("_ci_low") for column in metric_columns]
            agent_episodes, agent_tasks = [], []
            for agent in agents:
                started = time.perf_counter()
                agent_frame, agent_task_frame = trained.evaluate_trained(
                    name,
                    preset,
                    agent,
                    models_dir,
                    train_seeds,
                    rates,
                    seeds,
                    _metrics_of,
                    progress=progress,
                )
                log.info(
                    "preset %s: %s, %d episodes in %.1f s",
                    name,
                    agent,
                    len(agent_frame),
                    time.perf_counter() - started,
                )
                agent_episodes.append(agent_frame)
                agent_tasks.append(agent_task_frame)
            agent_episodes_frame = pd.concat(agent_episodes, ignore_index=True)
            aggregated = pd.concat(
                [
                    aggregated,
                    trained.aggregate_crossed(
                        agent_episodes_frame,
                        metric_columns,
                        confidence=config.confidence,
                        n_resamples=config.bootstrap_resamples,
                        seed=seeds[0],
                    ),
                ],
                ignore_index=True,
            )
            episodes = pd.concat([episodes, agent_episodes_frame], ignore_index=True)
            tasks = pd.concat([tasks, *agent_tasks], ignore_index=True)
        floor = pd.DataFrame(
            {
                "preset": name,
                "rate": rates,
                "latency_mean": [
                    float(
                        np.mean(
                            [
                                warm_floor_latency(
                                    preset, rate, seed, params.schedulers.fixed_steps
                                )
                                for seed in seeds
                            ]
                        )
                    )
                    for rate in rates
                ],
            }
        )
        all_episodes.append(episodes)
        all_tasks.append(tasks)
        aggregated_frames.append(aggregated)
        floors.append(floor)
        figures.latency_vs_rate(
            aggregated, name, floor=floor, path=plots / f"{name}_latency_vs_rate.png"
        )
        figures.quality_vs_rate(aggregated, name, path=plots / f"{name}_quality_vs_rate.png")
        figures.latency_quality_scatter(
            aggregated, name, path=plots / f"{name}_latency_quality.png"
        )
        middle_rate = rates[len(rates) // 2]
        figures.latency_cdf(tasks, name, middle_rate, path=plots / f"{name}_latency_cdf.png")
        wide = aggregated.pivot(index="rate", columns="scheduler", values="latency_mean")
        wide.reset_index().to_csv(plots / f"{name}_latency_vs_rate.csv", index=False)
        gantt = config.gantt
        if gantt.preset == name and gantt.rate in rates and gantt.scheduler in heuristics:
            gantt_result = results[(gantt.scheduler, gantt.rate, seeds[0])]
    if gantt_result is not None:
        gantt = config.gantt
        gantt_preset = params.env.preset(gantt.preset)
        labels = [
            f"{i}: {gpu}" for i, (gpu, _, _) in enumerate(Simulator(gantt_preset).server_specs)
        ]
        figures.gantt(
            gantt_result.segments,
            gantt_result.tasks,
            n_servers=gantt_result.n_servers,
            server_labels=labels,
            title=f"{gantt.preset}: {gantt.scheduler} at {gantt.rate:g} tasks/s, seed {seeds[0]}",
            path=plots / "gantt.png",
        )
    episodes = pd.concat(all_episodes, ignore_index=True)
    aggregated = pd.concat(aggregated_frames, ignore_index=True)
    all_tasks_frame = pd.concat(all_tasks, ignore_index=True)
    episodes.to_csv(out_dir / "episodes.csv", index=False)
    aggregated.to_csv(out_dir / "aggregate.csv", index=False)
    all_tasks_frame.to_csv(out_dir / "tasks.csv.gz", index=False)
    pd.concat(floors, ignore_index=True).to_csv(out_dir / "warm_floor.csv", index=False)
    if "eat" in agents:
        learned_outputs(
            params, aggregated, episodes, all_tasks_frame, out_dir, models_dir, progress
        )
    metrics = metrics_json(aggregated, REPORTED_METRICS)
    for entry in metrics.values():
        entry["n_seeds"] = int(entry["n_seeds"])
    if "n_train_seeds" in aggregated.columns:
        for record in aggregated.dropna(subset=["n_train_seeds"]).to_dict("records"):
            key = f"{record['preset']}/{record['scheduler']}/{float(record['rate']):g}"
            metrics[key]["n_train_seeds"] = int(record["n_train_seeds"])
    return metrics


ABLATION_BASE = {"eat": "eat: attention + diffusion K=10", "d2sac": "MLP + diffusion K=10"}


def learned_outputs(
    params: Params,
    aggregated: pd.DataFrame,
    episodes: pd.DataFrame,
    tasks: pd.DataFrame,
    out_dir: Path,
    models_dir: Path,
    progress: bool,
) -> None:
    """The section-3 reports of the learned agents: ``eat_vs_baselines.csv`` (latency
    reduction of ``eat`` against every scheduler per rate), ``paper_structural_floor.csv``
    and the ablation (``ablation.csv``, ``plots/ablation.png``)."""
    config = params.evaluate
    seeds = params.seeds.test[: config.n_seeds]
    tables = [trained.reduction_table(aggregated, name) for name in params.env.presets]
    pd.concat(tables, ignore_index=True).to_csv(out_dir / "eat_vs_baselines.csv", index=False)
    if "paper" in params.env.presets:
        preset = params.env.preset("paper")
        rows = []
        eat_tasks = tasks[(tasks["preset"] == "paper") & (tasks["scheduler"] == "eat")]
        for rate in config.rates["paper"]:
            per_seed = [
                trained.paper_structural_floor(preset, group[group["rate"] == rate], rate, seeds)
                for _, group in eat_tasks.groupby("train_seed")
            ]
            rows.append(pd.DataFrame(per_seed).mean().to_dict())
        pd.DataFrame(rows).to_csv(out_dir / "paper_structural_floor.csv", index=False)
    ablation = params.train.ablation
    if ablation is None or ablation.preset not in params.env.presets:
        return
    name = ablation.preset
    preset = params.env.preset(name)
    rates = config.rates[name]
    train_seeds = params.seeds.train[: ablation.n_seeds]
    frames = [
        episodes[
            (episodes["preset"] == name)
            & (episodes["scheduler"].isin(list(ABLATION_BASE)))
            & (episodes["train_seed"].isin(train_seeds))
        ]
    ]
    labels = {base: label for base, label in ABLATION_BASE.items()}
    for variant, spec in ablation.variants.items():
        frame, _ = trained.evaluate_trained(
            name,
            preset,
            variant,
            models_dir,
            train_seeds,
            rates,
            seeds,
            _metrics_of,
            progress=progress,
        )
        frames.append(frame)
        actor = "diffusion" if spec.actor == "diffusion" else "Gaussian"
        steps = f" K={spec.denoising_steps}" if spec.actor == "diffusion" else ""
        start = ", no BC warm start" if spec.init == "scratch" else ""
        labels[variant] = f"{spec.encoder} + {actor}{steps}{start}"
    frame = pd.concat(frames, ignore_index=True)
    metric_columns = ["reward_mean", "latency_mean", "quality_mean", "decision_ms_mean"]
    result = trained.aggregate_crossed(
        frame,
        metric_columns,
        confidence=config.confidence,
        n_resamples=config.bootstrap_resamples,
        seed=seeds[0],
    )
    result.assign(label=result["scheduler"].map(labels)).to_csv(
        out_dir / "ablation.csv", index=False
    )
    trained.ablation_figure(result, labels, out_dir / "plots" / "ablation.png")


def write_metrics(metrics: dict[str, Any], path: Path) -> None:
    """Write a stage's DVC metrics file (plain JSON, no NaN)."""
    _write_json(path, metrics)


def summary_table(aggregated: pd.DataFrame, preset: str, metric: str) -> pd.DataFrame:
    """One row per scheduler, one column per rate of ``preset``: ``mean [low, high]``."""
    rows = aggregated[aggregated["preset"] == preset]
    cells = rows.apply(
        lambda row: (
            f"{row[metric]:.3g} [{row[metric + '_ci_low']:.3g}, {row[metric + '_ci_high']:.3g}]"
        ),
        axis=1,
    )
    return rows.assign(cell=cells).pivot(index="scheduler", columns="rate", values="cell")

"""The ``evaluate`` stage: every scheduler over every preset's arrival-rate sweep.

Heuristics run every test seed (``seeds.test[:evaluate.n_seeds]``) at every rate, on
identical workloads; the learned agents (:data:`eat.schedulers.rl.LEARNED_AGENTS`, the
third-party learners included) run from the ``train`` stage's models, every training seed
on the same test seeds, and get crossed bootstrap intervals (:mod:`eat.evaluation.trained`).

:func:`evaluate_preset` computes one preset's episodes, task records and aggregate;
:func:`learned_reports` the comparisons of the learned agents (reduction of ``eat``
against every other scheduler, the structural floor of ``paper``, the ablation);
:func:`generalisation_report` the generalisation tests (``evaluate.generalisation``,
:mod:`eat.evaluation.generalisation`); :func:`optimum_table` the gap to the proven
optimum of small episodes (``evaluate.optimum``, :mod:`eat.schedulers.exact`);
:func:`scale_table` whether each advantage on a small preset holds at a thousand GPUs
(``evaluate.scale``, :mod:`eat.evaluation.scale`); :func:`run` writes them, draws the
figures and returns the DVC metrics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eat.distributed import ray_session
from eat.evaluation import figures, trained
from eat.evaluation.generalisation import generalisation_metrics, generalisation_table
from eat.evaluation.metrics import (
    aggregate,
    gap_closed,
    metrics_json,
    reduction_table,
    robust_statistics,
)
from eat.evaluation.runner import EpisodeResult, warm_floor_latency
from eat.evaluation.sweep import SchedulerFactory, grid, run_sweep
from eat.params import Params, PresetConfig
from eat.schedulers import SCHEDULERS
from eat.schedulers.rl import LEARNED_AGENTS
from eat.sim.simulator import Simulator
from eat.stages.common import setup_logging, write_csv, write_json
from eat.stages.paths import Paths

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
    "reward_gap_closed",
    "latency_gap_closed",
]
#: Wall-clock measurements of this machine: kept apart (decision_times.csv) from the
#: results, which the seeds determine and a repro reproduces bitwise.
TIMING_PREFIX = "decision_ms"
KEYS = ["preset", "scheduler", "rate"]


def split_timings(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the frame without its decision-time columns, the key columns with them)."""
    timing = [column for column in frame.columns if column.startswith(TIMING_PREFIX)]
    keys = [column for column in frame.columns if column in {*KEYS, "seed", "train_seed"}]
    return frame.drop(columns=timing), frame[keys + timing]


ABLATION_BASE = {"eat": "eat: attention + diffusion K=10", "d2sac": "MLP + diffusion K=10"}


@dataclass
class PresetEvaluation:
    """Everything :func:`evaluate_preset` computes for one preset."""

    name: str
    episodes: pd.DataFrame
    """One row of metrics per episode (learned agents: per training seed too)."""
    tasks: pd.DataFrame
    """Every task record, with preset, scheduler, rate and seed columns."""
    aggregated: pd.DataFrame
    """Means and 95% intervals per scheduler and rate."""
    floor: pd.DataFrame
    """The warm floor: mean latency if every task ran at once, warm, on its fastest gang."""
    results: dict[tuple[str, float, int], EpisodeResult] = field(repr=False)
    """The heuristics' raw episodes, by (scheduler, rate, seed)."""


def sweep_settings(params: Params) -> dict[str, Any]:
    """How the evaluation's sweeps run (``evaluate.parallel``, ``ray_address``,
    ``num_cpus``)."""
    config = params.evaluate
    return {
        "parallel": config.parallel,
        "ray_address": config.ray_address,
        "num_cpus": config.num_cpus,
    }


def evaluate_preset(
    params: Params, name: str, models_dir: Path, *, progress: bool = True
) -> PresetEvaluation:
    """Every scheduler of ``evaluate.schedulers`` on preset ``name`` (module docstring)."""
    config = params.evaluate
    preset = params.env.preset(name)
    rates = config.rates[name]
    seeds = params.seeds.test[: config.n_seeds]
    learned = [scheduler for scheduler in config.schedulers if scheduler in LEARNED_AGENTS]
    others = [scheduler for scheduler in config.schedulers if scheduler not in LEARNED_AGENTS]
    train_seeds = params.seeds.train[: params.train.n_seeds]
    jobs = grid(others, rates, seeds) + grid(learned, rates, seeds, train_seeds)
    started = time.perf_counter()
    swept = run_sweep(
        name,
        preset,
        jobs,
        SchedulerFactory(params, name, models_dir),
        progress=progress,
        **sweep_settings(params),
    )
    log.info("preset %s: %d episodes in %.1f s", name, len(jobs), time.perf_counter() - started)
    is_learned = swept.episodes["scheduler"].isin(learned)
    episodes = swept.episodes[~is_learned].drop(columns="train_seed", errors="ignore")
    aggregated = aggregate(
        episodes,
        confidence=config.confidence,
        n_resamples=config.bootstrap_resamples,
        seed=seeds[0],
    )
    if learned:
        metric_columns = [
            column.removesuffix("_ci_low")
            for column in aggregated.columns[aggregated.columns.str.endswith("_ci_low")]
        ]
        crossed = trained.aggregate_crossed(
            swept.episodes[is_learned],
            metric_columns,
            confidence=config.confidence,
            n_resamples=config.bootstrap_resamples,
            seed=seeds[0],
        )
        aggregated = pd.concat([aggregated, crossed], ignore_index=True)
    gaps = gap_closed(
        swept.episodes,
        baseline="random",
        reference=config.reference,
        confidence=config.confidence,
        n_resamples=config.bootstrap_resamples,
        seed=seeds[0],
    )
    aggregated = aggregated.merge(gaps, on=KEYS, how="left", validate="one_to_one")
    floor = pd.DataFrame(
        {
            "preset": name,
            "rate": rates,
            "latency_mean": [
                float(
                    np.mean(
                        [
                            warm_floor_latency(preset, rate, seed, params.schedulers.fixed_steps)
                            for seed in seeds
                        ]
                    )
                )
                for rate in rates
            ],
        }
    )
    results = {
        (job.scheduler, job.rate, job.seed): result
        for job, result in swept.results.items()
        if job.train_seed is None
    }
    return PresetEvaluation(name, swept.episodes, swept.tasks, aggregated, floor, results)


@dataclass
class LearnedReports:
    """The comparisons of the learned agents (:func:`learned_reports`)."""

    reductions: pd.DataFrame
    """``eat`` against every other scheduler per preset and rate."""
    structural_floor: pd.DataFrame | None
    """``paper``: what no scheduler can remove, for the steps ``eat`` chose."""
    ablation: pd.DataFrame | None
    """The ablation variants beside ``eat`` and ``d2sac``, crossed intervals."""
    ablation_labels: dict[str, str]


def learned_reports(
    params: Params,
    evaluations: dict[str, PresetEvaluation],
    models_dir: Path,
    *,
    progress: bool = True,
) -> LearnedReports:
    """Reduction table, structural floor and ablation (module docstring)."""
    config = params.evaluate
    seeds = params.seeds.test[: config.n_seeds]
    reductions = pd.concat(
        [reduction_table(evaluation.aggregated, name) for name, evaluation in evaluations.items()],
        ignore_index=True,
    )
    floor = None
    if "paper" in evaluations:
        preset = params.env.preset("paper")
        tasks = evaluations["paper"].tasks
        eat_tasks = tasks[tasks["scheduler"] == "eat"]
        rows = []
        for rate in config.rates["paper"]:
            per_seed = [
                trained.paper_structural_floor(preset, group[group["rate"] == rate], rate, seeds)
                for _, group in eat_tasks.groupby("train_seed")
            ]
            rows.append(pd.DataFrame(per_seed).mean().to_dict())
        floor = pd.DataFrame(rows)
    ablation = params.train.ablation
    labels: dict[str, str] = dict(ABLATION_BASE)
    if ablation is None or ablation.preset not in evaluations:
        return LearnedReports(reductions, floor, None, labels)
    name = ablation.preset
    preset = params.env.preset(name)
    rates = config.rates[name]
    train_seeds = params.seeds.train[: ablation.n_seeds]
    episodes = evaluations[name].episodes
    frames = [
        episodes[
            episodes["scheduler"].isin(list(ABLATION_BASE))
            & episodes["train_seed"].isin(train_seeds)
        ]
    ]
    variants = list(ablation.variants)
    swept = run_sweep(
        name,
        preset,
        grid(variants, rates, seeds, train_seeds),
        SchedulerFactory(params, name, models_dir),
        progress=progress,
        **sweep_settings(params),
    )
    frames.append(swept.episodes)
    for variant, spec in ablation.variants.items():
        actor = "diffusion" if spec.actor == "diffusion" else "Gaussian"
        steps = f" K={spec.denoising_steps}" if spec.actor == "diffusion" else ""
        start = ", no BC warm start" if spec.init == "scratch" else ""
        labels[variant] = f"{spec.encoder} + {actor}{steps}{start}"
    result = trained.aggregate_crossed(
        pd.concat(frames, ignore_index=True),
        ["reward_mean", "latency_mean", "quality_mean", "decision_ms_mean"],
        confidence=config.confidence,
        n_resamples=config.bootstrap_resamples,
        seed=seeds[0],
    )
    return LearnedReports(
        reductions, floor, result.assign(label=result["scheduler"].map(labels)), labels
    )


def best_heuristic_by_rate(aggregated: pd.DataFrame, preset: str) -> dict[float, str]:
    """Per rate, the heuristic with the highest mean reward on ``preset``."""
    frame = aggregated[(aggregated["preset"] == preset) & aggregated["scheduler"].isin(SCHEDULERS)]
    best = frame.loc[frame.groupby("rate")["reward_mean"].idxmax(), ["rate", "scheduler"]]
    return {float(rate): str(name) for rate, name in best.itertuples(index=False)}


def robust_table(params: Params, evaluation: PresetEvaluation) -> pd.DataFrame:
    """IQM of the normalised reward and the probability of improvement over the best
    heuristic (:func:`eat.evaluation.metrics.robust_statistics`) of every scheduler that
    is not a heuristic, on one preset."""
    config = params.evaluate
    versus = best_heuristic_by_rate(evaluation.aggregated, evaluation.name)
    rows = []
    for scheduler in config.schedulers:
        if scheduler in SCHEDULERS or scheduler == "random":
            continue
        result = robust_statistics(
            evaluation.episodes,
            scheduler=scheduler,
            versus=versus,
            baseline="random",
            reference=config.reference,
            confidence=config.confidence,
            n_resamples=config.bootstrap_resamples,
            seed=params.seeds.test[0],
        )
        rows.append({"preset": evaluation.name, "scheduler": scheduler, **result})
    return pd.DataFrame(rows)


def slo_preset(preset: PresetConfig, scale: float, objective: str) -> PresetConfig:
    """``preset`` with SLO deadlines at ``scale`` and the reward ``objective``."""
    data = preset.model_dump()
    data["workload"]["deadline"].update(mode="slo", slo_scale=scale)
    data["reward"]["objective"] = objective
    return PresetConfig.model_validate(data)


def slo_sweep(
    params: Params, name: str, models_dir: Path, *, progress: bool = True
) -> pd.DataFrame:
    """SLO attainment of every scheduler against the SLO scale (at the middle rate) and
    against the rate (at ``load_scale``), with bootstrap intervals over the test seeds
    (crossed with the training seeds for learned agents)."""
    config, slo = params.evaluate, params.evaluate.slo
    rates = config.rates[name]
    middle = rates[len(rates) // 2]
    points = list(
        dict.fromkeys(
            [(scale, middle) for scale in slo.scales] + [(slo.load_scale, r) for r in rates]
        )
    )
    seeds = params.seeds.test[: slo.n_seeds]
    learned = [scheduler for scheduler in config.schedulers if scheduler in LEARNED_AGENTS]
    others = [scheduler for scheduler in config.schedulers if scheduler not in LEARNED_AGENTS]
    train_seeds = params.seeds.train[: slo.n_train_seeds]
    frames = []
    for scale in dict.fromkeys(scale for scale, _ in points):
        preset = slo_preset(params.env.preset(name), scale, slo.objective)
        at = [rate for s, rate in points if s == scale]
        jobs = grid(others, at, seeds) + grid(learned, at, seeds, train_seeds)
        swept = run_sweep(
            name,
            preset,
            jobs,
            SchedulerFactory(params, name, models_dir),
            progress=progress,
            label=f"slo {name} x{scale:g}",
            **sweep_settings(params),
        )
        frames.append(swept.episodes.assign(slo_scale=scale))
    episodes = pd.concat(frames, ignore_index=True)
    measured = ["deadline_attainment", "quality_mean", "latency_mean"]
    rows = []
    for scale, group in episodes.groupby("slo_scale", sort=True):
        is_learned = group["scheduler"].isin(learned)
        plain = aggregate(
            group[~is_learned].drop(columns=["train_seed", "slo_scale"], errors="ignore"),
            metrics=measured,
            confidence=config.confidence,
            n_resamples=config.bootstrap_resamples,
            seed=seeds[0],
        )
        parts = [plain]
        if is_learned.any():
            parts.append(
                trained.aggregate_crossed(
                    group[is_learned],
                    measured,
                    confidence=config.confidence,
                    n_resamples=config.bootstrap_resamples,
                    seed=seeds[0],
                )
            )
        rows.append(pd.concat(parts, ignore_index=True).assign(slo_scale=scale))
    table = pd.concat(rows, ignore_index=True)
    table["sweep"] = ["scale" if rate == middle else "load" for rate in table["rate"]]
    table.loc[(table["rate"] == middle) & (table["slo_scale"] == slo.load_scale), "sweep"] = "both"
    return table


def slo_metrics(table: pd.DataFrame) -> dict[str, Any]:
    """``preset/scheduler/x<scale>/<rate>`` -> SLO attainment with its interval."""
    entries: dict[str, Any] = {}
    for record in table.to_dict("records"):
        key = (
            f"{record['preset']}/{record['scheduler']}/x{float(record['slo_scale']):g}/"
            f"{float(record['rate']):g}"
        )
        entries[key] = {
            "slo_attainment": float(record["deadline_attainment"]),
            "slo_attainment_ci": [
                float(record["deadline_attainment_ci_low"]),
                float(record["deadline_attainment_ci_high"]),
            ],
            "quality_mean": float(record["quality_mean"]),
            "n_seeds": int(record["n_seeds"]),
        }
    return entries


def metrics(aggregated: pd.DataFrame) -> dict[str, Any]:
    """The DVC metrics: one entry per ``preset/scheduler/rate``."""
    entries = metrics_json(aggregated, [m for m in REPORTED_METRICS if m in aggregated])
    if "n_train_seeds" in aggregated.columns:
        for record in aggregated.dropna(subset=["n_train_seeds"]).to_dict("records"):
            key = f"{record['preset']}/{record['scheduler']}/{float(record['rate']):g}"
            entries[key]["n_train_seeds"] = int(record["n_train_seeds"])
    return entries


def draw(params: Params, evaluation: PresetEvaluation, plots: Path) -> None:
    """The figures of one preset (and the Gantt chart of ``evaluate.gantt``)."""
    name, aggregated = evaluation.name, evaluation.aggregated
    rates = params.evaluate.rates[name]
    figures.latency_vs_rate(
        aggregated, name, floor=evaluation.floor, path=plots / f"{name}_latency_vs_rate.png"
    )
    figures.quality_vs_rate(aggregated, name, path=plots / f"{name}_quality_vs_rate.png")
    figures.latency_quality_scatter(aggregated, name, path=plots / f"{name}_latency_quality.png")
    middle = rates[len(rates) // 2]
    figures.latency_cdf(evaluation.tasks, name, middle, path=plots / f"{name}_latency_cdf.png")
    figures.gap_closed_vs_rate(
        aggregated, name, params.evaluate.reference, path=plots / f"{name}_gap_closed.png"
    )
    gantt = params.evaluate.gantt
    key = (gantt.scheduler, gantt.rate, params.seeds.test[0])
    if gantt.preset == name and key in evaluation.results:
        result = evaluation.results[key]
        labels = [
            f"{i}: {gpu}"
            for i, (gpu, _, _) in enumerate(Simulator(params.env.preset(name)).server_specs)
        ]
        figures.gantt(
            result.segments,
            result.tasks,
            n_servers=result.n_servers,
            server_labels=labels,
            title=f"{name}: {gantt.scheduler} at {gantt.rate:g} tasks/s, seed {key[2]}",
            path=plots / "gantt.png",
        )


def generalisation_report(params: Params, paths: Paths, *, progress: bool = True) -> pd.DataFrame:
    """The generalisation tests: ``reports/evaluate/generalisation.csv``, its metrics
    (``reports/generalisation_metrics.json``) and figure; the trace files of the trace
    scenario go to ``artifacts/evaluate/generalisation/``."""
    stage = paths.evaluate
    table, seconds = generalisation_table(
        params,
        paths.models,
        stage.artifacts / "generalisation",
        progress=progress,
        **sweep_settings(params),
    )
    for preset, wall in seconds.items():  # a measurement of this machine: logged only
        log.info("generalisation of %s: %.1f s", preset, wall)
    write_csv(table, stage.results / "generalisation.csv")
    figures.generalisation_figure(table, path=stage.artifacts / "plots" / "generalisation.png")
    write_json(paths.generalisation_metrics, generalisation_metrics(table))
    return table


def optimum_table(params: Params, models_dir: Path) -> pd.DataFrame:
    """Every preset of ``evaluate.optimum``: its small episodes at every rate of
    ``evaluate.rates`` and test seed ``seeds.test[:episodes]``, solved exactly and run by
    every scheduler of ``evaluate.optimum.schedulers``
    (:func:`eat.schedulers.exact.exact_comparison`; learned agents: their first training
    seed). One row per episode and scheduler; the solve times are logged only (they are
    measurements of this machine, the table is reproducible)."""
    from eat.schedulers.exact import SOLVER_NAME, exact_comparison  # ortools only when asked

    spec = params.evaluate.optimum
    if spec is None:
        raise ValueError("evaluate.optimum is null: there is no optimum comparison to run")
    seeds = params.seeds.test[: spec.episodes]
    train_seed = params.seeds.train[0]
    frames = []
    for name in spec.presets:
        factory = SchedulerFactory(params, name, models_dir)

        def make(scheduler: str, factory: SchedulerFactory = factory) -> Any:
            return factory(scheduler, train_seed if scheduler in LEARNED_AGENTS else None)

        for rate in params.evaluate.rates[name]:
            started = time.perf_counter()
            frame = exact_comparison(
                name, params.env.preset(name), spec, rate, seeds, spec.schedulers, make
            )
            solver = frame[frame["scheduler"] == SOLVER_NAME]
            log.info(
                "optimum of %s at %g: %d episodes, %d proven, solves %.2f s (max %.2f s), "
                "%.1f s in all",
                name,
                rate,
                len(solver),
                int((solver["status"] == "optimal").sum()),
                solver["solve_s"].sum(),
                solver["solve_s"].max(),
                time.perf_counter() - started,
            )
            frames.append(frame.drop(columns="solve_s"))
    return pd.concat(frames, ignore_index=True)


def optimum_metrics(summary: pd.DataFrame) -> dict[str, Any]:
    """DVC metrics of :func:`eat.schedulers.exact.optimum_summary`, keyed
    ``"{preset}/{scheduler}"``."""
    entries: dict[str, Any] = {}
    for row in summary.to_dict("records"):
        entries[f"{row['preset']}/{row['scheduler']}"] = {
            "episodes": int(row["episodes"]),
            "proven": int(row["proven"]),
            "mean_reward": _finite(row["mean_reward"]),
            "gap_closed": _finite(row["gap_closed"]),
            "gap_closed_ci": [
                _finite(row["gap_closed_ci_low"]),
                _finite(row["gap_closed_ci_high"]),
            ],
            "below_optimum_mean": _finite(row["below_optimum_mean"]),
        }
    return entries


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def optimum_report(params: Params, paths: Paths) -> pd.DataFrame:
    """The gap to the optimum: ``reports/evaluate/optimum.csv`` (the summary),
    ``reports/evaluate/optimum_episodes.csv`` (every episode) and
    ``reports/optimum_metrics.json``."""
    from eat.schedulers.exact import optimum_summary

    stage = paths.evaluate
    table = optimum_table(params, paths.models)
    config = params.evaluate
    summary = optimum_summary(
        table,
        confidence=config.confidence,
        n_resamples=config.bootstrap_resamples,
        seed=params.seeds.test[0],
    )
    write_csv(table, stage.results / "optimum_episodes.csv")
    write_csv(summary, stage.results / "optimum.csv")
    write_json(paths.optimum_metrics, optimum_metrics(summary))
    return summary


def scale_table(
    params: Params, models_dir: Path, episodes: pd.DataFrame, *, progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every episode of both presets, the advantage table) of ``evaluate.scale``: the
    large preset's episodes run here, the small preset's come from ``episodes``, the
    stage's own sweep."""
    from eat.evaluation.scale import advantage, scale_episodes, versus_episodes

    spec = params.evaluate.scale
    if spec is None:
        raise ValueError("evaluate.scale is null: there is no scale comparison to run")
    started = time.perf_counter()
    large = scale_episodes(params, spec, models_dir, progress=progress, **sweep_settings(params))
    log.info(
        "scale: %d %s episodes in %.1f s", len(large), spec.preset, time.perf_counter() - started
    )
    both = pd.concat([versus_episodes(params, spec, episodes), large], ignore_index=True)
    return both, advantage(both)


def scale_report(params: Params, paths: Paths, episodes: pd.DataFrame, *, progress: bool) -> None:
    """``reports/evaluate/scale_advantage.csv``, ``scale_comparison.csv``, the large
    preset's episodes (``scale_episodes.csv``) and ``reports/scale_metrics.json``."""
    from eat.evaluation.scale import comparison, scale_metrics, trained_at_scale

    spec = params.evaluate.scale
    assert spec is not None  # run() checks
    stage = paths.evaluate
    both, table = scale_table(params, paths.models, episodes, progress=progress)
    large, _ = split_timings(both[both["preset"] == spec.preset])
    write_csv(large, stage.results / "scale_episodes.csv")
    write_csv(table, stage.results / "scale_advantage.csv")
    compared = comparison(table, spec.versus, spec.preset, trained_at_scale(params, spec))
    write_csv(compared, stage.results / "scale_comparison.csv")
    write_json(paths.scale_metrics, scale_metrics(table))


def run(params: Params, paths: Paths, *, progress: bool = True) -> dict[str, Any]:
    """Evaluate every preset; write tables, figures and ``reports/metrics.json``."""
    config = params.evaluate
    with ray_session(config.parallel == "ray", config.ray_address, num_cpus=config.num_cpus):
        return _run(params, paths, progress=progress)


def _run(params: Params, paths: Paths, *, progress: bool) -> dict[str, Any]:
    stage = paths.evaluate
    setup_logging(stage.log)
    evaluations = {
        name: evaluate_preset(params, name, paths.models, progress=progress)
        for name in params.env.presets
    }
    plots = stage.artifacts / "plots"
    for name, evaluation in evaluations.items():
        draw(params, evaluation, plots)
        wide = evaluation.aggregated.pivot(index="rate", columns="scheduler", values="latency_mean")
        write_csv(wide.reset_index(), stage.results / "plots" / f"{name}_latency_vs_rate.csv")
    aggregated, decision_times = split_timings(
        pd.concat([e.aggregated for e in evaluations.values()], ignore_index=True)
    )
    write_csv(aggregated, stage.results / "aggregate.csv")
    write_csv(
        pd.concat([e.floor for e in evaluations.values()], ignore_index=True),
        stage.results / "warm_floor.csv",
    )
    episodes, episode_times = split_timings(
        pd.concat([e.episodes for e in evaluations.values()], ignore_index=True)
    )
    write_csv(episodes, stage.artifacts / "episodes.csv")
    write_csv(episode_times, stage.artifacts / "episode_decision_times.csv")
    tasks = pd.concat([e.tasks for e in evaluations.values()], ignore_index=True)
    stage.artifacts.mkdir(parents=True, exist_ok=True)
    # mtime 0: the gzip header carries no date, so the file is the same on every repro
    tasks.to_csv(
        stage.artifacts / "tasks.csv.gz", index=False, compression={"method": "gzip", "mtime": 0}
    )
    if "eat" in params.evaluate.schedulers:
        reports = learned_reports(params, evaluations, paths.models, progress=progress)
        write_csv(reports.reductions, stage.results / "eat_vs_baselines.csv")
        if reports.structural_floor is not None:
            write_csv(reports.structural_floor, stage.results / "paper_structural_floor.csv")
        if reports.ablation is not None:
            figures.ablation_figure(
                reports.ablation, reports.ablation_labels, plots / "ablation.png"
            )
            ablation, ablation_times = split_timings(reports.ablation)
            write_csv(ablation, stage.results / "ablation.csv")
            decision_times = pd.concat(
                [
                    decision_times,
                    ablation_times[~ablation_times["scheduler"].isin(decision_times["scheduler"])],
                ],
                ignore_index=True,
            )
    write_csv(decision_times, stage.results / "decision_times.csv")
    robust = pd.concat([robust_table(params, e) for e in evaluations.values()], ignore_index=True)
    write_csv(robust, stage.results / "robust_statistics.csv")
    figures.robust_statistics_figure(robust, path=plots / "robust_statistics.png")
    slo = pd.concat(
        [slo_sweep(params, name, paths.models, progress=progress) for name in params.env.presets],
        ignore_index=True,
    )
    write_csv(slo, stage.results / "slo.csv")
    for name in params.env.presets:
        figures.slo_attainment(slo, name, path=plots / f"{name}_slo.png")
    write_json(paths.slo_metrics, slo_metrics(slo))
    if params.evaluate.generalisation is not None:
        generalisation_report(params, paths, progress=progress)
    if params.evaluate.optimum is not None:
        optimum_report(params, paths)
    if params.evaluate.scale is not None:
        scale_report(
            params,
            paths,
            pd.concat([e.episodes for e in evaluations.values()], ignore_index=True),
            progress=progress,
        )
    entries = metrics(aggregated)
    write_json(stage.metrics, entries)
    return entries

"""Generalisation without retraining: the learned agents trained on a preset, and the
heuristics, on workloads, clusters and model mixes the agents never saw.

Every *scenario* is a :class:`~eat.params.PresetConfig` derived from a training preset
(``evaluate.generalisation`` in params):

- ``training``: the preset itself (the in-distribution reference row);
- workload shift (``workloads``): ``mmpp`` bursts and ``diurnal`` load with the preset's
  own settings instead of Poisson arrivals; ``trace`` replay of a GenTD26 request trace
  (the real file, or a synthetic one in its format) converted by
  :func:`eat.sim.traces.convert_gentd26`, with its own base models, their popularity and
  each request's own steps (:func:`eat.sim.traces.preset_for_trace`; each seed replays
  another window of it);
- cluster shift: ``servers_<n>`` (``cluster_sizes``), the training cluster's mix of GPU
  types scaled to ``n`` servers, the arrival rate scaled with it (the same load per
  server); ``gpu_mix``, GPU types the training cluster does not have;
- model shift: ``models_x<k>`` (``model_variants``), every model served as ``k`` distinct
  models of its architecture, so more models compete for memory.

:func:`run_generalisation` runs every scheduler of the section on every scenario at the
same test seeds (learned agents: every training seed, loaded from the training preset's
models, never retrained) and :func:`relative_table` reports, per scenario and rate, each
scheduler's mean reward relative to the best heuristic there (``mean / best - 1``) with a
two-way bootstrap interval over training and test seeds, paired on the test seeds (as
:mod:`eat.evaluation.trained`). An agent whose network cannot read a scenario (an MLP
encoder on another number of servers, fewer model slots than models) is not run: its
rows say ``applicable: False`` and why, never dropped.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from eat.evaluation.sweep import SchedulerFactory, grid, run_sweep
from eat.params import GpuMix, Params, PresetConfig, TraceScenario
from eat.schedulers import SCHEDULERS
from eat.schedulers.rl import LEARNED_AGENTS
from eat.sim.simulator import Simulator
from eat.sim.traces import convert_gentd26, preset_for_trace, synthetic_gentd26

log = logging.getLogger(__name__)

Shift = Literal["none", "workload", "cluster", "models"]
TABLE_COLUMNS = [
    "preset",
    "scenario",
    "shift",
    "rate",
    "scheduler",
    "learned",
    "applicable",
    "reason",
    "best_heuristic",
    "reward_mean",
    "best_reward_mean",
    "reward_relative",
    "reward_relative_ci_low",
    "reward_relative_ci_high",
    "latency_mean",
    "quality_mean",
    "cold_starts_per_task",
    "n_seeds",
    "n_train_seeds",
    "description",
]
"""The columns of ``reports/evaluate/generalisation.csv``."""


@dataclass(frozen=True)
class Scenario:
    """One test condition derived from a training preset (module docstring)."""

    name: str
    shift: Shift
    preset: PresetConfig = field(repr=False)
    rates: tuple[float, ...]
    """Arrival rates (tasks/s), scaled to the scenario's cluster."""
    description: str


# ---------------------------------------------------------------------------
# Scenario builders
# ---------------------------------------------------------------------------


def _derived(base: PresetConfig, data: dict[str, Any]) -> PresetConfig:
    """``data`` (a changed dump of ``base``) as a preset whose model slots hold its models."""
    data["model_slots"] = max(base.model_slots, len(data["models"]))
    return PresetConfig.model_validate(data)


def training_scenario(base: PresetConfig, rates: Sequence[float]) -> Scenario:
    """The training preset itself."""
    return Scenario("training", "none", base, tuple(rates), "the training preset")


def workload_scenario(
    base: PresetConfig, process: Literal["mmpp", "diurnal"], rates: Sequence[float]
) -> Scenario:
    """``base`` with arrivals from ``process`` (its own burst or diurnal settings)."""
    data = base.model_dump()
    data["workload"]["process"] = process
    workload = base.workload
    if process == "mmpp":
        text = (
            f"MMPP bursts: {workload.burst_ratio:g}x the calm rate for {workload.burst_share:.0%} "
            f"of the time, bursts of {workload.burst_mean_duration_s:g} s on average"
        )
    else:
        text = (
            f"diurnal load: rate x (1 + {workload.diurnal_amplitude:g} sin(2 pi t / "
            f"{workload.diurnal_period_s:g} s))"
        )
    return Scenario(process, "workload", _derived(base, data), tuple(rates), text)


def scaled_servers(base: PresetConfig, n_servers: int) -> list[dict[str, Any]]:
    """``base``'s server groups scaled to ``n_servers`` in the same proportions: each
    group gets the floor of its share, the remaining servers go to the largest
    remainders (ties: the earlier group); groups left with none are dropped."""
    total = base.n_servers
    exact = [group.count * n_servers / total for group in base.servers]
    counts = [math.floor(value) for value in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n_servers - sum(counts)]:
        counts[i] += 1
    return [
        {"gpu": group.gpu, "count": count}
        for group, count in zip(base.servers, counts, strict=True)
        if count > 0
    ]


def cluster_size_scenario(base: PresetConfig, n_servers: int, rates: Sequence[float]) -> Scenario:
    """``base``'s mix of GPU types on ``n_servers`` servers, the rates scaled with them."""
    data = base.model_dump()
    data["servers"] = scaled_servers(base, n_servers)
    scale = n_servers / base.n_servers
    mix = ", ".join(f"{group['count']} {group['gpu']}" for group in data["servers"])
    same = " (the training size)" if n_servers == base.n_servers else ""
    return Scenario(
        f"servers_{n_servers}",
        "cluster",
        _derived(base, data),
        tuple(rate * scale for rate in rates),
        f"{n_servers} servers{same}: {mix}; rate x {scale:g}",
    )


def gpu_mix_scenario(base: PresetConfig, mix: GpuMix, rates: Sequence[float]) -> Scenario:
    """``base`` on ``mix``'s servers (GPU types not in its training cluster); the rates
    scaled by the ratio of server counts."""
    data = base.model_dump()
    data["gpu_types"] = {
        **data["gpu_types"],
        **{k: v.model_dump() for k, v in mix.gpu_types.items()},
    }
    data["servers"] = [group.model_dump() for group in mix.servers]
    n_servers = sum(group.count for group in mix.servers)
    scale = n_servers / base.n_servers
    servers = ", ".join(f"{group.count} {group.gpu}" for group in mix.servers)
    return Scenario(
        "gpu_mix",
        "cluster",
        _derived(base, data),
        tuple(rate * scale for rate in rates),
        f"unseen GPU types: {servers}",
    )


def model_mix_scenario(base: PresetConfig, variants: int, rates: Sequence[float]) -> Scenario:
    """Every model of ``base`` served as ``variants`` distinct models of its architecture
    (the originals first, in their order: their identity slots stay those of training;
    then ``<model>_v2`` ... for each variant), each with an even part of its share."""
    data = base.model_dump()
    models, mix = {}, {}
    names = [(name, name) for name in base.models] + [
        (name, f"{name}_v{variant}") for variant in range(2, variants + 1) for name in base.models
    ]
    for original, name in names:
        models[name] = base.models[original].model_dump()
        if original in base.workload.models:
            share = base.workload.models[original]
            mix[name] = {"share": share.share / variants, "resolutions": list(share.resolutions)}
    data["models"], data["workload"]["models"] = models, mix
    return Scenario(
        f"models_x{variants}",
        "models",
        _derived(base, data),
        tuple(rates),
        f"{len(models)} models: each of {list(base.models)} as {variants} distinct models",
    )


def trace_scenario(
    base: PresetConfig, spec: TraceScenario, n_models: int, workdir: Path, rates: Sequence[float]
) -> Scenario:
    """Replay of the GenTD26 trace at ``spec.path``, or of a synthetic one in its format
    (written to ``workdir``), converted with ``n_models`` base models; each seed replays
    another window of it (``trace_window: random``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if spec.path is None:
        source = workdir / "gentd26_synthetic.csv"
        synthetic_gentd26(spec.synthetic_requests, seed=spec.synthetic_seed).to_csv(
            source, index=False
        )
        origin = f"synthetic GenTD26-format trace (seed {spec.synthetic_seed})"
    else:
        source = Path(spec.path)
        origin = f"GenTD26 trace {source.name}"
    trace = convert_gentd26(source, n_models=n_models)
    path = (workdir / f"trace_{n_models}_models.csv").resolve()
    trace.to_csv(path, index=False)
    preset = preset_for_trace(base, trace, path, trace_window="random")
    kinds = trace.groupby("model", sort=False)["architecture"].first()
    models = ", ".join(f"{model} ({kind})" for model, kind in kinds.items())
    return Scenario(
        "trace",
        "workload",
        preset,
        tuple(rates),
        f"{origin}: {len(trace)} tasks, models {models}, the requests' own steps",
    )


def build_scenarios(params: Params, preset_name: str, workdir: Path) -> list[Scenario]:
    """Every scenario of ``evaluate.generalisation`` for one training preset (trace files
    are written under ``workdir``)."""
    spec = params.evaluate.generalisation
    if spec is None:
        raise ValueError("evaluate.generalisation is null: there is nothing to build")
    base = params.env.preset(preset_name)
    rates = spec.rates[preset_name]
    scenarios = [training_scenario(base, rates)]
    for workload in spec.workloads:
        if workload == "trace":
            n_models = spec.trace.n_models[preset_name]
            scenarios.append(
                trace_scenario(base, spec.trace, n_models, workdir / preset_name, rates)
            )
        else:
            scenarios.append(workload_scenario(base, workload, rates))
    scenarios += [cluster_size_scenario(base, n, rates) for n in spec.cluster_sizes]
    if preset_name in spec.gpu_mix:
        scenarios.append(gpu_mix_scenario(base, spec.gpu_mix[preset_name], rates))
    scenarios += [model_mix_scenario(base, k, rates) for k in spec.model_variants]
    return scenarios


# ---------------------------------------------------------------------------
# Running and the relative table
# ---------------------------------------------------------------------------


def not_applicable(
    factory: SchedulerFactory, agent: str, train_seed: int, preset: PresetConfig
) -> str | None:
    """Why the trained ``agent`` (its checkpoint of ``train_seed``) cannot run on
    ``preset`` (None: it can): :meth:`~eat.schedulers.rl.agent.RLScheduler.misfit`, or
    :meth:`~eat.schedulers.rl.sb3.Sb3Scheduler.misfit` for a third-party learner."""
    from eat.schedulers.rl.agent import RLScheduler  # torch only for learned agents
    from eat.schedulers.rl.sb3 import Sb3Scheduler

    scheduler = factory.trained(agent, train_seed)
    if not isinstance(scheduler, RLScheduler | Sb3Scheduler):
        raise TypeError(f"{agent!r} loaded as {type(scheduler).__name__}, not a trained agent")
    return scheduler.misfit(Simulator(preset))


@dataclass
class GeneralisationRun:
    """The episodes of one training preset's scenarios (:func:`run_generalisation`)."""

    preset: str
    scenarios: list[Scenario]
    episodes: pd.DataFrame
    """One row of metrics per episode, with ``scenario`` (and ``train_seed``) columns."""
    not_applicable: dict[tuple[str, str], str]
    """(scenario, agent) -> why the agent was not run there."""
    seconds: float
    """Wall-clock time of the run (a measurement of this machine)."""


def run_generalisation(
    params: Params,
    preset_name: str,
    models_dir: Path | None,
    workdir: Path,
    *,
    progress: bool = True,
    parallel: Literal["serial", "ray"] = "serial",
    ray_address: str | None = None,
    num_cpus: int | None = None,
) -> GeneralisationRun:
    """Every scheduler of ``evaluate.generalisation`` on every scenario of one training
    preset, the same test seeds everywhere (module docstring)."""
    spec = params.evaluate.generalisation
    if spec is None:
        raise ValueError("evaluate.generalisation is null: there is nothing to run")
    started = time.perf_counter()
    scenarios = build_scenarios(params, preset_name, workdir)
    seeds = params.seeds.test[: spec.n_seeds]
    train_seeds = params.seeds.train[: spec.n_train_seeds]
    agents = [name for name in spec.schedulers if name in LEARNED_AGENTS]
    heuristics = [name for name in spec.schedulers if name in SCHEDULERS]
    factory = SchedulerFactory(params, preset_name, models_dir)
    frames, skipped = [], {}
    for scenario in scenarios:
        runnable = []
        for agent in agents:
            reason = not_applicable(factory, agent, train_seeds[0], scenario.preset)
            if reason is None:
                runnable.append(agent)
            else:
                skipped[(scenario.name, agent)] = reason
        jobs = grid(heuristics, scenario.rates, seeds) + grid(
            runnable, scenario.rates, seeds, train_seeds
        )
        swept = run_sweep(
            preset_name,
            scenario.preset,
            jobs,
            factory,
            parallel=parallel,
            ray_address=ray_address,
            num_cpus=num_cpus,
            progress=progress,
            label=f"generalisation {preset_name}/{scenario.name}",
        )
        frames.append(swept.episodes.assign(scenario=scenario.name))
    seconds = time.perf_counter() - started
    log.info("generalisation %s: %d scenarios in %.1f s", preset_name, len(scenarios), seconds)
    episodes = pd.concat(frames, ignore_index=True)
    return GeneralisationRun(preset_name, scenarios, episodes, skipped, seconds)


def crossed_ratio_ci(
    matrix: np.ndarray,
    reference: np.ndarray,
    *,
    confidence: float,
    n_resamples: int,
    rng: np.random.Generator,
) -> tuple[float, float, float]:
    """``mean(matrix) / mean(reference) - 1`` for a (training seeds x test seeds) matrix
    and the reference's values on the same test seeds, with a two-way bootstrap interval:
    each resample draws training seeds and test seeds independently with replacement,
    the reference on the same test seeds (paired)."""
    if matrix.ndim != 2 or matrix.shape[1] != reference.shape[0] or matrix.size == 0:
        raise ValueError(
            f"matrix {matrix.shape} and reference {reference.shape} must share the test seeds"
        )
    if not (np.isfinite(matrix).all() and np.isfinite(reference).all()):
        raise ValueError("matrix and reference must be finite")
    if reference.mean() <= 0:
        raise ValueError(
            f"the reference's mean reward is {reference.mean():g} <= 0: a ratio means nothing"
        )
    value = float(matrix.mean() / reference.mean() - 1.0)
    n_rows, n_cols = matrix.shape
    if n_rows * n_cols == 1:
        return value, value, value
    rows = rng.integers(0, n_rows, size=(n_resamples, n_rows))
    cols = rng.integers(0, n_cols, size=(n_resamples, n_cols))
    means = matrix[rows[:, :, None], cols[:, None, :]].mean(axis=(1, 2))
    ratios = means / reference[cols].mean(axis=1) - 1.0
    alpha = 1.0 - confidence
    low, high = np.quantile(ratios, [alpha / 2.0, 1.0 - alpha / 2.0])
    return value, float(low), float(high)


def relative_table(
    run: GeneralisationRun,
    schedulers: Sequence[str],
    *,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> pd.DataFrame:
    """Per scenario, rate and scheduler: mean reward relative to the best heuristic there
    (the heuristic with the highest mean reward on the same test seeds), with its crossed
    bootstrap interval (:func:`crossed_ratio_ci`); agents that were not run get a row that
    says why. When the best heuristic's mean reward is not positive the ratio is
    undefined: ``reward_relative`` is NaN and ``reason`` says so."""
    episodes = run.episodes
    if "train_seed" not in episodes.columns:
        episodes = episodes.assign(train_seed=np.nan)
    rows = []
    for scenario in run.scenarios:
        for rate in scenario.rates:
            at = episodes[
                (episodes["scenario"] == scenario.name) & np.isclose(episodes["rate"], rate)
            ]
            heuristic = at[at["scheduler"].isin(SCHEDULERS)]
            means = heuristic.groupby("scheduler")["reward_mean"].mean()
            best = str(means.idxmax())
            reference = (
                heuristic[heuristic["scheduler"] == best]
                .sort_values("seed")["reward_mean"]
                .to_numpy(float)
            )
            for name in schedulers:
                learned = name in LEARNED_AGENTS
                row: dict[str, Any] = {
                    "preset": run.preset,
                    "scenario": scenario.name,
                    "shift": scenario.shift,
                    "rate": rate,
                    "scheduler": name,
                    "learned": learned,
                    "best_heuristic": best,
                    "best_reward_mean": float(reference.mean()),
                    "description": scenario.description,
                }
                reason = run.not_applicable.get((scenario.name, name))
                if reason is not None:
                    rows.append({**row, "applicable": False, "reason": reason})
                    continue
                own = at[at["scheduler"] == name]
                if learned:
                    matrix = own.pivot(index="train_seed", columns="seed", values="reward_mean")
                else:
                    matrix = own.pivot(index="scheduler", columns="seed", values="reward_mean")
                matrix = matrix.reindex(columns=sorted(own["seed"].unique()))
                row.update(
                    applicable=True,
                    reason="",
                    reward_mean=float(own["reward_mean"].mean()),
                    latency_mean=float(own["latency_mean"].mean()),
                    quality_mean=float(own["quality_mean"].mean()),
                    cold_starts_per_task=float(own["cold_starts_per_task"].mean()),
                    n_seeds=int(own["seed"].nunique()),
                    n_train_seeds=int(own["train_seed"].nunique()) if learned else 0,
                )
                if reference.mean() <= 0:
                    row.update(
                        reward_relative=math.nan,
                        reward_relative_ci_low=math.nan,
                        reward_relative_ci_high=math.nan,
                        reason=f"the best heuristic's mean reward {reference.mean():.3g} <= 0",
                    )
                else:
                    key = repr((run.preset, scenario.name, float(rate), name)).encode()
                    value, low, high = crossed_ratio_ci(
                        matrix.to_numpy(float),
                        reference,
                        confidence=confidence,
                        n_resamples=n_resamples,
                        rng=np.random.default_rng([seed, zlib.crc32(key)]),
                    )
                    row.update(
                        reward_relative=value,
                        reward_relative_ci_low=low,
                        reward_relative_ci_high=high,
                    )
                rows.append(row)
    return pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)


def generalisation_table(
    params: Params,
    models_dir: Path | None,
    workdir: Path,
    *,
    progress: bool = True,
    parallel: Literal["serial", "ray"] = "serial",
    ray_address: str | None = None,
    num_cpus: int | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """:func:`relative_table` of every preset of ``evaluate.generalisation``, and the
    wall-clock seconds each preset took."""
    spec = params.evaluate.generalisation
    if spec is None:
        raise ValueError("evaluate.generalisation is null: there is nothing to run")
    tables, seconds = [], {}
    for name in spec.presets:
        run = run_generalisation(
            params,
            name,
            models_dir,
            workdir,
            progress=progress,
            parallel=parallel,
            ray_address=ray_address,
            num_cpus=num_cpus,
        )
        tables.append(
            relative_table(
                run,
                spec.schedulers,
                confidence=params.evaluate.confidence,
                n_resamples=params.evaluate.bootstrap_resamples,
                seed=params.seeds.test[0],
            )
        )
        seconds[name] = run.seconds
    return pd.concat(tables, ignore_index=True), seconds


def generalisation_metrics(table: pd.DataFrame) -> dict[str, Any]:
    """``preset/scenario/scheduler/rate`` -> relative reward with its interval (null when
    not applicable, with the reason)."""
    entries: dict[str, Any] = {}
    for record in table.to_dict("records"):
        key = (
            f"{record['preset']}/{record['scenario']}/{record['scheduler']}/"
            f"{float(record['rate']):g}"
        )
        if not record["applicable"]:
            entries[key] = {"applicable": False, "reason": record["reason"]}
            continue
        relative = record["reward_relative"]
        defined = not math.isnan(relative)
        entries[key] = {
            "applicable": True,
            "reward_relative": float(relative) if defined else None,
            "reward_relative_ci": (
                [float(record["reward_relative_ci_low"]), float(record["reward_relative_ci_high"])]
                if defined
                else None
            ),
            "reward_mean": float(record["reward_mean"]),
            "best_heuristic": record["best_heuristic"],
            "n_seeds": int(record["n_seeds"]),
        }
    return entries


__all__ = [
    "TABLE_COLUMNS",
    "GeneralisationRun",
    "Scenario",
    "build_scenarios",
    "cluster_size_scenario",
    "crossed_ratio_ci",
    "generalisation_metrics",
    "generalisation_table",
    "gpu_mix_scenario",
    "model_mix_scenario",
    "not_applicable",
    "relative_table",
    "run_generalisation",
    "scaled_servers",
    "trace_scenario",
    "training_scenario",
    "workload_scenario",
]

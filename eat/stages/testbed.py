"""The ``testbed`` stage: one workload on the real testbed and in the simulator.

Steps (:func:`run_testbed`; :func:`run` writes its files):

1. **Models.** The model folders (the user's real weights, or the architectures of
   ``eat.architectures`` with seeded random weights, saved once) and their
   resident bytes.
2. **Profile of the same hardware.** ``eat.profiling.profiler`` measures, in this
   process and before any worker starts, one UNet step per (model, resolution, patch
   count), the VAE decode, the text encoders and the cold start from disk of exactly
   these model folders, on the workers' device with the workers' thread count.
3. **Cluster.** Ray (embedded on loopback, or the cluster at ``address``) and one
   :class:`~eat.testbed.worker.EdgeWorker` per server; the exchange between two
   workers is measured (round trips through Ray: latency + bytes / bandwidth).
4. **The simulator of this testbed** (:func:`eat.testbed.preset.testbed_preset`): an ``edge`` preset with
   the testbed's servers (one GPU type, the measured device, memory = the cache
   budget), models (memory = resident bytes), the calibrated latency model
   (:mod:`eat.latency`) fitted on the profile of step 2, the measured exchange
   (the testbed's star exchange: the leader sends the step's latent to each member and
   receives its band) and the edge preset's quality, reward, and deadline rule.
5. For every scheduler: the workers' caches are emptied (every run starts cold, like
   an episode), the workload (``testbed.workload``, drawn with the simulator's own
   generators from its seed) is replayed on the testbed at its arrival times, and the
   same tasks are simulated with the same scheduler (:func:`eat.evaluation.runner.run_episode`).
6. Comparison per task and per scheduler (real vs simulated latency: the sim-to-real
   gap; and the shadow simulator's prediction of each real dispatch), figures, a grid
   of the images produced, and optionally a bounded HTTP load test on loopback.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eat.evaluation.runner import run_episode, scheduler_rng
from eat.params import Params
from eat.stages.common import setup_logging, write_csv, write_json
from eat.stages.paths import Paths
from eat.testbed import figures
from eat.testbed.bed import (
    Testbed,
    build_testbed,
    make_testbed_scheduler,
    replay,
    run_async,
    run_load_test_stage,
    workload,
)
from eat.testbed.compare import compare, history_agreement, step_vs_profile, summarise

log = logging.getLogger(__name__)


@dataclass
class TestbedRun:
    """What :func:`run_testbed` measured and compared."""

    real: pd.DataFrame
    """Every scheduler's testbed task records."""
    simulated: pd.DataFrame
    """The same tasks in the simulator."""
    comparison: pd.DataFrame
    decisions: pd.DataFrame
    """Each real dispatch beside the twin's decision after the same history."""
    summary: pd.DataFrame
    steps: pd.DataFrame
    """Per-step time in the testbed against the profile."""
    segments: pd.DataFrame
    failures: pd.DataFrame
    images: list[tuple[str, str, bytes]] = field(repr=False)
    """(file name, title, PNG) of every image produced."""
    load_test: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def run_testbed(params: Params, bed: Testbed, models_dir: Path | None) -> TestbedRun:
    """Steps 5-6 of the module docstring on a running testbed."""
    from eat.testbed import cluster

    section = params.testbed
    timings = dict(bed.timings)
    tasks, prompts = workload(bed.preset, section)
    real_frames, sim_frames, failures, segments, images = [], [], [], [], []
    decisions = []
    for name in section.schedulers:
        mark = time.perf_counter()
        cluster.reset_caches(bed.workers)
        scheduler = make_testbed_scheduler(name, params, models_dir)
        controller, results = run_async(
            replay(bed.preset, bed.workers, scheduler, section, tasks, prompts)
        )
        real = controller.records_frame().assign(scheduler=name)
        real_frames.append(real)
        decisions.append(
            history_agreement(
                bed.preset,
                make_testbed_scheduler(name, params, models_dir),
                tasks,
                real,
                scheduler_rng(name, section.workload.seed),  # the controller's stream
            ).assign(scheduler=name)
        )
        segments.append(controller.segments_frame().assign(scheduler=name))
        failures.append(controller.failures_frame().assign(scheduler=name))
        for result in results:
            if result.png is not None:
                record = result.record
                images.append(
                    (
                        f"{name}_task{result.task_id:03d}.png",
                        f"{name} #{result.task_id} {record['model']} "
                        f"{record['resolution']}px {record['steps']} steps",
                        result.png,
                    )
                )
        simulated = run_episode(
            bed.preset,
            make_testbed_scheduler(name, params, models_dir),
            section.workload.rate,
            section.workload.seed,
        )
        sim_frames.append(simulated.tasks.assign(scheduler=name))
        timings[f"run_{name}_s"] = time.perf_counter() - mark
        log.info("testbed %s: %d tasks in %.1f s", name, len(real), timings[f"run_{name}_s"])
    load_test = None
    if section.load_test.requests:
        mark = time.perf_counter()
        report = run_load_test_stage(params, bed.preset, bed.workers, bed.resolved)
        load_test = {
            k: _json_number(v) if isinstance(v, float) else v for k, v in report.summary().items()
        }
        timings["load_test_s"] = time.perf_counter() - mark
    real_all = pd.concat(real_frames, ignore_index=True)
    sim_all = pd.concat(sim_frames, ignore_index=True)
    comparison = pd.concat(
        [
            compare(real_all[real_all.scheduler == n], sim_all[sim_all.scheduler == n])
            for n in section.schedulers
        ],
        ignore_index=True,
    )
    decided = pd.concat(decisions, ignore_index=True)
    return TestbedRun(
        real=real_all,
        simulated=sim_all,
        comparison=comparison,
        decisions=decided,
        summary=summarise(comparison, decided),
        steps=step_vs_profile(real_all, bed.profile),
        segments=pd.concat(segments, ignore_index=True),
        failures=pd.concat(failures, ignore_index=True),
        images=images,
        load_test=load_test,
        timings=timings,
    )


def metrics(params: Params, bed: Testbed, outcome: TestbedRun) -> dict[str, Any]:
    """The stage's metrics."""
    section, resolved, steps = params.testbed, bed.resolved, outcome.steps
    entries: dict[str, Any] = {
        "setup": {
            "device": resolved.device,
            "device_name": bed.device_name,
            "model_size": resolved.model_size,
            "dtype": resolved.dtype,
            "workers": section.workers,
            "cluster": bed.cluster,
            "threads": section.threads,
            "cpu_count": os.cpu_count(),
            "model_bytes": bed.model_bytes,
        },
        "exchange": bed.exchange,
        "schedulers": {
            row["scheduler"]: {k: _json_number(v) for k, v in row.items() if k != "scheduler"}
            for row in outcome.summary.to_dict("records")
        },
        "step_vs_profile": {
            f"patches_{p}": {
                "ratio_median": _json_number(frame["ratio"].median()),
                "ratio_max": _json_number(frame["ratio"].max()),
                "tasks": len(frame),
            }
            for p, frame in (steps.groupby("patches") if not steps.empty else [])
        },
        "failures": len(outcome.failures),
        "timings_s": outcome.timings,
    }
    if outcome.load_test is not None:
        entries["load_test"] = outcome.load_test
    return entries


def run(params: Params, paths: Paths, *, models_dir: Path | None = None) -> dict[str, Any]:
    """Build the testbed, run :func:`run_testbed`, write its files; return the metrics."""
    stage = paths.testbed
    setup_logging(stage.log)
    began = time.perf_counter()
    models_dir = paths.models if models_dir is None else models_dir
    # the schedulers first: a missing trained agent stops the stage before any work
    for name in params.testbed.schedulers:
        make_testbed_scheduler(name, params, models_dir)
    bed = build_testbed(params, stage.artifacts)
    try:
        outcome = run_testbed(params, bed, models_dir)
    finally:
        bed.close()
    outcome.timings["total_s"] = time.perf_counter() - began
    results, artifacts = stage.results, stage.artifacts
    write_csv(outcome.comparison, results / "comparison.csv")
    write_csv(outcome.decisions, results / "decisions.csv")
    write_csv(outcome.summary, results / "summary.csv")
    write_csv(outcome.steps, results / "step_vs_profile.csv")
    write_csv(outcome.failures, results / "failures.csv")
    write_csv(
        outcome.summary[["scheduler", "real_latency_mean", "sim_latency_mean"]],
        results / "latency_by_scheduler.csv",
    )
    write_csv(outcome.real, artifacts / "testbed_tasks.csv")
    write_csv(outcome.simulated, artifacts / "sim_tasks.csv")
    write_csv(outcome.segments, artifacts / "testbed_segments.csv")
    (artifacts / "images").mkdir(parents=True, exist_ok=True)
    for file_name, _, png in outcome.images:
        (artifacts / "images" / file_name).write_bytes(png)
    figures.latency_scatter(outcome.comparison, artifacts / "real_vs_sim_latency.png")
    figures.latency_bars(outcome.summary, artifacts / "latency_by_scheduler.png")
    figures.breakdown_bars(outcome.comparison, artifacts / "service_breakdown.png")
    figures.image_grid(
        figures.interleave(
            [(title, png) for _, title, png in outcome.images], params.testbed.grid_images
        ),
        artifacts / "images_grid.png",
    )
    entries = metrics(params, bed, outcome)
    write_json(stage.metrics, entries)
    return entries


def _json_number(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value

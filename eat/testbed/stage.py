"""The ``testbed`` stage: one workload on the real testbed and in the simulator.

Steps (:func:`run_stage`):

1. **Models.** The model folders (the user's real weights, or the architectures of
   ``eat.profiling.architectures`` with seeded random weights, saved once) and their
   resident bytes.
2. **Profile of the same hardware.** ``eat.profiling.profiler`` measures, in this
   process and before any worker starts, one UNet step per (model, resolution, patch
   count), the VAE decode, the text encoders and the cold start from disk of exactly
   these model folders, on the workers' device with the workers' thread count.
3. **Cluster.** Ray (embedded on loopback, or the cluster at ``address``) and one
   :class:`~eat.testbed.worker.EdgeWorker` per server; the exchange between two
   workers is measured (round trips through Ray: latency + bytes / bandwidth).
4. **The simulator of this testbed** (:func:`testbed_preset`): an ``edge`` preset with
   the testbed's servers (one GPU type, the measured device, memory = the cache
   budget), models (memory = resident bytes), the calibrated latency model
   (:mod:`eat.calibration`) fitted on the profile of step 2, the measured exchange
   (the testbed's star exchange: the leader sends the step's latent to each member and
   receives its band) and the edge preset's quality, reward, and deadline rule.
5. For every scheduler: the workers' caches are emptied (every run starts cold, like
   an episode), the workload (``testbed.workload``, drawn with the simulator's own
   generators from its seed) is replayed on the testbed at its arrival times, and the
   same tasks are simulated with the same scheduler (:func:`eat.eval.runner.run_episode`).
6. Comparison per task and per scheduler (real vs simulated latency: the sim-to-real
   gap; and the shadow simulator's prediction of each real dispatch), figures, a grid
   of the images produced, and optionally a bounded HTTP load test on loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
from typing import get_args

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from eat.agents.base import Scheduler
from eat.eval.runner import run_episode, scheduler_rng
from eat.params import AgentName, Params, PresetConfig, TestbedSection, TestbedSizing
from eat.sim.simulator import Simulator, episode_rngs, make_tasks
from eat.testbed import require
from eat.testbed.controller import Controller, ControllerSettings
from eat.testbed.models import folder_bytes, prepare_model_folder

log = logging.getLogger(__name__)

#: The GPU-type id of the testbed's device in its simulator preset.
TESTBED_GPU = "testbed"


@dataclass(frozen=True)
class Resolved:
    """The ``auto`` choices of ``params.testbed`` made concrete."""

    device: Literal["cpu", "cuda"]
    model_size: Literal["real", "tiny"]
    dtype: Literal["float32", "float16", "bfloat16"]
    sizing: TestbedSizing
    model_root: Path


def resolve(section: TestbedSection) -> Resolved:
    from eat.testbed.cluster import resolve_device

    device = resolve_device(section.device)
    size = (
        section.model_size
        if section.model_size != "auto"
        else ("real" if device == "cuda" else "tiny")
    )
    dtype = (
        section.dtype if section.dtype != "auto" else ("float16" if device == "cuda" else "float32")
    )
    if device == "cpu" and dtype == "float16":
        raise ValueError("dtype float16 on CPU is not supported by every kernel; use float32")
    root = Path(section.model_root or Path.home() / ".cache" / "eat" / "testbed-models")
    return Resolved(device, size, dtype, getattr(section, size), root.expanduser().resolve())


def model_folders(section: TestbedSection, resolved: Resolved) -> dict[str, Path]:
    """Every served model's folder: the user's, or made once with random weights."""
    folders = {}
    for model in resolved.sizing.models:
        given = section.model_dirs.get(model)  # type: ignore[call-overload]
        if given:
            folders[model] = Path(given)
            if not (folders[model] / "model_index.json").is_file():
                raise FileNotFoundError(
                    f"testbed.model_dirs.{model}: {given} is not a diffusers model folder "
                    "(no model_index.json)"
                )
        else:
            # built on the CPU whatever the device: the CPU generator gives the same
            # weights on every machine of a cluster (and every member of a gang)
            folders[model] = prepare_model_folder(
                resolved.model_root,
                model,
                resolved.model_size,
                seed=section.workload.seed,
                scheduler=section.noise_scheduler,
                dtype=resolved.dtype,
            )
    return folders


def cpu_cores(section: TestbedSection, resolved: Resolved) -> list[tuple[int, ...]] | None:
    """One core per worker (``threads`` cores each) on a local CPU testbed that has
    enough cores; None otherwise (the OS schedules the workers)."""
    if resolved.device != "cpu" or section.address or not hasattr(os, "sched_getaffinity"):
        return None
    available = sorted(os.sched_getaffinity(0))
    if section.workers * section.threads > len(available):
        return None
    return [
        tuple(available[i * section.threads : (i + 1) * section.threads])
        for i in range(section.workers)
    ]


def profile_hardware(
    section: TestbedSection, resolved: Resolved, folders: dict[str, Path]
) -> pd.DataFrame:
    """Step 2 of the module docstring: the profile of the workers' hardware (on a CPU
    testbed whose workers get a core each, on one such core, as a worker runs)."""
    from eat.profiling.profiler import ProfileRun, run_profile

    guided = section.guidance_scale > 1.0
    run = ProfileRun(
        device=resolved.device,
        model_size=resolved.model_size,
        dtype=resolved.dtype,
        models=tuple(resolved.sizing.models),
        resolutions={m: tuple(mix.resolutions) for m, mix in resolved.sizing.models.items()},
        patches=tuple(section.gang_sizes),
        batches=(2,) if guided else (1,),
        step_modes=("eager",),
        warmup=section.profile.warmup,
        repeats=section.profile.repeats,
        cold_start_trials=section.profile.cold_start_trials,
        threads=section.threads,
        seed=section.workload.seed,
        model_dirs={m: str(folder) for m, folder in folders.items()},
    )
    cores = cpu_cores(section, resolved)
    if not cores:
        return run_profile(run).frame
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cores[-1]))
    try:
        return run_profile(run).frame
    finally:
        os.sched_setaffinity(0, previous)


def write_catalogue(path: Path, device_name: str, memory_gb: float) -> Path:
    """A one-row GPU catalogue for the testbed's device type. Its datasheet numbers are
    unused: the type is measured (its own profile) and the anchor; nothing is derived."""
    row = {
        "gpu": TESTBED_GPU,
        "name": device_name,
        "device_pattern": "^$",
        "architecture": "testbed",
        "segment": "edge",
        "memory_gb": memory_gb,
        "fp16_tflops": 1.0,
        "memory_bandwidth_gbs": 1.0,
        "boost_clock_mhz": 1.0,
        "sm_count": 1,
        "tdp_w": 1,
        "source": "eat testbed worker device, measured by the testbed stage; datasheet "
        "columns unused (the only, measured, anchor type)",
    }
    pd.DataFrame([row]).to_csv(path, index=False)
    return path


def testbed_preset(
    params: Params,
    resolved: Resolved,
    profile_csv: Path,
    catalogue_csv: Path,
    architecture_csv: Path,
    model_bytes: dict[str, int],
    exchange: dict[str, float],
) -> PresetConfig:
    """Step 4 of the module docstring: the simulator of this testbed."""
    section = params.testbed
    edge = params.env.edge.model_dump()
    latent_channels = 4
    largest = max(section.gang_sizes)
    # star exchange of one step, per member (n - 1)/n of the image's latent pixels:
    # the leader sends the fp32 latent to n - 1 members and receives their bands.
    bytes_per_px = latent_channels * 4 * (largest + 1) if largest > 1 else 0.0
    workload = dict(edge["workload"])
    workload.update(
        process=section.workload.process,
        trace_path=section.workload.trace_path,
        initial_tasks=0,
        total_tasks=section.workload.total_tasks,
        models={m: mix.model_dump() for m, mix in resolved.sizing.models.items()},
        gang_sizes=[],
    )
    workload["deadline"] = dict(workload["deadline"], reference_gpu=TESTBED_GPU)
    data = dict(edge)
    data.update(
        gpu_types={
            TESTBED_GPU: {"memory_gb": resolved.sizing.memory_budget_mb / 1e3, "speed": None}
        },
        servers=[{"gpu": TESTBED_GPU, "count": section.workers}],
        models={
            m: {"memory_gb": model_bytes[m] / 1e9, "profile_model": m}
            for m in resolved.sizing.models
        },
        allowed_gang_sizes=list(section.gang_sizes),
        min_steps=section.min_steps,
        max_steps=section.max_steps,
        latency_noise_cv=0.0,
        workload=workload,
        profile_latency=dict(
            edge["profile_latency"],
            catalogue=str(catalogue_csv),
            measured={TESTBED_GPU: [str(profile_csv)]},
            anchor=TESTBED_GPU,
            stage_decision=None,
            step_mode="eager",
            architecture=str(architecture_csv),
            batch=2 if section.guidance_scale > 1.0 else 1,
            load_bandwidth_gbps=1e3,  # the measured page-cache load is the cold start
            cold_start_overhead_s=0.0,
        ),
        network=dict(
            edge["network"],
            bandwidth_gbps=max(exchange["bandwidth_gbps"], 1e-3),
            latency_s=exchange["latency_s"],
            activation_bytes_per_latent_pixel=bytes_per_px,
            overlap="sequential",
            client_bandwidth_gbps=1e3,  # loopback client
        ),
    )
    return PresetConfig.model_validate(data)


def make_testbed_scheduler(name: str, params: Params, models_dir: Path | None) -> Scheduler:
    """A heuristic by name, or a trained agent from the train stage's models."""
    if name in get_args(AgentName):
        from eat.agents.rl.agent import load_scheduler
        from eat.eval.trained import model_dir

        if models_dir is None:
            raise ValueError(f"scheduler {name!r} is a trained agent: give models_dir")
        directory = model_dir(
            models_dir, params.testbed.learned_preset, name, params.seeds.train[0]
        )
        if not directory.is_dir():
            raise FileNotFoundError(
                f"trained agent {name!r} not found at {directory}; run the train stage first"
            )
        return load_scheduler(directory, name=name)
    from eat.agents import make_scheduler

    return make_scheduler(name, params.schedulers)


def workload(preset: PresetConfig, section: TestbedSection) -> tuple[list, list[str]]:
    """The tasks (the simulator's generators, the workload seed) and their prompts."""
    sim = Simulator(preset)
    workload_rng, _ = episode_rngs(section.workload.seed)
    tasks = make_tasks(sim, section.workload.rate, workload_rng)
    prompts = section.workload.prompts
    return tasks, [prompts[task.task_id % len(prompts)] for task in tasks]


def run_async(coroutine: Any) -> Any:
    """``asyncio.run`` that also works where an event loop already runs in this thread
    (a Jupyter kernel: the papermill stage): then on a fresh loop in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="eat-testbed") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def controller_settings(section: TestbedSection, return_images: bool = True) -> ControllerSettings:
    return ControllerSettings(
        guidance_scale=section.guidance_scale,
        max_attempts=section.max_attempts,
        restart_timeout_s=section.restart_timeout_s,
        expected_restart_s=section.expected_restart_s,
        hang_factor=section.hang_factor,
        hang_min_s=section.hang_min_s,
        ping_timeout_s=section.ping_timeout_s,
        return_images=return_images,
    )


async def replay(
    preset: PresetConfig,
    workers: list[Any],
    scheduler: Scheduler,
    section: TestbedSection,
    tasks: list,
    prompts: list[str],
) -> tuple[Controller, list]:
    """Run the workload on the testbed; the controller (records) and the results."""
    controller = Controller(
        preset,
        workers,
        scheduler,
        controller_settings(section),
        rng=scheduler_rng(scheduler.name, section.workload.seed),
    )
    results = await controller.run_tasks(tasks, prompts, section.workload.seed)
    await controller.close()
    return controller, results


# ---------------------------------------------------------------------------------------
# Comparison and figures
# ---------------------------------------------------------------------------------------


def compare(real: pd.DataFrame, simulated: pd.DataFrame) -> pd.DataFrame:
    """Per task: the real record beside the simulated one (same task id)."""
    columns = ["task_id", "latency", "waiting", "service", "steps", "gang_size", "cold_starts"]
    merged = real.merge(
        simulated[columns], on="task_id", suffixes=("", "_sim"), validate="one_to_one"
    )
    merged["latency_ratio"] = merged["latency"] / merged["latency_sim"]
    merged["service_prediction_ratio"] = merged["service"] / merged["predicted_service"]
    return merged


def summarise(comparison: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, frame in comparison.groupby("scheduler", sort=False):
        same = frame["steps"].eq(frame["steps_sim"]) & frame["gang_size"].eq(frame["gang_size_sim"])
        rows.append(
            {
                "scheduler": name,
                "tasks": len(frame),
                "real_latency_mean": frame["latency"].mean(),
                "sim_latency_mean": frame["latency_sim"].mean(),
                "latency_gap_ratio": frame["latency"].mean() / frame["latency_sim"].mean(),
                "latency_abs_pct_error": 100 * (frame["latency_ratio"] - 1).abs().mean(),
                "real_service_mean": frame["service"].mean(),
                "sim_service_mean": frame["service_sim"].mean(),
                "real_waiting_mean": frame["waiting"].mean(),
                "sim_waiting_mean": frame["waiting_sim"].mean(),
                "shadow_service_abs_pct_error": 100
                * (frame["service_prediction_ratio"] - 1).abs().mean(),
                "shadow_service_ratio_median": frame["service_prediction_ratio"].median(),
                "real_cold_start_mean": frame["cold_start_s"].mean(),
                "predicted_cold_start_mean": frame["predicted_cold_start_s"].mean(),
                "real_step_s_median": frame["step_s_median"].median(),
                "predicted_step_s_median": frame["predicted_step_s"].median(),
                "overhead_s_mean": frame["overhead_s"].mean(),
                "same_decision_share": float(same.mean()),
                "real_deadline_attainment": frame["deadline_met"].mean(),
                "real_cold_starts_per_task": frame["cold_starts"].mean(),
                "sim_cold_starts_per_task": frame["cold_starts_sim"].mean(),
                "attempts_mean": frame["attempts"].mean(),
            }
        )
    return pd.DataFrame(rows)


def step_vs_profile(real: pd.DataFrame, profile: pd.DataFrame) -> pd.DataFrame:
    """Testbed per-step time against the profiled per-step time of the same (model,
    resolution, patches) UNet call: the testbed's own overhead (the 1.3x criterion).
    For gangs of 2+, the testbed's band also carries the overlap margin and the step
    includes the exchange; the profile has neither."""
    steps = profile[profile["op"] == "step"]
    profiled = steps.groupby(["model", "resolution", "patches"])["seconds"].median()
    rows = []
    for row in real.itertuples(index=False):
        key = (row.model, int(row.resolution), int(row.gang_size))
        if key in profiled.index:
            rows.append(
                {
                    "scheduler": row.scheduler,
                    "task_id": row.task_id,
                    "model": row.model,
                    "resolution": row.resolution,
                    "patches": row.gang_size,
                    "testbed_step_s": row.step_s_median,
                    "profiled_step_s": float(profiled[key]),
                    "ratio": row.step_s_median / float(profiled[key]),
                }
            )
    return pd.DataFrame(rows)


def latency_scatter(comparison: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, frame in comparison.groupby("scheduler", sort=False):
        ax.scatter(frame["latency_sim"], frame["latency"], label=name, alpha=0.8)
    top = float(max(comparison["latency"].max(), comparison["latency_sim"].max())) * 1.05
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="real = sim")
    ax.set(
        xlabel="simulated latency (s)",
        ylabel="testbed latency (s)",
        title="Per task: testbed vs simulator",
        xlim=(0, top),
        ylim=(0, top),
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def latency_bars(summary: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.arange(len(summary))
    width = 0.38
    ax.bar(x - width / 2, summary["real_latency_mean"], width, label="testbed")
    ax.bar(x + width / 2, summary["sim_latency_mean"], width, label="simulator")
    for i, ratio in enumerate(summary["latency_gap_ratio"]):
        top = max(summary["real_latency_mean"].iloc[i], summary["sim_latency_mean"].iloc[i])
        ax.annotate(f"x{ratio:.2f}", (i, top), ha="center", va="bottom")
    ax.set_xticks(x, summary["scheduler"])
    ax.set(ylabel="mean latency (s)", title="Sim-to-real gap per scheduler")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def breakdown_bars(comparison: pd.DataFrame, path: Path) -> None:
    """Mean real service split into its measured phases, beside the predicted service."""
    parts = comparison.assign(
        compute=comparison["compute_s"],
        setup=comparison["leader_setup_s"],
        decode_png=comparison["decode_s"] + comparison["png_s"],
        dispatch_overhead=comparison["overhead_s"],
    )
    names = list(dict.fromkeys(comparison["scheduler"]))
    means = parts.groupby("scheduler")[
        ["setup", "compute", "decode_png", "dispatch_overhead", "predicted_service"]
    ].mean()
    means = means.loc[names]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(names))
    bottom = np.zeros(len(names))
    for column in ("setup", "compute", "decode_png", "dispatch_overhead"):
        ax.bar(x - 0.2, means[column], 0.38, bottom=bottom, label=f"testbed: {column}")
        bottom += means[column].to_numpy()
    ax.bar(x + 0.2, means["predicted_service"], 0.38, label="shadow prediction", color="grey")
    ax.set_xticks(x, names)
    ax.set(ylabel="mean service time (s)", title="Where the service time goes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def interleave(images: list[tuple[str, bytes]], count: int) -> list[tuple[str, bytes]]:
    """Up to ``count`` images taken in turn from each scheduler (titles start with it)."""
    by_scheduler: dict[str, list[tuple[str, bytes]]] = {}
    for image in images:
        by_scheduler.setdefault(image[0].split(" ")[0], []).append(image)
    chosen: list[tuple[str, bytes]] = []
    while len(chosen) < count and any(by_scheduler.values()):
        for queue in by_scheduler.values():
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return chosen


def image_grid(images: list[tuple[str, bytes]], path: Path, columns: int = 4) -> None:
    pil = require("PIL.Image")
    import io

    if not images:
        return
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, png) in zip(axes.flat, images, strict=False):
        ax.imshow(pil.open(io.BytesIO(png)))
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------


@dataclass
class Testbed:
    """A running testbed: its workers and the simulator preset of its hardware."""

    params: Params
    resolved: Resolved
    folders: dict[str, Path]
    model_bytes: dict[str, int]
    profile: pd.DataFrame
    preset: PresetConfig
    workers: list[Any]
    exchange: dict[str, float]
    device_name: str
    cluster: str
    started_ray: bool
    timings: dict[str, float]

    def close(self) -> None:
        """Shut Ray down if this testbed started it."""
        if self.started_ray:
            from eat.testbed import cluster

            cluster.shutdown()


def build_testbed(params: Params, work_dir: Path) -> Testbed:
    """Steps 1-4 of the module docstring; writes the profile, catalogue and architecture
    tables into ``work_dir``."""
    from eat.profiling.architectures import architecture_table
    from eat.testbed import cluster
    from eat.testbed.worker import ModelSource, WorkerConfig

    section = params.testbed
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    # 1. models
    mark = time.perf_counter()
    resolved = resolve(section)
    folders = model_folders(section, resolved)
    model_bytes = {m: folder_bytes(folder) for m, folder in folders.items()}
    budget = int(resolved.sizing.memory_budget_mb * 1e6)
    too_big = {m: b for m, b in model_bytes.items() if b > budget}
    if too_big:
        raise ValueError(
            f"models {too_big} (bytes) exceed the worker memory budget {budget} bytes "
            f"(testbed.{resolved.model_size}.memory_budget_mb)"
        )
    timings["models_s"] = time.perf_counter() - mark
    # 2. the profile of the same hardware (before any worker competes for the cores)
    mark = time.perf_counter()
    profile = profile_hardware(section, resolved, folders)
    profile_csv = work_dir / "profile.csv"
    profile.to_csv(profile_csv, index=False)
    architecture_csv = work_dir / "architecture.csv"
    architecture_table(resolved.model_size, tuple(resolved.sizing.models)).to_csv(
        architecture_csv, index=False
    )
    device_name = str(profile["device"].dropna().iloc[0]) if "device" in profile else "cpu"
    catalogue_csv = write_catalogue(
        work_dir / "catalogue.csv", device_name, resolved.sizing.memory_budget_mb / 1e3
    )
    timings["profile_s"] = time.perf_counter() - mark
    # 3. the cluster
    mark = time.perf_counter()
    cores = cpu_cores(section, resolved)
    started_ray = not require("ray").is_initialized()
    info = cluster.start_ray(
        section.address, section.workers, resolved.device, object_store_mb=section.object_store_mb
    )
    try:
        sources = {
            m: ModelSource(
                str(folders[m]) if section.model_dirs.get(m) else None,  # type: ignore[call-overload]
                resolved.model_size,
                section.workload.seed,
                str(resolved.model_root),
            )
            for m in folders
        }
        configs = [
            WorkerConfig(
                server_id=i,
                device=resolved.device,
                dtype=resolved.dtype,
                threads=section.threads,
                memory_budget_bytes=budget,
                models=sources,
                model_bytes=model_bytes,
                scheduler=section.noise_scheduler,
                margin=section.margin_rows,
                cpu_affinity=cores[i] if cores else None,
            )
            for i in range(section.workers)
        ]
        workers = cluster.create_workers(configs, max_restarts=section.max_restarts)
        exchange = cluster.measure_exchange(workers)
        timings["cluster_s"] = time.perf_counter() - mark
        # 4. the simulator of this testbed
        preset = testbed_preset(
            params, resolved, profile_csv, catalogue_csv, architecture_csv, model_bytes, exchange
        )
    except BaseException:
        if started_ray:
            cluster.shutdown()
        raise
    return Testbed(
        params,
        resolved,
        folders,
        model_bytes,
        profile,
        preset,
        workers,
        exchange,
        device_name,
        info["address"],
        started_ray,
        timings,
    )


def run_stage(params: Params, out_dir: Path, *, models_dir: Path | None = None) -> dict[str, Any]:
    """Everything of the module docstring; writes ``out_dir`` and returns the metrics."""
    from eat.testbed import cluster

    section = params.testbed
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    # the schedulers first: a missing trained agent stops the stage before any work
    for name in section.schedulers:
        make_testbed_scheduler(name, params, models_dir)
    bed = build_testbed(params, out_dir)
    timings = bed.timings
    preset, workers, resolved, profile = bed.preset, bed.workers, bed.resolved, bed.profile
    try:
        tasks, prompts = workload(preset, section)
        # 5. every scheduler on the testbed and in the simulator
        real_frames, sim_frames, failures, segments, images = [], [], [], [], []
        for name in section.schedulers:
            mark = time.perf_counter()
            cluster.reset_caches(workers)
            scheduler = make_testbed_scheduler(name, params, models_dir)
            controller, results = run_async(
                replay(preset, workers, scheduler, section, tasks, prompts)
            )
            real = controller.records_frame().assign(scheduler=name)
            real_frames.append(real)
            segments.append(controller.segments_frame().assign(scheduler=name))
            failures.append(controller.failures_frame().assign(scheduler=name))
            for result in results:
                if result.png is not None:
                    image_path = out_dir / "images" / f"{name}_task{result.task_id:03d}.png"
                    image_path.write_bytes(result.png)
                    record = result.record
                    images.append(
                        (
                            f"{name} #{result.task_id} {record['model']} "
                            f"{record['resolution']}px {record['steps']} steps",
                            result.png,
                        )
                    )
            simulated = run_episode(
                preset,
                make_testbed_scheduler(name, params, models_dir),
                section.workload.rate,
                section.workload.seed,
            )
            sim_frames.append(simulated.tasks.assign(scheduler=name))
            timings[f"run_{name}_s"] = time.perf_counter() - mark
            log.info("testbed %s: %d tasks in %.1f s", name, len(real), timings[f"run_{name}_s"])
        # 6. load test on loopback
        load_report = None
        if section.load_test.requests:
            mark = time.perf_counter()
            load_report = run_load_test_stage(params, preset, workers, resolved)
            timings["load_test_s"] = time.perf_counter() - mark
    finally:
        bed.close()
    real_all = pd.concat(real_frames, ignore_index=True)
    sim_all = pd.concat(sim_frames, ignore_index=True)
    comparison = pd.concat(
        [
            compare(real_all[real_all.scheduler == n], sim_all[sim_all.scheduler == n])
            for n in section.schedulers
        ],
        ignore_index=True,
    )
    summary = summarise(comparison)
    steps = step_vs_profile(real_all, profile)
    real_all.to_csv(out_dir / "testbed_tasks.csv", index=False)
    sim_all.to_csv(out_dir / "sim_tasks.csv", index=False)
    comparison.to_csv(out_dir / "comparison.csv", index=False)
    summary.to_csv(out_dir / "summary.csv", index=False)
    steps.to_csv(out_dir / "step_vs_profile.csv", index=False)
    pd.concat(segments, ignore_index=True).to_csv(out_dir / "testbed_segments.csv", index=False)
    pd.concat(failures, ignore_index=True).to_csv(out_dir / "failures.csv", index=False)
    summary[["scheduler", "real_latency_mean", "sim_latency_mean"]].to_csv(
        out_dir / "latency_by_scheduler.csv", index=False
    )
    latency_scatter(comparison, out_dir / "real_vs_sim_latency.png")
    latency_bars(summary, out_dir / "latency_by_scheduler.png")
    breakdown_bars(comparison, out_dir / "service_breakdown.png")
    image_grid(interleave(images, section.grid_images), out_dir / "images_grid.png")
    timings["total_s"] = time.perf_counter() - began
    metrics: dict[str, Any] = {
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
            for row in summary.to_dict("records")
        },
        "step_vs_profile": {
            f"patches_{p}": {
                "ratio_median": _json_number(frame["ratio"].median()),
                "ratio_max": _json_number(frame["ratio"].max()),
                "tasks": len(frame),
            }
            for p, frame in (steps.groupby("patches") if not steps.empty else [])
        },
        "failures": int(sum(len(f) for f in failures)),
        "timings_s": timings,
    }
    if load_report is not None:
        metrics["load_test"] = {
            k: _json_number(v) if isinstance(v, float) else v
            for k, v in load_report.summary().items()
        }
    return metrics


def serve(
    params: Params,
    work_dir: Path,
    *,
    scheduler: str,
    host: str,
    port: int,
    models_dir: Path | None = None,
) -> None:
    """Run the HTTP service until interrupted (``eat testbed-serve``)."""
    from eat.testbed.service import serve_in_thread

    chosen = make_testbed_scheduler(scheduler, params, models_dir)
    bed = build_testbed(params, work_dir)
    try:
        server = serve_in_thread(
            lambda: Controller(
                bed.preset, bed.workers, chosen, controller_settings(params.testbed)
            ),
            host=host,
            port=port,
        )
        print(f"eat testbed: {len(bed.workers)} workers; serving on {server.url} (Ctrl-C stops)")
        try:
            while server.thread.is_alive():
                server.thread.join(1.0)
        except KeyboardInterrupt:
            server.stop()
    finally:
        bed.close()


def run_load_test_stage(
    params: Params, preset: PresetConfig, workers: list[Any], resolved: Resolved
) -> Any:
    """A bounded burst of HTTP requests against a real uvicorn server on loopback."""
    from eat.testbed import cluster
    from eat.testbed.loadtest import run_load_test
    from eat.testbed.service import serve_in_thread

    section = params.testbed
    spec = section.load_test
    cluster.reset_caches(workers)
    scheduler = make_testbed_scheduler(spec.scheduler, params, None)

    def factory() -> Controller:
        return Controller(preset, workers, scheduler, controller_settings(section))

    server = serve_in_thread(factory)
    try:
        resolution = min(resolved.sizing.models[spec.model].resolutions)
        bodies = [
            {
                "prompt": section.workload.prompts[i % len(section.workload.prompts)],
                "model": spec.model,
                "resolution": resolution,
                "deadline_s": spec.deadline_s,
                "seed": i,
            }
            for i in range(spec.requests)
        ]
        report = run_async(
            run_load_test(
                server.url, bodies, concurrency=spec.concurrency, timeout_s=spec.timeout_s
            )
        )
    finally:
        server.stop()
    return report


def _json_number(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def write_metrics(metrics: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n")

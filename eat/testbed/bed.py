"""A running testbed: model folders, the profile of the same hardware, Ray and its edge
workers, and the simulator preset of that hardware (steps 1-4 of
:mod:`eat.stages.testbed`); the replay of a workload on it, and the HTTP service."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pandas as pd

from eat.devices import (
    Device,
    DType,
    ModelSize,
    cuda_available,
    resolve_device,
    resolve_dtype,
    resolve_model_size,
)
from eat.evaluation.runner import scheduler_rng
from eat.params import AgentName, Params, PresetConfig, TestbedSection, TestbedSizing
from eat.schedulers.base import Scheduler
from eat.sim.simulator import Simulator, episode_rngs, make_tasks
from eat.stages.paths import model_dir
from eat.testbed import require
from eat.testbed.controller import Controller, ControllerSettings
from eat.testbed.models import prepare_model_folder, weight_file_bytes
from eat.testbed.preset import testbed_preset, write_catalogue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resolved:
    """The ``auto`` choices of ``params.testbed`` made concrete."""

    device: Device
    model_size: ModelSize
    dtype: DType
    sizing: TestbedSizing
    model_root: Path


def cluster_has_gpus() -> bool:
    """A connected Ray cluster offers GPUs (an edge machine has them, not this one)."""
    ray = require("ray")
    return bool(ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0)


def resolve(section: TestbedSection) -> Resolved:
    """``auto`` device (CUDA when torch here or the Ray cluster sees a GPU), dtype, size."""
    device = resolve_device(section.device, has_cuda=cuda_available() or cluster_has_gpus())
    size = resolve_model_size(section.model_size, device)
    dtype = resolve_dtype(section.dtype, device)
    root = Path(section.model_root or Path.home() / ".cache" / "eat" / "testbed-models")
    return Resolved(device, size, dtype, getattr(section, size), root.expanduser().resolve())


def model_folders(section: TestbedSection, resolved: Resolved) -> dict[str, Path]:
    """Every served model's folder: the user's, or made once with random weights."""
    folders = {}
    for model in resolved.sizing.models:
        given = dict(section.model_dirs).get(model)
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


def make_testbed_scheduler(name: str, params: Params, models_dir: Path | None) -> Scheduler:
    """A heuristic by name, or a trained agent from the train stage's models."""
    if name in get_args(AgentName):
        from eat.schedulers.rl.agent import load_scheduler

        if models_dir is None:
            raise ValueError(f"scheduler {name!r} is a trained agent: give models_dir")
        directory = model_dir(
            models_dir, params.testbed.learned_preset, name, params.seeds.train[0]
        )
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(
                f"no trained {name!r} on preset {params.testbed.learned_preset!r} with "
                f"training seed {params.seeds.train[0]} at {directory}; run the train stage "
                "(dvc repro train) first"
            )
        return load_scheduler(directory, name=name)
    from eat.schedulers import make_scheduler

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
    from eat.architectures import architecture_table
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
    model_bytes = {m: weight_file_bytes(folder) for m, folder in folders.items()}
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
                str(folders[m]) if dict(section.model_dirs).get(m) else None,
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
            params,
            resolved.sizing,
            profile_csv,
            catalogue_csv,
            architecture_csv,
            model_bytes,
            exchange,
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
                bed.preset,
                bed.workers,
                chosen,
                controller_settings(params.testbed),
                rng=scheduler_rng(chosen.name, params.testbed.workload.seed),
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
        return Controller(
            preset,
            workers,
            scheduler,
            controller_settings(section),
            rng=scheduler_rng(scheduler.name, section.workload.seed),
        )

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

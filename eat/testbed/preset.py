"""The simulator of a testbed: an ``edge`` preset with the testbed's servers, models,
measured profile and exchange (step 4 of :mod:`eat.stages.testbed`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from eat.params import Params, PresetConfig, TestbedSizing

#: The GPU-type id of the testbed's device in its simulator preset.
TESTBED_GPU = "testbed"


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
    sizing: TestbedSizing,
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
        models={m: mix.model_dump() for m, mix in sizing.models.items()},
        gang_sizes=[],
    )
    workload["deadline"] = dict(workload["deadline"], reference_gpu=TESTBED_GPU)
    data = dict(edge)
    data.update(
        gpu_types={TESTBED_GPU: {"memory_gb": sizing.memory_budget_mb / 1e3, "speed": None}},
        servers=[{"gpu": TESTBED_GPU, "count": section.workers}],
        models={m: {"memory_gb": model_bytes[m] / 1e9, "profile_model": m} for m in sizing.models},
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

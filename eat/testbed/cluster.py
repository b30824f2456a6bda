"""Start Ray (embedded, loopback only) or join a cluster, and create the edge workers.

**Local** (``address`` None): an embedded Ray on this machine that listens on
127.0.0.1 only (:mod:`eat.distributed`), no dashboard, with one logical ``eat_edge``
resource per worker.

**Cluster**: the head runs ``ray start --head``; each edge machine joins with
``ray start --address=<head>:6379 --resources='{"eat_edge": 1}' --num-gpus=1`` (one
``eat_edge`` per GPU it offers) and the driver connects with ``address``. Every worker
asks for one ``eat_edge`` (and one GPU on CUDA), so Ray places one worker per edge
slot; model folders are made on each machine from the same recipe (deterministic
seeded weights) or must exist there at the same path (real weights).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from eat import distributed
from eat.testbed import require
from eat.testbed.worker import WorkerConfig, edge_worker_class

log = logging.getLogger(__name__)

EDGE_RESOURCE = "eat_edge"
NAMESPACE = "eat-testbed"


def start_ray(
    address: str | None,
    workers: int,
    device: Literal["cpu", "cuda"],
    *,
    object_store_mb: int = 256,
    log_to_driver: bool = False,
    temp_dir: Path | None = None,
) -> dict[str, Any]:
    """Connect to Ray (:func:`eat.distributed.start_ray`: loopback only, or the cluster
    at ``address``) with one ``eat_edge`` slot per worker; a running connection is
    reused. ``temp_dir``: the embedded Ray's temporary folder (None: Ray's default)."""
    gpus = 0
    if not address and device == "cuda":
        gpus = require("torch").cuda.device_count()
        if gpus < workers:
            raise RuntimeError(
                f"{workers} CUDA workers need {workers} GPUs; this machine has {gpus}"
            )
    distributed.start_ray(
        address,
        num_cpus=workers + 1,
        num_gpus=gpus,
        resources={EDGE_RESOURCE: workers},
        object_store_mb=object_store_mb,
        namespace=NAMESPACE,
        log_to_driver=log_to_driver,
        temp_dir=temp_dir,
    )
    ray = require("ray")
    resources = ray.cluster_resources()
    if resources.get(EDGE_RESOURCE, 0) < workers:
        raise RuntimeError(
            f"the Ray cluster offers {resources.get(EDGE_RESOURCE, 0)} {EDGE_RESOURCE} slots; "
            f"{workers} workers need as many (ray start ... --resources='{{\"{EDGE_RESOURCE}\": 1}}')"
        )
    return {"address": address or "local", "resources": dict(resources)}


def create_workers(
    configs: list[WorkerConfig], *, max_restarts: int, ready_timeout_s: float = 600.0
) -> list[Any]:
    """One :class:`~eat.testbed.worker.EdgeWorker` per config, ready (answered a ping).

    ``max_restarts`` is explicit (a killed worker comes back with an empty cache) and
    ``max_task_retries=0`` (the controller, not Ray, re-runs a failed task)."""
    ray = require("ray")
    cls = edge_worker_class()
    handles = []
    for config in configs:
        handles.append(
            cls.options(
                num_cpus=1,
                num_gpus=1 if config.device == "cuda" else 0,
                resources={EDGE_RESOURCE: 1},
                max_restarts=max_restarts,
                max_task_retries=0,
            ).remote(config)
        )
    ray.get([handle.ping.remote() for handle in handles], timeout=ready_timeout_s)
    return handles


def reset_caches(workers: list[Any]) -> None:
    """Empty every worker's model cache (every run starts cold, like a new episode)."""
    ray = require("ray")
    ray.get([worker.reset_cache.remote() for worker in workers])


def measure_exchange(
    workers: list[Any], sizes: tuple[int, ...] = (4096, 65536, 1048576), repeats: int = 20
) -> dict[str, float]:
    """Round trip of a payload from one worker to another through Ray (what a gang step
    does): a least-squares fit ``seconds = latency + bytes / bandwidth``."""
    ray = require("ray")
    if len(workers) < 2:
        return {"latency_s": 0.0, "bandwidth_gbps": 1.0, "points": 0}
    xs, ys = [], []
    for size in sizes:
        seconds = ray.get(workers[0].probe_exchange.remote(workers[1], size, repeats))
        xs.append(float(size))
        ys.append(float(np.median(seconds)))
    slope, intercept = np.polyfit(np.asarray(xs), np.asarray(ys), 1)
    slope = max(float(slope), 1e-12)
    return {
        "latency_s": max(float(intercept), 0.0),
        "bandwidth_gbps": 1.0 / slope / 1e9,
        "points": len(xs),
        **{f"rtt_s_{size}": y for size, y in zip(sizes, ys, strict=True)},
    }


def shutdown() -> None:
    ray = require("ray")
    if ray.is_initialized():
        ray.shutdown()


def wait_alive(worker: Any, timeout_s: float) -> dict[str, Any]:
    """Block until ``worker`` answers a ping (e.g. after a restart)."""
    ray = require("ray")
    deadline = time.monotonic() + timeout_s
    return ray.get(worker.ping.remote(), timeout=max(0.0, deadline - time.monotonic()))

"""Start Ray (embedded, loopback only) or join a cluster, and create the edge workers.

**Local** (``address`` None): an embedded Ray on this machine that listens on
127.0.0.1 only, no dashboard, with one logical ``eat_edge`` resource per worker.

**Cluster**: the head runs ``ray start --head``; each edge machine joins with
``ray start --address=<head>:6379 --resources='{"eat_edge": 1}' --num-gpus=1`` (one
``eat_edge`` per GPU it offers) and the driver connects with ``address``. Every worker
asks for one ``eat_edge`` (and one GPU on CUDA), so Ray places one worker per edge
slot; model folders are made on each machine from the same recipe (deterministic
seeded weights) or must exist there at the same path (real weights).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from eat.testbed import require
from eat.testbed.worker import WorkerConfig, edge_worker_class

log = logging.getLogger(__name__)

EDGE_RESOURCE = "eat_edge"
NAMESPACE = "eat-testbed"
LOOPBACK = "127.0.0.1"
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _loopback_only() -> None:
    """Make an embedded Ray listen on 127.0.0.1 only.

    With ``_node_ip_address="127.0.0.1"`` alone, Ray 2.60 on Linux still derives the node
    address from the outgoing interface and binds its gRPC servers (GCS, raylet, workers)
    on every interface. Ray's single-machine mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
    read when ray is imported; inherited by every Ray process) makes the node address
    the loopback one, and Ray then binds every server to it (checked after start-up)."""
    os.environ[LOCAL_ONLY_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        # ray was imported before us: the flag it read at import is a module constant
        # that get_node_ip_address() looks up at call time.
        constants.ENABLE_RAY_CLUSTER = False


def resolve_device(device: Literal["auto", "cpu", "cuda"]) -> Literal["cpu", "cuda"]:
    """``auto``: CUDA when torch sees a GPU here (or the cluster offers GPUs), else CPU."""
    if device in ("cpu", "cuda"):
        return device
    if device != "auto":
        raise ValueError(f"device {device!r} is not supported; choose one of auto, cpu, cuda")
    torch = require("torch")
    if torch.cuda.is_available():
        return "cuda"
    ray = require("ray")
    if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0:
        return "cuda"
    return "cpu"


def start_ray(
    address: str | None,
    workers: int,
    device: Literal["cpu", "cuda"],
    *,
    object_store_mb: int = 256,
    log_to_driver: bool = False,
    temp_dir: Path | None = None,
) -> dict[str, Any]:
    """Connect to Ray (see the module docstring); a running connection is reused.
    ``temp_dir``: the embedded Ray's temporary folder (None: Ray's default)."""
    if not address and "ray" not in sys.modules:
        _loopback_only()  # before ray is imported (see _loopback_only)
    ray = require("ray")
    if not ray.is_initialized():
        if address:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=log_to_driver)
        else:
            _loopback_only()
            gpus = 0
            if device == "cuda":
                gpus = require("torch").cuda.device_count()
                if gpus < workers:
                    raise RuntimeError(
                        f"{workers} CUDA workers need {workers} GPUs; this machine has {gpus}"
                    )
            ray.init(
                num_cpus=workers + 1,
                num_gpus=gpus,
                resources={EDGE_RESOURCE: workers},
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                object_store_memory=object_store_mb * 2**20,
                namespace=NAMESPACE,
                log_to_driver=log_to_driver,
                **({"_temp_dir": str(temp_dir)} if temp_dir is not None else {}),
            )
    if not address:
        nodes = {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
        if nodes != {LOOPBACK}:
            raise RuntimeError(
                f"the local Ray advertises {sorted(nodes)}, not only {LOOPBACK} (a Ray started "
                "elsewhere in this process?); shut it down, or set "
                f"{LOCAL_ONLY_ENV}=0 in the environment before starting Python"
            )
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

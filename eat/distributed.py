"""Ray, started one way for the whole package: a local instance on loopback only, or an
existing cluster by address.

**Local** (``address`` None): an embedded Ray on this machine whose every process
listens on 127.0.0.1 only, without the dashboard. With ``_node_ip_address="127.0.0.1"``
alone, Ray 2.60 on Linux still derives the node address from the outgoing interface and
binds its gRPC servers (GCS, raylet, workers) on every interface; Ray's single-machine
mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ray is imported and inherited by
every Ray process) makes the node address the loopback one, and Ray then binds every
server to it. :func:`start_ray` checks that after start-up.

**Cluster**: ``ray start --head`` on the head, ``ray start --address=<head>:6379`` on
every other machine, and ``address`` names the head.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

LOOPBACK = "127.0.0.1"
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray() -> ModuleType:
    """``import ray``, with an error that says how to install it."""
    try:
        import ray
    except ImportError as error:  # pragma: no cover - ray is a pinned dependency
        raise ImportError(
            "this needs Ray: pip install 'ray==2.60.0' (pinned in pyproject.toml)"
        ) from error
    return ray


def loopback_only() -> None:
    """Select Ray's single-machine mode (module docstring); call before ray is imported,
    or it patches the constant an earlier import read."""
    os.environ[LOCAL_ONLY_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        # ray was imported before us: the flag it read at import is a module constant
        # that get_node_ip_address() looks up at call time.
        constants.ENABLE_RAY_CLUSTER = False


def start_ray(
    address: str | None,
    *,
    num_cpus: int | None = None,
    num_gpus: int = 0,
    resources: dict[str, float] | None = None,
    object_store_mb: int | None = None,
    namespace: str | None = None,
    log_to_driver: bool = False,
) -> bool:
    """Connect to Ray: a local loopback-only instance (``address`` None) or the cluster
    at ``address``. Returns True when this call started (and should shut down) Ray; a
    running connection is reused."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        loopback_only()
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        if address is not None:
            ray.init(address=address, namespace=namespace, log_to_driver=log_to_driver)
        else:
            loopback_only()
            options: dict[str, Any] = {}
            if object_store_mb is not None:
                options["object_store_memory"] = object_store_mb * 2**20
            ray.init(
                num_cpus=num_cpus or os.cpu_count(),
                num_gpus=num_gpus,
                resources=resources,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                namespace=namespace,
                log_to_driver=log_to_driver,
                **options,
            )
        started = True
    if address is None:
        nodes = {node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}
        if nodes != {LOOPBACK}:
            if started:
                ray.shutdown()
            raise RuntimeError(
                f"the local Ray advertises {sorted(nodes)}, not only {LOOPBACK} (a Ray started "
                "elsewhere in this process?); shut it down, or set "
                f"{LOCAL_ONLY_ENV}=0 in the environment before starting Python"
            )
    return started


@contextmanager
def ray_session(
    enabled: bool, address: str | None, *, num_cpus: int | None = None
) -> Iterator[None]:
    """Ray for the duration of a block (when ``enabled``): started once, so that the
    sweeps inside reuse its workers, and shut down after the block if this started it."""
    started = start_ray(address, num_cpus=num_cpus) if enabled else False
    try:
        yield
    finally:
        if started:
            import_ray().shutdown()

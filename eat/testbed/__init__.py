"""The real AIGC serving testbed: edge servers running diffusion patches under a scheduler.

Each edge server is a long-lived Ray actor (:class:`eat.testbed.worker.EdgeWorker`)
with its own device and a model cache; a controller (:mod:`eat.testbed.controller`)
mirrors the live cluster in a *shadow* :class:`~eat.sim.simulator.Simulator` so that
every scheduler of :mod:`eat.schedulers` (heuristic or learned) drives it unchanged; an
HTTP service (:mod:`eat.testbed.service`) takes requests from clients; the pipeline
stage (:mod:`eat.stages.testbed`) compares real latencies with the simulator's.

Modules:

==============  ===================================================================
``models``      model folders on disk (real weights, or random weights saved once),
                the locally built CLIP tokenizer, loading (cold start), LRU cache
``engine``      the diffusion math: prompt encoding, row patches with an overlap
                margin, one patch's denoising step, the full reverse loop, decoding
``worker``      the edge-server actor: cache, cold starts, gang leader and member
``cluster``     start an embedded Ray (loopback only) or join a cluster; the workers
``controller``  arrivals, shadow simulator, scheduler decisions, dispatch, faults,
                records in the simulator's schema
``jobs``        the durable job store (SQLite, WAL mode)
``jobrunner``   jobs between the store and the controller: admission, results,
                recovery after a restart
``admission``   the queue bound and the shadow simulator's forecast of a new job
``auth``        API keys (hashed), the loopback rule, a per-key rate limit
``metrics``     Prometheus metrics of the service
``lifecycle``   the service's process instance: its Ray processes, found and reaped
``service``     FastAPI app (the HTTP layer) and a uvicorn server in a thread
``loadtest``    a bounded burst of HTTP requests and its latency percentiles
``stage``       the ``testbed`` DVC stage: testbed vs simulator on one workload
==============  ===================================================================

Heavy dependencies (ray, diffusers, fastapi, uvicorn, httpx, prometheus-client) are
imported lazily, so ``import eat.testbed`` stays cheap; :func:`require` turns a missing
one into an error that says what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: What provides each optional import of the testbed (all are pinned in pyproject.toml).
_PROVIDERS = {
    "ray": "ray",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "httpx": "httpx",
    "PIL": "pillow",
    "prometheus_client": "prometheus-client",
}


class DependencyNotInstalled(ImportError):
    """A dependency of the testbed is missing."""


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`DependencyNotInstalled` naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        package = _PROVIDERS.get(top, top)
        raise DependencyNotInstalled(
            f"the testbed needs {package!r} ({error}); install the package with its pinned "
            f"dependencies: pip install -e . (or pip install {package} at the version pinned "
            "in pyproject.toml)"
        ) from error

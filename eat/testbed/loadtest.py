"""A bounded load test of the HTTP service: a burst of requests on loopback.

At most ``requests`` requests, at most ``concurrency`` in flight, and a wall-clock
budget ``timeout_s`` for the whole burst (each request also times out at that
budget): the loop always stops by itself. It reports throughput, latency percentiles
(client-side, request sent to PNG received) and every error.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from eat.testbed import require


@dataclass
class LoadTestReport:
    requests: int
    completed: int
    errors: int
    error_messages: list[str]
    wall_s: float
    throughput_rps: float
    """Completed requests per second of the burst's wall time."""
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float
    latency_mean_s: float
    server_latency_mean_s: float
    """Mean of the server's own latency (arrival to image ready) from X-EAT-Timing."""
    deadline_attainment: float
    timings: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("timings")
        return data


async def run_load_test(
    url: str,
    bodies: list[dict[str, Any]],
    *,
    concurrency: int,
    timeout_s: float,
) -> LoadTestReport:
    """Send every body of ``bodies`` to ``url``/v1/generate (see the module docstring)."""
    httpx = require("httpx")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise ValueError(f"load tests target loopback only; got {url}")
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    timings: list[dict[str, Any]] = []
    errors: list[str] = []
    began = time.perf_counter()
    deadline = began + timeout_s

    async def one(client: Any, body: dict[str, Any]) -> None:
        async with semaphore:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                errors.append("not sent: load-test time budget exhausted")
                return
            sent = time.perf_counter()
            try:
                response = await client.post(f"{url}/v1/generate", json=body, timeout=remaining)
            except httpx.HTTPError as error:
                errors.append(f"{type(error).__name__}: {error}")
                return
            if response.status_code != 200 or not response.content.startswith(b"\x89PNG"):
                errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            latencies.append(time.perf_counter() - sent)
            timings.append(json.loads(response.headers["X-EAT-Timing"]))

    async with httpx.AsyncClient() as client:
        await asyncio.gather(*(one(client, body) for body in bodies))
    wall = time.perf_counter() - began
    values = np.asarray(latencies) if latencies else np.asarray([np.nan])
    met = [t["deadline_met"] for t in timings]
    return LoadTestReport(
        requests=len(bodies),
        completed=len(latencies),
        errors=len(errors),
        error_messages=errors[:20],
        wall_s=wall,
        throughput_rps=len(latencies) / wall if wall > 0 else 0.0,
        latency_p50_s=float(np.percentile(values, 50)),
        latency_p95_s=float(np.percentile(values, 95)),
        latency_p99_s=float(np.percentile(values, 99)),
        latency_mean_s=float(np.mean(values)),
        server_latency_mean_s=float(np.mean([t["latency"] for t in timings]))
        if timings
        else float("nan"),
        deadline_attainment=float(np.mean(met)) if met else float("nan"),
        timings=timings,
    )

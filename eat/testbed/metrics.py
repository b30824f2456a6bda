"""Prometheus metrics of the HTTP service (``GET /metrics``, prometheus-client).

Every app has its own registry, so that several services in one process (tests) do not
share counters. Gauges are read at scrape time from the live state (the controller's
queue, the job store's rows); counters and histograms are updated as things happen.

=================================  ========================================================
``eat_queue_length``               jobs waiting for a gang (the controller's queue)
``eat_jobs_running``               jobs on a gang now
``eat_jobs{state}``                rows of the job store by state
``eat_workers_down``               workers out of service (dead or restarting)
``eat_job_store_writable``         1 while the last write to the job store succeeded
``eat_jobs_accepted_total``        jobs accepted (202, or a synchronous request admitted)
``eat_jobs_finished_total{state}``  jobs that reached done, failed or cancelled
``eat_job_latency_seconds``        histogram: acceptance to recorded result (done jobs)
``eat_job_waiting_seconds``        histogram: acceptance to the start of the last attempt
``eat_job_service_seconds``        histogram: the last attempt's start to its result
``eat_cold_starts_total``          model loads of the gangs of completed jobs
``eat_worker_failures_total``      workers taken out of service (died, or hung and killed)
``eat_worker_restarts_total``      workers that came back after a failure
``eat_requests_rejected_total{reason}``  refused requests, by :data:`REJECT_REASONS`
``eat_job_store_errors_total{operation}``  writes to the job store that failed
=================================  ========================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from eat.testbed import require

#: Why a request was refused (the label values of eat_requests_rejected_total).
REJECT_REASONS = (
    "unauthorized",
    "rate_limited",
    "body_too_large",
    "invalid",
    "queue_full",
    "deadline_unmeetable",
    "store_unwritable",
)
#: Seconds: tiny CPU models take a fraction of a second, real ones on a GPU up to minutes.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class LiveState:
    """What the scrape-time gauges read."""

    queue_length: int
    running: int
    workers_down: int
    store_writable: bool
    jobs_by_state: dict[str, int]


class ServiceMetrics:
    """The registry and the metrics of one app (module docstring)."""

    def __init__(self) -> None:
        prometheus = require("prometheus_client")
        self._prometheus = prometheus
        self.registry = prometheus.CollectorRegistry()
        registry = self.registry
        self.accepted = prometheus.Counter(
            "eat_jobs_accepted", "Jobs accepted into the job store.", registry=registry
        )
        self.finished = prometheus.Counter(
            "eat_jobs_finished", "Jobs that reached a final state.", ["state"], registry=registry
        )
        self.latency = prometheus.Histogram(
            "eat_job_latency_seconds",
            "Acceptance to recorded result of done jobs (s).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.waiting = prometheus.Histogram(
            "eat_job_waiting_seconds",
            "Acceptance to the start of the last attempt of done jobs (s).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.service = prometheus.Histogram(
            "eat_job_service_seconds",
            "Start of the last attempt to the result of done jobs (s).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.cold_starts = prometheus.Counter(
            "eat_cold_starts", "Model loads by the gangs of completed jobs.", registry=registry
        )
        self.worker_failures = prometheus.Counter(
            "eat_worker_failures",
            "Workers taken out of service (died, or hung and killed).",
            registry=registry,
        )
        self.worker_restarts = prometheus.Counter(
            "eat_worker_restarts",
            "Workers back in service after a failure (Ray restarted them).",
            registry=registry,
        )
        self.rejected = prometheus.Counter(
            "eat_requests_rejected", "Refused requests by reason.", ["reason"], registry=registry
        )
        self.store_errors = prometheus.Counter(
            "eat_job_store_errors",
            "Writes to the job store that failed, by operation.",
            ["operation"],
            registry=registry,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        for state in ("done", "failed", "cancelled"):
            self.finished.labels(state)
        self._live: Callable[[], LiveState] | None = None
        registry.register(_LiveCollector(self))

    def reject(self, reason: str) -> None:
        if reason not in REJECT_REASONS:
            raise ValueError(f"reason {reason!r} is not one of {REJECT_REASONS}")
        self.rejected.labels(reason).inc()

    def watch(self, live: Callable[[], LiveState]) -> None:
        """Read the gauges from ``live`` at every scrape."""
        self._live = live

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        return self._prometheus.generate_latest(self.registry), self._prometheus.CONTENT_TYPE_LATEST


class _LiveCollector:
    """Scrape-time gauges (prometheus-client's custom collector protocol)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[object]:
        core = require("prometheus_client.core")
        live = self.metrics._live
        if live is None:  # not serving yet
            return
        state = live()
        yield core.GaugeMetricFamily(
            "eat_queue_length", "Jobs waiting for a gang.", value=state.queue_length
        )
        yield core.GaugeMetricFamily("eat_jobs_running", "Jobs on a gang now.", value=state.running)
        yield core.GaugeMetricFamily(
            "eat_workers_down", "Workers out of service.", value=state.workers_down
        )
        yield core.GaugeMetricFamily(
            "eat_job_store_writable",
            "1 while the last write to the job store succeeded.",
            value=float(state.store_writable),
        )
        jobs = core.GaugeMetricFamily(
            "eat_jobs", "Jobs in the job store by state.", labels=["state"]
        )
        for name, count in state.jobs_by_state.items():
            jobs.add_metric([name], count)
        yield jobs

    def describe(self) -> list[object]:
        return []  # not known before serving: collected at every scrape


__all__ = ["LATENCY_BUCKETS", "REJECT_REASONS", "LiveState", "ServiceMetrics"]

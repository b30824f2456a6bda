"""Jobs between the durable store (:mod:`eat.testbed.jobs`) and the controller.

:class:`JobRunner` is what the HTTP layer calls. Everything runs on the service's event
loop, one call at a time, so a check and the write that follows it (the queue bound,
then the insert) cannot interleave with another request.

**Submitting** a job: an ``Idempotency-Key`` already used by the same owner returns
that job (no second job; a different request with the same key is refused); the
controller validates the request (422 naming the field); admission control
(:mod:`eat.testbed.admission`) may refuse it (429, or 422 for a deadline no cluster
state could meet); the job is committed to the store (503 if the store cannot be
written: nothing is queued); only then does the controller queue it.

**Outcomes.** A result is recorded in the store with the job's state ``done`` in one
transaction, exactly once; a task the controller gives up on is recorded ``failed``. A
write that fails (read-only or full disk) is retried every ``store_retry_s`` until it
succeeds, the result kept in memory meanwhile; if the service stops first, the job is
still ``running`` in the store and runs again at the next start (at-least-once
execution, exactly-once completion). Starts and requeues are recorded too, but a lost
one costs nothing: at start-up every job not final is queued again.

**Recovery** (:meth:`JobRunner.recover`, at start-up): jobs that an earlier instance
left running go back to ``queued``; every queued job is handed to the new controller in
its original order, with its original arrival (so its deadline and its latency count
the time the service was down).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from eat.params import TestbedService
from eat.testbed.admission import forecast, retry_after_s
from eat.testbed.controller import (
    Controller,
    RequestError,
    TaskCancelled,
    TaskFailed,
    TaskRequest,
)
from eat.testbed.jobs import JobRow, JobStore, StoreUnavailable
from eat.testbed.metrics import LiveState, ServiceMetrics

log = logging.getLogger(__name__)

#: The timing a client gets back: these columns of the controller's record.
TIMING_FIELDS = (
    "task_id",
    "model",
    "resolution",
    "steps",
    "gang_size",
    "servers",
    "arrival",
    "start",
    "finish",
    "latency",
    "waiting",
    "service",
    "cold_start_s",
    "cold_starts",
    "deadline",
    "deadline_met",
    "attempts",
    "step_s_mean",
    "decode_s",
    "predicted_service",
)


def timing_of(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON-safe timing of a record."""
    timing = {}
    for key in TIMING_FIELDS:
        value = record[key]
        if hasattr(value, "item"):  # numpy scalars
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        timing[key] = value
    return timing


class Refused(Exception):
    """A request the service does not accept; the HTTP layer turns it into a response."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        retry_after_s: int | None = None,
        loc: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        """A :data:`~eat.testbed.metrics.REJECT_REASONS` value, or ``not_found`` /
        ``conflict`` for requests about a job."""
        self.message = message
        self.retry_after_s = retry_after_s
        self.loc = loc
        """Where the offending value is (``("body", "deadline_s")``), for a 422."""


@dataclass(frozen=True)
class Submission:
    job: JobRow
    replayed: bool
    """An ``Idempotency-Key`` repeated: the job accepted earlier, nothing new queued."""


class JobRunner:
    """The module docstring's job flow for one controller and one store."""

    def __init__(
        self,
        store: JobStore,
        controller: Controller,
        service: TestbedService,
        metrics: ServiceMetrics,
    ) -> None:
        self.store = store
        self.controller = controller
        self.service = service
        self.metrics = metrics
        self.store_writable = True
        self.last_store_error: str | None = None
        self._job_of_task: dict[int, str] = {}
        self._final: dict[str, asyncio.Future] = {}
        self._watchers: set[asyncio.Task] = set()
        self._recording: set[str] = set()
        """Jobs whose outcome is known and not yet in the store."""
        controller.listen(self)
        metrics.watch(self.live_state)

    # ------------------------------------------------------------------ start-up
    def recover(self) -> int:
        """Hand every queued job of the store (interrupted ones first requeued) to the
        controller; returns how many."""
        rows = self.store.recover()
        now = time.time()
        for row in rows:
            try:
                request = TaskRequest(**row.request)
                self._start(row, request, waited_s=max(0.0, now - row.created_at))
            except (RequestError, TypeError) as error:  # params changed since it was accepted
                message = f"cannot run after a restart: {error}"
                log.error("job %s %s", row.id, message)
                self._write_now(
                    "record a failed job", lambda r=row, m=message: self.store.fail(r.id, m)
                )
        if rows:
            log.info("recovered %d queued job(s) from %s", len(rows), self.store.path)
        return len(rows)

    # ------------------------------------------------------------------ submitting
    def submit(
        self, request: TaskRequest, *, owner: str, idempotency_key: str | None = None
    ) -> Submission:
        """Accept a job (module docstring) or raise :class:`Refused`."""
        if idempotency_key is not None:
            existing = self.store.find(owner, idempotency_key)
            if existing is not None:
                if existing.request != asdict(request):
                    raise Refused(
                        422,
                        "invalid",
                        "this Idempotency-Key was used for a different request; use a new key "
                        "for a new request",
                        loc=("header", "idempotency-key"),
                    )
                return Submission(existing, replayed=True)
        try:
            self.controller.validate(request)
        except RequestError as error:
            raise Refused(422, "invalid", str(error), loc=("body", error.field)) from None
        self._admit(request)
        try:
            row = self.store.insert(asdict(request), owner=owner, idempotency_key=idempotency_key)
        except StoreUnavailable as error:
            self._store_failed("accept", error)
            raise Refused(
                503, "store_unwritable", f"{error}; the job was not accepted, nothing is queued"
            ) from None
        self._store_ok()
        self.metrics.accepted.inc()
        self._start(row, request, waited_s=0.0)
        return Submission(row, replayed=False)

    def _admit(self, request: TaskRequest) -> None:
        """The queue bound, then (policy ``predicted_deadline``) the forecast deadline."""
        controller = self.controller
        bound = self.service.max_queued_jobs
        queued = controller.queued
        predicting = self.service.admission == "predicted_deadline" and request.deadline_s
        if queued < bound and not predicting:
            return
        outlook = forecast(controller.shadow, request.model, request.resolution, controller.now())
        if queued >= bound:
            raise Refused(
                429,
                "queue_full",
                f"the queue is full: {queued} jobs wait (testbed.service.max_queued_jobs is "
                f"{bound}); nothing was queued",
                retry_after_s=retry_after_s(outlook.first_start_s),
            )
        deadline = request.deadline_s
        assert deadline is not None
        if outlook.finish_s <= deadline:
            return
        if outlook.idle_finish_s > deadline:
            raise Refused(
                422,
                "deadline_unmeetable",
                f"deadline_s {deadline:g} cannot be met: even on an idle cluster the shadow "
                f"simulator predicts {outlook.idle_finish_s:.2f} s for {request.model} at "
                f"{request.resolution} px",
                loc=("body", "deadline_s"),
            )
        raise Refused(
            429,
            "deadline_unmeetable",
            f"deadline_s {deadline:g} cannot be met now: the shadow simulator predicts "
            f"completion in {outlook.finish_s:.2f} s at the earliest ({outlook.queued_ahead} "
            "jobs queued ahead); nothing was queued",
            retry_after_s=retry_after_s(outlook.finish_s - deadline),
        )

    def _start(self, row: JobRow, request: TaskRequest, waited_s: float) -> None:
        """Queue the job on the controller and watch its outcome."""
        self._job_of_task[row.task_id] = row.id  # before submit: it may start at once
        try:
            future = self.controller.submit(request, task_id=row.task_id, waited_s=waited_s)
        except BaseException:
            del self._job_of_task[row.task_id]
            raise
        loop = asyncio.get_running_loop()
        self._final[row.id] = loop.create_future()
        watcher = loop.create_task(self._outcome(row, future))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watcher_done)

    def _watcher_done(self, watcher: asyncio.Task) -> None:
        self._watchers.discard(watcher)
        if not watcher.cancelled() and watcher.exception() is not None:
            log.error("a job watcher failed", exc_info=watcher.exception())

    async def _outcome(self, row: JobRow, future: asyncio.Future) -> None:
        try:
            result = await future
        except TaskCancelled:
            pass  # cancel() wrote the state
        except TaskFailed as error:
            message = str(error)
            self._recording.add(row.id)
            await self._write_until_done(
                "record a failed job", lambda: self.store.fail(row.id, message)
            )
            self.metrics.finished.labels("failed").inc()
        else:
            timing = timing_of(result.record)
            png = result.png or b""
            self._recording.add(row.id)
            await self._write_until_done(
                "record a result", lambda: self.store.complete(row.id, timing, png)
            )
            self._observe(result.record)
        finally:
            self._recording.discard(row.id)
            self._job_of_task.pop(row.task_id, None)
        final = self._final.pop(row.id, None)
        if final is not None and not final.done():
            final.set_result(None)

    def _observe(self, record: dict[str, Any]) -> None:
        metrics = self.metrics
        metrics.finished.labels("done").inc()
        metrics.latency.observe(float(record["latency"]))
        metrics.waiting.observe(float(record["waiting"]))
        metrics.service.observe(float(record["service"]))
        metrics.cold_starts.inc(int(record["cold_starts"]))

    # ------------------------------------------------------------------ store writes
    def _store_ok(self) -> None:
        self.store_writable = True
        self.last_store_error = None

    def _store_failed(self, operation: str, error: StoreUnavailable) -> None:
        self.store_writable = False
        self.last_store_error = str(error)
        self.metrics.store_errors.labels(operation).inc()
        log.error("%s", error)

    def _write_now(self, operation: str, write: Callable[[], None]) -> bool:
        """A write whose loss is recovered at the next start (a start, a requeue)."""
        try:
            write()
        except StoreUnavailable as error:
            self._store_failed(operation, error)
            return False
        self._store_ok()
        return True

    async def _write_until_done(self, operation: str, write: Callable[[], None]) -> None:
        """A write that must not be lost (a result, a failure): retried until it succeeds."""
        while not self._write_now(operation, write):
            await asyncio.sleep(self.service.store_retry_s)

    # ------------------------------------------------------------------ controller events
    def task_started(self, task_id: int, attempt: int, servers: tuple[int, ...]) -> None:
        job_id = self._job_of_task.get(task_id)
        if job_id is not None:
            detail = f"attempt {attempt} on servers {list(servers)}"
            self._write_now("record a start", lambda: self.store.mark_running(job_id, detail))

    def task_requeued(self, task_id: int, attempt: int, error: str) -> None:
        job_id = self._job_of_task.get(task_id)
        if job_id is not None:
            reason = f"attempt {attempt} failed: {error}"
            self._write_now("record a requeue", lambda: self.store.mark_requeued(job_id, reason))

    def server_down(self, server: int) -> None:
        self.metrics.worker_failures.inc()

    def server_up(self, server: int) -> None:
        self.metrics.worker_restarts.inc()

    # ------------------------------------------------------------------ queries
    def job(self, job_id: str, owner: str) -> JobRow:
        """The job (its live state: the controller knows when it runs), or 404."""
        row = self.store.get(job_id)
        if row is None or row.owner != owner:  # another key's job does not exist for you
            raise Refused(404, "not_found", f"no job {job_id}")
        return row

    def state(self, row: JobRow) -> str:
        """The store's state, or what the controller knows: that a job runs, or that it
        ran and its outcome is being recorded (``running`` until it is)."""
        if row.final:
            return row.state
        if row.id in self._recording:
            return "running"
        return self.controller.task_state(row.task_id) or row.state

    def cancel(self, job_id: str, owner: str) -> JobRow:
        """Cancel a queued job; 409 if it runs or has finished."""
        row = self.job(job_id, owner)
        state = self.state(row)
        if state != "queued":
            raise Refused(
                409, "conflict", f"job {job_id} is {state}; only a queued job can be cancelled"
            )
        try:
            self.store.cancel(job_id)
        except StoreUnavailable as error:
            self._store_failed("cancel", error)
            raise Refused(503, "store_unwritable", f"{error}; the job stays queued") from None
        self._store_ok()
        self.controller.cancel(row.task_id)
        self.metrics.finished.labels("cancelled").inc()
        return self.job(job_id, owner)

    async def wait(self, job_id: str) -> None:
        """Return once the job's outcome is in the store (or it is not live here)."""
        final = self._final.get(job_id)
        if final is not None:
            await asyncio.shield(final)

    def live_state(self) -> LiveState:
        try:
            counts = self.store.counts()
        except StoreUnavailable:
            counts = {}
        return LiveState(
            queue_length=self.controller.queued,
            running=self.controller.running,
            workers_down=len(self.controller.down),
            store_writable=self.store_writable,
            jobs_by_state=counts,
        )

    # ------------------------------------------------------------------ stopping
    async def shutdown(self) -> None:
        """Start no new gang; give running ones ``shutdown_timeout_s`` to finish and be
        recorded; queued jobs stay in the store for the next start."""
        controller = self.controller
        controller.hold()
        deadline = time.monotonic() + self.service.shutdown_timeout_s
        while time.monotonic() < deadline and (controller.running or self._recording):
            await asyncio.sleep(0.05)
        for watcher in list(self._watchers):
            watcher.cancel()
        if self._watchers:
            await asyncio.gather(*self._watchers, return_exceptions=True)
        try:
            await asyncio.wait_for(controller.close(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("stopped with worker recoveries still running")


__all__ = ["TIMING_FIELDS", "JobRunner", "Refused", "Submission", "timing_of"]

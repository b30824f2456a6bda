"""The HTTP layer: a FastAPI app in front of the job runner, and a uvicorn server.

Endpoints (docs/serving.md has the client's view):

``POST /v1/jobs``
    JSON body :class:`GenerateBody`; optional ``Idempotency-Key`` header. 202 with the
    job id and its links once the job is committed to the job store; 422 names the
    offending field; 429 (``Retry-After``) when the queue is full or, with policy
    ``predicted_deadline``, when the deadline is predicted to be missed; 503 when the
    job store cannot be written.
``GET /v1/jobs/{id}``
    State (queued, running, done, failed, cancelled), times, attempts, timing.
``GET /v1/jobs/{id}/image``
    The PNG of a done job (timing in ``X-EAT-Timing``); 409 before that.
``DELETE /v1/jobs/{id}``
    Cancel a queued job; 409 if it runs or has finished.
``POST /v1/generate``
    The same admission and store, then waits for the image: ``?format=png`` (default)
    answers the PNG with ``X-EAT-Timing`` and ``X-EAT-Job-Id`` headers, ``?format=json``
    ``{"job": ..., "timing": ..., "image_png_base64": ...}``; a task that cannot be
    completed gives 503 with the reason.
``GET /v1/models``, ``GET /v1/status``
    Models and resolutions served; queue, servers, job counts, job store state.
``GET /metrics``
    Prometheus text format (:mod:`eat.testbed.metrics`).
``GET /healthz``
    ``{"ok": true}``; the only path open without a key when keys are configured.

Before any route runs, :class:`RequestGate` checks the API key (401), the key's rate
limit (429) and the body size (413, refused before the body is read in full). Error
bodies never echo a large input back: a 422 item carries the input only when it is short.

:func:`serve_in_thread` runs uvicorn (127.0.0.1 and a free port unless told otherwise)
in a background thread whose event loop also runs the controller.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from eat.params import TestbedService
from eat.testbed import require
from eat.testbed.auth import KeyRing, RateLimiter, access_line
from eat.testbed.controller import Controller, TaskRequest
from eat.testbed.jobrunner import TIMING_FIELDS, JobRunner, Refused, timing_of
from eat.testbed.jobs import JobRow, JobStore, StoreUnavailable
from eat.testbed.metrics import ServiceMetrics

# The HTTP layer needs them at import: FastAPI reads the routes' annotations from this
# module's globals.
fastapi = require("fastapi")
responses = require("fastapi.responses")
exceptions = require("fastapi.exceptions")

LOOPBACK = "127.0.0.1"
#: Characters of a prompt; CLIP reads 77 tokens, so this is generous.
MAX_PROMPT_CHARS = 2000
#: A 422 item echoes its input only when its JSON has at most this many characters.
MAX_ECHO_CHARS = 80
JOB_ID_PATTERN = r"^job_[0-9a-f]{32}$"
#: Paths served without a key when keys are configured.
OPEN_PATHS = frozenset({"/healthz"})
#: Where RequestGate leaves the caller's key id in the ASGI scope.
OWNER_SCOPE_KEY = "eat.owner"
LOCAL_OWNER = "local"

__all__ = [
    "LOOPBACK",
    "MAX_PROMPT_CHARS",
    "TIMING_FIELDS",
    "GenerateBody",
    "RequestGate",
    "RunningServer",
    "create_app",
    "free_port",
    "serve_in_thread",
    "timing_of",
]


class GenerateBody(BaseModel):
    """One text-to-image request."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str = Field(min_length=1, max_length=64)
    resolution: int = Field(gt=0, le=16384)
    """Image side length in pixels (one of the model's served resolutions)."""
    deadline_s: float = Field(gt=0, le=86400, allow_inf_nan=False)
    """Seconds after acceptance by which the image should be delivered."""
    seed: int = Field(default=0, ge=0, lt=2**32)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)

    def task_request(self) -> TaskRequest:
        return TaskRequest(
            model=self.model,
            resolution=self.resolution,
            prompt=self.prompt,
            deadline_s=self.deadline_s,
            seed=self.seed,
            negative_prompt=self.negative_prompt,
        )


# ---------------------------------------------------------------------- the gate
async def _send_json(
    send: Callable, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class RequestGate:
    """ASGI middleware run before routing: API key, rate limit, body size (module
    docstring). With no keys configured every caller is the owner ``local``."""

    def __init__(
        self,
        app: Any,
        *,
        keys: KeyRing,
        limiter: RateLimiter,
        max_body_bytes: int,
        metrics: ServiceMetrics,
    ) -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value for name, value in scope["headers"]}
        owner = LOCAL_OWNER
        if self.keys.required and scope["path"] not in OPEN_PATHS:
            authorization = headers.get("authorization", b"").decode("latin-1")
            key_id = self.keys.identify(authorization)
            if key_id is None:  # the same answer for a missing and a wrong key
                self.metrics.reject("unauthorized")
                await _send_json(
                    send,
                    401,
                    {"detail": "missing or invalid API key"},
                    {"www-authenticate": "Bearer"},
                )
                return
            wait_s = self.limiter.take(key_id)
            if wait_s > 0:
                self.metrics.reject("rate_limited")
                retry = RateLimiter.retry_after(wait_s)
                await _send_json(
                    send,
                    429,
                    {
                        "detail": f"rate limit of this API key exceeded; retry after {retry} s",
                        "reason": "rate_limited",
                    },
                    {"retry-after": str(retry)},
                )
                return
            owner = key_id
        scope = {**scope, OWNER_SCOPE_KEY: owner}
        limit = self.max_body_bytes
        length = headers.get("content-length")  # the server has checked that it is a number
        if length is not None and length.isdigit() and int(length) > limit:
            await self._too_large(send, limit)  # refused unread
            return
        chunks: list[bytes] = []
        size = 0
        while True:  # at most `limit` bytes are ever held
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Callable, limit: int) -> None:
        self.metrics.reject("body_too_large")
        await _send_json(
            send,
            413,
            {
                "detail": f"request body over {limit} bytes (testbed.service.max_body_bytes)",
                "reason": "body_too_large",
            },
        )


# ---------------------------------------------------------------------- responses
def _echo_safe(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors without large inputs (and without non-JSON context)."""
    items = []
    for error in errors:
        item = {
            "loc": list(error.get("loc", ())),
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        if "input" in error:
            try:
                text = json.dumps(error["input"])
            except (TypeError, ValueError):
                text = None
            if text is not None and len(text) <= MAX_ECHO_CHARS:
                item["input"] = error["input"]
        items.append(item)
    return items


def caller(request: fastapi.Request) -> str:
    """The caller's key id (``local`` when no keys are configured), set by RequestGate."""
    return request.scope.get(OWNER_SCOPE_KEY, LOCAL_OWNER)


JobId = Annotated[
    str, fastapi.Path(pattern=JOB_ID_PATTERN, description="A job id (job_ and 32 hex digits).")
]
IdempotencyKey = Annotated[
    str | None,
    fastapi.Header(
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a request safely: the same key returns the job it made.",
    ),
]
Owner = Annotated[str, fastapi.Depends(caller)]


def _links(job_id: str) -> dict[str, str]:
    return {"self": f"/v1/jobs/{job_id}", "image": f"/v1/jobs/{job_id}/image"}


def job_view(row: JobRow, state: str, timing: dict[str, Any] | None) -> dict[str, Any]:
    """A job as a client sees it (times: Unix seconds, durations: seconds)."""
    request = row.request
    waiting = row.started_at - row.created_at if row.started_at is not None else None
    latency = row.finished_at - row.created_at if row.finished_at is not None else None
    return {
        "id": row.id,
        "state": state,
        "model": request["model"],
        "resolution": request["resolution"],
        "deadline_s": request["deadline_s"],
        "seed": request["seed"],
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "waiting_s": waiting,
        "latency_s": latency,
        "attempts": row.attempts,
        "error": row.error,
        "timing": timing,
        "links": _links(row.id),
    }


def create_app(
    controller_factory: Callable[[], Controller],
    store: JobStore,
    service: TestbedService,
    keys: KeyRing,
) -> Any:
    """The FastAPI app. ``controller_factory`` is called once at start-up, on the
    server's event loop (the controller's futures live on that loop); the jobs the store
    holds queued (or that an earlier instance left running) are handed to it then.
    ``store`` stays the caller's to close."""
    metrics = ServiceMetrics()
    live: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        runner = JobRunner(store, controller_factory(), service, metrics)
        runner.recover()
        live["runner"] = runner
        live["loop"] = asyncio.get_running_loop()
        yield
        await runner.shutdown()

    # no redirects: a path is served or it is a 404
    app = fastapi.FastAPI(title="eat testbed", lifespan=lifespan, redirect_slashes=False)
    app.state.metrics = metrics
    app.state.live = live
    app.add_middleware(
        RequestGate,
        keys=keys,
        limiter=RateLimiter(service.rate_limit_per_s, service.rate_limit_burst),
        max_body_bytes=service.max_body_bytes,
        metrics=metrics,
    )

    def runner() -> JobRunner:
        return live["runner"]

    def refusal(error: Refused) -> Any:
        payload: dict[str, Any] = {"detail": error.message, "reason": error.reason}
        if error.loc is not None:  # the shape of FastAPI's own 422s
            payload["detail"] = [
                {"loc": list(error.loc), "msg": error.message, "type": error.reason}
            ]
        if error.reason not in (
            "not_found",
            "conflict",
        ):  # requests about a job are not refusals of work
            metrics.reject(error.reason)
        headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else None
        return responses.JSONResponse(payload, status_code=error.status, headers=headers)

    @app.exception_handler(Refused)
    async def refused_handler(request: Any, error: Refused) -> Any:
        return refusal(error)

    @app.exception_handler(exceptions.RequestValidationError)
    async def invalid_handler(request: Any, error: Any) -> Any:
        metrics.reject("invalid")
        return responses.JSONResponse(
            {"detail": _echo_safe(list(error.errors())), "reason": "invalid"}, status_code=422
        )

    @app.exception_handler(StoreUnavailable)
    async def store_handler(request: Any, error: StoreUnavailable) -> Any:
        return responses.JSONResponse(
            {"detail": str(error), "reason": "store_unavailable"}, status_code=503
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/metrics")
    async def metrics_text() -> Any:
        body, content_type = metrics.exposition()
        return fastapi.Response(content=body, media_type=content_type)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        preset = runner().controller.preset
        return {
            "models": {
                name: {"resolutions": list(mix.resolutions)}
                for name, mix in preset.workload.models.items()
            },
            "steps": [preset.min_steps, preset.max_steps],
        }

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        jobs = runner()
        return {
            **jobs.controller.status(),
            "jobs": store.counts(),
            "job_store": {"writable": jobs.store_writable, "error": jobs.last_store_error},
            "access": "api_keys" if keys.required else "open",
            "max_queued_jobs": service.max_queued_jobs,
            "admission": service.admission,
        }

    @app.post("/v1/jobs", status_code=202)
    async def submit(body: GenerateBody, who: Owner, idempotency_key: IdempotencyKey = None) -> Any:
        submission = runner().submit(
            body.task_request(), owner=who, idempotency_key=idempotency_key
        )
        job = submission.job
        headers = {"Location": f"/v1/jobs/{job.id}"}
        if submission.replayed:
            headers["Idempotent-Replayed"] = "true"
        return responses.JSONResponse(
            {"id": job.id, "state": runner().state(job), "links": _links(job.id)},
            status_code=202,
            headers=headers,
        )

    @app.get("/v1/jobs/{job_id}")
    async def job(job_id: JobId, who: Owner) -> dict[str, Any]:
        jobs = runner()
        row = jobs.job(job_id, who)
        result = store.result(job_id) if row.state == "done" else None
        return job_view(row, jobs.state(row), result.timing if result else None)

    @app.get("/v1/jobs/{job_id}/image")
    async def image(job_id: JobId, who: Owner) -> Any:
        jobs = runner()
        row = jobs.job(job_id, who)
        if row.state != "done":
            state = jobs.state(row)
            hint = f"; poll /v1/jobs/{job_id}" if not row.final else ""
            raise Refused(409, "conflict", f"job {job_id} is {state}, it has no image{hint}")
        result = store.result(job_id)
        assert result is not None, "a done job has a result (one transaction)"
        return fastapi.Response(
            content=result.png,
            media_type="image/png",
            headers={"X-EAT-Timing": json.dumps(result.timing), "X-EAT-Job-Id": job_id},
        )

    @app.delete("/v1/jobs/{job_id}")
    async def cancel(job_id: JobId, who: Owner) -> dict[str, Any]:
        row = runner().cancel(job_id, who)
        return job_view(row, row.state, None)

    @app.post("/v1/generate")
    async def generate(
        body: GenerateBody,
        who: Owner,
        format: Literal["png", "json"] = "png",
        idempotency_key: IdempotencyKey = None,
    ) -> Any:
        jobs = runner()
        submission = jobs.submit(body.task_request(), owner=who, idempotency_key=idempotency_key)
        job_id = submission.job.id
        await jobs.wait(job_id)
        row = jobs.job(job_id, who)
        if row.state == "failed":
            return responses.JSONResponse(
                {"detail": row.error, "reason": "failed", "job": job_id}, status_code=503
            )
        if row.state != "done":
            return responses.JSONResponse(
                {
                    "detail": f"job {job_id} is {jobs.state(row)}; poll /v1/jobs/{job_id}",
                    "reason": row.state,
                    "job": job_id,
                },
                status_code=409 if row.state == "cancelled" else 503,
            )
        result = store.result(job_id)
        assert result is not None, "a done job has a result (one transaction)"
        if format == "json":
            return {
                "job": job_view(row, row.state, result.timing),
                "timing": result.timing,
                "image_png_base64": base64.b64encode(result.png).decode("ascii"),
            }
        return fastapi.Response(
            content=result.png,
            media_type="image/png",
            headers={"X-EAT-Timing": json.dumps(result.timing), "X-EAT-Job-Id": job_id},
        )

    return app


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    """A uvicorn server in a background thread (stop it with :meth:`stop`)."""

    url: str
    server: Any
    thread: threading.Thread
    app: Any
    access: str
    """What the service said about access at start-up (:func:`~eat.testbed.auth.access_line`)."""

    @property
    def runner(self) -> JobRunner:
        return self.app.state.live["runner"]

    def call(self, function: Callable[[], Any], timeout_s: float = 30.0) -> Any:
        """Run ``function`` on the server's event loop (where the controller lives)."""

        async def run() -> Any:
            return function()

        loop = self.app.state.live["loop"]
        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout_s)

    def stop(self, timeout_s: float = 120.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise RuntimeError(f"server {self.url} did not stop within {timeout_s} s")


def serve_in_thread(
    controller_factory: Callable[[], Controller],
    store: JobStore,
    service: TestbedService,
    keys: KeyRing,
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    startup_timeout_s: float = 60.0,
) -> RunningServer:
    """Start the app with uvicorn on ``host`` (loopback by default) and wait until it
    answers. Off loopback it refuses to start without API keys
    (:func:`~eat.testbed.auth.access_line`)."""
    uvicorn = require("uvicorn")
    access = access_line(host, keys)  # raises before anything binds
    port = port or free_port(host)
    app = create_app(controller_factory, store, service, keys)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        # uvicorn's own logging config would close the handlers already set up (the
        # service's log file among them); its warnings reach stderr without it
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=int(service.shutdown_timeout_s),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the testbed server on {host}:{port} did not start")
        time.sleep(0.05)
    return RunningServer(f"http://{host}:{port}", server, thread, app, access)

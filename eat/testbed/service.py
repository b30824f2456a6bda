"""The client API: a FastAPI app in front of the controller, and a loopback server.

Endpoints:

``POST /v1/generate``
    JSON body :class:`GenerateBody` (``prompt``, ``model``, ``resolution``,
    ``deadline_s``, optional ``seed`` and ``negative_prompt``; unknown fields are
    rejected). The request is validated *before* anything is queued: a missing field,
    a wrong type, an unknown model or a resolution the model is not served at gives a
    422 whose ``detail`` names the field and what is allowed. An accepted request
    waits for its image: with ``?format=png`` (default) the body is the PNG and the
    timing comes in the ``X-EAT-Timing`` header (JSON: task id, latency, waiting,
    service, cold start, steps, gang, deadline met, ...); with ``?format=json`` the
    body is ``{"timing": {...}, "image_png_base64": "..."}``. A task that cannot be
    completed gives 503 with the reason.
``GET /v1/models``
    Models, resolutions and the steps range served.
``GET /v1/status``
    Queue, running tasks, servers (free, down, resident models), counts.
``GET /healthz``
    ``{"ok": true}``.

:func:`serve_in_thread` runs uvicorn on 127.0.0.1 (a free port unless one is given)
in a background thread whose event loop also runs the controller.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from eat.testbed import require
from eat.testbed.controller import Controller, RequestError, TaskFailed, TaskRequest

LOOPBACK = "127.0.0.1"
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


class GenerateBody(BaseModel):
    """One text-to-image request."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=2000)
    model: str
    resolution: int = Field(gt=0)
    """Image side length in pixels (one of the model's served resolutions)."""
    deadline_s: float = Field(gt=0, allow_inf_nan=False)
    """Seconds after arrival by which the image should be delivered."""
    seed: int = Field(default=0, ge=0, lt=2**32)
    negative_prompt: str | None = Field(default=None, max_length=2000)


def timing_of(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON-safe timing a client gets back."""
    timing = {}
    for key in TIMING_FIELDS:
        value = record[key]
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif hasattr(value, "item"):  # numpy scalars
            value = value.item()
        timing[key] = value
    return timing


def create_app(controller_factory: Callable[[], Controller]) -> Any:
    """The FastAPI app; ``controller_factory`` is called once at start-up, on the
    server's event loop (the controller's futures live on that loop)."""
    fastapi = require("fastapi")
    from contextlib import asynccontextmanager

    state: dict[str, Controller] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        state["controller"] = controller_factory()
        yield
        await state["controller"].drain()
        await state["controller"].close()

    app = fastapi.FastAPI(title="eat testbed", lifespan=lifespan)

    def controller() -> Controller:
        return state["controller"]

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        preset = controller().preset
        return {
            "models": {
                name: {"resolutions": list(mix.resolutions)}
                for name, mix in preset.workload.models.items()
            },
            "steps": [preset.min_steps, preset.max_steps],
        }

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        return controller().status()

    @app.post("/v1/generate")
    async def generate(body: GenerateBody, format: Literal["png", "json"] = "png") -> Any:
        request = TaskRequest(
            model=body.model,
            resolution=body.resolution,
            prompt=body.prompt,
            deadline_s=body.deadline_s,
            seed=body.seed,
            negative_prompt=body.negative_prompt,
        )
        try:
            future = controller().submit(request)
        except RequestError as error:  # validated before anything is queued
            raise fastapi.HTTPException(
                status_code=422,
                detail=[{"loc": ["body", error.field], "msg": str(error), "type": "value_error"}],
            ) from None
        try:
            result = await future
        except TaskFailed as error:
            raise fastapi.HTTPException(status_code=503, detail=str(error)) from None
        timing = timing_of(result.record)
        if format == "json":
            png = base64.b64encode(result.png or b"").decode("ascii")
            return {"timing": timing, "image_png_base64": png}
        return fastapi.Response(
            content=result.png or b"",
            media_type="image/png",
            headers={"X-EAT-Timing": json.dumps(timing)},
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

    def stop(self, timeout_s: float = 60.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise RuntimeError(f"server {self.url} did not stop within {timeout_s} s")


def serve_in_thread(
    controller_factory: Callable[[], Controller],
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    startup_timeout_s: float = 30.0,
) -> RunningServer:
    """Start the app with uvicorn on ``host`` (loopback by default) and wait until it
    answers."""
    uvicorn = require("uvicorn")
    port = port or free_port(host)
    config = uvicorn.Config(
        create_app(controller_factory),
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the testbed server on {host}:{port} did not start")
        time.sleep(0.05)
    return RunningServer(f"http://{host}:{port}", server, thread)

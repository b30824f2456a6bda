"""Helpers of the service tests: a tiny CPU testbed's params, a real service process.

The service process is ``python -m eat testbed-serve`` on a free loopback port, started
in its own session so that the test can signal it alone; readiness is its health
endpoint answering, never a sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

PROMPTS = ["a lighthouse at dawn", "a red fox in snow", "a bowl of ramen"]


def tiny_raw_params(model_root: Path, workers: int = 2) -> dict[str, Any]:
    """params.yaml with a small CPU testbed: tiny models at 64 px, a one-pass profile."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["testbed"].update(
        workers=workers,
        device="cpu",
        model_size="tiny",
        model_root=str(model_root),
        gang_sizes=[1, 2],
        min_steps=4,
        max_steps=8,
        schedulers=["eft"],
        profile={"warmup": 0, "repeats": 1, "cold_start_trials": 1},
        restart_timeout_s=90.0,
    )
    raw["testbed"]["workload"].update(total_tasks=5, rate=4.0, prompts=PROMPTS)
    raw["testbed"]["tiny"]["models"] = {
        "sd15": {"share": 0.5, "resolutions": [64, 128]},
        "sdxl": {"share": 0.5, "resolutions": [64]},
    }
    return raw


def write_params(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def free_port() -> int:
    from eat.testbed.service import free_port as pick

    return pick()


@dataclass
class ServiceProcess:
    """A running ``eat testbed-serve`` process."""

    process: subprocess.Popen
    url: str
    work_dir: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as the OOM killer would: nothing runs in the process afterwards."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout_s: float = 120.0) -> int:
        """SIGTERM (a graceful stop); the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def ensure_stopped(self) -> None:
        """After a test, whatever happened: stop the process if it still runs."""
        if self.process.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.kill()


def start_service(
    params_file: Path,
    work_dir: Path,
    *,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    ready_timeout_s: float = 240.0,
) -> ServiceProcess:
    """Start the service and wait until ``/healthz`` answers (or it exits)."""
    import httpx

    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = work_dir / f"service-{port}.out"
    command = [
        sys.executable,
        "-m",
        "eat",
        "--params",
        str(params_file),
        "testbed-serve",
        "--host",
        host,
        "--port",
        str(port),
        "--work-dir",
        str(work_dir),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    with log.open("w") as sink:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = ServiceProcess(process, f"http://{host}:{port}", work_dir, log)
    deadline = time.monotonic() + ready_timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}:\n{service.output()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{service.url}/healthz", timeout=2).status_code == 200:
                return service
        if time.monotonic() > deadline:
            service.kill()
            raise TimeoutError(
                f"the service did not answer in {ready_timeout_s} s:\n{service.output()}"
            )
        time.sleep(0.2)


def read_store(path: Path, sql: str, parameters: tuple = ()) -> list[tuple]:
    """Read the job store from outside the service (WAL lets a reader in meanwhile)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def wait_for(condition: Any, timeout_s: float, poll_s: float = 0.1, what: str = "condition") -> Any:
    """Poll ``condition()`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout_s} s")
        time.sleep(poll_s)

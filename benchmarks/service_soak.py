"""Soak of the HTTP job service under faults, on loopback, bounded in time and count.

Starts ``eat testbed-serve`` (the ``testbed`` of ``--params``: on a machine without a GPU
the CPU testbed with tiny models) as a subprocess on a free 127.0.0.1 port, then for
``--duration-s`` submits jobs (``POST /v1/jobs``) at ``--rate`` per second, at most
``--max-jobs``, cycling through the served models and resolutions, while it SIGKILLs one
worker process every ``--kill-every-s`` and SIGKILLs the service once at
``--restart-at-s``, just after a burst of ``--restart-burst`` jobs so that it catches jobs
queued and running (and starts it again on the same job store). Then it waits (at most
``--drain-timeout-s``) until every accepted job is final, stops the service with SIGTERM
and checks, against the job store's rows, that every accepted job completed exactly once
(state ``done``, one result, one ``completed`` event) and that no Ray process of either
service instance is left.

Reported: throughput (done jobs per second from the first acceptance to the last
result), latency percentiles (acceptance to recorded result, read from the store: the
restart's down time counts for the jobs it caught), refusals, jobs run again after a
fault, and the service process's resident memory (VmRSS) once ``--warmup-jobs`` jobs of
an instance are done and at its end. Processes left are counted two ways: those holding
a file in an instance's Ray folder (what the service reaps by) and the live members of
the session each service process led (it is started with ``start_new_session``, and Ray
never leaves a session). The figures go to ``--out`` (default
benchmarks/results/service_soak.json) through :func:`eat.benchmarking.report`; the exit
status is 1 if a job was lost, failed or completed twice, a process was left, or an
instance's memory grew by more than ``--max-rss-growth-mb`` after warm-up.

    .venv/bin/python benchmarks/service_soak.py --duration-s 180 --rate 0.5

It prints one ``RESULT name=value`` line per figure, ``RESULT throughput_jobs_per_s=<n>``
last.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass
class Service:
    process: subprocess.Popen
    url: str
    instance: str


@dataclass
class Soak:
    """What the run saw."""

    accepted: list[str] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    unsent: int = 0
    worker_kills: int = 0
    restarts: int = 0
    caught_by_restart: int = 0
    """Jobs queued or running when the service was killed."""
    downtime_s: float = 0.0
    rss_mb: dict[str, float] = field(default_factory=dict)
    left_by_kill: int = 0
    """Processes of the killed instance still alive before the restart."""
    orphans_after_restart: int = 0
    orphans_after_stop: int = 0


def start(params: Path, work_dir: Path, store: Path, timeout_s: float) -> Service:
    """``eat testbed-serve`` on a free loopback port, ready (its health endpoint answers)."""
    import httpx

    from eat.testbed.service import free_port

    port = free_port()
    log = (work_dir / f"service-{port}.out").open("w")
    serve = ["testbed-serve", "--host", "127.0.0.1", "--port", str(port), "--work-dir"]
    process = subprocess.Popen(
        [sys.executable, "-m", "eat", "--params", str(params), *serve, str(work_dir)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}; see {log.name}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"the service did not answer in {timeout_s} s; see {log.name}")
        time.sleep(0.2)
    (instance,) = query(store, "SELECT id FROM instances ORDER BY started_at DESC LIMIT 1")[0]
    return Service(process, url, instance)


def query(store: Path, sql: str, parameters: tuple = ()) -> list[tuple]:
    """Read the job store from outside the service (WAL admits a reader meanwhile)."""
    connection = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def stop(process: subprocess.Popen) -> None:
    """SIGTERM a service still running (SIGKILL if it does not stop)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def workers_of(instance: str) -> list[int]:
    """PIDs of the instance's edge workers (its Ray processes named ray::EdgeWorker)."""
    from eat.testbed.lifecycle import processes_using, ray_temp_dir

    pids = []
    for pid in processes_using([ray_temp_dir(instance)]):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::EdgeWorker"):
                pids.append(pid)
    return sorted(pids)


def leftovers(instance: str, leader: int) -> int:
    """Live processes of a service instance: holding a file in its Ray folder, or in the
    session the service led (a count independent of the service's own bookkeeping)."""
    from eat.testbed.lifecycle import processes_using, ray_temp_dir, session_processes

    return len(set(processes_using([ray_temp_dir(instance)])) | set(session_processes(leader)))


def done_count(store: Path) -> int:
    return query(store, "SELECT COUNT(*) FROM jobs WHERE state = 'done'")[0][0]


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run(args: argparse.Namespace) -> tuple[dict[str, float], Soak, bool]:
    import httpx

    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="eat-service-soak-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    store = work_dir / "jobs.sqlite3"
    if store.exists():
        raise SystemExit(f"{store} exists: the soak starts from an empty job store")
    soak = Soak()
    service = start(Path(args.params), work_dir, store, args.start_timeout_s)
    try:
        first_instance, first_pid = service.instance, service.process.pid
        with httpx.Client(timeout=60) as client:
            served = client.get(f"{service.url}/v1/models").json()["models"]
        mix = [
            (model, resolution)
            for model, spec in served.items()
            for resolution in spec["resolutions"]
        ]

        def measure_warm(label: str, done_before: int) -> None:
            if label not in soak.rss_mb and done_count(store) - done_before >= args.warmup_jobs:
                soak.rss_mb[label] = rss_mb(service.process.pid)

        began = time.monotonic()
        next_send = began
        next_kill = args.kill_every_s
        restarted = False
        done_at_start = 0
        sent = 0

        def submit(client: httpx.Client) -> None:
            nonlocal sent
            model, resolution = mix[sent % len(mix)]
            body = {
                "prompt": f"soak job {sent}: a lighthouse at dawn",
                "model": model,
                "resolution": resolution,
                "deadline_s": args.deadline_s,
                "seed": sent,
            }
            sent += 1
            try:
                response = client.post(f"{service.url}/v1/jobs", json=body)
            except httpx.HTTPError:
                soak.unsent += 1
                return
            if response.status_code == 202:
                soak.accepted.append(response.json()["id"])
            else:
                reason = response.json().get("reason", str(response.status_code))
                soak.refused[reason] = soak.refused.get(reason, 0) + 1

        def unfinished() -> dict[str, int]:
            rows = query(store, "SELECT state, COUNT(*) FROM jobs GROUP BY state")
            return {state: count for state, count in rows if state in ("queued", "running")}

        with httpx.Client(timeout=60) as client:
            while sent < args.max_jobs and (elapsed := time.monotonic() - began) < args.duration_s:
                label = "instance2" if restarted else "instance1"
                measure_warm(f"{label}_start", done_at_start)
                if not restarted and elapsed >= args.restart_at_s:
                    # a burst first, so that the kill catches jobs queued and running
                    for _ in range(min(args.restart_burst, args.max_jobs - sent)):
                        submit(client)
                    settle = time.monotonic() + 30.0
                    while len(unfinished()) < 2 and unfinished() and time.monotonic() < settle:
                        time.sleep(0.005)
                    soak.caught_by_restart = sum(unfinished().values())
                    soak.rss_mb["instance1_end"] = rss_mb(service.process.pid)
                    service.process.send_signal(signal.SIGKILL)  # as the OOM killer would
                    service.process.wait(30)
                    soak.left_by_kill = leftovers(first_instance, first_pid)  # for the reap
                    down = time.monotonic()
                    service = start(Path(args.params), work_dir, store, args.start_timeout_s)
                    soak.downtime_s = time.monotonic() - down
                    soak.orphans_after_restart = leftovers(first_instance, first_pid)
                    soak.restarts += 1
                    restarted = True
                    done_at_start = done_count(store)
                    continue
                if elapsed >= next_kill:
                    workers = workers_of(service.instance)
                    if workers:
                        os.kill(workers[soak.worker_kills % len(workers)], signal.SIGKILL)
                        soak.worker_kills += 1
                    next_kill = elapsed + args.kill_every_s  # no catching up after a restart
                submit(client)
                # a steady stream: after the restart's down time it resumes, it does not catch up
                next_send = max(next_send + 1.0 / args.rate, time.monotonic())
                time.sleep(max(0.0, next_send - time.monotonic()))
        # drain: every accepted job final (bounded)
        deadline = time.monotonic() + args.drain_timeout_s
        while query(store, "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")[0][0]:
            label = "instance2" if restarted else "instance1"
            measure_warm(f"{label}_start", done_at_start)
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        label = "instance2" if restarted else "instance1"
        soak.rss_mb[f"{label}_end"] = rss_mb(service.process.pid)
        wall_s = time.monotonic() - began
        service.process.send_signal(signal.SIGTERM)
        stopped_cleanly = service.process.wait(120) == 0
        soak.orphans_after_stop = leftovers(service.instance, service.process.pid) + leftovers(
            first_instance, first_pid
        )
    finally:  # an error or a SIGTERM midway: no service is left running
        stop(service.process)
    # exactly once, against the rows
    rows = {
        job_id: (state, created, finished)
        for job_id, state, created, finished in query(
            store, "SELECT id, state, created_at, finished_at FROM jobs"
        )
    }
    results = dict(query(store, "SELECT job_id, COUNT(*) FROM results GROUP BY job_id"))
    events: dict[str, dict[str, int]] = {}
    for job_id, kind, count in query(
        store, "SELECT job_id, kind, COUNT(*) FROM events GROUP BY job_id, kind"
    ):
        events.setdefault(job_id, {})[kind] = count
    lost = [j for j in soak.accepted if rows.get(j, ("missing",))[0] not in ("done", "failed")]
    failed = [j for j in soak.accepted if rows.get(j, ("",))[0] == "failed"]
    twice = [
        j
        for j in soak.accepted
        if results.get(j, 0) > 1 or events.get(j, {}).get("completed", 0) > 1
    ]
    once = [
        j
        for j in soak.accepted
        if rows.get(j, ("",))[0] == "done"
        and results.get(j) == 1
        and events.get(j, {}).get("completed") == 1
        and events.get(j, {}).get("accepted") == 1
    ]
    rerun = sum(1 for j in soak.accepted if events.get(j, {}).get("started", 0) > 1)
    done = [rows[j] for j in soak.accepted if rows.get(j, ("",))[0] == "done"]
    latencies = [finished - created for _, created, finished in done]
    span = max(f for _, _, f in done) - min(c for _, c, _ in done) if done else float("nan")
    rss = soak.rss_mb
    growth = [
        rss[f"{label}_end"] - rss[f"{label}_start"]
        for label in ("instance1", "instance2")
        if f"{label}_start" in rss and f"{label}_end" in rss
    ]
    results_table = {
        "duration_s": wall_s,
        "jobs_sent": float(sent),
        "jobs_accepted": float(len(soak.accepted)),
        "jobs_refused": float(sum(soak.refused.values())),
        "jobs_unsent": float(soak.unsent),
        "jobs_done": float(len(done)),
        "jobs_failed": float(len(failed)),
        "jobs_lost": float(len(lost)),
        "jobs_completed_twice": float(len(twice)),
        "jobs_completed_exactly_once": float(len(once)),
        "jobs_rerun_after_a_fault": float(rerun),
        "worker_kills": float(soak.worker_kills),
        "service_restarts": float(soak.restarts),
        "jobs_caught_by_the_restart": float(soak.caught_by_restart),
        "restart_downtime_s": soak.downtime_s,
        "throughput_jobs_per_s": len(done) / span if done and span > 0 else float("nan"),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": max(latencies) if latencies else float("nan"),
        **{f"rss_mb_{label}": value for label, value in sorted(rss.items())},
        "rss_growth_mb_max": max(growth) if growth else float("nan"),
        "processes_left_by_the_kill": float(soak.left_by_kill),
        "orphans_after_restart": float(soak.orphans_after_restart),
        "orphans_after_stop": float(soak.orphans_after_stop),
        "stopped_cleanly": float(stopped_cleanly),
        "loadavg_1m_end": os.getloadavg()[0],
    }
    ok = (
        not lost
        and not failed
        and not twice
        and len(once) == len(soak.accepted)
        and soak.orphans_after_restart == 0
        and soak.orphans_after_stop == 0
        and stopped_cleanly
        # a leak shows as growth within an instance; without two readings there is none
        and (not growth or max(growth) <= args.max_rss_growth_mb)
    )
    return results_table, soak, ok


def main(argv: list[str] | None = None) -> int:
    from eat.benchmarking import report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--work-dir", default=None, help="default: a new temporary folder")
    parser.add_argument("--duration-s", type=float, default=180.0)
    parser.add_argument("--rate", type=float, default=0.5, help="jobs per second")
    parser.add_argument("--max-jobs", type=int, default=300)
    parser.add_argument("--kill-every-s", type=float, default=40.0)
    parser.add_argument("--restart-at-s", type=float, default=90.0)
    parser.add_argument(
        "--restart-burst", type=int, default=6, help="jobs sent at once just before the kill"
    )
    parser.add_argument("--deadline-s", type=float, default=120.0)
    parser.add_argument("--warmup-jobs", type=int, default=5)
    parser.add_argument(
        "--max-rss-growth-mb",
        type=float,
        default=64.0,
        help="fail when an instance's resident memory grows more from warm-up to its end",
    )
    parser.add_argument("--start-timeout-s", type=float, default=300.0)
    parser.add_argument("--drain-timeout-s", type=float, default=300.0)
    parser.add_argument(
        "--out", type=Path, default=None, help="default: benchmarks/results/service_soak.json"
    )
    args = parser.parse_args(argv)
    if not 0 < args.max_jobs <= 10_000 or args.rate <= 0 or args.duration_s <= 0:
        parser.error("need 0 < --max-jobs <= 10000, --rate > 0 and --duration-s > 0")
    if not 0 < args.restart_at_s < args.duration_s:
        parser.error("--restart-at-s must fall inside the run (0 < it < --duration-s)")
    loadavg_start = os.getloadavg()[0]
    busy_start, total_start = cpu_ticks()

    def interrupted(signum: int, frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)  # the finally blocks stop the service
    results, soak, ok = run(args)
    results["loadavg_1m_start"] = loadavg_start
    busy_end, total_end = cpu_ticks()
    results["machine_cpu_busy_share"] = (busy_end - busy_start) / max(1, total_end - total_start)
    params = Path(args.params).resolve()
    shown = params.relative_to(ROOT) if ROOT in params.parents else params
    measured = {name: value for name, value in results.items() if math.isfinite(value)}
    missing = sorted(set(results) - set(measured))
    notes = (
        f"eat testbed-serve with {shown} ({os.cpu_count()} CPU cores, {platform.machine()}); "
        f"{args.duration_s:g} s at {args.rate:g} jobs/s (at most {args.max_jobs}), a worker "
        f"SIGKILLed every {args.kill_every_s:g} s, the service SIGKILLed at "
        f"{args.restart_at_s:g} s just after a burst of {args.restart_burst} jobs and started "
        "again on the same job store; latency is acceptance to recorded result, from the "
        "store; memory is the service process's VmRSS (growth after warm-up allowed: "
        f"{args.max_rss_growth_mb:g} MB per instance); loadavg_1m_* and "
        "machine_cpu_busy_share are the whole machine's (other processes included). "
        f"Refusals by reason: {soak.refused or 'none'}."
        + (f" Not measured in this run: {', '.join(missing)}." if missing else "")
    )
    report(
        "service_soak",
        measured,
        notes=notes,
        out=args.out,
        headline="throughput_jobs_per_s",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The service as a process: SIGKILLed with jobs queued and running, started again on its
job store, stopped with SIGTERM; the soak benchmark on a tiny budget.

Each service is ``python -m eat testbed-serve`` on a free 127.0.0.1 port with a small
CPU testbed (tiny models at 64 and 128 px); the tests wait on its health endpoint and on
the job store's rows, never on a sleep."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.service_support import (
    PROMPTS,
    read_store,
    start_service,
    tiny_raw_params,
    wait_for,
    write_params,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray"),
    pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="needs fastapi"),
    pytest.mark.skipif(not os.path.isdir("/proc"), reason="counts processes in /proc"),
]

GOOD = {"prompt": PROMPTS[1], "model": "sd15", "resolution": 64, "deadline_s": 120.0}


PROFILE_FILES = ("profile.csv", "profile_key.json")


@pytest.fixture(scope="module")
def tiny_params(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("service-process")
    return write_params(tmp / "params.yaml", tiny_raw_params(tmp / "models"))


@pytest.fixture()
def work(tiny_params, tmp_path):
    """A fresh work folder holding the profile an earlier test of the module measured, if
    any (the service reuses a profile of the same run on the same machine)."""
    shared = tiny_params.parent
    folder = tmp_path / "work"
    folder.mkdir()
    for name in PROFILE_FILES:
        if (shared / name).is_file():
            shutil.copy(shared / name, folder / name)
    yield folder
    for name in PROFILE_FILES:
        if (folder / name).is_file() and not (shared / name).is_file():
            shutil.copy(folder / name, shared / name)


def states(store) -> dict[str, str]:
    return dict(read_store(store, "SELECT id, state FROM jobs"))


def test_a_killed_service_loses_no_accepted_job_and_leaves_no_ray_process(tiny_params, work):
    """SIGKILL the service with jobs queued and running; start it again on the same job
    store: every accepted job completes exactly once (checked against the rows), earlier
    results stay retrievable, and no Ray process of the killed instance survives the
    restart; a SIGTERM then stops the second instance with its whole cluster."""
    import httpx

    from eat.testbed.lifecycle import processes_using, ray_temp_dir, session_processes

    store = work / "jobs.sqlite3"
    first = start_service(tiny_params, work)
    try:
        assert "access: open, no API keys configured" in first.output()
        # the second count, independent of the service's own bookkeeping: the service
        # leads its session and Ray's processes never leave it (lifecycle docstring)
        members = session_processes(first.pid)
        assert first.pid in members and len(members) > 3, members  # GCS, raylet, workers...
        with httpx.Client(base_url=first.url, timeout=60) as client:
            early = [
                client.post("/v1/jobs", json={**GOOD, "seed": i}).json()["id"] for i in range(2)
            ]
            wait_for(lambda: all(states(store)[j] == "done" for j in early), 120, what="early jobs")
            images = {job_id: client.get(f"/v1/jobs/{job_id}/image").content for job_id in early}
            burst = [
                client.post("/v1/jobs", json={**GOOD, "resolution": 128, "seed": 100 + i}).json()[
                    "id"
                ]
                for i in range(12)
            ]
        # kill while some jobs run and others wait (the store's rows say which)
        wait_for(
            lambda: {"running", "queued"} <= set(states(store).values()),
            60,
            poll_s=0.005,
            what="jobs running and queued",
        )
        first.kill()
    finally:
        first.ensure_stopped()
    at_kill = states(store)
    running_at_kill = [j for j in burst if at_kill[j] == "running"]
    queued_at_kill = [j for j in burst if at_kill[j] == "queued"]
    assert running_at_kill and queued_at_kill, at_kill
    (killed_instance,) = read_store(store, "SELECT id FROM instances")[0]
    killed_folder = ray_temp_dir(killed_instance)
    left = processes_using([killed_folder])  # Ray's agents outlive a SIGKILLed driver
    left_in_session = session_processes(first.pid)

    second = start_service(tiny_params, work)
    try:
        assert processes_using([killed_folder]) == {}, "the restart reaps them"
        # counted as the session's members: none of the killed instance's survives
        assert session_processes(first.pid) == [], (left_in_session, second.output()[-2000:])
        reaped = re.search(r"killed the Ray processes \[([\d, ]+)\]", second.output())
        if reaped:  # what still ran at the restart (workers may have died meanwhile)
            assert {int(pid) for pid in reaped.group(1).split(", ")} <= set(left)
        wait_for(
            lambda: all(states(store)[j] in ("done", "failed") for j in early + burst),
            180,
            what="every accepted job final",
        )
        with httpx.Client(base_url=second.url, timeout=60) as client:
            for job_id in early:  # results recorded before the kill
                assert client.get(f"/v1/jobs/{job_id}/image").content == images[job_id]
            for job_id in burst:
                view = client.get(f"/v1/jobs/{job_id}").json()
                assert view["state"] == "done", view
                image = client.get(f"/v1/jobs/{job_id}/image")
                assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
            assert client.post("/v1/generate", json=GOOD).status_code == 200
        (second_instance,) = read_store(store, "SELECT id FROM instances ORDER BY started_at")[1]
        # exactly once, against the rows: one acceptance, one completion, one result each
        results = dict(read_store(store, "SELECT job_id, COUNT(*) FROM results GROUP BY job_id"))
        for job_id in early + burst:
            kinds = [
                k
                for (k,) in read_store(
                    store, "SELECT kind FROM events WHERE job_id = ? ORDER BY seq", (job_id,)
                )
            ]
            assert kinds.count("accepted") == 1 and kinds.count("completed") == 1, kinds
            assert kinds[-1] == "completed" and results[job_id] == 1
        for job_id in running_at_kill:  # run again after the restart: at least once
            kinds = [
                k
                for (k,) in read_store(
                    store, "SELECT kind FROM events WHERE job_id = ? ORDER BY seq", (job_id,)
                )
            ]
            assert "interrupted" in kinds and kinds.count("started") >= 2, kinds
        completed_by = dict(
            read_store(store, "SELECT job_id, instance FROM events WHERE kind = 'completed'")
        )
        assert {completed_by[j] for j in queued_at_kill + running_at_kill} == {second_instance}
        code = second.terminate()
    finally:
        second.ensure_stopped()
    assert code == 0, second.output()[-2000:]
    assert processes_using([ray_temp_dir(second_instance), killed_folder]) == {}
    assert session_processes(second.pid) == [], "a stopped service leaves no process"


def test_the_cli_refuses_to_serve_beyond_loopback_without_keys(tiny_params, tmp_path):
    environment = {k: v for k, v in os.environ.items() if k != "EAT_API_KEYS"}
    serve = ["testbed-serve", "--host", "0.0.0.0", "--work-dir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "eat", "--params", str(tiny_params), *serve],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=environment,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "binding to 0.0.0.0 needs API keys" in result.stderr
    assert not (tmp_path / "jobs.sqlite3").exists()  # refused before anything was opened


def test_the_soak_benchmark_runs_on_a_tiny_budget(tiny_params, work, tmp_path):
    """benchmarks/service_soak.py with a short stream: a worker killed on a schedule and
    the service killed and restarted once; every accepted job completes exactly once."""
    out = tmp_path / "service_soak.json"
    command = [sys.executable, str(REPO / "benchmarks" / "service_soak.py")]
    command += ["--params", str(tiny_params), "--work-dir", str(work)]
    command += ["--duration-s", "20", "--rate", "1", "--max-jobs", "20", "--kill-every-s", "4"]
    command += ["--restart-at-s", "6", "--warmup-jobs", "2", "--out", str(out)]
    soak = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        stdout, stderr = soak.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        soak.terminate()  # the soak stops its service on SIGTERM
        stdout, stderr = soak.communicate(timeout=180)
    assert soak.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert stdout.strip().splitlines()[-1].startswith("RESULT throughput_jobs_per_s=")
    assert "RESULT jobs_lost=0\n" in stdout and "RESULT jobs_completed_twice=0\n" in stdout
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "service_soak" and "SIGKILL" in payload["notes"]
    assert payload["machine"]["cpus"] == os.cpu_count() and payload["measured_utc"]
    assert all(isinstance(value, int | float) for value in payload["results"].values())
    figures = payload["results"]
    assert figures["jobs_accepted"] > 0
    assert figures["jobs_completed_exactly_once"] == figures["jobs_accepted"]
    assert figures["jobs_lost"] == figures["jobs_failed"] == figures["jobs_completed_twice"] == 0
    assert figures["worker_kills"] >= 1 and figures["service_restarts"] == 1
    assert figures["jobs_caught_by_the_restart"] >= 1  # queued or running at the kill
    assert figures["orphans_after_restart"] == figures["orphans_after_stop"] == 0
    assert 0 < figures["latency_p50_s"] <= figures["latency_p95_s"] <= figures["latency_p99_s"]
    assert figures["throughput_jobs_per_s"] > 0
    assert figures["rss_mb_instance1_start"] > 0 and figures["rss_mb_instance1_end"] > 0

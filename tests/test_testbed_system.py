"""The testbed as a system: Ray workers, gangs, the controller, faults and the HTTP API.

One embedded Ray (loopback only) with three CPU workers serves the whole module (and the
service tests: the session's ``testbed_cluster``). The fault test kills worker processes
for real (SIGKILL of the actor's PID)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import json
import os
import signal
import time
from typing import ClassVar

import numpy as np
import pytest

from eat.schedulers.base import Scheduler
from eat.sim.simulator import RECORD_COLUMNS, Dispatch, Simulator

# Ray is imported by the tests themselves, never at collection: other modules of the
# session select Ray's local-only mode before they first import it.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray"),
    pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="needs fastapi"),
]

WORKERS = 3
PROMPTS = ["a lighthouse at dawn", "a red fox in snow", "a bowl of ramen"]


@pytest.fixture(scope="module")
def bed(testbed_cluster):
    """Params, preset, workers and model folders of the session's embedded Ray cluster
    (tests/conftest.py: three tiny CPU workers)."""
    from eat.testbed.cluster import reset_caches

    assert len(testbed_cluster["workers"]) == WORKERS
    reset_caches(testbed_cluster["workers"])  # cold, whatever earlier modules ran
    return testbed_cluster


def settings(params):
    from eat.testbed.bed import controller_settings

    return controller_settings(params.testbed)


def test_ray_listens_on_loopback_only(bed):
    import ray

    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    assert bed["exchange"]["latency_s"] >= 0 and bed["exchange"]["points"] == 3


def test_gang_of_two_through_ray_equals_the_local_patch_computation(bed):
    """The distributed exchange (members' bands gathered by the leader every step) gives
    bit-for-bit the image of the same bands computed in one process."""
    import ray

    from eat.testbed.engine import GenerationRequest, generate, png_bytes
    from eat.testbed.models import load_model
    from eat.testbed.worker import TaskSpec

    workers = bed["workers"]
    request = GenerationRequest(PROMPTS[0], 128, 4, 5.0, seed=21)
    result = ray.get(
        workers[0].run_task.remote(TaskSpec(100, 1, "sd15", request, (0, 1)), [workers[1]])
    )
    local = load_model(
        "sd15", bed["folders"]["sd15"], device="cpu", dtype="float32", scheduler="ddim"
    )
    expected = generate(local, request, patches=2, margin=bed["params"].testbed.margin_rows)
    assert result.png == png_bytes(expected.image)
    assert result.bands == [(0, 8, 0, 10), (8, 16, 6, 16)]
    assert len(result.member_cold_start_s) == 2 and len(result.step_s) == 4
    assert set(result.resident_after) == {0, 1}


def test_controller_replays_a_workload_in_the_simulator_schema(bed):
    from eat.testbed.bed import make_testbed_scheduler, replay, workload

    params, preset, workers = bed["params"], bed["preset"], bed["workers"]
    tasks, prompts = workload(preset, params.testbed)
    scheduler = make_testbed_scheduler("eft", params, None)
    controller, results = asyncio.run(
        replay(preset, workers, scheduler, params.testbed, tasks, prompts)
    )
    frame = controller.records_frame()
    assert list(frame.columns[: len(RECORD_COLUMNS)]) == RECORD_COLUMNS
    assert sorted(frame["task_id"]) == [t.task_id for t in tasks]  # none lost, none twice
    assert np.allclose(frame["latency"], frame["finish"] - frame["arrival"])
    assert np.allclose(frame["waiting"] + frame["service"], frame["latency"])
    assert (frame["steps"].between(preset.min_steps, preset.max_steps)).all()
    assert (frame["attempts"] == 1).all() and controller.failures_frame().empty
    assert all(r.png.startswith(b"\x89PNG") for r in results)
    segments = controller.segments_frame()
    assert len(segments) == frame["gang_size"].sum()
    import ray

    # the shadow's residency is what the workers report
    reported = ray.get([w.ping.remote() for w in workers])
    for state in reported:
        assert list(controller.shadow.servers[state["server"]].resident) == state["resident"]
    # the twin follows every real dispatch and decides before each (a real record's
    # decision_ms and servers are what history_agreement reads)
    from eat.evaluation.runner import scheduler_rng
    from eat.testbed.compare import history_agreement

    decisions = history_agreement(
        preset,
        make_testbed_scheduler("eft", params, None),
        tasks,
        frame,
        scheduler_rng("eft", params.testbed.workload.seed),
    )
    assert sorted(decisions["task_id"]) == sorted(frame["task_id"])
    assert decisions["twin_task_id"].notna().any()


def test_a_trained_agent_drives_the_testbed(bed, tmp_path):
    """A learned scheduler (random weights, saved as the train stage saves its models)
    decides from Encoder(shadow).observe() on the live cluster."""
    pytest.importorskip("eat.schedulers.rl.agent")
    from eat.schedulers.rl import AGENTS
    from eat.schedulers.rl.agent import build_actor, save_actor
    from eat.sim.encoding import Encoder
    from eat.stages.paths import model_dir
    from eat.testbed.bed import make_testbed_scheduler, replay, workload
    from eat.training.loop import sac_config

    params, preset = bed["params"], bed["preset"]
    trained_on = params.env.preset(params.testbed.learned_preset)
    encoder = Encoder(Simulator(trained_on))
    shapes = {
        "n_tokens": encoder.n_tokens,
        "in_features": encoder.n_features,
        "action_size": encoder.action_size,
    }
    config = sac_config(params, params.testbed.learned_preset, 0, dict(AGENTS["eat"]))
    directory = model_dir(tmp_path, params.testbed.learned_preset, "eat", params.seeds.train[0])
    save_actor(directory, build_actor(config, shapes), config, shapes, agent="eat", preset="edge")
    scheduler = make_testbed_scheduler("eat", params, tmp_path)
    tasks, prompts = workload(preset, params.testbed)
    controller, _ = asyncio.run(
        replay(preset, bed["workers"], scheduler, params.testbed, tasks[:3], prompts[:3])
    )
    assert sorted(controller.records_frame()["task_id"]) == [t.task_id for t in tasks[:3]]
    with pytest.raises(FileNotFoundError, match=r"no trained .sac. on preset .edge.*run the train stage"):
        make_testbed_scheduler("sac", params, tmp_path)


class ScriptedScheduler(Scheduler):
    """Puts planned tasks on planned gangs (the fault test needs to know where a task
    runs); anything else, or a plan whose servers are not free, on the first free
    server with ``min_steps``."""

    name: ClassVar[str] = "scripted"

    def __init__(self, plan: dict[int, tuple[tuple[int, ...], int]]) -> None:
        self.plan = plan

    def decide(self, sim: Simulator) -> Dispatch | None:
        free = sim.free_servers()
        for task in sim.dispatchable():
            servers, steps = self.plan.pop(task.task_id, (None, sim.preset.min_steps))
            if servers is not None and all(s in free for s in servers):
                return Dispatch(task.task_id, steps, servers)
            return Dispatch(task.task_id, sim.preset.min_steps, (free[0],))
        return None


def test_a_killed_worker_task_is_rerun_elsewhere_and_never_lost_or_duplicated(bed):
    """SIGKILL a gang member mid-task, then a leader: both tasks complete once, on
    other servers; the dead workers come back (Ray restarts them) with empty caches."""
    import ray

    from eat.testbed.controller import Controller, TaskRequest

    params, preset, workers = bed["params"], bed["preset"], bed["workers"]
    pids_before = {s["server"]: s["pid"] for s in ray.get([w.ping.remote() for w in workers])}
    # task 0: 128 px on servers (0, 1), member 1 dies; task 1: on (2, 0), leader 2 dies
    scheduler = ScriptedScheduler({0: ((0, 1), 8), 1: ((2, 0), 8)})

    async def scenario() -> Controller:
        controller = Controller(preset, workers, scheduler, settings(params), rng=np.random.default_rng(7))
        request = TaskRequest("sd15", 128, PROMPTS[1], 60.0, seed=1)
        first = controller.submit(request)
        # Kill as soon as the gang is seen running: a tiny task takes well under a
        # second, so any delay here risks killing the worker after the task finished.
        await _until(lambda: _running_on(controller, 0) == (0, 1), poll=0.002)
        os.kill(pids_before[1], signal.SIGKILL)
        await asyncio.wait_for(first, 120)
        second = controller.submit(TaskRequest("sd15", 128, PROMPTS[2], 60.0, seed=2))
        third = controller.submit(TaskRequest("sdxl", 64, PROMPTS[0], 60.0, seed=3))
        await _until(lambda: _running_on(controller, 1) == (2, 0), timeout=60, poll=0.002)
        os.kill(pids_before[2], signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(second, third), 120)
        await _until(lambda: not controller.down, timeout=120)  # both are back
        await controller.close()
        return controller

    controller = asyncio.run(scenario())
    frame = controller.records_frame().set_index("task_id")
    assert sorted(frame.index) == [0, 1, 2]  # none lost, none duplicated
    assert frame.loc[0, "attempts"] == 2 and "1" not in frame.loc[0, "servers"].split(",")
    assert frame.loc[1, "attempts"] == 2 and "2" not in frame.loc[1, "servers"].split(",")
    assert frame.loc[2, "attempts"] == 1
    failures = controller.failures_frame()
    assert failures["dead"].tolist() == ["1", "2"] and not failures["final"].any()
    assert "leader died" in failures["error"].iloc[1]
    states = {s["server"]: s for s in ray.get([w.ping.remote() for w in workers])}
    assert states[1]["pid"] != pids_before[1] and states[2]["pid"] != pids_before[2]
    assert states[0]["pid"] == pids_before[0]
    status = controller.status()
    assert status["pending"] == 0 and all(not s["down"] for s in status["servers"])


def test_a_hung_worker_is_killed_restarted_and_its_task_rerun(bed):
    """SIGSTOP a gang member mid-task (a live process that never answers): after the
    hang timeout the controller kills it (only it: the leader still answers pings), Ray
    restarts it, and the task completes once on other servers."""
    import dataclasses

    import ray

    from eat.testbed.controller import Controller, TaskRequest

    params, preset, workers = bed["params"], bed["preset"], bed["workers"]
    pids_before = {s["server"]: s["pid"] for s in ray.get([w.ping.remote() for w in workers])}
    # a tiny task takes well under a second here; 8 s is far above any healthy one
    patient = dataclasses.replace(settings(params), hang_min_s=8.0, ping_timeout_s=2.0)
    scheduler = ScriptedScheduler({0: ((0, 2), 8)})

    async def scenario() -> tuple[Controller, float]:
        controller = Controller(preset, workers, scheduler, patient, rng=np.random.default_rng(7))
        first = controller.submit(TaskRequest("sd15", 128, PROMPTS[0], 60.0, seed=4))
        await _until(lambda: _running_on(controller, 0) == (0, 2), poll=0.002)
        stopped = time.monotonic()
        os.kill(pids_before[2], signal.SIGSTOP)
        try:
            await asyncio.wait_for(first, 120)
            waited = time.monotonic() - stopped
            await _until(lambda: not controller.down, timeout=120)  # restarted
        finally:  # never leave a stopped process behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pids_before[2], signal.SIGKILL)
        await controller.close()
        return controller, waited

    controller, waited = asyncio.run(scenario())
    assert waited >= 8.0  # not before the hang timeout
    frame = controller.records_frame().set_index("task_id")
    assert list(frame.index) == [0]
    assert frame.loc[0, "attempts"] == 2 and "2" not in frame.loc[0, "servers"].split(",")
    failures = controller.failures_frame()
    assert failures["dead"].tolist() == ["2"] and not failures["final"].any()
    assert failures["error"].iloc[0].startswith("hung")
    states = {s["server"]: s for s in ray.get([w.ping.remote() for w in workers])}
    assert states[2]["pid"] != pids_before[2] and states[0]["pid"] == pids_before[0]


def _running_on(controller, task_id: int) -> tuple[int, ...] | None:
    pending = controller._pending.get(task_id)
    if pending is None or not pending.running or pending.outcome is None:
        return None
    return pending.outcome.servers


async def _until(condition, timeout: float = 30.0, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(poll)


def test_http_service_validates_serves_and_survives_a_bounded_burst(bed):
    import httpx

    from eat.testbed.auth import KeyRing
    from eat.testbed.bed import make_testbed_scheduler
    from eat.testbed.controller import Controller
    from eat.testbed.jobs import JobStore
    from eat.testbed.loadtest import run_load_test
    from eat.testbed.service import serve_in_thread

    params, preset, workers = bed["params"], bed["preset"], bed["workers"]
    scheduler = make_testbed_scheduler("eft", params, None)
    store = JobStore.open(bed["tmp"] / "http-jobs.sqlite3")
    server = serve_in_thread(
        lambda: Controller(
            preset, workers, scheduler, settings(params), rng=np.random.default_rng(7)
        ),
        store,
        params.testbed.service,
        KeyRing(),  # loopback, open
    )
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=server.url, timeout=60) as client:
            models = client.get("/v1/models").json()
            assert models["models"]["sd15"]["resolutions"] == [64, 128]
            good = {"prompt": PROMPTS[0], "model": "sd15", "resolution": 64, "deadline_s": 30}
            bad_cases = [
                ({**good, "model": "flux"}, "model 'flux' is not served; choose one of"),
                ({**good, "resolution": 96}, "resolution 96 is not served for sd15"),
                ({k: v for k, v in good.items() if k != "prompt"}, "Field required"),
                ({**good, "deadline_s": -1}, "greater than 0"),
                ({**good, "steps": 3}, "Extra inputs are not permitted"),
                ({**good, "resolution": "big"}, "valid integer"),
                ({**good, "prompt": "   "}, "prompt must not be blank"),
            ]
            for body, message in bad_cases:
                response = client.post("/v1/generate", json=body)
                assert response.status_code == 422, body
                assert message in response.text, response.text
            status = client.get("/v1/status").json()
            assert status["queued"] == 0 and status["pending"] == 0  # nothing was queued
            response = client.post("/v1/generate", json=good)
            assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
            timing = json.loads(response.headers["X-EAT-Timing"])
            assert timing["model"] == "sd15" and timing["latency"] > 0
            as_json = client.post("/v1/generate?format=json", json={**good, "seed": 4}).json()
            assert as_json["timing"]["task_id"] == 1 and as_json["image_png_base64"]
            from PIL import Image

            image = Image.open(io.BytesIO(response.content))
            assert image.size == (64, 64)
        bodies = [{**good, "seed": i, "prompt": PROMPTS[i % 3]} for i in range(10)]
        report = asyncio.run(run_load_test(server.url, bodies, concurrency=5, timeout_s=120))
        assert report.completed == 10 and report.errors == 0, report.error_messages
        assert 0 < report.latency_p50_s <= report.latency_p95_s <= report.latency_p99_s
        assert report.throughput_rps > 0
        with pytest.raises(ValueError, match="loopback only"):
            asyncio.run(run_load_test("http://10.0.0.1:80", bodies, concurrency=1, timeout_s=1))
    finally:
        server.stop()
        store.close()

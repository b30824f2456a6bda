"""The HTTP job API in process: a real uvicorn on 127.0.0.1, real SQLite, real Ray workers.

The session's embedded Ray (loopback only, tiny CPU workers: ``testbed_cluster``) serves
the whole module; each test starts its own server (one at a time: two controllers must not share the workers)
on its own job store. Tests that need the queue to stand still ``hold`` the controller
(no new gang starts) and ``release`` it; nothing waits on a sleep.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.service_support import PROMPTS, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray"),
    pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="needs fastapi"),
]

GOOD = {"prompt": PROMPTS[0], "model": "sd15", "resolution": 64, "deadline_s": 60.0}


@pytest.fixture(scope="module")
def bed(testbed_cluster):
    """The session's embedded Ray with its tiny CPU workers (tests/conftest.py)."""
    return testbed_cluster


@contextlib.contextmanager
def running(bed, store_path: Path, keys=None, **service_changes) -> Iterator:
    """A server on the module's workers with ``testbed.service`` changed as given."""
    from eat.testbed.auth import KeyRing
    from eat.testbed.bed import controller_settings, make_testbed_scheduler
    from eat.testbed.controller import Controller
    from eat.testbed.jobs import JobStore
    from eat.testbed.service import serve_in_thread

    params = bed["params"]
    service = params.testbed.service.model_copy(update={"store_retry_s": 0.1, **service_changes})
    scheduler = make_testbed_scheduler("eft", params, None)
    settings = controller_settings(params.testbed, history=service.recent_tasks)
    store = JobStore.open(store_path)
    server = serve_in_thread(
        lambda: Controller(
            bed["preset"], bed["workers"], scheduler, settings, rng=np.random.default_rng(7)
        ),
        store,
        service,
        keys or KeyRing(),
    )
    try:
        yield server
    finally:
        server.stop()
        store.close()


def client_for(server, **headers):
    import httpx

    return httpx.Client(base_url=server.url, timeout=120, headers=headers)


def until_final(client, job_ids, timeout_s: float = 120.0) -> dict[str, dict]:
    """Poll every job until it is final; their last views."""
    views: dict[str, dict] = {}

    def all_final() -> bool:
        for job_id in job_ids:
            if views.get(job_id, {}).get("state") not in ("done", "failed", "cancelled"):
                views[job_id] = client.get(f"/v1/jobs/{job_id}").json()
        return all(v["state"] in ("done", "failed", "cancelled") for v in views.values())

    wait_for(all_final, timeout_s, what=f"jobs {job_ids} final")
    return views


def job_count(server) -> int:
    return sum(server.runner.store.counts().values())


def metric(server, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample of the app's metrics (read on the server's loop: no key, no rate limit)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = server.call(lambda: server.app.state.metrics.exposition()[0].decode())
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels or {}).items() <= sample.labels.items():
                return sample.value
    raise KeyError(name)


# ---------------------------------------------------------------------- the job API
def test_jobs_are_submitted_polled_fetched_and_cancelled(bed, tmp_path):
    from PIL import Image

    with running(bed, tmp_path / "jobs.sqlite3") as server, client_for(server) as client:
        response = client.post("/v1/jobs", json=GOOD)
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["id"].startswith("job_") and response.headers["location"] == job["links"]["self"]
        assert job["links"]["image"] == f"/v1/jobs/{job['id']}/image"
        view = until_final(client, [job["id"]])[job["id"]]
        assert view["state"] == "done" and view["attempts"] == 1
        assert view["timing"]["model"] == "sd15" and view["timing"]["latency"] > 0
        assert view["latency_s"] >= view["waiting_s"] >= 0
        image = client.get(job["links"]["image"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (64, 64)
        assert json.loads(image.headers["x-eat-timing"])["task_id"] == view["timing"]["task_id"]
        assert client.delete(job["links"]["self"]).status_code == 409  # done: not cancellable

        # a queued job is cancelled, never runs, and has no image
        server.call(server.runner.controller.hold)
        queued = client.post("/v1/jobs", json={**GOOD, "seed": 5}).json()
        assert client.get(queued["links"]["self"]).json()["state"] == "queued"
        assert client.get(queued["links"]["image"]).status_code == 409
        cancelled = client.delete(queued["links"]["self"])
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        server.call(server.runner.controller.release)
        assert client.delete(queued["links"]["self"]).status_code == 409
        status = client.get("/v1/status").json()
        assert status["queued"] == 0 and status["jobs"]["cancelled"] == 1
        kinds = [kind for kind, _, _ in server.runner.store.events(queued["id"])]
        assert kinds == ["accepted", "cancelled"]

        # unknown and malformed ids
        assert client.get(f"/v1/jobs/job_{'0' * 32}").status_code == 404
        malformed = client.get("/v1/jobs/nope")
        assert malformed.status_code == 422 and malformed.json()["detail"][0]["loc"] == [
            "path",
            "job_id",
        ]

        # the synchronous endpoint runs the same path: its job is in the store
        generated = client.post("/v1/generate", json={**GOOD, "seed": 9})
        assert generated.status_code == 200 and generated.content.startswith(b"\x89PNG")
        job_id = generated.headers["x-eat-job-id"]
        assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "done"
        assert client.get(f"/v1/jobs/{job_id}/image").content == generated.content
        as_json = client.post("/v1/generate?format=json", json={**GOOD, "seed": 10}).json()
        assert as_json["job"]["state"] == "done" and as_json["image_png_base64"]


def test_an_idempotency_key_returns_the_job_it_made(bed, tmp_path):
    with running(bed, tmp_path / "jobs.sqlite3") as server, client_for(server) as client:
        first = client.post("/v1/jobs", json=GOOD, headers={"Idempotency-Key": "order-17"})
        again = client.post("/v1/jobs", json=GOOD, headers={"Idempotency-Key": "order-17"})
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        other = client.post(
            "/v1/jobs", json={**GOOD, "seed": 1}, headers={"Idempotency-Key": "order-17"}
        )
        assert other.status_code == 422
        assert other.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
        # a synchronous retry after a dropped connection gets the same job's image
        synchronous = client.post(
            "/v1/generate", json=GOOD, headers={"Idempotency-Key": "order-17"}
        )
        assert synchronous.headers["x-eat-job-id"] == first.json()["id"]
        assert job_count(server) == 1


def test_a_graceful_stop_keeps_queued_jobs_for_the_next_start(bed, tmp_path):
    store = tmp_path / "jobs.sqlite3"
    with running(bed, store) as server, client_for(server) as client:
        server.call(server.runner.controller.hold)
        ids = [client.post("/v1/jobs", json={**GOOD, "seed": i}).json()["id"] for i in range(3)]
        assert client.get("/v1/status").json()["queued"] == 3
    with running(bed, store) as server, client_for(server) as client:
        views = until_final(client, ids)
        assert {v["state"] for v in views.values()} == {"done"}
        for job_id in ids:  # the second instance ran them, once
            events = server.runner.store.events(job_id)
            assert [kind for kind, _, _ in events] == ["accepted", "started", "completed"]
            assert events[0][1] != events[1][1] == server.runner.store.instance


# ---------------------------------------------------------------------- admission control
def test_past_the_queue_bound_jobs_get_429_with_retry_after_and_nothing_is_queued(bed, tmp_path):
    with (
        running(bed, tmp_path / "jobs.sqlite3", max_queued_jobs=3) as server,
        client_for(server) as client,
    ):
        server.call(server.runner.controller.hold)  # the queue stands still
        responses = [client.post("/v1/jobs", json={**GOOD, "seed": i}) for i in range(5)]
        assert [r.status_code for r in responses] == [202, 202, 202, 429, 429]
        refused = responses[-1]
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["reason"] == "queue_full"
        assert "max_queued_jobs" in refused.json()["detail"]
        assert job_count(server) == 3 and client.get("/v1/status").json()["queued"] == 3
        sync = client.post("/v1/generate", json=GOOD)
        assert sync.status_code == 429 and job_count(server) == 3
        assert metric(server, "eat_requests_rejected_total", {"reason": "queue_full"}) == 3
        assert metric(server, "eat_queue_length") == 3
        server.call(server.runner.controller.release)
        views = until_final(client, [r.json()["id"] for r in responses[:3]])
        assert {v["state"] for v in views.values()} == {"done"}


def test_the_deadline_policy_refuses_jobs_the_twin_predicts_late(bed, tmp_path):
    from eat.testbed.admission import forecast

    with (
        running(bed, tmp_path / "jobs.sqlite3", admission="predicted_deadline") as server,
        client_for(server) as client,
    ):
        controller = server.runner.controller
        server.call(controller.hold)
        idle = server.call(lambda: forecast(controller.shadow, "sd15", 64, controller.now()))
        deadline = 3.0 * idle.finish_s  # about three jobs' work on the two servers
        accepted, refused = [], None
        for seed in range(40):  # bounded: the forecast grows with every queued job
            response = client.post("/v1/jobs", json={**GOOD, "deadline_s": deadline, "seed": seed})
            if response.status_code != 202:
                refused = response
                break
            accepted.append(response.json()["id"])
        assert accepted and refused is not None
        assert refused.status_code == 429 and refused.json()["reason"] == "deadline_unmeetable"
        assert "predicts completion in" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
        assert job_count(server) == len(accepted)
        impossible = client.post("/v1/jobs", json={**GOOD, "deadline_s": idle.idle_finish_s / 10})
        assert impossible.status_code == 422
        assert impossible.json()["detail"][0]["loc"] == ["body", "deadline_s"]
        assert "even on an idle cluster" in impossible.text
        assert job_count(server) == len(accepted)
        server.call(controller.release)
        assert {v["state"] for v in until_final(client, accepted).values()} == {"done"}


# ---------------------------------------------------------------------- access control
def test_keys_are_required_when_configured_and_rate_limited(bed, tmp_path):
    from eat.testbed.auth import KeyRing, key_hash, new_key

    key_a, _ = new_key()
    key_b, _ = new_key()
    keys = KeyRing({key_hash(key_a): "key_a", key_hash(key_b): "key_b"})
    with running(
        bed, tmp_path / "jobs.sqlite3", keys, rate_limit_per_s=0.5, rate_limit_burst=4
    ) as server:
        with client_for(server) as anonymous:
            missing = anonymous.post("/v1/jobs", json=GOOD)
            wrong = anonymous.post(
                "/v1/jobs", json=GOOD, headers={"Authorization": "Bearer " + "x" * 43}
            )
            assert missing.status_code == wrong.status_code == 401
            assert missing.json() == wrong.json() == {"detail": "missing or invalid API key"}
            assert missing.headers["www-authenticate"] == "Bearer"
            for path in ("/metrics", "/v1/status", "/openapi.json", "/no/such/path"):
                assert anonymous.get(path).status_code == 401, path  # nothing is revealed
            assert anonymous.get("/healthz").status_code == 200
            assert job_count(server) == 0
        with (
            client_for(server, Authorization=f"Bearer {key_a}") as a,
            client_for(server, Authorization=f"Bearer {key_b}") as b,
        ):
            job = a.post("/v1/jobs", json=GOOD)
            assert job.status_code == 202
            assert b.get(job.json()["links"]["self"]).status_code == 404  # another key's job
            assert a.get(job.json()["links"]["self"]).status_code == 200
            codes = [a.get("/v1/models").status_code for _ in range(4)]
            assert codes[-1] == 429  # a burst of 4, at 0.5 per second
            limited = a.get("/v1/models")
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
            assert b.get("/v1/models").status_code == 200  # per key
        assert metric(server, "eat_requests_rejected_total", {"reason": "unauthorized"}) == 6
        assert metric(server, "eat_requests_rejected_total", {"reason": "rate_limited"}) >= 2


def test_keys_load_from_the_environment_and_a_hash_file_outside_the_repository(
    tmp_path, monkeypatch
):
    from eat.testbed.auth import KeySetupError, access_line, load_keys, new_key

    key, line = new_key()
    other, _ = new_key()
    monkeypatch.setenv("EAT_TEST_KEYS", f"{key}, {other}")
    keys = load_keys("EAT_TEST_KEYS", None, REPO)
    assert "EAT_TEST_KEYS" not in os.environ  # Ray processes started later do not inherit it
    assert keys.identify(f"Bearer {key}") and keys.identify(f"bearer {other}")
    assert keys.identify(f"Bearer {key}x") is None and keys.identify(key) is None
    assert key not in repr(keys) and other not in repr(keys)  # only hashes are kept
    monkeypatch.setenv("EAT_TEST_KEYS", "short")
    with pytest.raises(KeySetupError, match=r"EAT_TEST_KEYS: key 1 of 1 has 5 characters") as error:
        load_keys("EAT_TEST_KEYS", None, REPO)
    assert "short" not in str(error.value)

    key_file = tmp_path / "keys"
    key_file.write_text(f"# team keys\n{line}  ci-runner\n\n")
    assert load_keys("EAT_UNSET_VARIABLE", str(key_file), REPO).identify(f"Bearer {key}")
    key_file.write_text(f"{key}\n")
    with pytest.raises(KeySetupError, match="line 1 is not a key hash") as error:
        load_keys("EAT_UNSET_VARIABLE", str(key_file), REPO)
    assert key not in str(error.value)
    with pytest.raises(KeySetupError, match="inside the repository"):
        load_keys("EAT_UNSET_VARIABLE", str(REPO / "keys.txt"), REPO)
    with pytest.raises(KeySetupError, match="cannot be read"):
        load_keys("EAT_UNSET_VARIABLE", str(tmp_path / "missing"), REPO)

    empty = load_keys("EAT_UNSET_VARIABLE", None, REPO)
    assert "open, no API keys configured" in access_line("127.0.0.1", empty)
    assert "open" in access_line("::1", empty)
    with pytest.raises(KeySetupError, match=r"binding to 0\.0\.0\.0 needs API keys"):
        access_line("0.0.0.0", empty)
    assert "required" in access_line("0.0.0.0", keys)


def test_a_non_loopback_server_without_keys_refuses_to_start(bed, tmp_path):
    from eat.testbed.auth import KeyRing, KeySetupError
    from eat.testbed.jobs import JobStore
    from eat.testbed.service import serve_in_thread

    store = JobStore.open(tmp_path / "jobs.sqlite3")
    try:
        with pytest.raises(KeySetupError, match="needs API keys"):  # before anything binds
            serve_in_thread(
                lambda: None, store, bed["params"].testbed.service, KeyRing(), host="0.0.0.0"
            )
    finally:
        store.close()


# ---------------------------------------------------------------------- bad input
def test_oversized_bodies_are_refused_before_they_are_read_and_never_echoed(bed, tmp_path):
    with (
        running(bed, tmp_path / "jobs.sqlite3", max_body_bytes=4096) as server,
        client_for(server) as client,
    ):
        huge = {**GOOD, "prompt": "p" * 10_000}
        declared = client.post("/v1/jobs", json=huge)  # Content-Length over the limit
        assert declared.status_code == 413 and declared.json()["reason"] == "body_too_large"

        def chunks():
            yield b'{"prompt": "'
            for _ in range(100):
                yield b"q" * 1000
            yield b'"}'

        streamed = client.post(
            "/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
        )  # no Content-Length: counted while it arrives
        assert streamed.status_code == 413
        long_prompt = client.post("/v1/jobs", json={**GOOD, "prompt": "r" * 3000})
        assert long_prompt.status_code == 422 and len(long_prompt.content) < 500
        assert "rrrr" not in long_prompt.text
        assert long_prompt.json()["detail"][0]["loc"] == ["body", "prompt"]
        long_model = client.post("/v1/jobs", json={**GOOD, "model": "m" * 1000})
        assert long_model.status_code == 422 and "mmmm" not in long_model.text
        assert job_count(server) == 0
        assert metric(server, "eat_requests_rejected_total", {"reason": "body_too_large"}) == 2


def test_fuzzed_bodies_queries_headers_and_paths_get_clear_4xx_and_queue_nothing(bed, tmp_path):
    """Property-based: generated bodies (near-valid and arbitrary JSON, raw bytes), query
    strings, headers and job ids, against every endpoint. Never a 5xx; every refusal a
    JSON 4xx (a 422 names the field); a refused request leaves the store unchanged."""
    import httpx
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
    )
    json_values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    )

    def field(*valid):
        return st.one_of(st.sampled_from(valid), json_values, st.text(min_size=1900, max_size=2100))

    near_valid = st.fixed_dictionaries(
        {},
        optional={
            "prompt": field(*PROMPTS, " ", ""),
            "model": field("sd15", "sdxl", "flux"),
            "resolution": field(64, 128, 96, 0, -64, "64"),
            "deadline_s": field(60.0, 0.0, -1.0, 1e300),
            "seed": field(0, 2**32, -1),
            "negative_prompt": field(None, "blurry"),
            "steps": field(8),
        },
    )
    bodies = st.one_of(near_valid, json_values)
    printable = st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200
    ).map(str.strip)
    headers = st.fixed_dictionaries(
        {},
        optional={
            "content-type": st.sampled_from(
                [
                    "application/json",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "",
                    "application/json; charset=latin-1",
                ]
            ),
            "idempotency-key": printable,
            "authorization": printable,
            "accept": printable,
        },
    )
    queries = st.dictionaries(st.sampled_from(["format", "page", "x", "id"]), printable, max_size=3)
    paths = st.one_of(printable, st.sampled_from([f"job_{'a' * 32}", "job_", "..", "%00"]))
    fuzz = settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

    with running(bed, tmp_path / "jobs.sqlite3") as server, client_for(server) as client:

        def check(response: httpx.Response, jobs_before: int) -> None:
            status = response.status_code
            assert status < 500, (status, response.text[:300])
            if status >= 400:
                assert response.headers["content-type"].startswith("application/json")
                detail = response.json()["detail"]
                if status == 422:
                    assert detail and all(
                        item["loc"] and item["loc"][0] in ("body", "query", "path", "header")
                        for item in detail
                    ), detail
                assert len(response.content) < 4096, len(response.content)  # no big echo
                assert job_count(server) == jobs_before  # a refusal queues nothing
            else:
                assert status in (200, 202)

        def send(method: str, url: str, **kwargs) -> None:
            before = job_count(server)
            check(client.request(method, url, **kwargs), before)

        @fuzz
        @given(
            body=bodies,
            endpoint=st.sampled_from(["/v1/jobs", "/v1/generate"]),
            query=queries,
            extra=headers,
        )
        def json_bodies(body, endpoint, query, extra):
            send(
                "POST",
                endpoint,
                content=json.dumps(body).encode(),
                params=query,
                headers={"content-type": "application/json", **extra},
            )

        @fuzz
        @given(
            raw=st.binary(max_size=600),
            endpoint=st.sampled_from(["/v1/jobs", "/v1/generate"]),
            extra=headers,
        )
        def raw_bodies(raw, endpoint, extra):
            send("POST", endpoint, content=raw, headers=extra)

        @fuzz
        @given(
            method=st.sampled_from(["GET", "DELETE", "POST", "PUT"]),
            job=paths,
            suffix=st.sampled_from(["", "/image"]),
            query=queries,
            extra=headers,
        )
        def job_paths(method, job, suffix, query, extra):
            send(method, f"/v1/jobs/{job}{suffix}", params=query, headers=extra)

        @fuzz
        @given(
            path=st.sampled_from(
                ["/v1/models", "/v1/status", "/metrics", "/healthz", "/v1/jobs", "/v1/generate"]
            ),
            method=st.sampled_from(["GET", "POST", "DELETE", "PATCH"]),
            query=queries,
            extra=headers,
        )
        def other_endpoints(path, method, query, extra):
            send(method, path, params=query, headers=extra)

        json_bodies()
        raw_bodies()
        job_paths()
        other_endpoints()
        accepted = [row[0] for row in server.runner.store.execute("SELECT id FROM jobs")]
        views = until_final(client, accepted)
        assert all(v["state"] == "done" for v in views.values())


# ---------------------------------------------------------------------- metrics
def test_metrics_count_jobs_latency_cold_starts_and_worker_restarts(bed, tmp_path):
    import ray
    from prometheus_client.parser import text_string_to_metric_families

    from eat.testbed.cluster import reset_caches

    reset_caches(bed["workers"])  # cold: earlier tests left models resident
    with running(bed, tmp_path / "jobs.sqlite3") as server, client_for(server) as client:
        first = client.post("/v1/jobs", json=GOOD).json()["id"]
        until_final(client, [first])
        # a worker dies while idle: its next gang fails, the job runs elsewhere, Ray
        # restarts the worker and the controller puts it back in service
        pids = [state["pid"] for state in ray.get([w.ping.remote() for w in bed["workers"]])]
        os.kill(pids[1], signal.SIGKILL)
        ids = []
        for batch in range(10):  # bounded: until a gang lands on the dead worker
            ids += [
                client.post(
                    "/v1/jobs", json={**GOOD, "model": "sdxl", "seed": 2 * batch + i}
                ).json()["id"]
                for i in range(2)
            ]
            until_final(client, ids)
            if metric(server, "eat_worker_failures_total") >= 1:
                break
        views = until_final(client, ids)
        assert {v["state"] for v in views.values()} == {"done"}
        assert any(v["attempts"] == 2 for v in views.values())  # one ran again elsewhere
        wait_for(lambda: metric(server, "eat_worker_restarts_total") >= 1, 120, what="restart")
        client.post("/v1/jobs", json={"model": "flux"})  # one refusal
        response = client.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        for name in (
            "eat_queue_length",
            "eat_jobs_running",
            "eat_jobs",
            "eat_workers_down",
            "eat_job_store_writable",
            "eat_job_latency_seconds",
            "eat_job_waiting_seconds",
            "eat_job_service_seconds",
            "eat_cold_starts",
            "eat_worker_failures",
            "eat_worker_restarts",
            "eat_requests_rejected",
            "eat_jobs_accepted",
        ):
            assert name in families, name
        assert families["eat_job_latency_seconds"].type == "histogram"
        assert metric(server, "eat_job_latency_seconds_count") == len(ids) + 1
        assert metric(server, "eat_jobs", {"state": "done"}) == len(ids) + 1
        assert metric(server, "eat_cold_starts_total") >= 2  # sd15, then sdxl evicts it
        assert metric(server, "eat_worker_failures_total") >= 1
        assert metric(server, "eat_requests_rejected_total", {"reason": "invalid"}) == 1
        assert metric(server, "eat_job_store_writable") == 1


# ---------------------------------------------------------------------- the store fails
@pytest.mark.parametrize(
    ("fault", "cleared", "message"),
    [
        ("PRAGMA query_only=ON", "PRAGMA query_only=OFF", "readonly"),
        ("PRAGMA max_page_count=1", "PRAGMA max_page_count=1073741823", "full"),
    ],
    ids=["read-only", "full"],
)
def test_a_store_that_cannot_be_written_refuses_new_jobs_and_loses_none(
    bed, tmp_path, fault, cleared, message
):
    """SQLite's own read-only mode and page limit: the same errors a read-only or full
    file system gives (SQLITE_READONLY, SQLITE_FULL)."""
    with running(bed, tmp_path / "jobs.sqlite3") as server, client_for(server) as client:
        store = server.runner.store
        controller = server.runner.controller
        server.call(controller.hold)
        accepted = [
            client.post("/v1/jobs", json={**GOOD, "seed": i}).json()["id"] for i in range(3)
        ]
        store.execute(fault)  # the page limit cannot shrink the file: it is full from now on
        refused = None
        for seed in range(20):  # a page may still have room for a row or two
            response = client.post("/v1/jobs", json={**GOOD, "prompt": "w " * 900, "seed": seed})
            if response.status_code != 202:
                refused = response
                break
            accepted.append(response.json()["id"])
        assert refused is not None and refused.status_code == 503
        assert refused.json()["reason"] == "store_unwritable"
        assert (
            message in refused.json()["detail"] and "nothing is queued" in refused.json()["detail"]
        )
        assert controller.queued == len(accepted) == job_count(server)
        status = client.get("/v1/status").json()
        assert status["job_store"]["writable"] is False and message in status["job_store"]["error"]
        assert metric(server, "eat_job_store_writable") == 0
        assert metric(server, "eat_requests_rejected_total", {"reason": "store_unwritable"}) == 1
        # the accepted jobs run; their results wait in memory until the store takes them
        server.call(controller.release)
        wait_for(lambda: controller.queued == 0 and controller.running == 0, 120, what="runs")
        assert all(client.get(f"/v1/jobs/{j}").json()["state"] != "done" for j in accepted)
        store.execute(cleared)
        views = until_final(client, accepted)
        assert {v["state"] for v in views.values()} == {"done"}
        rows = store.execute("SELECT job_id, COUNT(*) FROM results GROUP BY job_id")
        assert sorted(rows) == sorted((job_id, 1) for job_id in accepted)
        assert client.post("/v1/jobs", json=GOOD).status_code == 202
        assert client.get("/v1/status").json()["job_store"]["writable"] is True

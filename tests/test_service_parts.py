"""The service's parts without Ray: the job store, the rate limiter, the admission forecast."""

from __future__ import annotations

import pytest

from eat.testbed.jobs import JobStore, StoreInUse, StoreUnavailable
from tests.conftest import tweak

REQUEST = {
    "model": "sd15",
    "resolution": 64,
    "prompt": "a lighthouse",
    "deadline_s": 30.0,
    "seed": 0,
    "negative_prompt": None,
}


@pytest.fixture()
def store(tmp_path):
    opened = JobStore.open(tmp_path / "jobs.sqlite3")
    yield opened
    opened.close()


def test_the_store_is_wal_synced_at_every_commit_and_has_one_owner(store, tmp_path):
    assert store.execute("PRAGMA journal_mode") == [("wal",)]
    assert store.execute("PRAGMA synchronous") == [(2,)]  # FULL
    with pytest.raises(StoreInUse, match=r"in use by pid \d+; stop that service first"):
        JobStore.open(tmp_path / "jobs.sqlite3")
    store.close()
    again = JobStore.open(tmp_path / "jobs.sqlite3")  # the owner closed it: a new instance
    assert again.previous_instances == [store.instance] and again.instance != store.instance
    again.close()


def test_a_result_is_recorded_once_and_interrupted_jobs_are_queued_again(store):
    first = store.insert(REQUEST, owner="local")
    second = store.insert({**REQUEST, "seed": 1}, owner="local")
    assert (first.task_id, second.task_id) == (0, 1) and first.id != second.id
    store.mark_running(first.id, "attempt 1 on servers [0]")
    store.mark_running(second.id, "attempt 1 on servers [1]")
    store.complete(first.id, {"latency": 1.0}, b"\x89PNG first")
    with pytest.raises(ValueError, match="already has a recorded result"):
        store.complete(first.id, {"latency": 2.0}, b"\x89PNG second")
    assert store.result(first.id).png == b"\x89PNG first"  # the recorded one, unchanged
    assert store.get(first.id).state == "done" and store.cancel(first.id) is False
    recovered = store.recover()  # as at the next start: `second` was running
    assert [row.id for row in recovered] == [second.id]
    assert [kind for kind, _, _ in store.events(second.id)] == [
        "accepted",
        "started",
        "interrupted",
    ]
    assert store.counts() == {"queued": 1, "running": 0, "done": 1, "failed": 0, "cancelled": 0}
    assert store.cancel(second.id) is True and store.get(second.id).state == "cancelled"


def test_a_store_that_cannot_be_written_changes_nothing_and_says_why(store):
    store.insert(REQUEST, owner="local")
    store.execute("PRAGMA query_only=ON")
    with pytest.raises(StoreUnavailable, match=r"cannot accept a job: .*readonly.*SQLITE_READONLY"):
        store.insert(REQUEST, owner="local")
    store.execute("PRAGMA query_only=OFF")
    assert sum(store.counts().values()) == 1


def test_an_idempotency_key_is_unique_per_owner(store):
    made = store.insert(REQUEST, owner="key_a", idempotency_key="k1")
    assert store.find("key_a", "k1") == made
    assert store.find("key_b", "k1") is None
    store.insert(REQUEST, owner="key_b", idempotency_key="k1")  # another owner may reuse it


def test_the_rate_limiter_spends_a_burst_then_refills():
    from eat.testbed.auth import RateLimiter

    now = [0.0]
    limiter = RateLimiter(per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)  # one token every 0.5 s
    assert limiter.take("b") == 0.0  # per key
    now[0] = 0.5
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    assert RateLimiter.retry_after(0.01) == 1


def test_the_forecast_grows_with_the_queue_ahead(edge):
    from eat.sim.simulator import Simulator
    from eat.sim.workload import Task
    from eat.testbed.admission import forecast

    shadow = Simulator(tweak(edge, latency_noise_cv=0.0))
    shadow.reset([], None)
    idle = forecast(shadow, "sd15", 512, now=0.0)
    assert idle.queued_ahead == 0 and idle.start_s == 0.0 and idle.first_start_s == 0.0
    assert idle.finish_s == pytest.approx(idle.idle_finish_s) and idle.finish_s > 0
    for task_id in range(40):  # far more work than the eight servers take at once
        shadow.add_arrival(Task(task_id, 0.0, "sdxl", 1024, float("inf"), None))
    busy = forecast(shadow, "sd15", 512, now=0.0)
    assert busy.queued_ahead == 40 and busy.start_s > 0
    assert busy.finish_s > idle.finish_s and busy.idle_finish_s == pytest.approx(idle.idle_finish_s)

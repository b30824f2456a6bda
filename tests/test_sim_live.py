"""The simulator's live-driving methods (what the testbed's shadow simulator uses)."""

from __future__ import annotations

import numpy as np
import pytest

from eat.schedulers import make_scheduler
from eat.sim.encoding import Encoder
from eat.sim.simulator import SERVER_DOWN, Dispatch, SimulationError, Simulator
from eat.sim.workload import Task


@pytest.fixture()
def live(edge) -> Simulator:
    sim = Simulator(edge)
    sim.reset([], np.random.default_rng(0))
    return sim


def task(task_id: int, arrival: float, model: str = "sd15") -> Task:
    return Task(task_id, arrival, model, 512, arrival + 10.0, None)


def test_arrivals_dispatch_and_real_completion(live):
    live.advance_clock(1.0)
    live.add_arrival(task(0, 1.0))
    assert live.has_decision() and live.n_arrived == 1
    outcome = live.dispatch(Dispatch(0, 20, (0, 1)))
    assert live.next_event_time() is not None  # the predicted completion: waiting is allowed
    assert outcome.finish > 1.0 and not live.servers[0].free
    live.advance_clock(outcome.finish + 5.0)  # the real task ran longer than predicted
    assert not live.servers[0].free  # nothing is completed by the clock
    live.complete(0)
    assert live.servers[0].free and live.servers[1].free and live.done
    assert live.next_event_time() is None  # predicted events of the task are gone
    with pytest.raises(SimulationError, match="task 0 is not running"):
        live.complete(0)


def test_clock_and_arrival_misuse_raise(live):
    live.advance_clock(2.0)
    with pytest.raises(SimulationError, match=r"clock moved backwards: 1\.0 < now 2\.0"):
        live.advance_clock(1.0)
    with pytest.raises(SimulationError, match=r"arrives at 3\.0, after now 2\.0"):
        live.add_arrival(task(0, 3.0))
    live.add_arrival(task(0, 2.0))
    with pytest.raises(SimulationError, match="task 0 already exists"):
        live.add_arrival(task(0, 2.0))
    with pytest.raises(SimulationError, match="model 'flux' is not in the preset"):
        live.add_arrival(task(1, 2.0, model="flux"))


def test_requeue_returns_the_task_in_arrival_order(live):
    for i in range(3):
        live.add_arrival(task(i, 0.0))
    live.dispatch(Dispatch(0, 10, (0,)))
    live.advance_clock(1.0)
    live.requeue(0)
    assert [t.task_id for t in live.queue] == [0, 1, 2]
    assert live.servers[0].free and live.n_free == live.n_servers
    live.dispatch(Dispatch(0, 10, (2,)))  # runs again, anywhere
    live.complete(0)
    assert live.n_completed == 1


def test_server_down_is_busy_until_back_and_loses_its_models(live):
    live.add_arrival(task(0, 0.0))
    live.dispatch(Dispatch(0, 10, (3,)))
    live.complete(0)
    assert "sd15" in live.servers[3].resident
    live.set_server_down(3, expected_back=8.0)
    server = live.servers[3]
    assert server.task_id == SERVER_DOWN and server.busy_until == 8.0 and not server.resident
    assert 3 not in live.free_servers() and live.remaining_busy(3) == 8.0
    obs = Encoder(live).observe()
    assert obs[live.preset.queue_window + 3, 7] == 0.0  # the server token says busy
    with pytest.raises(SimulationError, match="server 2 is not down"):
        live.set_server_up(2)
    live.advance_clock(4.0)
    live.set_server_up(3)
    assert server.free and live.n_free == live.n_servers
    live.add_arrival(task(1, 4.0))
    live.dispatch(Dispatch(1, 10, (0,)))
    with pytest.raises(SimulationError, match="requeue it before taking the server down"):
        live.set_server_down(0, 10.0)


def test_residency_is_what_the_server_reports(live):
    live.set_residency(2, ["sdxl", "sd15"])
    assert list(live.servers[2].resident) == ["sdxl", "sd15"]
    with pytest.raises(SimulationError, match=r"unknown models \['flux'\]"):
        live.set_residency(2, ["flux"])


def test_every_heuristic_decides_on_a_live_simulator(live, params):
    """Schedulers read a live simulator as a simulated one (no future arrivals known)."""
    for name in ("random", "fifo", "first_fit", "greedy", "eft", "warm_first", "edf"):
        sim = Simulator(live.preset)
        sim.reset([], np.random.default_rng(0))
        scheduler = make_scheduler(name, params.schedulers)
        scheduler.reset(sim, np.random.default_rng(1))
        for i in range(4):
            sim.advance_clock(0.1 * i)
            sim.add_arrival(task(i, 0.1 * i, model="sd15" if i % 2 else "sdxl"))
        started = 0
        while sim.has_decision():
            decision = scheduler.decide(sim)
            if decision is None:
                break
            sim.dispatch(decision)
            started += 1
        assert started >= 1, name
        for running in list(sim._running):
            sim.complete(running)
        assert sim.n_free == sim.n_servers, name

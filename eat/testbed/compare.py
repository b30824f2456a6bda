"""The sim-to-real comparison: per task, per scheduler, and per step against the profile.

Two measures of whether a scheduler decides on the testbed as in its simulator twin:

- ``same_decision_share`` (:func:`summarise`): the share of tasks given the same steps
  and gang size in the testbed run and in a free-running simulation of the same
  workload. Once one decision differs, the two runs see different states and every
  later decision may differ too, so this measures whole trajectories.
- ``history_agreement`` (:func:`history_agreement`): each decision the scheduler made
  on the testbed against the one it makes on the simulator twin *at the same moment
  after the same decisions*: the twin is driven through the testbed's own arrivals and
  dispatches (at their measured times), its tasks finish when the simulator predicts,
  and before each real dispatch the scheduler decides on it. The states differ only by
  the sim-to-real gap itself (a task still running on the testbed that the twin
  predicted finished, or the reverse; residency), not by earlier disagreements.
"""

from __future__ import annotations

import dataclasses
import heapq

import numpy as np
import pandas as pd

from eat.params import PresetConfig
from eat.schedulers.base import Scheduler
from eat.sim.simulator import Dispatch, Simulator
from eat.sim.workload import Task


def compare(real: pd.DataFrame, simulated: pd.DataFrame) -> pd.DataFrame:
    """Per task: the real record beside the simulated one (same task id)."""
    columns = ["task_id", "latency", "waiting", "service", "steps", "gang_size", "cold_starts"]
    merged = real.merge(
        simulated[columns], on="task_id", suffixes=("", "_sim"), validate="one_to_one"
    )
    merged["latency_ratio"] = merged["latency"] / merged["latency_sim"]
    merged["service_prediction_ratio"] = merged["service"] / merged["predicted_service"]
    return merged


def _servers(value: object) -> tuple[int, ...]:
    return tuple(int(part) for part in str(value).replace(" ", ",").split(",") if part != "")


def history_agreement(
    preset: PresetConfig,
    scheduler: Scheduler,
    tasks: list[Task],
    real: pd.DataFrame,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """One row per real dispatch (module docstring): what the testbed ran (``task_id``,
    ``gang_size``, ``steps``) and what ``scheduler`` decides on the twin at that moment
    (``twin_task_id``, ``twin_gang_size``, ``twin_steps``; missing when it waits or no
    server is free there), and ``same``: the same task, gang size and steps.

    ``tasks`` are the workload's tasks (their attributes); ``real`` the testbed's task
    records (measured ``arrival``, ``deadline``, ``start``, ``decision_ms``, the final
    attempt's ``servers`` and ``steps``); ``rng`` the scheduler's stream, as the
    controller reset it with."""
    by_id = {task.task_id: task for task in tasks}
    decision_s = real["decision_ms"].fillna(0.0) / 1e3 if "decision_ms" in real else 0.0
    records = real.assign(decided=real["start"] - decision_s).sort_values(["decided", "task_id"])
    arrivals = sorted(
        (float(r.arrival), int(r.task_id), float(r.deadline)) for r in real.itertuples()
    )
    twin = Simulator(preset)
    twin.reset([], None)  # no noise: the twin's timings are the expected ones
    scheduler.reset(twin, rng)
    finishing: list[tuple[float, int]] = []
    rows, next_arrival = [], 0

    def catch_up(until: float) -> None:
        """Arrivals and predicted completions up to ``until``, in time order."""
        nonlocal next_arrival
        while True:
            arrival = arrivals[next_arrival][0] if next_arrival < len(arrivals) else np.inf
            finish = finishing[0][0] if finishing else np.inf
            if min(arrival, finish) > until:
                break
            if finish <= arrival:
                when, task_id = heapq.heappop(finishing)
                twin.advance_clock(max(when, twin.now))
                twin.complete(task_id)
            else:
                when, task_id, deadline = arrivals[next_arrival]
                next_arrival += 1
                twin.advance_clock(max(when, twin.now))
                task = dataclasses.replace(by_id[task_id], arrival=twin.now, deadline=deadline)
                twin.add_arrival(task)
        twin.advance_clock(max(until, twin.now))

    pending = list(records.itertuples())
    while pending:
        decided = float(pending[0].decided)
        catch_up(decided)
        proposal = scheduler.decide(twin) if twin.has_decision() else None
        # dispatches of one instant (a simulated run's) are matched in the order the
        # scheduler proposes them; the testbed's are apart by their decision times
        same_instant = [r for r in pending if float(r.decided) == decided]
        record = next(
            (r for r in same_instant if proposal is not None and r.task_id == proposal.task_id),
            same_instant[0],
        )
        pending.remove(record)
        servers = _servers(record.servers)
        for server in servers:  # busy in the twin, free on the testbed: finish it now
            running = twin.servers[server].task_id
            if running is not None and running >= 0:
                finishing = [(when, t) for when, t in finishing if t != running]
                heapq.heapify(finishing)
                twin.complete(running)
        outcome = twin.dispatch(Dispatch(int(record.task_id), int(record.steps), servers))
        heapq.heappush(finishing, (float(outcome.finish), int(record.task_id)))
        twin_gang = None
        if proposal is not None:
            twin_gang = (
                len(proposal.servers)
                if proposal.servers is not None
                else by_id[proposal.task_id].gang_size
            )
        rows.append(
            {
                "task_id": int(record.task_id),
                "decided": decided,
                "gang_size": len(servers),
                "steps": int(record.steps),
                "twin_task_id": None if proposal is None else proposal.task_id,
                "twin_gang_size": twin_gang,
                "twin_steps": None if proposal is None else proposal.steps,
                "same": proposal is not None
                and proposal.task_id == int(record.task_id)
                and twin_gang == len(servers)
                and proposal.steps == int(record.steps),
            }
        )
    return pd.DataFrame(rows)


def summarise(comparison: pd.DataFrame, decisions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per scheduler: testbed and simulated means side by side, ``same_decision_share``
    and, given the :func:`history_agreement` rows of every scheduler (``decisions``,
    with a ``scheduler`` column), ``history_agreement``: their share of ``same``."""
    rows = []
    for name, frame in comparison.groupby("scheduler", sort=False):
        same = frame["steps"].eq(frame["steps_sim"]) & frame["gang_size"].eq(frame["gang_size_sim"])
        rows.append(
            {
                "scheduler": name,
                "tasks": len(frame),
                "real_latency_mean": frame["latency"].mean(),
                "sim_latency_mean": frame["latency_sim"].mean(),
                "latency_gap_ratio": frame["latency"].mean() / frame["latency_sim"].mean(),
                "latency_abs_pct_error": 100 * (frame["latency_ratio"] - 1).abs().mean(),
                "real_service_mean": frame["service"].mean(),
                "sim_service_mean": frame["service_sim"].mean(),
                "real_waiting_mean": frame["waiting"].mean(),
                "sim_waiting_mean": frame["waiting_sim"].mean(),
                "shadow_service_abs_pct_error": 100
                * (frame["service_prediction_ratio"] - 1).abs().mean(),
                "shadow_service_ratio_median": frame["service_prediction_ratio"].median(),
                "real_cold_start_mean": frame["cold_start_s"].mean(),
                "predicted_cold_start_mean": frame["predicted_cold_start_s"].mean(),
                "real_step_s_median": frame["step_s_median"].median(),
                "predicted_step_s_median": frame["predicted_step_s"].median(),
                "overhead_s_mean": frame["overhead_s"].mean(),
                "same_decision_share": float(same.mean()),
                "real_deadline_attainment": frame["deadline_met"].mean(),
                "real_cold_starts_per_task": frame["cold_starts"].mean(),
                "sim_cold_starts_per_task": frame["cold_starts_sim"].mean(),
                "attempts_mean": frame["attempts"].mean(),
            }
        )
        if decisions is not None:
            own = decisions[decisions["scheduler"] == name]
            rows[-1]["history_agreement"] = float(own["same"].mean()) if len(own) else None
    return pd.DataFrame(rows)


def step_vs_profile(real: pd.DataFrame, profile: pd.DataFrame) -> pd.DataFrame:
    """Testbed per-step time against the profiled per-step time of the same (model,
    resolution, patches) UNet call: the testbed's own overhead (the 1.3x criterion).
    For gangs of 2+, the testbed's band also carries the overlap margin and the step
    includes the exchange; the profile has neither."""
    steps = profile[profile["op"] == "step"]
    profiled = steps.groupby(["model", "resolution", "patches"])["seconds"].median()
    rows = []
    for row in real.itertuples(index=False):
        key = (row.model, int(row.resolution), int(row.gang_size))
        if key in profiled.index:
            rows.append(
                {
                    "scheduler": row.scheduler,
                    "task_id": row.task_id,
                    "model": row.model,
                    "resolution": row.resolution,
                    "patches": row.gang_size,
                    "testbed_step_s": row.step_s_median,
                    "profiled_step_s": float(profiled[key]),
                    "ratio": row.step_s_median / float(profiled[key]),
                }
            )
    return pd.DataFrame(rows)

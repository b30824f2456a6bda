"""The rows every episode produces, in the simulator and on the testbed alike.

A *task record* is one row per dispatched task (:data:`RECORD_COLUMNS`); a *segment* is
one row per server per dispatched task (:data:`SEGMENT_COLUMNS`, for utilisation and
Gantt charts). The testbed's controller writes the same rows from measured times and
appends its own columns.
"""

from __future__ import annotations

from collections.abc import Sequence

from eat.sim.workload import Task

RECORD_COLUMNS = [
    "task_id",
    "arrival",
    "model",
    "resolution",
    "deadline",
    "gang_size",
    "servers",
    "steps",
    "start",
    "finish",
    "waiting",
    "cold_start_s",
    "cold_starts",
    "service",
    "latency",
    "quality",
    "reward",
    "deadline_met",
]
SEGMENT_COLUMNS = ["server", "task_id", "start", "compute_start", "finish"]


def task_record(
    task: Task,
    servers: Sequence[int],
    steps: int,
    start: float,
    finish: float,
    member_cold_start_s: Sequence[float],
    quality: float,
    reward: float,
) -> tuple:
    """One task record, in the order of :data:`RECORD_COLUMNS`."""
    return (
        task.task_id,
        task.arrival,
        task.model,
        task.resolution,
        task.deadline,
        len(servers),
        ",".join(map(str, servers)),
        steps,
        start,
        finish,
        start - task.arrival,
        max(member_cold_start_s),
        sum(1 for cold in member_cold_start_s if cold > 0),
        finish - start,
        finish - task.arrival,
        quality,
        reward,
        finish <= task.deadline,
    )


def segments(
    task: Task,
    servers: Sequence[int],
    start: float,
    finish: float,
    member_cold_start_s: Sequence[float],
) -> list[tuple]:
    """The segments of one dispatched task, in the order of :data:`SEGMENT_COLUMNS`."""
    return [
        (server_id, task.task_id, start, start + cold, finish)
        for server_id, cold in zip(servers, member_cold_start_s, strict=True)
    ]

"""The rows every episode produces, in the simulator and on the testbed alike.

A *task record* is one row per dispatched task (:data:`RECORD_COLUMNS`); a *segment* is
one row per server per dispatched task (:data:`SEGMENT_COLUMNS`, for utilisation and
Gantt charts). The testbed's controller writes the same rows from measured times and
appends its own columns.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

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
RECORD_DTYPES = {
    "task_id": "int64",
    "model": "str",
    "resolution": "int64",
    "gang_size": "int64",
    "servers": "str",
    "steps": "int64",
    "cold_starts": "int64",
    "deadline_met": "bool",
}
"""Columns of a task record that are not floats, as read back from a :class:`RecordFile`."""
SEGMENT_DTYPES = {"server": "int64", "task_id": "int64"}


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


class RecordFile:
    """Task records and segments appended to two CSV files as an episode runs, so that a
    simulator streaming to it keeps at most ``flush_rows`` task records in memory
    (``Simulator.reset(..., records_to=...)``). Floats are written as Python's shortest
    round-trip text and read back exactly: :meth:`tasks_frame` and
    :meth:`segments_frame` equal the frames of the same episode kept in memory."""

    TASKS = "tasks.csv"
    SEGMENTS = "segments.csv"

    def __init__(self, directory: str | Path, flush_rows: int = 10_000) -> None:
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows}")
        self.directory = Path(directory)
        self.flush_rows = flush_rows
        self.directory.mkdir(parents=True, exist_ok=True)
        self.start()

    @property
    def tasks_path(self) -> Path:
        return self.directory / self.TASKS

    @property
    def segments_path(self) -> Path:
        return self.directory / self.SEGMENTS

    def start(self) -> None:
        """Begin a new episode: both files hold their header only."""
        for path, columns in (
            (self.tasks_path, RECORD_COLUMNS),
            (self.segments_path, SEGMENT_COLUMNS),
        ):
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerow(columns)

    def append(self, records: Sequence[tuple], segment_rows: Sequence[tuple]) -> None:
        """Add rows at the end of the files."""
        for path, rows in ((self.tasks_path, records), (self.segments_path, segment_rows)):
            if rows:
                with path.open("a", newline="") as handle:
                    csv.writer(handle).writerows(rows)

    def tasks_frame(self) -> pd.DataFrame:
        """Every task record written, one row each (columns :data:`RECORD_COLUMNS`)."""
        return _read(self.tasks_path, RECORD_COLUMNS, RECORD_DTYPES)

    def segments_frame(self) -> pd.DataFrame:
        """Every segment written (columns :data:`SEGMENT_COLUMNS`)."""
        return _read(self.segments_path, SEGMENT_COLUMNS, SEGMENT_DTYPES)


def _read(path: Path, columns: list[str], dtypes: dict[str, str]) -> pd.DataFrame:
    types = {column: dtypes.get(column, "float64") for column in columns}
    # pandas 3 parses floats exactly by default (its float_precision is deprecated), so
    # the repr written by the simulator reads back as the same float
    frame = pd.read_csv(path, dtype=types, keep_default_na=False)
    return frame[columns]

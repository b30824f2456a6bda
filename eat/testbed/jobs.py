"""The durable job store of the HTTP service: one SQLite file in WAL mode.

A job is written here (state ``queued``, an ``accepted`` event) in one committed
transaction *before* the service answers 202, with ``synchronous=FULL``: in WAL mode
SQLite then syncs the log at every commit, so an accepted job survives a crash of the
service process and a loss of power (``synchronous=NORMAL`` would survive the first
only). One process at a time owns a store: :meth:`JobStore.open` takes an exclusive
``flock`` on ``<store>.lock``, which the kernel releases when the owner dies, however it
dies; a second service on the same file is refused instead of running jobs twice.

Tables:

============  ===================================================================
``jobs``      one row per accepted job: id, the controller's task id, owner (API
              key id), request (JSON), state, times (Unix seconds), attempts, error
``results``   one row per completed job (primary key: the job id): timing and PNG
``events``    append-only history: accepted, started, requeued, interrupted,
              completed, failed, cancelled; each with the service instance
``instances`` one row per opening of the store (a service start): id, pid, time
============  ===================================================================

States: ``queued`` -> ``running`` -> ``done`` | ``failed``; ``running`` -> ``queued``
when its gang fails (the controller re-runs it) or when the service died while it ran
(:meth:`JobStore.recover`, at the next start); ``queued`` -> ``cancelled``.

**Exactly once.** Execution is at least once: a gang that was running when the service
died is run again after the restart. Completion is recorded exactly once: the result and
the state ``done`` are written in one transaction, the ``results`` primary key refuses a
second result for a job, and the state update only applies to a job not yet final. The
image a client fetches is the one recorded.

A write that fails (read-only file system, full disk, I/O error) raises
:class:`StoreUnavailable` with the reason and changes nothing (the transaction is
rolled back).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
STATES: tuple[JobState, ...] = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATES = frozenset({"done", "failed", "cancelled"})
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    task_id INTEGER NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    idempotency_key TEXT,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    request TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    UNIQUE (owner, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, task_id);
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id),
    timing TEXT NOT NULL,
    png BLOB NOT NULL,
    recorded_at REAL NOT NULL,
    instance TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    instance TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id);
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL
);
"""


class StoreUnavailable(RuntimeError):
    """The job store could not be written (or read); the message says why."""


class StoreInUse(RuntimeError):
    """Another live process owns the job store."""


@dataclass(frozen=True)
class JobRow:
    """One row of ``jobs``."""

    id: str
    task_id: int
    owner: str
    idempotency_key: str | None
    state: JobState
    request: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    """Times a gang started the job, over every service instance."""
    error: str | None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class JobResult:
    """The recorded result of a done job."""

    timing: dict[str, Any]
    png: bytes


_COLUMNS = (
    "id, task_id, owner, idempotency_key, state, request, created_at, started_at, "
    "finished_at, attempts, error"
)


def _row(values: tuple) -> JobRow:
    (job_id, task_id, owner, key, state, request, created, started, finished, attempts, error) = (
        values
    )
    return JobRow(
        job_id,
        task_id,
        owner,
        key,
        state,
        json.loads(request),
        created,
        started,
        finished,
        attempts,
        error,
    )


def new_job_id() -> str:
    """A job id: unguessable, so that knowing one id reveals no other."""
    return "job_" + secrets.token_hex(16)


class JobStore:
    """The SQLite job store (module docstring); open it with :meth:`open`.

    Every method holds one lock, so the store may be used from any thread; the
    service uses it from its event loop only."""

    def __init__(self, path: Path, connection: sqlite3.Connection, lock_file: Any) -> None:
        self.path = path
        self._connection = connection
        self._lock_file = lock_file
        self._lock = threading.Lock()
        self.instance, self.previous_instances = self._start_instance()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path) -> JobStore:
        """Open (or create) the store at ``path``, own it, and record a new instance."""
        path = Path(path).expanduser().resolve()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_file = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115
        except OSError as error:
            raise StoreUnavailable(f"the job store {path} cannot be created: {error}") from None
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            owner = lock_file.read().strip() or "another process"
            lock_file.close()
            raise StoreInUse(
                f"the job store {path} is in use by {owner}; stop that service first (one "
                "service per job store)"
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"pid {os.getpid()}\n")
        lock_file.flush()
        try:
            connection = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreUnavailable(
                    f"the job store {path} cannot use WAL mode (journal_mode is {mode!r}); "
                    "put it on a local file system"
                )
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA foreign_keys=ON")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreUnavailable(
                    f"the job store {path} has schema version {version}; this eat reads "
                    f"version {SCHEMA_VERSION}"
                )
            connection.executescript(_SCHEMA)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as error:
            lock_file.close()
            raise StoreUnavailable(f"the job store {path} cannot be opened: {error}") from None
        except BaseException:
            lock_file.close()
            raise
        return cls(path, connection, lock_file)

    def close(self) -> None:
        """Close the database and give up ownership."""
        with self._lock:
            self._connection.close()
            self._lock_file.close()

    def _start_instance(self) -> tuple[str, list[str]]:
        previous = [
            row[0]
            for row in self._connection.execute("SELECT id FROM instances ORDER BY started_at")
        ]
        instance = "inst_" + secrets.token_hex(8)
        with self._transaction("record the service instance"):
            self._connection.execute(
                "INSERT INTO instances (id, pid, started_at) VALUES (?, ?, ?)",
                (instance, os.getpid(), time.time()),
            )
        return instance, previous

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _transaction(self, doing: str) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE``: the write lock up front); any
        SQLite error rolls it back and becomes :class:`StoreUnavailable`."""
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as error:
            name = getattr(error, "sqlite_errorname", type(error).__name__)
            raise StoreUnavailable(
                f"the job store {self.path} cannot {doing}: {error} ({name})"
            ) from None

    def _event(self, job_id: str, kind: str, at: float, detail: str | None = None) -> None:
        self._connection.execute(
            "INSERT INTO events (job_id, instance, at, kind, detail) VALUES (?, ?, ?, ?, ?)",
            (job_id, self.instance, at, kind, detail),
        )

    def execute(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        """Run one statement under the store's lock (inspection and pragmas)."""
        with self._lock:
            return self._connection.execute(sql, parameters).fetchall()

    # ------------------------------------------------------------------ writes
    def insert(
        self,
        request: dict[str, Any],
        *,
        owner: str,
        idempotency_key: str | None = None,
        now: float | None = None,
    ) -> JobRow:
        """Accept a job: committed (and synced) before this returns."""
        job_id = new_job_id()
        created = time.time() if now is None else now
        with self._lock, self._transaction("accept a job"):
            (task_id,) = self._connection.execute(
                "SELECT COALESCE(MAX(task_id), -1) + 1 FROM jobs"
            ).fetchone()
            self._connection.execute(
                "INSERT INTO jobs (id, task_id, owner, idempotency_key, state, request, "
                "created_at) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                (job_id, task_id, owner, idempotency_key, json.dumps(request), created),
            )
            self._event(job_id, "accepted", created)
        return JobRow(
            job_id, task_id, owner, idempotency_key, "queued", request, created, None, None, 0, None
        )

    def mark_running(self, job_id: str, detail: str) -> None:
        """A gang started the job (another attempt)."""
        now = time.time()
        with self._lock, self._transaction("record a job start"):
            self._connection.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1 "
                "WHERE id = ? AND state IN ('queued', 'running')",
                (now, job_id),
            )
            self._event(job_id, "started", now, detail)

    def mark_requeued(self, job_id: str, reason: str) -> None:
        """The job's gang failed; the controller runs it again."""
        now = time.time()
        with self._lock, self._transaction("record a requeued job"):
            self._connection.execute(
                "UPDATE jobs SET state = 'queued' WHERE id = ? AND state = 'running'", (job_id,)
            )
            self._event(job_id, "requeued", now, reason[:500])

    def complete(self, job_id: str, timing: dict[str, Any], png: bytes) -> None:
        """Record the job's result: at most once (a second call raises ValueError)."""
        now = time.time()
        with self._lock, self._transaction("record a result"):
            try:
                self._connection.execute(
                    "INSERT INTO results (job_id, timing, png, recorded_at, instance) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (job_id, json.dumps(timing), png, now, self.instance),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"job {job_id} already has a recorded result") from None
            updated = self._connection.execute(
                "UPDATE jobs SET state = 'done', finished_at = ? "
                "WHERE id = ? AND state IN ('queued', 'running')",
                (now, job_id),
            ).rowcount
            if updated != 1:
                raise ValueError(f"job {job_id} is not an unfinished job")
            self._event(job_id, "completed", now)

    def fail(self, job_id: str, error: str) -> None:
        """The job could not be completed (the controller gave up on it)."""
        now = time.time()
        with self._lock, self._transaction("record a failed job"):
            self._connection.execute(
                "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? "
                "WHERE id = ? AND state IN ('queued', 'running')",
                (now, error[:2000], job_id),
            )
            self._event(job_id, "failed", now, error[:500])

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job; False if it is not queued."""
        now = time.time()
        with self._lock, self._transaction("cancel a job"):
            updated = self._connection.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ? "
                "WHERE id = ? AND state = 'queued'",
                (now, job_id),
            ).rowcount
            if updated:
                self._event(job_id, "cancelled", now)
        return bool(updated)

    def recover(self) -> list[JobRow]:
        """At start-up: jobs that were running when an earlier instance stopped go back to
        ``queued`` (an ``interrupted`` event); returns every queued job, oldest first."""
        now = time.time()
        with self._lock, self._transaction("requeue interrupted jobs"):
            interrupted = [
                row[0]
                for row in self._connection.execute("SELECT id FROM jobs WHERE state = 'running'")
            ]
            for job_id in interrupted:
                self._connection.execute("UPDATE jobs SET state = 'queued' WHERE id = ?", (job_id,))
                self._event(job_id, "interrupted", now, "the service stopped while it ran")
            rows = self._connection.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY task_id"
            ).fetchall()
        return [_row(values) for values in rows]

    # ------------------------------------------------------------------ reads
    def _read(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._connection.execute(sql, parameters).fetchall()
            except sqlite3.Error as error:
                raise StoreUnavailable(
                    f"the job store {self.path} cannot be read: {error}"
                ) from None

    def get(self, job_id: str) -> JobRow | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _row(rows[0]) if rows else None

    def find(self, owner: str, idempotency_key: str) -> JobRow | None:
        """The job ``owner`` submitted with ``idempotency_key``, if any."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM jobs WHERE owner = ? AND idempotency_key = ?",
            (owner, idempotency_key),
        )
        return _row(rows[0]) if rows else None

    def result(self, job_id: str) -> JobResult | None:
        rows = self._read("SELECT timing, png FROM results WHERE job_id = ?", (job_id,))
        if not rows:
            return None
        timing, png = rows[0]
        return JobResult(json.loads(timing), bytes(png))

    def counts(self) -> dict[str, int]:
        """Jobs by state (every state present, 0 if none)."""
        found = dict(self._read("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        return {state: int(found.get(state, 0)) for state in STATES}

    def events(self, job_id: str) -> list[tuple[str, str, str | None]]:
        """``(kind, instance, detail)`` of every event of a job, in order."""
        return [
            (kind, instance, detail)
            for kind, instance, detail in self._read(
                "SELECT kind, instance, detail FROM events WHERE job_id = ? ORDER BY seq",
                (job_id,),
            )
        ]


__all__ = [
    "FINAL_STATES",
    "STATES",
    "JobResult",
    "JobRow",
    "JobState",
    "JobStore",
    "StoreInUse",
    "StoreUnavailable",
    "new_job_id",
]

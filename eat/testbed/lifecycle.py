"""The service's processes: every Ray process it starts can be found again, so that
none outlives it unnoticed.

An embedded Ray shuts down with the service when it stops (``ray.shutdown``). When the
service process is killed (SIGKILL, the OOM killer) nothing runs in it: Ray's GCS and
raylet go with it, but processes the raylet started (its dashboard and runtime-env
agents) keep running, re-parented to init. Ray's processes rename themselves
(``ray::DashboardAgent``) and overwrite their environment in ``/proc`` while doing so,
but every one of them keeps its log files open under Ray's temporary folder. So each
service instance (one opening of the job store) gives its embedded Ray its own
temporary folder, :func:`ray_temp_dir`; at the next start on the same job store (which
it owns: a second live owner is refused), the service kills every process that still
holds a file open under an earlier instance's folder (:func:`reap`), and removes the
folders of all but the latest earlier instance (whose logs tell why it stopped). A
stopping service waits until its own Ray processes have exited (:func:`settle`).

An observer that started the service as a session leader (``start_new_session``: the
tests and the soak) can also count its processes independently of those folders:
:func:`session_processes`. Ray never calls ``setsid``, so every process the service
starts, directly or through the raylet, stays in the service's session, re-parented to
init or not.

Linux only (``/proc``); elsewhere :func:`processes_using` and :func:`session_processes`
find nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def ray_temp_dir(instance: str) -> Path:
    """The temporary folder of the embedded Ray of a service instance (short: Ray's
    socket paths must fit in 107 characters)."""
    return Path(tempfile.gettempdir()) / "eat-ray" / instance


def processes_using(folders: Iterable[Path]) -> dict[int, Path]:
    """PID -> folder of every other process holding a file open under one of
    ``folders`` (processes this user may not inspect are skipped: they are not ours)."""
    prefixes = {str(folder.resolve()) + os.sep: folder for folder in folders}
    found: dict[int, Path] = {}
    proc = Path("/proc")
    if not prefixes or not proc.is_dir():
        return found
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:  # gone, or not ours
            continue
        for descriptor in descriptors:
            try:
                target = os.readlink(descriptor)
            except OSError:
                continue
            folder = next((f for p, f in prefixes.items() if target.startswith(p)), None)
            if folder is not None:
                found[int(entry.name)] = folder
                break
    return found


def session_processes(session: int) -> list[int]:
    """PIDs of the live processes (zombies excluded: they have exited) of the session
    whose leader had PID ``session``."""
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == session:
            found.append(int(entry.name))
    return sorted(found)


def reap(instances: list[str], timeout_s: float = 30.0) -> list[int]:
    """Kill (SIGKILL) every process left by the earlier ``instances`` (oldest first) and
    wait until they are gone; remove their Ray folders but the latest one's. Returns the
    PIDs killed; raises RuntimeError if one survives ``timeout_s``."""
    folders = [ray_temp_dir(instance) for instance in instances]
    killed = _kill(folders, timeout_s)
    for folder in folders[:-1]:
        shutil.rmtree(folder, ignore_errors=True)
    return killed


def settle(instance: str, grace_s: float = 10.0, timeout_s: float = 30.0) -> list[int]:
    """After this instance shut its Ray down: give its processes ``grace_s`` to exit,
    then kill the ones still there; returns their PIDs (none after a clean shutdown)."""
    folders = [ray_temp_dir(instance)]
    deadline = time.monotonic() + grace_s
    while processes_using(folders) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _kill(folders, timeout_s)


def _kill(folders: list[Path], timeout_s: float) -> list[int]:
    victims = processes_using(folders)
    for pid, folder in victims.items():
        log.warning("killing pid %d, a Ray process of the service instance of %s", pid, folder)
        with contextlib.suppress(ProcessLookupError):  # gone meanwhile
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while alive := [pid for pid in processes_using(folders) if pid in victims]:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"processes {alive} of a service instance survived SIGKILL for {timeout_s} s"
            )
        time.sleep(0.05)
    return sorted(victims)


__all__ = ["processes_using", "ray_temp_dir", "reap", "session_processes", "settle"]

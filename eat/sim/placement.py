"""Placement rules: which servers a task may run on, which of them are warm, and what a
dispatch leaves behind. The preset picks one (``kind``); the simulator, the encoding
and the heuristics ask it and never which kind it is.

``ReferenceGroups`` (``kind: paper``)
    The EAT reference model. Each task's gang size is fixed at arrival. The servers are
    chosen by the reference rule: a free *warm group* (the servers that last ran a task
    together) of exactly that size if there is one, else the first free servers by id.
    The gang is warm only if it equals an existing group; otherwise every group the
    chosen servers belonged to dissolves and the chosen set becomes a new group.

``ChosenGangs`` (``kind: edge``)
    The scheduler picks the gang size (its patch count) and the servers. Each member
    whose memory does not hold the task's model pays that model's cold start; models
    stay resident until least-recently-used eviction makes room for another.

Gangs are tuples of server ids in ascending order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from eat.sim.errors import SimulationError

if TYPE_CHECKING:
    from eat.latency import GangTiming
    from eat.sim.simulator import Server, Simulator
    from eat.sim.workload import Task

Gang = tuple[int, ...]
Chooser = Callable[[list[int], int], Sequence[int]]
"""``chooser(free_capable_servers, size)``: the ``size`` servers a scheduler prefers."""


class PlacementError(SimulationError):
    """A dispatch breaks the preset's placement rule."""


@dataclass(frozen=True)
class GangOption:
    """A gang a task could run on once its members are available."""

    gang: Gang
    start: float
    """When every member is available (s)."""
    warm: tuple[bool, ...]
    """Which members would hold the model by then (what they hold now)."""


@dataclass(frozen=True)
class WarmUnits:
    """The units that serve tasks warm (warm groups, or servers holding the model)."""

    free_at: list[float]
    """When each unit becomes free (s)."""
    width: int
    """Units one task occupies."""
    gang: Gang | None
    """A warm gang of the task's size to time warm runs on (None: there is none)."""
    same_need: Callable[[Task], bool]
    """Whether another task needs the same warm units."""


@dataclass(frozen=True)
class ServerView:
    """What the observation shows of a server's residency."""

    group_size: int
    """Size of its warm group (0: none, or a rule without groups)."""
    group_free: bool
    """Its whole warm group is free."""
    resident: tuple[str, ...]
    """Models it serves warm."""


class Placement(ABC):
    """The placement rule of one simulator (module docstring)."""

    scheduler_places: ClassVar[bool]
    """True when schedulers choose the gang size and the servers; False when the rule
    does (a dispatch may then leave ``servers`` None)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    @abstractmethod
    def reset(self) -> None:
        """Forget the residency of the previous episode."""

    @abstractmethod
    def copy_state(self, other: Placement) -> None:
        """Take ``other``'s state (a fork of its simulator; the servers are copied by the
        simulator)."""

    def capable(self, task: Task, *, free_only: bool) -> list[int]:
        """Servers whose memory can hold the task's model, optionally only the free ones."""
        memory = self.sim.preset.models[task.model].memory_gb
        return [
            s.server_id
            for s in self.sim.servers
            if s.memory_gb >= memory and (not free_only or s.task_id is None)
        ]

    @abstractmethod
    def gang_sizes(self, task: Task) -> list[int]:
        """Gang sizes ``task`` can ever run with on this cluster (busy servers count)."""

    @abstractmethod
    def feasible_gang_sizes(self, task: Task) -> list[int]:
        """Gang sizes ``task`` could start with now."""

    @abstractmethod
    def choose_servers(self, task: Task, size: int, chooser: Chooser | None) -> Gang | None:
        """The gang of ``size`` that ``task`` starts on now, with the scheduler's
        preference ``chooser`` where the rule lets it choose; None if there is none."""

    @abstractmethod
    def candidate_gangs(self, task: Task, size: int, servers: Sequence[int]) -> list[Gang]:
        """The gangs of ``size`` among ``servers`` worth timing: they contain one with the
        shortest duration for any number of steps."""

    @abstractmethod
    def warm(self, task: Task, gang: Sequence[int]) -> list[bool]:
        """Which members of ``gang`` hold the task's model now."""

    @abstractmethod
    def check(self, task: Task, gang: Gang) -> None:
        """Raise :class:`PlacementError` if the rule does not allow ``gang`` for ``task``
        (the simulator has checked that the servers exist, are free and distinct)."""

    @abstractmethod
    def book(self, task: Task, gang: Gang, timing: GangTiming) -> None:
        """Update residency for ``task`` starting on ``gang`` now."""

    @abstractmethod
    def cold_start_now(self, task: Task) -> float:
        """The cold start ``task`` would pay on its best gang now (0 if it can run warm)."""

    @abstractmethod
    def options(self, task: Task, avail: Sequence[float], reserved: set[int]) -> list[GangOption]:
        """Gangs ``task`` could run on given when each server is available (``avail``)
        and the servers reserved for other tasks: the best start now, and later ones."""

    @abstractmethod
    def warm_gang(self, task: Task, size: int, order: Sequence[int]) -> Gang | None:
        """A free warm gang of ``size`` for ``task`` now (members in ``order`` where the
        rule lets the scheduler choose), or None."""

    @abstractmethod
    def warm_units(self, task: Task, size: int) -> WarmUnits:
        """The units that serve ``task`` warm, and when they free up."""

    @abstractmethod
    def view(self, server: Server) -> ServerView:
        """What the observation shows of ``server``'s residency."""


class ReferenceGroups(Placement):
    """``kind: paper`` (module docstring)."""

    scheduler_places: ClassVar[bool] = False

    def reset(self) -> None:
        self.groups: dict[int, frozenset[int]] = {}
        self.next_group_id = 0

    def copy_state(self, other: Placement) -> None:
        assert isinstance(other, ReferenceGroups)
        self.groups = dict(other.groups)  # frozensets: shared
        self.next_group_id = other.next_group_id

    def _size(self, task: Task) -> int:
        return task.gang_size or 1

    def gang_sizes(self, task: Task) -> list[int]:
        return [self._size(task)]

    def feasible_gang_sizes(self, task: Task) -> list[int]:
        size = self._size(task)
        return [size] if size <= self.sim.n_free else []

    def rule_gang(self, size: int) -> tuple[Gang, bool]:
        """The reference server-selection rule: (servers, warm)."""
        servers = self.sim.servers
        for members in self.groups.values():
            if len(members) == size and all(servers[i].task_id is None for i in members):
                return tuple(sorted(members)), True
        free = self.sim.free_servers()
        if len(free) < size:
            raise PlacementError(f"gang of {size} requested with only {len(free)} free servers")
        return tuple(free[:size]), False

    def choose_servers(self, task: Task, size: int, chooser: Chooser | None) -> Gang | None:
        if size != self._size(task) or size > self.sim.n_free:
            return None
        return self.rule_gang(size)[0]

    def candidate_gangs(self, task: Task, size: int, servers: Sequence[int]) -> list[Gang]:
        gang = self.choose_servers(task, size, None)
        return [] if gang is None else [gang]

    def is_group(self, gang: Sequence[int]) -> bool:
        members = frozenset(gang)
        return any(group == members for group in self.groups.values())

    def warm(self, task: Task, gang: Sequence[int]) -> list[bool]:
        return [self.is_group(gang)] * len(gang)

    def check(self, task: Task, gang: Gang) -> None:
        size = self._size(task)
        if len(gang) != size:
            raise PlacementError(
                f"task {task.task_id} has gang size {size}, got {len(gang)} servers {gang}"
            )
        chosen, _ = self.rule_gang(size)
        if gang != chosen:
            raise PlacementError(
                f"the paper preset's rule places task {task.task_id} on {chosen}, not {gang}; "
                "pass servers=None to let it choose"
            )

    def book(self, task: Task, gang: Gang, timing: GangTiming) -> None:
        if self.is_group(gang):
            return
        servers = self.sim.servers
        touched = {servers[i].group for i in gang} - {None}
        for group_id in touched:
            for member in self.groups.pop(group_id):
                servers[member].group = None
        group_id = self.next_group_id
        self.next_group_id += 1
        self.groups[group_id] = frozenset(gang)
        for server_id in gang:
            servers[server_id].group = group_id

    def cold_start_now(self, task: Task) -> float:
        size = self._size(task)
        if size > self.sim.n_free:
            return 0.0
        _, warm = self.rule_gang(size)
        return 0.0 if warm else self.sim.latency.cold_start_s(task.model, size)

    def warm_groups(self) -> list[Gang]:
        """The intact warm groups (servers that last ran a task together)."""
        return [tuple(sorted(members)) for members in self.groups.values()]

    def busy_warm_group_free_at(self, size: int) -> float | None:
        """Earliest time at which an intact warm group of ``size`` becomes free (None if
        there is no such group)."""
        servers, now = self.sim.servers, self.sim.now
        best = None
        for members in self.groups.values():
            if len(members) == size:
                free_at = max(
                    now if servers[i].task_id is None else servers[i].busy_until for i in members
                )
                best = free_at if best is None else min(best, free_at)
        return best

    def options(self, task: Task, avail: Sequence[float], reserved: set[int]) -> list[GangOption]:
        sim = self.sim
        now, size = sim.now, self._size(task)
        options = []
        if size <= sim.n_free:
            gang, warm = self.rule_gang(size)
            if not reserved.intersection(gang):
                options.append(GangOption(gang, now, (warm,) * size))
        # Gangs that start later (those that start now exist only through the rule).
        for members in self.warm_groups():
            if len(members) == size:
                start = max(avail[i] for i in members)
                if start > now:
                    options.append(GangOption(members, start, (True,) * size))
        earliest = sorted(range(sim.n_servers), key=lambda i: (avail[i], i))[:size]
        if len(earliest) == size:
            start = max(avail[i] for i in earliest)
            if start > now:
                options.append(GangOption(tuple(sorted(earliest)), start, (False,) * size))
        return options

    def warm_gang(self, task: Task, size: int, order: Sequence[int]) -> Gang | None:
        if size != self._size(task) or size > self.sim.n_free:
            return None
        gang, warm = self.rule_gang(size)
        return gang if warm else None

    def warm_units(self, task: Task, size: int) -> WarmUnits:
        sim = self.sim
        # One free time per intact group of this size (its members free together).
        groups = [members for members in self.warm_groups() if len(members) == size]
        free_at = [max(sim.now + sim.remaining_busy(i) for i in members) for members in groups]
        return WarmUnits(
            free_at=free_at,
            width=1,
            gang=groups[0] if groups else None,
            same_need=lambda other: self._size(other) == size,
        )

    def view(self, server: Server) -> ServerView:
        if server.group is None:
            return ServerView(0, False, ())
        members = self.groups[server.group]
        servers = self.sim.servers
        return ServerView(
            len(members),
            all(servers[i].task_id is None for i in members),
            tuple(self.sim.preset.models),
        )


class ChosenGangs(Placement):
    """``kind: edge`` (module docstring)."""

    scheduler_places: ClassVar[bool] = True

    def reset(self) -> None:
        """Nothing to forget: residency lives on the servers, which the simulator rebuilds."""

    def copy_state(self, other: Placement) -> None:
        """Nothing to copy: residency lives on the servers, which the simulator copies."""

    def gang_sizes(self, task: Task) -> list[int]:
        """The allowed sizes the capable servers (busy or free) can host; the smallest
        allowed size if none."""
        hosts = len(self.capable(task, free_only=False))
        allowed = self.sim.allowed_gang_sizes
        return [size for size in allowed if size <= hosts] or [min(allowed)]

    def feasible_gang_sizes(self, task: Task) -> list[int]:
        model_memory = self.sim.preset.models[task.model].memory_gb
        hosts = sum(
            1 for s in self.sim.servers if s.task_id is None and s.memory_gb >= model_memory
        )
        return [size for size in self.sim.allowed_gang_sizes if size <= hosts]

    def choose_servers(self, task: Task, size: int, chooser: Chooser | None) -> Gang | None:
        if chooser is None:
            raise PlacementError(f"the edge preset needs servers for task {task.task_id}")
        free = self.capable(task, free_only=True)
        if len(free) < size:
            return None
        return tuple(sorted(chooser(free, size)))

    def affinity_order(self, task: Task, servers: Sequence[int]) -> list[int]:
        """``servers`` with the task's model resident first, then faster, then lower id."""
        sim = self.sim
        return sorted(
            servers,
            key=lambda i: (task.model not in sim.servers[i].resident, -sim.servers[i].speed, i),
        )

    def candidate_gangs(self, task: Task, size: int, servers: Sequence[int]) -> list[Gang]:
        """The fastest ``size`` servers (residents first on equal speed), and the fastest
        ``size`` servers on which the model is resident. Among all subsets of
        ``servers``, one of these two has the shortest duration for any number of steps:
        a gang's duration depends on its members only through the largest cold start (0
        or the model's one), the slowest member's pace and the fastest member's speed."""
        sim = self.sim
        order = self.affinity_order(task, servers)
        order.sort(key=lambda i: -sim.servers[i].speed)  # stable: residents first on equal speed
        gangs: list[Gang] = []
        if len(order) >= size:
            gangs.append(tuple(sorted(order[:size])))
        warm = [i for i in order if task.model in sim.servers[i].resident]
        if len(warm) >= size:
            gang = tuple(sorted(warm[:size]))
            if gang not in gangs:
                gangs.append(gang)
        return gangs

    def warm(self, task: Task, gang: Sequence[int]) -> list[bool]:
        servers = self.sim.servers
        return [task.model in servers[i].resident for i in gang]

    def check(self, task: Task, gang: Gang) -> None:
        sim = self.sim
        if len(gang) not in sim.allowed_gang_sizes:
            raise PlacementError(
                f"gang size {len(gang)} not allowed; choose one of {sim.allowed_gang_sizes}"
            )
        model_memory = sim.preset.models[task.model].memory_gb
        for server_id in gang:
            server = sim.servers[server_id]
            if server.memory_gb < model_memory:
                raise PlacementError(
                    f"server {server_id} ({server.memory_gb} GB) cannot hold {task.model} "
                    f"({model_memory} GB)"
                )

    def book(self, task: Task, gang: Gang, timing: GangTiming) -> None:
        sim = self.sim
        models = sim.preset.models
        model_memory = models[task.model].memory_gb
        for server_id, cold in zip(gang, timing.member_cold_start_s, strict=True):
            server = sim.servers[server_id]
            if task.model in server.resident:
                server.resident.move_to_end(task.model)
                continue
            used = sum(models[m].memory_gb for m in server.resident)
            while server.resident and used + model_memory > server.memory_gb:
                evicted, _ = server.resident.popitem(last=False)
                used -= models[evicted].memory_gb
            server.resident[task.model] = None
            sim.schedule_load_done(server_id, task.model, cold)

    def cold_start_now(self, task: Task) -> float:
        for server in self.sim.servers:
            if server.task_id is None and task.model in server.resident:
                return 0.0
        return self.sim.latency.cold_start_s(task.model, 1)

    def options(self, task: Task, avail: Sequence[float], reserved: set[int]) -> list[GangOption]:
        capable = self.capable(task, free_only=False)
        options = []
        thresholds = sorted({avail[i] for i in capable})
        for size in self.sim.allowed_gang_sizes:
            if size > len(capable):
                break
            for threshold in thresholds:
                ready = [i for i in capable if avail[i] <= threshold]
                if len(ready) < size:
                    continue
                for gang in self.candidate_gangs(task, size, ready):
                    start = max(avail[i] for i in gang)
                    options.append(GangOption(gang, start, tuple(self.warm(task, gang))))
        return options

    def warm_gang(self, task: Task, size: int, order: Sequence[int]) -> Gang | None:
        servers = self.sim.servers
        warm_free = [
            i for i in order if servers[i].task_id is None and task.model in servers[i].resident
        ]
        return tuple(sorted(warm_free[:size])) if len(warm_free) >= size else None

    def warm_units(self, task: Task, size: int) -> WarmUnits:
        sim = self.sim
        holders = [i for i in self.capable(task, free_only=False) if sim.is_warm(i, task.model)]
        gang = None
        if len(holders) >= size:
            gang = tuple(sorted(sorted(holders, key=lambda i: -sim.servers[i].speed)[:size]))
        return WarmUnits(
            free_at=[sim.now + sim.remaining_busy(i) for i in holders],
            width=size,
            gang=gang,
            same_need=lambda other: other.model == task.model,
        )

    def view(self, server: Server) -> ServerView:
        return ServerView(0, False, tuple(server.resident))


PLACEMENTS: dict[str, type[Placement]] = {"paper": ReferenceGroups, "edge": ChosenGangs}
"""The placement rule of each preset kind."""

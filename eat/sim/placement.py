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

*Candidate gangs* (``ChosenGangs``) of size ``k`` among some servers: the ``k`` fastest
(residents first on equal speed) and the ``k`` fastest holding the model. A gang's
duration depends on its members only through the largest cold start (0 or the
model's), the slowest member's pace, the fastest decoder and, with sites, whether it
crosses sites; so on one site one of the two has the shortest duration of all subsets,
for any number of steps. With sites the same two *per site* are added (a gang within a
site exchanges over the faster link): a gang across sites is never faster than the
fastest ``k`` overall timed across sites, and a gang within a site never faster than
its site's two. Servers of one site, speed and residency are interchangeable, so the
candidates are read from the masks of those groups (:mod:`eat.sim.bitmask`), never by
enumerating subsets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from eat.sim.bitmask import ids_of, lowest
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
        """Servers whose memory can hold the task's model, optionally only the free ones
        (ascending ids)."""
        mask = self.sim.capable_masks[task.model]
        return ids_of(mask & self.sim.free_mask if free_only else mask)

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
    def affinity_gang(self, task: Task, size: int) -> Gang | None:
        """The gang of ``size`` a fixed-size heuristic starts ``task`` on now: the first
        free capable servers in affinity order (the model resident first, then faster,
        then lower id) where the rule lets the scheduler choose; None if there is none."""

    @abstractmethod
    def candidate_gangs(self, task: Task, size: int, servers: Sequence[int]) -> list[Gang]:
        """The gangs of ``size`` among ``servers`` worth timing: they contain one with the
        shortest duration for any number of steps."""

    def free_candidate_gangs(self, task: Task, sizes: Sequence[int]) -> list[Gang]:
        """:meth:`candidate_gangs` of every size of ``sizes`` among the free capable
        servers, maybe in another order and with gangs of equal timing left out (of
        those, the one with the lowest ids is kept)."""
        free = self.capable(task, free_only=True)
        return [gang for size in sizes for gang in self.candidate_gangs(task, size, free)]

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
    def options(
        self, task: Task, avail: Sequence[float], reserved: set[int]
    ) -> Iterator[GangOption]:
        """Gangs ``task`` could run on given when each server is available (``avail``)
        and the servers reserved for other tasks: the best start now, and later ones, in
        order of their start (so that a scheduler may stop once no later start can
        finish earlier than what it has)."""

    @abstractmethod
    def warm_gang(self, task: Task, size: int) -> Gang | None:
        """A free warm gang of ``size`` for ``task`` now (members in affinity order where
        the rule lets the scheduler choose), or None."""

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

    def affinity_gang(self, task: Task, size: int) -> Gang | None:
        return self.choose_servers(task, size, None)

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

    def options(
        self, task: Task, avail: Sequence[float], reserved: set[int]
    ) -> Iterator[GangOption]:
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
        options.sort(key=lambda option: option.start)  # stable: ties keep this order
        return iter(options)

    def warm_gang(self, task: Task, size: int) -> Gang | None:
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
    MEMO_SIZE: ClassVar[int] = 4096
    """Candidate lists remembered (by free pool and residency masks) before forgetting."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim)
        self._memo: dict[tuple, list[Gang]] = {}
        """Candidates by (rule, pool mask, residency mask, sizes): a pure function of the
        masks on a fixed cluster, asked again and again within a decision (EFT's
        min-min) and across the forks of a planner, which share it."""

    def reset(self) -> None:
        """Nothing to forget: residency lives on the servers, which the simulator rebuilds."""

    def copy_state(self, other: Placement) -> None:
        """Residency lives on the servers, which the simulator copies; the memo of
        candidates is shared (it depends on the masks only)."""
        assert isinstance(other, ChosenGangs)
        self._memo = other._memo

    def _remember(self, key: tuple, gangs: list[Gang]) -> list[Gang]:
        if len(self._memo) >= self.MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = gangs
        return gangs

    def gang_sizes(self, task: Task) -> list[int]:
        """The allowed sizes the capable servers (busy or free) can host; the smallest
        allowed size if none."""
        hosts = self.sim.capable_masks[task.model].bit_count()
        allowed = self.sim.allowed_gang_sizes
        return [size for size in allowed if size <= hosts] or [min(allowed)]

    def feasible_gang_sizes(self, task: Task) -> list[int]:
        sim = self.sim
        hosts = (sim.free_mask & sim.capable_masks[task.model]).bit_count()
        return [size for size in sim.allowed_gang_sizes if size <= hosts]

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

    def _first(self, pools: Sequence[int], size: int) -> Gang | None:
        """The first ``size`` servers of ``pools`` (masks, in order of preference), each
        pool split by speed, fastest first, and read in ascending ids; None if they hold
        fewer."""
        chosen: list[int] = []
        for pool in pools:
            if not pool:
                continue
            for speed_class in self.sim.speed_classes:
                members = pool & speed_class
                if members:
                    chosen += lowest(members, size - len(chosen))
                    if len(chosen) == size:
                        return tuple(sorted(chosen))
        return None

    def affinity_gang(self, task: Task, size: int) -> Gang | None:
        sim = self.sim
        free = sim.free_mask & sim.capable_masks[task.model]
        if free.bit_count() < size:
            return None
        resident = sim.resident_masks[task.model]
        return self._first((free & resident, free & ~resident), size)

    def _fastest(self, task: Task, pool: int, size: int) -> list[Gang]:
        """The candidate gangs of ``size`` among the servers of mask ``pool``: the
        fastest (residents first on equal speed) and the fastest holding the model."""
        sim = self.sim
        resident = sim.resident_masks[task.model]
        key = ("fastest", pool, resident, size)
        known = self._memo.get(key)
        if known is not None:
            return known
        gangs: list[Gang] = []
        chosen: list[int] = []
        for speed_class in sim.speed_classes:
            members = pool & speed_class
            if not members:
                continue
            chosen += lowest(members & resident, size - len(chosen))
            if len(chosen) < size:
                chosen += lowest(members & ~resident, size - len(chosen))
            if len(chosen) == size:
                gangs.append(tuple(sorted(chosen)))
                break
        warm = self._first((pool & resident,), size)
        if warm is not None and warm not in gangs:
            gangs.append(warm)
        return self._remember(key, gangs)

    def _site_pools(self, pool: int, size: int) -> list[int]:
        """``pool`` split by site, the sites holding at least ``size`` of its servers
        (gangs within a site exist only with a topology and for two or more members)."""
        sim = self.sim
        if sim.n_sites == 1 or size < 2:
            return []
        pools = []
        for site_mask in sim.site_masks:
            members = pool & site_mask
            if members and members.bit_count() >= size:
                pools.append(members)
        return pools

    def candidate_gangs(self, task: Task, size: int, servers: Sequence[int]) -> list[Gang]:
        """The candidate gangs of the module docstring among ``servers``: overall first,
        then those of each site."""
        pool = 0
        for server_id in servers:
            pool |= 1 << server_id
        return self._candidates(task, size, pool)

    def free_candidate_gangs(self, task: Task, sizes: Sequence[int]) -> list[Gang]:
        """The candidates overall, then those within each site, read from the counts of
        each site's free servers per speed and residency: two sites whose counts take
        the same servers of the same types give gangs of the same timing, and only the
        first site's (the lowest ids) is listed."""
        sim = self.sim
        pool = sim.free_mask & sim.capable_masks[task.model]
        gangs: list[Gang] = []
        for size in sizes:
            if pool.bit_count() >= size:
                gangs += self._fastest(task, pool, size)
        within = [size for size in sorted(sizes) if size >= 2]
        if sim.n_sites > 1 and within:
            for gang in self._site_gangs(task, pool, within):
                if gang not in gangs:
                    gangs.append(gang)
        return gangs

    def _site_gangs(self, task: Task, pool: int, sizes: list[int]) -> list[Gang]:
        """The candidates within each site among ``pool`` (``sizes`` ascending, 2+)."""
        sim = self.sim
        resident = sim.resident_masks[task.model]
        key = ("sites", pool, resident, tuple(sizes))
        known = self._memo.get(key)
        if known is not None:
            return known
        seen: set[tuple] = set()
        gangs: list[Gang] = []
        for site_mask, parts in zip(sim.site_masks, sim.site_speed_parts, strict=True):
            site_pool = pool & site_mask
            if site_pool.bit_count() < sizes[0]:
                continue
            counts = []  # (speed class, free holders, other free) in speed order
            for speed_index, part in parts:
                members = site_pool & part
                if members:
                    warm = (members & resident).bit_count()
                    counts.append((speed_index, warm, members.bit_count() - warm))
            total = sum(warm + cold for _, warm, cold in counts)
            holders = sum(warm for _, warm, _ in counts)
            for size in sizes:
                if size > total:
                    break
                signatures = [_taken(counts, size, with_cold=True)]
                if holders >= size:
                    signatures.append(_taken(counts, size, with_cold=False))
                for signature in signatures:
                    exact = all(sim.speed_class_single_type[i] for i, _, _ in signature)
                    if exact and signature in seen:
                        continue  # an earlier site has a gang of the same timing
                    seen.add(signature)
                    with_cold = any(cold for _, _, cold in signature)
                    gang = (
                        self._fastest(task, site_pool, size)[0]
                        if with_cold
                        else self._first((site_pool & resident,), size)
                    )
                    if gang is not None and gang not in gangs:
                        gangs.append(gang)
        return self._remember(key, gangs)

    def _candidates(self, task: Task, size: int, pool: int) -> list[Gang]:
        if pool.bit_count() < size:
            return []
        gangs = list(self._fastest(task, pool, size))
        for site_pool in self._site_pools(pool, size):
            for gang in self._fastest(task, site_pool, size):
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
        masks = sim.resident_masks
        model_memory = models[task.model].memory_gb
        for server_id, cold in zip(gang, timing.member_cold_start_s, strict=True):
            server = sim.servers[server_id]
            if task.model in server.resident:
                server.resident.move_to_end(task.model)
                continue
            used = sum(models[m].memory_gb for m in server.resident)
            while server.resident and used + model_memory > server.memory_gb:
                evicted, _ = server.resident.popitem(last=False)
                masks[evicted] &= ~(1 << server_id)
                used -= models[evicted].memory_gb
            server.resident[task.model] = None
            masks[task.model] |= 1 << server_id
            sim.schedule_load_done(server_id, task.model, cold)

    def cold_start_now(self, task: Task) -> float:
        sim = self.sim
        if sim.free_mask & sim.resident_masks[task.model]:
            return 0.0
        return sim.latency.cold_start_s(task.model, 1)

    def options(
        self, task: Task, avail: Sequence[float], reserved: set[int]
    ) -> Iterator[GangOption]:
        """For every availability threshold and every allowed size, the candidate gangs
        among the capable servers available by then: exact over all subsets. The
        servers join in order of availability; at each threshold the candidates of the
        whole cluster are read again from the masks, and those of the sites that
        servers joined (at the first threshold, of every site, one per timing), and a
        gang is listed when it is new, at the threshold (its start). A gang left out is
        one listed before with an earlier start, or one of the same timing and start
        with lower ids."""
        sim = self.sim
        capable = self.capable(task, free_only=False)
        arrivals = sorted(capable, key=avail.__getitem__)
        sizes = [size for size in sim.allowed_gang_sizes if size <= len(capable)]
        within = [size for size in sizes if size >= 2] if sim.n_sites > 1 else []
        previous: dict[tuple[int, int], list[Gang]] = {}  # (size, site or -1) -> gangs
        ready, position = 0, 0
        while position < len(arrivals):
            threshold = avail[arrivals[position]]
            joined = []
            while position < len(arrivals) and avail[arrivals[position]] == threshold:
                joined.append(arrivals[position])
                position += 1
            for server_id in joined:
                ready |= 1 << server_id
            fresh: list[Gang] = []
            n_ready = ready.bit_count()
            for size in sizes:
                if size <= n_ready:
                    gangs = self._fastest(task, ready, size)
                    if gangs != previous.get((size, -1)):
                        previous[(size, -1)] = gangs
                        fresh += gangs
            if within and len(joined) == n_ready:  # the first threshold: every site
                fresh += self._site_gangs(task, ready, within)
            elif within:
                for site in sorted({sim.server_sites[i] for i in joined}):
                    site_pool = ready & sim.site_masks[site]
                    for size in within:
                        if site_pool.bit_count() < size:
                            break
                        gangs = self._fastest(task, site_pool, size)
                        if gangs != previous.get((size, site)):
                            previous[(size, site)] = gangs
                            fresh += gangs
            listed: set[Gang] = set()
            for gang in sorted(fresh, key=lambda g: (len(g), g)):
                if gang in listed:
                    continue
                listed.add(gang)
                start = max(avail[i] for i in gang)
                if start == threshold:  # else listed before, or a twin's (docstring)
                    yield GangOption(gang, start, tuple(self.warm(task, gang)))

    def warm_gang(self, task: Task, size: int) -> Gang | None:
        sim = self.sim
        free_warm = sim.free_mask & sim.resident_masks[task.model] & sim.capable_masks[task.model]
        if free_warm.bit_count() < size:
            return None
        return self._first((free_warm,), size)

    def warm_units(self, task: Task, size: int) -> WarmUnits:
        sim = self.sim
        holders = ids_of(sim.capable_masks[task.model] & sim.resident_masks[task.model])
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


def _taken(counts: list[tuple[int, int, int]], size: int, *, with_cold: bool) -> tuple:
    """What a candidate rule takes from a site's free servers, given per speed class
    (fastest first) how many hold the model and how many do not: ``(class, holders
    taken, others taken)`` per class it takes from. ``with_cold``: the fastest ``size``
    servers, holders first on equal speed; else the fastest ``size`` holders."""
    taken = []
    need = size
    for speed_index, warm, cold in counts:
        from_warm = min(warm, need)
        from_cold = min(cold, need - from_warm) if with_cold else 0
        if from_warm or from_cold:
            taken.append((speed_index, from_warm, from_cold))
            need -= from_warm + from_cold
        if need == 0:
            break
    return tuple(taken)


PLACEMENTS: dict[str, type[Placement]] = {"paper": ReferenceGroups, "edge": ChosenGangs}
"""The placement rule of each preset kind."""

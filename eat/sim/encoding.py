"""Observation tokens, action decoding and the action mask, shared by the Gymnasium
environment and by learned schedulers that act on a live simulator.

Tokens (rows of the observation), in this order:
``queue_window`` task tokens (visible queue, oldest first; empty slots have
``present = 0``), one token per server, and one global token. Every token has the
same ``N_FEATURES + model_slots`` columns, so an attention encoder reads any cluster
size and queue window; the first three columns are a one-hot token type.

Model slots. The last ``model_slots`` columns (the preset's ``model_slots``, or the
count a trained network was built for) name models: a task token marks its model's
slot, a server token the slots of the models it serves warm. The width depends on the
slot count, not on the number of models, so one network reads a preset with more models
than it was trained on, up to its slot count. Which slot a model takes is the encoder's
*slot assignment* (:meth:`Encoder.assign_slots`): the identity by default (the preset's
``i``-th model in slot ``i``; with as many slots as models this is the one-hot of
``eat/EdgeCluster-v2``), or a random injective assignment drawn from a generator.
Training environments draw one per episode from the episode seed
(:func:`slot_rng`, ``EdgeClusterEnv(slot_assignment="permuted")``), so every slot is
trained and the policy learns to match a task's slot with the servers' slots whatever
they are (slot equivariance) rather than the meaning of one slot; evaluation keeps the
identity, so a model's slot never depends on the scheduler being evaluated.

Every column is relative to the cluster and workload at hand, never an absolute number
of GB, pixels or seconds, so that a policy reads a cluster of other GPUs, models or time
scales (the CPU testbed's tiny models, a larger cluster) on the scales it learned:
``tau`` is the preset's latency scale (:meth:`~eat.sim.simulator.Simulator.latency_scale`:
the mean standalone latency of its workload's tasks), sizes are relative to the largest
image the workload asks for, speeds to the fastest server, memory to the largest model,
gang sizes to the largest allowed one.

Task token columns: 0-2 type, 3 present, 4 waiting time / tau, 5 time to deadline / tau
(clipped to [-10, 10]; 0 without a deadline), 6 has a deadline, 7 pixels / the largest
image's pixels, 8 fixed gang size / the largest allowed gang size (0 when the scheduler
chooses), 9 dispatchable now, 10 cold start the task would pay on the best free gang
now / tau, 11 nominal warm service time / tau (at the task's own steps when it has
them, else at the deadline's reference steps), 12 position in the queue / window (0 =
oldest: tasks that arrived together, such as the paper preset's initial burst, have
equal waiting times, and first-come first-served needs their order), then its model's
slot (one-hot over the model slots).

Server token columns: 0-2 type, 3 present, 4 remaining busy time / tau, 5 speed / the
fastest server's, 6 memory / the largest model's footprint, 7 free now, 8 size of its
warm group / the largest allowed gang size, 9 whole warm group free, 10-12 its site
(zero without a topology: every server in one site): 10 free servers of its site / the
largest allowed gang size (the largest gang that stays within the site), 11 servers of
its site / the largest allowed gang size, 12 its site's index / the number of sites
(which servers share a site); then per model slot 1 if it serves that slot's model warm
(resident, or in a warm group).

``server_tokens: per_group`` pools the servers of one GPU type at one site into one
token (the *groups*, in order of their first server), for clusters of a thousand
servers: 4 mean remaining busy time of its servers / tau, 5 speed, 6 memory, 7 share of
its servers free, 8 its servers / the largest allowed gang size, 9 zero, 10-12 its
site as above, then per model slot the share of its servers holding that slot's model.

Global token columns: 0-2 type, 3 present, 4 current time / tau (time since the
episode start), 5 queue length / window, 6 share of the episode's tasks not yet
arrived, 7 free servers / servers, 8 how much slower the link between sites is than the
link within a site, ``1 - inter-site bandwidth / intra-site bandwidth`` (zero without a
topology).

Action (a Box in [-1, 1]^(3 + window + server tokens)), aligned with the tokens:
``a[0]`` dispatch if > 0 else wait for the next event; ``a[1]`` steps, mapped
linearly from [-1, 1] to [min_steps, max_steps] and rounded (a task with its own steps,
a trace's request, runs with those whatever ``a[1]`` says); ``a[2]`` gang size
(edge), mapped to an index of ``allowed_gang_sizes``; ``a[3 : 3 + window]`` one
score per task slot; ``a[3 + window :]`` one score per server (per group with
``per_group``).

Decoding never produces an invalid dispatch, and its handling of invalid choices
is part of the interface: the task is the highest-scoring *dispatchable* task slot
(masked slots are ignored); a gang size that cannot start now becomes the largest
feasible size below it (or the smallest feasible one); the servers are the
highest-scoring free servers that can hold the model (ties: lower id; ``per_group``:
a server scores its group's score, ties: holding the model first, then lower id); a
wait when no event is pending (nothing could ever change) is executed as a dispatch.
``info["action_mask"]`` marks the slots whose values matter now (the steps value does
not when every visible task has its own steps).
"""

from __future__ import annotations

import numpy as np

from eat.sim.bitmask import ids_of
from eat.sim.simulator import Dispatch, Simulator

N_FEATURES = 13
TYPE_TASK, TYPE_SERVER, TYPE_GLOBAL = 0, 1, 2
SLACK_CLIP = 10.0
ACTION_GATE, ACTION_STEPS, ACTION_GANG = 0, 1, 2
N_GLOBAL_ACTIONS = 3


def slot_rng(seed: int) -> np.random.Generator:
    """The generator of an episode's slot assignment: a third stream of the episode seed,
    independent of the workload and noise streams of
    :func:`~eat.sim.simulator.episode_rngs` (which it leaves unchanged), so permuting the
    slots never changes an episode's tasks."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])


def server_token_count(sim: Simulator) -> int:
    """Server tokens of ``sim``'s observation: one per server, or with ``per_group`` one
    per (site, GPU type) group; known without building an encoder, so a scheduler can
    refuse a simulator before reading it."""
    if sim.preset.server_tokens != "per_group":
        return sim.n_servers
    return len({(site, spec[0]) for spec, site in zip(sim.server_specs, sim.server_sites, strict=True)})


class Encoder:
    """Builds observations and masks, and decodes actions, for one preset.

    ``model_slots``: the model columns of every token (default: the preset's
    ``model_slots``); it must be at least the preset's number of models."""

    def __init__(self, sim: Simulator, model_slots: int | None = None) -> None:
        self.sim = sim
        preset = sim.preset
        self.window = preset.queue_window
        self.n_servers = sim.n_servers
        self.pooled = preset.server_tokens == "per_group"
        self._index_groups()
        self.n_server_tokens = self.n_groups if self.pooled else self.n_servers
        """Server tokens (and server scores of the action): servers, or groups."""
        self.models = list(preset.models)
        self.model_slots = preset.model_slots if model_slots is None else model_slots
        if len(self.models) > self.model_slots:
            raise ValueError(
                f"the observation has {self.model_slots} model slot(s); the preset serves "
                f"{len(self.models)} models ({self.models})"
            )
        self.slot_of: dict[str, int] = {}
        """Model name -> its slot (0-based; column ``N_FEATURES + slot``)."""
        self.assign_slots(None)
        self.n_features = N_FEATURES + self.model_slots
        self.n_tokens = self.window + self.n_server_tokens + 1
        self.action_size = N_GLOBAL_ACTIONS + self.window + self.n_server_tokens
        self.tau = sim.latency_scale()
        """The unit of every time column (s): the preset's latency scale."""
        largest = max(r for mix in preset.workload.models.values() for r in mix.resolutions)
        self.pixel_unit = float(largest * largest)
        self.speed_unit = max(speed for _, speed, _ in sim.server_specs)
        self.memory_unit = max(spec.memory_gb for spec in preset.models.values())
        self.gang_unit = float(max(sim.allowed_gang_sizes))
        self._nominal_cache: dict[tuple[str, int, int | None], float] = {}
        topology = preset.topology
        self.topology = topology is not None
        self.link_slowdown = (
            0.0
            if topology is None
            else 1.0 - topology.inter_site.bandwidth_gbps / preset.network.bandwidth_gbps
        )
        """Global column 8: how much slower the link between sites is (0: one site)."""

    def _index_groups(self) -> None:
        """The groups of ``per_group`` (servers of one GPU type at one site, in order of
        their first server), and per server its group."""
        sim = self.sim
        index: dict[tuple[int, str], int] = {}
        self.group_of = np.zeros(sim.n_servers, dtype=np.int64)
        """Server id -> its group."""
        for server_id, ((gpu, _, _), site) in enumerate(
            zip(sim.server_specs, sim.server_sites, strict=True)
        ):
            self.group_of[server_id] = index.setdefault((site, gpu), len(index))
        self.n_groups = len(index)
        self.group_sites = np.array([site for site, _ in index], dtype=np.int64)
        self.group_sizes = np.bincount(self.group_of, minlength=self.n_groups).astype(np.float64)
        first = {}
        for server_id, group in enumerate(self.group_of.tolist()):
            first.setdefault(group, server_id)
        self.group_first = [first[group] for group in range(self.n_groups)]
        """A member of each group (its speed and memory are the group's)."""
        self.site_sizes = np.bincount(
            np.asarray(sim.server_sites, dtype=np.int64), minlength=sim.n_sites
        ).astype(np.float64)

    def assign_slots(self, rng: np.random.Generator | None) -> None:
        """The identity slot assignment (``rng`` None: the ``i``-th model of the preset in
        slot ``i``), or the first models of a random permutation of the slots drawn from
        ``rng`` (module docstring)."""
        if rng is None:
            slots = list(range(len(self.models)))
        else:
            slots = [int(slot) for slot in rng.permutation(self.model_slots)[: len(self.models)]]
        self.slot_of = dict(zip(self.models, slots, strict=True))

    # ------------------------------------------------------------------ observation
    def _nominal(self, model: str, resolution: int, steps: int | None) -> float:
        key = (model, resolution, steps)
        if key not in self._nominal_cache:
            self._nominal_cache[key] = self.sim.nominal_latency(model, resolution, steps)
        return self._nominal_cache[key]

    def observe(self) -> np.ndarray:
        sim, tau = self.sim, self.tau
        obs = np.zeros((self.n_tokens, self.n_features), dtype=np.float32)
        now = sim.now
        for row, task in enumerate(sim.window()):
            token = obs[row]
            token[TYPE_TASK] = 1.0
            token[3] = 1.0
            token[4] = (now - task.arrival) / tau
            if task.deadline != float("inf"):
                slack = (task.deadline - now) / tau
                token[5] = min(SLACK_CLIP, max(-SLACK_CLIP, slack))
                token[6] = 1.0
            token[7] = task.resolution * task.resolution / self.pixel_unit
            token[8] = (task.gang_size or 0) / self.gang_unit
            dispatchable = sim.can_dispatch(task)
            token[9] = float(dispatchable)
            token[10] = sim.placement.cold_start_now(task) / tau if dispatchable else 0.0
            token[11] = self._nominal(task.model, task.resolution, task.steps) / tau
            token[12] = row / self.window
            token[N_FEATURES + self.slot_of[task.model]] = 1.0
        if self.pooled:
            self._observe_groups(obs[self.window : self.window + self.n_groups])
        else:
            self._observe_servers(obs)
        token = obs[-1]
        token[TYPE_GLOBAL] = 1.0
        token[3] = 1.0
        token[4] = now / tau
        token[5] = len(sim.queue) / self.window
        total = max(1, len(sim.tasks))
        token[6] = (total - sim.n_arrived) / total
        token[7] = sim.n_free / self.n_servers
        token[8] = self.link_slowdown
        return obs

    def _observe_servers(self, obs: np.ndarray) -> None:
        """One token per server (``per_server``)."""
        sim, tau, now = self.sim, self.tau, self.sim.now
        base = self.window
        placement = sim.placement
        if self.topology:
            site_free = self._site_free()
            n_sites = float(sim.n_sites)
        for server in sim.servers:
            token = obs[base + server.server_id]
            token[TYPE_SERVER] = 1.0
            token[3] = 1.0
            free = server.task_id is None
            token[4] = 0.0 if free else max(0.0, server.busy_until - now) / tau
            token[5] = server.speed / self.speed_unit
            token[6] = server.memory_gb / self.memory_unit
            token[7] = float(free)
            view = placement.view(server)
            token[8] = view.group_size / self.gang_unit
            token[9] = float(view.group_free)
            if self.topology:
                token[10] = site_free[server.site] / self.gang_unit
                token[11] = self.site_sizes[server.site] / self.gang_unit
                token[12] = server.site / n_sites
            for model in view.resident:
                token[N_FEATURES + self.slot_of[model]] = 1.0

    def _free_flags(self) -> np.ndarray:
        return _flags(self.sim.free_mask, self.n_servers)

    def _site_free(self) -> np.ndarray:
        sites = np.asarray(self.sim.server_sites, dtype=np.int64)
        return np.bincount(sites, weights=self._free_flags(), minlength=self.sim.n_sites)

    def _observe_groups(self, tokens: np.ndarray) -> None:
        """One token per group of servers of one GPU type at one site (``per_group``),
        from the simulator's masks and one pass over the busy servers."""
        sim, tau, now = self.sim, self.tau, self.sim.now
        free = self._free_flags()
        remaining = np.zeros(self.n_servers)
        for server_id in ids_of(~sim.free_mask & ((1 << self.n_servers) - 1)):
            remaining[server_id] = max(0.0, sim.servers[server_id].busy_until - now) / tau
        sizes = self.group_sizes
        tokens[:, TYPE_SERVER] = 1.0
        tokens[:, 3] = 1.0
        tokens[:, 4] = (
            np.bincount(self.group_of, weights=remaining, minlength=self.n_groups) / sizes
        )
        first = self.group_first
        tokens[:, 5] = [sim.servers[i].speed / self.speed_unit for i in first]
        tokens[:, 6] = [sim.servers[i].memory_gb / self.memory_unit for i in first]
        tokens[:, 7] = np.bincount(self.group_of, weights=free, minlength=self.n_groups) / sizes
        tokens[:, 8] = sizes / self.gang_unit
        if self.topology:
            site_free = np.bincount(
                np.asarray(sim.server_sites, dtype=np.int64), weights=free, minlength=sim.n_sites
            )
            tokens[:, 10] = site_free[self.group_sites] / self.gang_unit
            tokens[:, 11] = self.site_sizes[self.group_sites] / self.gang_unit
            tokens[:, 12] = self.group_sites / float(sim.n_sites)
        for model, column in self.slot_of.items():
            holders = _flags(sim.resident_masks[model], self.n_servers)
            tokens[:, N_FEATURES + column] = (
                np.bincount(self.group_of, weights=holders, minlength=self.n_groups) / sizes
            )

    def action_mask(self) -> np.ndarray:
        sim = self.sim
        mask = np.zeros(self.action_size, dtype=bool)
        mask[ACTION_GATE] = True
        window = sim.window()
        own_steps = bool(window) and all(task.steps is not None for task in window)
        mask[ACTION_STEPS] = sim.preset.max_steps > sim.preset.min_steps and not own_steps
        mask[ACTION_GANG] = sim.placement.scheduler_places
        for row, task in enumerate(window):
            mask[N_GLOBAL_ACTIONS + row] = sim.can_dispatch(task)
        if sim.placement.scheduler_places:
            base = N_GLOBAL_ACTIONS + self.window
            if self.pooled:
                free = np.bincount(
                    self.group_of, weights=self._free_flags(), minlength=self.n_groups
                )
                mask[base : base + self.n_groups] = free > 0
            else:
                for server in sim.servers:
                    mask[base + server.server_id] = server.task_id is None
        return mask

    # ------------------------------------------------------------------ action
    def steps_from(self, value: float) -> int:
        preset = self.sim.preset
        fraction = (min(1.0, max(-1.0, float(value))) + 1.0) / 2.0
        return round(preset.min_steps + fraction * (preset.max_steps - preset.min_steps))

    def gang_size_from(self, value: float) -> int:
        sizes = self.sim.allowed_gang_sizes
        fraction = (min(1.0, max(-1.0, float(value))) + 1.0) / 2.0
        return sizes[min(len(sizes) - 1, int(fraction * len(sizes)))]

    def decode(self, action: np.ndarray) -> Dispatch | None:
        """Turn an action into a dispatch, or None to wait (see the module docstring)."""
        sim = self.sim
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape[0] != self.action_size:
            raise ValueError(f"action has {action.shape[0]} values; expected {self.action_size}")
        if action[ACTION_GATE] <= 0.0 and sim.next_event_time() is not None:
            return None
        window = sim.window()
        best_task, best_score = None, -np.inf
        for row, task in enumerate(window):
            score = action[N_GLOBAL_ACTIONS + row]
            if score > best_score and sim.can_dispatch(task):
                best_task, best_score = task, score
        if best_task is None:
            raise ValueError(f"decode called at t={sim.now} with no dispatchable task")
        steps = best_task.steps
        if steps is None:
            steps = self.steps_from(action[ACTION_STEPS])
        feasible = sim.feasible_gang_sizes(best_task)
        requested = self.gang_size_from(action[ACTION_GANG])
        smaller = [size for size in feasible if size <= requested]
        size = max(smaller) if smaller else min(feasible)
        base = N_GLOBAL_ACTIONS + self.window
        if self.pooled:
            resident = sim.resident_masks[best_task.model]
            group_of = self.group_of

            def top_scores(free: list[int], count: int) -> list[int]:
                return sorted(
                    free,
                    key=lambda i: (-action[base + group_of[i]], not resident >> i & 1, i),
                )[:count]

        else:

            def top_scores(free: list[int], count: int) -> list[int]:
                return sorted(free, key=lambda i: (-action[base + i], i))[:count]

        servers = sim.placement.choose_servers(best_task, size, top_scores)
        assert servers is not None  # size is feasible now
        return Dispatch(best_task.task_id, steps, servers)

    def encode(self, dispatch: Dispatch | None) -> np.ndarray:
        """An action that decodes to ``dispatch`` (None: wait). Used to express
        heuristic decisions as actions, e.g. for demonstrations or tests. With
        ``per_group`` it scores the dispatch's groups: it decodes to the same task, steps
        and gang size, on servers of those groups (holding the model first), not
        necessarily the same servers."""
        sim = self.sim
        action = np.full(self.action_size, -1.0, dtype=np.float32)
        if dispatch is None:
            return action
        action[ACTION_GATE] = 1.0
        preset = sim.preset
        span = max(1, preset.max_steps - preset.min_steps)
        action[ACTION_STEPS] = 2.0 * (dispatch.steps - preset.min_steps) / span - 1.0
        for row, task in enumerate(sim.window()):
            if task.task_id == dispatch.task_id:
                action[N_GLOBAL_ACTIONS + row] = 1.0
        if sim.placement.scheduler_places and dispatch.servers is not None:
            sizes = sim.allowed_gang_sizes
            index = sizes.index(len(dispatch.servers))
            action[ACTION_GANG] = 2.0 * (index + 0.5) / len(sizes) - 1.0
            base = N_GLOBAL_ACTIONS + self.window
            for server_id in dispatch.servers:
                slot = int(self.group_of[server_id]) if self.pooled else server_id
                action[base + slot] = 1.0
        return action


def _flags(mask: int, n_servers: int) -> np.ndarray:
    """A mask as a float array of 0/1 per server."""
    raw = np.frombuffer(mask.to_bytes((n_servers + 7) // 8, "little"), dtype=np.uint8)
    return np.unpackbits(raw, bitorder="little")[:n_servers].astype(np.float64)

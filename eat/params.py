"""Load and validate ``params.yaml``, the single source of truth for every stage.

Every section of ``params.yaml`` has a pydantic model here with ``extra="forbid"``,
so an unknown key, a value of the wrong type or a value out of range stops the run
with a :class:`ParamsError` that names the dotted key path and what is allowed.
The models carry no pipeline defaults on purpose: the values live in
``params.yaml`` only.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

PresetName = Literal["paper", "edge", "metro"]
"""Presets a stage or a scheduler may name: ``paper`` and ``edge`` are written out in
``env``; ``metro`` is generated from ``env.metro`` (:func:`metro_preset`)."""
HeuristicName = Literal["random", "fifo", "first_fit", "greedy", "eft", "warm_first", "edf"]
AgentName = Literal["eat", "d2sac", "sac", "ppo", "maskable_ppo"]
"""Learned agents (``eat.schedulers.rl.AGENTS``, and the third-party learners
``eat.schedulers.rl.SB3_AGENTS``); evaluated from the ``train`` stage's models."""
TaughtAgentName = Literal["eat", "d2sac", "sac"]
"""Learned agents that learn from a teacher (demonstrations, labels): not the
third-party learners."""
PlannerName = Literal["rollout", "clairvoyant"]
"""Search-based schedulers (``eat.schedulers.rollout``)."""
TeacherPlanner = Literal["rollout"]
"""Planners that may teach the learned agents (they see no more than the learner)."""
SchedulerName = Literal[
    "random",
    "fifo",
    "first_fit",
    "greedy",
    "eft",
    "warm_first",
    "edf",
    "rollout",
    "clairvoyant",
    "eat",
    "d2sac",
    "sac",
    "ppo",
    "maskable_ppo",
]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class ParamsError(ValueError):
    """A ``params.yaml`` value is missing, unknown, mistyped or out of range."""


class _Strict(BaseModel):
    # Field docstrings become descriptions: the parameter reference is generated from them.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# ---------------------------------------------------------------------------
# Workload and task mix
# ---------------------------------------------------------------------------


class ModelMix(_Strict):
    """Share of requests and resolutions for one diffusion model."""

    share: Annotated[float, Field(gt=0, le=1)]
    """Fraction of requests that ask for this model (dimensionless; the shares of all
    models are renormalised to sum to 1)."""
    resolutions: list[PositiveInt] = Field(min_length=1)
    """Image side lengths (px; square images) requested of this model, each drawn with
    equal probability."""


class DeadlineConfig(_Strict):
    """QoS target of each task: ``deadline = arrival + slack * nominal`` (``slack``), or
    ``arrival + slo_scale * standalone`` (``slo``)."""

    mode: Literal["none", "slack", "slo"]
    """``none``: tasks have no deadline (never missed); ``slack``: the deadline is the
    arrival time plus a slack factor times the nominal latency; ``slo``: the arrival time
    plus ``slo_scale`` times the task's standalone latency (warm, on an empty cluster, on
    the fastest gang it could get, at ``reference_steps``), as serving systems state
    SLOs."""
    slo_scale: PositiveFloat
    """``slo``: the deadline's multiple of the standalone latency (dimensionless; 1 is
    the fastest possible service). Unused by the other modes."""
    slack_min: PositiveFloat
    """Smallest slack factor (dimensionless, multiplies the nominal latency); the factor
    is drawn uniformly from [slack_min, slack_max] per task. Unused with ``mode: none``."""
    slack_max: PositiveFloat
    """Largest slack factor (dimensionless, >= slack_min). Unused with ``mode: none``."""
    reference_gpu: str
    """GPU type (a key of ``gpu_types``) whose warm single-server latency at
    ``reference_steps`` is the nominal latency."""
    reference_steps: PositiveInt
    """Denoising steps of the nominal latency (steps)."""

    @model_validator(mode="after")
    def _ordered(self) -> DeadlineConfig:
        if self.slack_max < self.slack_min:
            raise ValueError(
                f"slack_max ({self.slack_max}) must be >= slack_min ({self.slack_min})"
            )
        return self


class WorkloadConfig(_Strict):
    """Arrival process of one episode; the arrival rate itself comes from the sweep."""

    process: Literal["poisson", "mmpp", "diurnal", "trace"]
    """Arrival process: Poisson, 2-state Markov-modulated Poisson (bursty), diurnal
    (sinusoidal non-homogeneous Poisson), or replay of a CSV trace."""
    initial_tasks: Annotated[int, Field(ge=0)]
    """Tasks already queued at t = 0 (tasks; <= total_tasks)."""
    total_tasks: PositiveInt
    """Tasks per episode, the initial ones included (tasks)."""
    burst_ratio: Annotated[float, Field(ge=1)]
    """mmpp: arrival rate in the burst state over the rate in the calm state
    (dimensionless); the long-run mean rate stays the swept rate."""
    burst_share: Annotated[float, Field(gt=0, lt=1)]
    """mmpp: long-run share of time spent in the burst state (dimensionless)."""
    burst_mean_duration_s: PositiveFloat
    """mmpp: mean sojourn in the burst state (s)."""
    diurnal_period_s: PositiveFloat
    """diurnal: period of the rate modulation (s)."""
    diurnal_amplitude: Annotated[float, Field(ge=0, lt=1)]
    """diurnal: relative amplitude of the sinusoidal rate (dimensionless): the rate is
    ``rate * (1 + amplitude * sin(2 pi t / period))``."""
    trace_path: str | None
    """trace: CSV with columns arrival (s), model, resolution (px) and optionally
    deadline (s after arrival), gang_size and steps (the request's own denoising steps,
    which every scheduler then uses); its arrivals are rescaled to the swept mean rate.
    null for the other processes."""
    trace_window: Literal["first", "random"]
    """trace: the rows an episode replays: ``first``, the first total_tasks rows (every
    seed the same tasks); ``random``, total_tasks consecutive rows from a start drawn
    from the episode's seed (seeds replay different parts of the trace). Unused by the
    other processes."""
    models: dict[str, ModelMix] = Field(min_length=1)
    """Model name (a key of the preset's ``models``) -> its share of the requests and
    its resolutions."""
    gang_sizes: list[PositiveInt]
    """paper-style presets: gang size (servers) drawn uniformly per task from this list;
    empty when the scheduler chooses the gang."""
    deadline: DeadlineConfig
    """Each task's QoS deadline."""

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadConfig:
        if self.initial_tasks > self.total_tasks:
            raise ValueError(
                f"initial_tasks ({self.initial_tasks}) exceeds total_tasks ({self.total_tasks})"
            )
        if self.process == "trace" and not self.trace_path:
            raise ValueError("process 'trace' needs trace_path")
        return self


# ---------------------------------------------------------------------------
# Cluster, latency, quality, reward
# ---------------------------------------------------------------------------


class GpuType(_Strict):
    """One GPU type of a preset's cluster."""

    memory_gb: PositiveFloat | None
    """GPU memory (GB); null: the GPU catalogue's (``edge`` preset only)."""
    speed: PositiveFloat | None
    """``paper``: per-step throughput relative to the reference server (1.0). ``edge``:
    null; the calibrated latency model gives each type's times (and its speed relative
    to the anchor GPU)."""


class ServerGroup(_Strict):
    """Servers of one GPU type; the cluster's server ids follow the list order."""

    gpu: str
    """GPU type of these servers (a key of ``gpu_types``)."""
    count: PositiveInt
    """Number of servers of this type (servers, one GPU each)."""


class ModelSpec(_Strict):
    """A diffusion model the cluster serves."""

    memory_gb: PositiveFloat
    """Resident footprint in GPU memory (GB): weights of every component plus working
    memory. A server whose memory is smaller never runs the model; on ``edge`` the
    resident models of a server share its memory (LRU eviction)."""
    profile_model: str
    """Model family in the latency profile (``sd15`` or ``sdxl``) whose per-step,
    decode, encode and cold-start rows this model uses (``edge``; unused by the paper
    tables)."""


class PaperLatency(_Strict):
    """The reference simulator's typed-in tables, indexed by gang size."""

    per_step_s: dict[int, PositiveFloat]
    """Gang size (servers) -> seconds per denoising step of the whole gang (s)."""
    reload_s: dict[int, NonNegativeFloat]
    """Gang size (servers) -> seconds a cold gang of that size pays to load the model
    before its first step (s)."""

    @model_validator(mode="after")
    def _same_keys(self) -> PaperLatency:
        if set(self.per_step_s) != set(self.reload_s):
            raise ValueError(
                f"per_step_s keys {sorted(self.per_step_s)} and reload_s keys "
                f"{sorted(self.reload_s)} must be the same gang sizes"
            )
        return self


class ProfileLatency(_Strict):
    """The calibrated latency model (``eat.latency.calibration``): per-step, decode, encode and
    cold-start times fitted on measured GPU profiles, with the GPU types that have none
    derived from datasheet numbers."""

    catalogue: str
    """GPU catalogue: CSV in eat/data (or a path) with datasheet numbers (memory, FP16
    TFLOPS, memory bandwidth, boost clock) and their sources."""
    measured: dict[str, list[str]] = Field(min_length=1)
    """Catalogue GPU type -> the profile CSVs measured on it (eat/data names or paths)."""
    anchor: str
    """Measured GPU type from which the types without a profile are derived."""
    stage_decision: str | None
    """The profile stage's ``latency_source.json``. When the file exists and names a
    GPU profile it measured, that profile replaces its GPU type's entry in ``measured``
    and becomes the anchor; null, or no file yet: ``measured`` and ``anchor`` as given."""
    step_mode: Literal["cuda_graph", "eager"]
    """Per-step rows to fit: captured in CUDA graphs (patch-parallel engines) or eager."""
    architecture: str
    """Parameters, bytes and activation sizes of the real architectures (eat/data)."""
    batch: Literal[1, 2]
    """2: classifier-free-guidance pair on one server; 1: one branch."""
    load_bandwidth_gbps: PositiveFloat
    """Disk-to-GPU load bandwidth of a cold start (GB/s, gigabytes per second)."""
    cold_start_overhead_s: NonNegativeFloat
    """Fixed cost of a cold start beyond reading weights (s): process start, CUDA
    context."""

    @model_validator(mode="after")
    def _anchor_measured(self) -> ProfileLatency:
        if self.anchor not in self.measured:
            raise ValueError(
                f"anchor {self.anchor!r} has no measured profile; choose one of "
                f"{sorted(self.measured)}"
            )
        empty = sorted(gpu for gpu, files in self.measured.items() if not files)
        if empty:
            raise ValueError(f"measured {empty} list no profile files")
        return self


class NetworkConfig(_Strict):
    """Links between servers (the per-step exchange of patch parallelism) and to the
    client (the result image). With a ``topology``, ``bandwidth_gbps`` and ``latency_s``
    are the link within a site."""

    bandwidth_gbps: PositiveFloat
    """Server-to-server link bandwidth for the patch exchange (GB/s, gigabytes per
    second: 10 GbE is 1.25); with a ``topology``, between servers of one site."""
    latency_s: NonNegativeFloat
    """Per-exchange latency (s), paid once per denoising step by a gang of 2+; with a
    ``topology``, within one site."""
    activation_bytes_per_latent_pixel: NonNegativeFloat | None
    """Bytes one member receives per step per latent pixel of the whole image (bytes),
    times (n - 1) / n for a gang of n; null: derived per model from its UNet's
    activation sizes (DistriFusion: self-attention K/V, conv boundaries, GroupNorm
    statistics, output latent)."""
    overlap: Literal["sequential", "overlapped"]
    """``sequential``: step pace = compute + communication; ``overlapped``: max of both."""
    client_bandwidth_gbps: PositiveFloat
    """Server-to-client bandwidth for returning the image (GB/s, gigabytes per second)."""
    image_bytes_per_pixel: NonNegativeFloat
    """Encoded image size per image pixel (bytes; 0: the transmission is free)."""


class LinkConfig(_Strict):
    """One kind of network link: its bandwidth and the latency of one message."""

    bandwidth_gbps: PositiveFloat
    """Bandwidth (GB/s, gigabytes per second: 1 GbE is 0.125)."""
    latency_s: NonNegativeFloat
    """Latency of one exchange over the link (s)."""


class TopologyConfig(_Strict):
    """Servers grouped in sites: within a site they exchange over the ``network`` link,
    between sites over ``inter_site``. A gang pays the slowest link it crosses: a gang
    with members in two or more sites exchanges every step over ``inter_site``, and
    every result leaves its site over ``inter_site`` before the client link."""

    site_sizes: list[PositiveInt] = Field(min_length=1)
    """Servers per site, in server-id order (the order of ``servers``): site 0 holds the
    first ``site_sizes[0]`` servers, site 1 the next ones, and so on; they sum to the
    number of servers."""
    inter_site: LinkConfig
    """The link between two sites (each site's uplink to the metro network); it must be
    no faster than the link within a site (``network``), in bandwidth and latency."""


class QualityConfig(_Strict):
    """Image quality as a function of the denoising steps s (:mod:`eat.sim.quality`)."""

    curve: Literal["eat_reference", "saturating"]
    """``eat_reference``: q(s) = 0 for s < 5, 0.16 log6(s) - 0.02 for 5 <= s <= 30,
    0.27 above (zzf1955/EAT); ``saturating``: q_max (1 - exp(-s / tau))."""
    q_max: PositiveFloat
    """saturating: the quality approached as the steps grow (dimensionless). Unused by
    ``eat_reference``."""
    tau: PositiveFloat
    """saturating: the steps over which the quality rises to 63% of q_max (steps).
    Unused by ``eat_reference``."""


class RewardConfig(_Strict):
    """``objective: latency``: r = min(cap, scale / (avg_wait + duration + wait)) +
    quality_weight * q - deadline_penalty * missed; ``objective: slo``: r =
    slo_met_reward * met + slo_quality_weight * q."""

    objective: Literal["latency", "slo"]
    """``latency``: the EAT reference's reward (latency credit, quality, deadline
    penalty); ``slo``: meeting the deadline, quality as the tie-breaker."""
    slo_met_reward: NonNegativeFloat
    """``slo``: reward of a task that finishes by its deadline (reward units)."""
    slo_quality_weight: NonNegativeFloat
    """``slo``: weight of the quality q(steps), small beside slo_met_reward so that it
    only breaks ties (reward units per unit quality)."""
    latency_scale: PositiveFloat
    """``scale`` of the latency term (reward x s): the term is scale / (avg_wait +
    duration + wait), so it reaches the cap at latency_scale / latency_cap seconds."""
    latency_cap: PositiveFloat
    """``cap``: the largest value of the latency term (reward units)."""
    quality_weight: NonNegativeFloat
    """Weight of the quality q(steps) in the reward (reward units per unit quality)."""
    deadline_penalty: NonNegativeFloat
    """Subtracted when the task finishes after its deadline (reward units)."""
    avg_wait_window: PositiveInt
    """How many still-queued tasks enter avg_wait (tasks; the reference uses 10)."""


class PresetConfig(_Strict):
    """One simulated system: cluster, latency model, workload, quality and reward."""

    kind: Literal["paper", "edge"]
    """``paper``: gang size fixed per task and servers chosen by the reference's warm-group
    rule; ``edge``: the scheduler chooses gang size and servers; models have
    memory-limited residency."""
    gpu_types: dict[str, GpuType] = Field(min_length=1)
    """GPU type name -> its memory and speed. ``edge``: names of the GPU catalogue."""
    servers: list[ServerGroup] = Field(min_length=1)
    """The cluster: groups of servers of one GPU type each."""
    models: dict[str, ModelSpec] = Field(min_length=1)
    """Model name -> its memory footprint and latency-profile family."""
    allowed_gang_sizes: list[PositiveInt] = Field(min_length=1)
    """Gang sizes (servers, one row patch each) a task may run with. ``edge``: the
    scheduler chooses among them (the action's gang slot indexes this list);
    ``paper``: each task's own size (drawn from ``workload.gang_sizes``) decides, and
    this list only sets the rows of the ``build_env`` latency table."""
    min_steps: PositiveInt
    """Fewest denoising steps a dispatch may use (steps)."""
    max_steps: PositiveInt
    """Most denoising steps a dispatch may use (steps, >= min_steps)."""
    paper_latency: PaperLatency | None
    """``paper``: the reference's per-step and reload tables; null for ``edge``."""
    profile_latency: ProfileLatency | None
    """``edge``: the calibrated latency model over measured GPU profiles; null for
    ``paper``."""
    network: NetworkConfig
    """Server-to-server and server-to-client links (``edge``; the paper tables include
    any exchange)."""
    topology: TopologyConfig | None
    """Sites and the links between them (``edge`` kind only); null: every server in one
    site on the ``network`` link."""
    server_tokens: Literal["per_server", "per_group"]
    """The observation's server tokens: ``per_server``, one token (and one action score)
    per server; ``per_group``, one per group of servers of one GPU type at one site,
    pooled (shares of free and warm servers), so that the attention encoder reads
    clusters of a thousand servers in a few hundred tokens (:mod:`eat.sim.encoding`)."""
    latency_noise_cv: NonNegativeFloat
    """Coefficient of variation of a multiplicative gamma noise on compute time
    (dimensionless); 0 is deterministic, 1 is exponential service."""
    quality: QualityConfig
    """Steps-to-quality curve."""
    reward: RewardConfig
    """Reward of a dispatch."""
    workload: WorkloadConfig
    """Arrival process and task mix of an episode."""
    queue_window: PositiveInt
    """Queued tasks visible to the scheduler, oldest first (tasks): the task slots of
    the observation and the action."""
    model_slots: PositiveInt
    """Model columns of every observation token (slots, >= the number of models): a
    model occupies one slot, so a network trained with this many slots reads presets
    with up to as many models (``eat.sim.encoding``)."""
    time_limit_s: PositiveFloat | None
    """Truncate an environment episode once simulated time passes this (s); null: none."""

    @model_validator(mode="after")
    def _consistent(self) -> PresetConfig:
        if self.max_steps < self.min_steps:
            raise ValueError(f"max_steps ({self.max_steps}) < min_steps ({self.min_steps})")
        for group in self.servers:
            if group.gpu not in self.gpu_types:
                raise ValueError(
                    f"servers: gpu {group.gpu!r} is not in gpu_types; choose one of "
                    f"{sorted(self.gpu_types)}"
                )
        if len(self.models) > self.model_slots:
            raise ValueError(
                f"model_slots ({self.model_slots}) must be at least the number of models "
                f"({len(self.models)})"
            )
        for name in self.workload.models:
            if name not in self.models:
                raise ValueError(
                    f"workload.models: {name!r} is not in models; choose one of "
                    f"{sorted(self.models)}"
                )
        if self.kind == "paper":
            if self.paper_latency is None:
                raise ValueError("kind 'paper' needs paper_latency")
            unset = sorted(
                name
                for name, gpu in self.gpu_types.items()
                if gpu.memory_gb is None or gpu.speed is None
            )
            if unset:
                raise ValueError(f"kind 'paper' needs memory_gb and speed for gpu_types {unset}")
            sizes = self.workload.gang_sizes
            if not sizes:
                raise ValueError("kind 'paper' needs workload.gang_sizes (gang fixed per task)")
            missing = sorted(set(sizes) - set(self.paper_latency.per_step_s))
            if missing:
                raise ValueError(f"workload.gang_sizes {missing} have no paper_latency entry")
        else:
            if self.profile_latency is None:
                raise ValueError("kind 'edge' needs profile_latency")
            fixed = sorted(name for name, gpu in self.gpu_types.items() if gpu.speed is not None)
            if fixed:
                raise ValueError(
                    f"gpu_types {fixed}: kind 'edge' takes per-step times from the calibrated "
                    "latency model (profile_latency); set speed to null"
                )
            if self.workload.deadline.mode == "slack" and (
                self.workload.deadline.reference_gpu not in self.gpu_types
            ):
                raise ValueError(
                    f"workload.deadline.reference_gpu {self.workload.deadline.reference_gpu!r}"
                    f" is not in gpu_types; choose one of {sorted(self.gpu_types)}"
                )
        n_servers = sum(group.count for group in self.servers)
        if self.topology is not None:
            if self.kind == "paper":
                raise ValueError("kind 'paper' has no topology (its tables include any exchange)")
            if sum(self.topology.site_sizes) != n_servers:
                raise ValueError(
                    f"topology.site_sizes sum to {sum(self.topology.site_sizes)}, but there are "
                    f"{n_servers} servers"
                )
            inter = self.topology.inter_site
            if (
                inter.bandwidth_gbps > self.network.bandwidth_gbps
                or inter.latency_s < self.network.latency_s
            ):
                raise ValueError(
                    f"topology.inter_site ({inter.bandwidth_gbps} GB/s, {inter.latency_s} s) "
                    f"must be no faster than the link within a site, network "
                    f"({self.network.bandwidth_gbps} GB/s, {self.network.latency_s} s)"
                )
        too_big = [size for size in self.workload.gang_sizes if size > n_servers]
        if too_big:
            raise ValueError(f"workload.gang_sizes {too_big} exceed the {n_servers} servers")
        return self

    @property
    def n_servers(self) -> int:
        return sum(group.count for group in self.servers)

    def with_tasks(self, total_tasks: int) -> PresetConfig:
        """This preset with episodes of ``total_tasks`` tasks (the same workload process,
        shorter or longer)."""
        workload = self.workload.model_copy(update={"total_tasks": total_tasks})
        return self.model_copy(update={"workload": workload})


class MetroSpec(_Strict):
    """The ``metro`` preset, generated (:func:`metro_preset`) from this
    compact spec and its seed: about ``gpus`` GPUs in sites of a few mixed GPUs joined
    by a metropolitan network, several models with memory-limited residency, deadlines.
    Everything not set here is ``env.edge``'s: the latency model, the link within a site
    and to the client, quality, reward, steps, gang sizes and latency noise."""

    seed: Seed
    """Seeds the draws of the site sizes and of each GPU's type (the same seed and spec
    give the same cluster)."""
    gpus: PositiveInt
    """GPUs (servers, one GPU each) of the whole cluster; the last site drawn is cut so
    that they sum to exactly this."""
    site_sizes: dict[PositiveInt, PositiveFloat] = Field(min_length=1)
    """GPUs in a site -> the share of sites that size (dimensionless; renormalised): site
    sizes are drawn from it until the sites hold ``gpus`` GPUs."""
    gpu_shares: dict[str, PositiveFloat] = Field(min_length=1)
    """GPU type (of the GPU catalogue) -> its share of the GPUs (dimensionless;
    renormalised)."""
    site_homogeneity: Annotated[float, Field(ge=0, le=1)]
    """Probability that a GPU is of its site's main type (each site draws a main type by
    ``gpu_shares``; the other GPUs draw their own): 1 gives single-type sites, 0 GPUs
    mixed independently."""
    inter_site: LinkConfig
    """The link between two sites (as ``topology.inter_site``)."""
    models: dict[str, ModelSpec] = Field(min_length=1)
    """Model name -> its memory footprint and latency-profile family: several
    checkpoints share the SD 1.5 and SDXL architectures."""
    workload: WorkloadConfig
    """Arrival process and task mix (the swept rates: ``evaluate.rates.metro``)."""
    queue_window: PositiveInt
    """Queued tasks visible to the scheduler (tasks), as a preset's ``queue_window``."""
    server_tokens: Literal["per_server", "per_group"]
    """The observation's server tokens, as a preset's ``server_tokens``."""


class DiscreteViewConfig(_Strict):
    """The discrete-action view of the environment (``eat/EdgeClusterDiscrete-v3``,
    :class:`eat.sim.discrete.EdgeClusterDiscreteEnv`): one action per visible task slot x
    gang choice x steps level, plus waiting."""

    steps_levels: Annotated[int, Field(ge=2)]
    """Steps values a discrete action may choose (values): evenly spaced from the preset's
    min_steps to its max_steps, both included, rounded to integers (at most
    max_steps - min_steps + 1 of them)."""


class EnvSection(_Strict):
    """The simulated systems (:mod:`eat.sim`): the ``paper`` preset reproduces the EAT
    reference model (4 identical servers, gang size fixed per task, the reference's
    latency tables, quality curve and reward); the ``edge`` preset is a heterogeneous
    edge cluster whose latencies come from the calibrated model over measured GPU
    profiles, with memory-limited model residency, deadlines, and the gang size and
    servers chosen by the scheduler; the ``metro`` preset is the edge model at a
    thousand GPUs in a hundred or more sites, generated from a compact spec."""

    presets: list[PresetName] = Field(min_length=1)
    """Presets the pipeline builds and evaluates."""
    paper: PresetConfig
    """The EAT reference model (``kind: paper``)."""
    edge: PresetConfig
    """The heterogeneous edge cluster (``kind: edge``)."""
    metro: MetroSpec
    """The metropolitan edge cluster, generated from this spec and ``edge``."""
    discrete: DiscreteViewConfig
    """The discrete-action view of every preset's environment."""

    @model_validator(mode="after")
    def _kinds(self) -> EnvSection:
        if self.paper.kind != "paper" or self.edge.kind != "edge":
            raise ValueError("env.paper must have kind 'paper' and env.edge kind 'edge'")
        return self

    def preset(self, name: str) -> PresetConfig:
        """The preset called ``name`` (``metro``: generated from ``metro`` and ``edge``)."""
        if name not in get_args(PresetName):
            raise ParamsError(
                f"preset {name!r} is not supported; choose one of {sorted(get_args(PresetName))}"
            )
        if name == "metro":
            return metro_preset(self.metro, self.edge)
        return getattr(self, name)


# ---------------------------------------------------------------------------
# The metro preset, generated from its spec
# ---------------------------------------------------------------------------
#
# metro_preset turns env.metro (MetroSpec) and the edge preset into a full PresetConfig:
# the cluster is drawn site by site from the spec's seed, everything else is the edge
# preset's system model. For each site, in order (one generator, seeded by spec.seed):
# 1. its size, from site_sizes (the last site is cut so that the sites hold exactly
#    `gpus` GPUs); 2. its main GPU type, from gpu_shares; 3. each of its GPUs: the main
# type with probability site_homogeneity, else a type drawn from gpu_shares. Because the
# sites are drawn one after another, a smaller cluster of the same seed is the first
# sites of a larger one (the speed benchmark's cluster sizes nest). Servers of one type
# in one site get consecutive ids; sites hold consecutive id ranges
# (topology.site_sizes).


def draw_sites(spec: MetroSpec, gpus: int) -> list[list[str]]:
    """The GPU types of every site, in site order (steps 1-3 of the comment above)."""
    rng = np.random.default_rng(spec.seed)
    sizes = sorted(spec.site_sizes)
    size_p = np.array([spec.site_sizes[size] for size in sizes], dtype=float)
    size_p /= size_p.sum()
    types = list(spec.gpu_shares)
    type_p = np.array([spec.gpu_shares[gpu] for gpu in types], dtype=float)
    type_p /= type_p.sum()
    sites: list[list[str]] = []
    placed = 0
    while placed < gpus:
        size = min(int(sizes[rng.choice(len(sizes), p=size_p)]), gpus - placed)
        main = types[rng.choice(len(types), p=type_p)]
        site = []
        for _ in range(size):
            if rng.random() < spec.site_homogeneity:
                site.append(main)
            else:
                site.append(types[rng.choice(len(types), p=type_p)])
        # servers of one type get consecutive ids (one server group per type and site)
        order = {gpu: index for index, gpu in enumerate(types)}
        sites.append(sorted(site, key=order.__getitem__))
        placed += size
    return sites


@functools.lru_cache(maxsize=8)
def _generate(spec_json: str, edge_json: str, gpus: int) -> PresetConfig:
    spec = MetroSpec.model_validate_json(spec_json)
    data = PresetConfig.model_validate_json(edge_json).model_dump()
    sites = draw_sites(spec, gpus)
    servers = []
    for site in sites:
        for gpu in dict.fromkeys(site):  # types in the site's (sorted) order
            servers.append({"gpu": gpu, "count": site.count(gpu)})
    data.update(
        gpu_types={gpu: {"memory_gb": None, "speed": None} for gpu in spec.gpu_shares},
        servers=servers,
        models={name: model.model_dump() for name, model in spec.models.items()},
        workload=spec.workload.model_dump(),
        queue_window=spec.queue_window,
        server_tokens=spec.server_tokens,
        topology={
            "site_sizes": [len(site) for site in sites],
            "inter_site": spec.inter_site.model_dump(),
        },
    )
    return PresetConfig.model_validate(data)


def metro_preset(spec: MetroSpec, edge: PresetConfig, *, gpus: int | None = None) -> PresetConfig:
    """The preset of ``spec`` on ``edge``'s system model (the comment above); ``gpus``
    replaces ``spec.gpus`` (the cluster sizes of the speed benchmark). The same inputs
    give the same preset (memoised: generating and validating it takes milliseconds)."""
    count = spec.gpus if gpus is None else gpus
    if count < 1:
        raise ValueError(f"gpus must be >= 1, got {count}")
    return _generate(spec.model_dump_json(), edge.model_dump_json(), count)


class SeedsSection(_Strict):
    """Workload seeds: disjoint sets so that nothing is evaluated on what it trained on."""

    train: list[Seed] = Field(min_length=1)
    """Training seeds: run ``i`` of an agent uses ``train[i]`` for its networks, replay
    sampling and training workloads; the testbed loads the agents of ``train[0]``."""
    validation: list[Seed] = Field(min_length=1)
    """Workload seeds of the periodic validation during training and of the
    ``build_env`` sample episodes."""
    test: list[Seed] = Field(min_length=1)
    """Workload seeds of the evaluation (``test[:evaluate.n_seeds]``), identical for
    every scheduler."""

    @model_validator(mode="after")
    def _disjoint(self) -> SeedsSection:
        pairs = (("train", "validation"), ("train", "test"), ("validation", "test"))
        for a, b in pairs:
            shared = sorted(set(getattr(self, a)) & set(getattr(self, b)))
            if shared:
                raise ValueError(f"seeds.{a} and seeds.{b} share {shared}; they must be disjoint")
        return self


class SchedulerSettings(_Strict):
    """Fixed choices of the heuristics that do not optimise them."""

    fixed_steps: PositiveInt
    """Steps used by fifo, first_fit and warm_first, and by the warm floor (steps;
    clipped into the preset's [min_steps, max_steps])."""
    fixed_gang_size: PositiveInt
    """edge: gang size used by fifo, first_fit and warm_first (servers; the largest
    allowed size not above it)."""
    target_quality: Annotated[float, Field(ge=0)]
    """eft: it uses the fewest steps whose quality reaches this (dimensionless, on the
    quality curve's scale)."""


class RolloutSettings(_Strict):
    """One search-based scheduler (``eat.schedulers.rollout``): at each decision epoch it
    scores a few candidate decisions by simulating continuations under a base heuristic
    and takes the best."""

    base: dict[PresetName, HeuristicName]
    """The heuristic whose decision is a candidate and that drives every continuation."""
    candidates: PositiveInt
    """Dispatches scored besides the base's own decision and waiting: the best by
    immediate reward (task, gang, steps)."""
    samples: PositiveInt
    """Continuations per candidate (the same sampled futures and noise for every
    candidate: common random numbers); their mean return scores it."""
    horizon: PositiveInt | dict[PresetName, PositiveInt]
    """Dispatches per continuation, the candidate's own included; one value, or one per
    preset (a preset's loads decide how far ahead a decision pays off)."""
    future_tasks: PositiveInt | None
    """``rollout``: future arrivals sampled per continuation, at most (tasks; the next
    ones: a continuation of ``horizon`` dispatches rarely sees more); null: every task
    of the episode not arrived yet. An episode with fewer tasks left than this is
    planned as if there were no cap."""

    def horizon_for(self, preset: str) -> int:
        """The continuation length on ``preset``."""
        if isinstance(self.horizon, int):
            return self.horizon
        if preset not in self.horizon:
            raise ValueError(
                f"horizon has no value for preset {preset!r}; it has {sorted(self.horizon)}"
            )
        return self.horizon[preset]


class PlannersSection(_Strict):
    """The search-based schedulers: ``rollout`` plans online (future arrivals sampled
    from the preset's workload process); ``clairvoyant`` runs the same search knowing the
    episode's true future: an achievable reference no online scheduler can be expected to
    beat. ``evaluate.optimum`` measures both against the proven optimum of small
    episodes."""

    rollout: RolloutSettings
    """The online rollout planner."""
    clairvoyant: RolloutSettings
    """The clairvoyant reference (``samples`` is its number of noise draws)."""


ProfileModel = Literal["sd15", "sdxl"]
StepMode = Literal["eager", "cuda_graph"]


class ProfileGrid(_Strict):
    """What one profiling run measures."""

    resolutions: dict[ProfileModel, list[PositiveInt]]
    """Image side lengths (px, multiples of 8) profiled per model."""
    patches: list[PositiveInt] = Field(min_length=1)
    """Row patches: the image split over this many servers (1 = the whole image)."""
    batches: list[Literal[1, 2]] = Field(min_length=1)
    """UNet batch: 2 = the classifier-free-guidance pair, 1 = one branch."""
    warmup: Annotated[int, Field(ge=0)]
    """Untimed calls before each measurement (calls)."""
    repeats: PositiveInt
    """Timed calls per measurement (calls; the median is reported)."""
    cold_start_trials: Annotated[int, Field(ge=0)]
    """``from_pretrained`` loads timed per component (loads; 0: no cold starts)."""

    @model_validator(mode="after")
    def _multiples_of_8(self) -> ProfileGrid:
        for model, sides in self.resolutions.items():
            odd = [side for side in sides if side % 8]
            if odd or not sides:
                raise ValueError(
                    f"resolutions.{model} must list multiples of 8 (the VAE's factor), got {sides}"
                )
        return self


class ProfileSection(_Strict):
    """The ``profile`` stage: latency profiling of the SD components on this machine's
    device (:mod:`eat.profiling`). On a GPU it profiles the released architectures
    (grid ``real``) and, when the GPU catalogue knows the GPU, the ``edge`` preset uses
    that profile; on a CPU-only machine a tiny smoke profile (grid ``tiny``) exercises
    the code and the ``edge`` preset keeps the shipped reference profiles
    (``reports/latency_source.json`` records which)."""

    device: Literal["auto", "cuda", "cpu"]
    """``auto``: CUDA when torch sees a GPU, else CPU."""
    model_size: Literal["auto", "real", "tiny"]
    """``real``: the released architectures (grid ``real``); ``tiny``: miniature ones for
    smoke runs (grid ``tiny``); ``auto``: real on CUDA, tiny on CPU."""
    dtype: Literal["auto", "float16", "bfloat16", "float32"]
    """``auto``: float16 on CUDA, float32 on CPU."""
    models: list[ProfileModel] = Field(min_length=1)
    """Model families profiled: ``sd15`` (SD 1.x UNet, VAE, CLIP ViT-L) and ``sdxl``
    (SDXL UNet, VAE, both text encoders)."""
    model_dirs: dict[ProfileModel, str | None]
    """Local diffusers model folders (``unet/``, ``vae/``, ``text_encoder/``...) per model;
    null: the architecture's config with random weights (latency does not depend on
    weight values). Nothing is ever downloaded."""
    step_modes: list[StepMode] = Field(min_length=1)
    """``eager`` and/or ``cuda_graph`` (each call replayed from a captured CUDA graph;
    skipped, and recorded as skipped, on CPU)."""
    threads: PositiveInt
    """torch.set_num_threads for the run (CPU intra-op threads)."""
    seed: Seed
    """Seeds the random weights (``torch.manual_seed``) and the inputs of the profiled
    calls."""
    real: ProfileGrid
    """The grid of the released architectures (``model_size: real``)."""
    tiny: ProfileGrid
    """The grid of the miniature architectures (``model_size: tiny``): a CPU smoke run."""

    @model_validator(mode="after")
    def _consistent(self) -> ProfileSection:
        for grid_name in ("real", "tiny"):
            grid = getattr(self, grid_name)
            missing = [model for model in self.models if model not in grid.resolutions]
            if missing:
                raise ValueError(f"{grid_name}.resolutions has no entry for models {missing}")
        unknown = sorted(set(self.model_dirs) - set(self.models))
        if unknown:
            raise ValueError(f"model_dirs has {unknown}, which models does not profile")
        if self.device == "cpu" and "cuda_graph" in self.step_modes:
            raise ValueError(
                "device 'cpu' cannot capture CUDA graphs: remove 'cuda_graph' from step_modes "
                "or use device 'auto'"
            )
        return self


class BuildEnvSection(_Strict):
    """The ``build_env`` stage: build every preset of ``env.presets``, check its
    Gymnasium environment with ``check_env``, and describe it (latency table, a sample
    workload, a few sample episodes)."""

    sample_episodes: PositiveInt
    """Episodes simulated per preset for the sanity plots (episodes, on
    ``seeds.validation[:sample_episodes]``)."""
    sample_scheduler: HeuristicName
    """Heuristic that drives the sample episodes."""
    sample_rate: dict[PresetName, PositiveFloat]
    """Arrival rate of the environment check, the sample workload and the sample
    episodes, per preset (tasks/s)."""


class GanttSpec(_Strict):
    """Which episode the Gantt chart shows (the first test seed)."""

    preset: PresetName
    """Preset of the charted episode."""
    scheduler: SchedulerName
    """Scheduler of the charted episode (a heuristic: only their raw episodes are kept)."""
    rate: PositiveFloat
    """Arrival rate of the charted episode (tasks/s; one of ``rates`` of the preset)."""


class SloSweep(_Strict):
    """The SLO sweep of the ``evaluate`` stage: every scheduler with deadlines at
    ``scale`` x each task's standalone latency (``deadline.mode: slo``), against the
    scale at the middle rate of each preset's sweep and against the rate at
    ``load_scale``; SLO attainment with bootstrap intervals."""

    scales: list[PositiveFloat] = Field(min_length=1)
    """SLO scales swept at the middle rate (dimensionless multiples of the standalone
    latency)."""
    load_scale: PositiveFloat
    """The SLO scale of the sweep against the arrival rate (dimensionless)."""
    objective: Literal["latency", "slo"]
    """The reward objective during the sweep (``slo``: meeting the deadline, quality as
    the tie-breaker), which the reward-driven schedulers (greedy, planners) maximise."""
    n_seeds: PositiveInt
    """How many of seeds.test each point runs (episodes)."""
    n_train_seeds: PositiveInt
    """Training seeds of each learned agent in the sweep (seeds.train[:n_train_seeds])."""


class GpuMix(_Strict):
    """A cluster of GPU types the training cluster does not have."""

    gpu_types: dict[str, GpuType] = Field(min_length=1)
    """GPU type name -> its memory and speed, as the preset's ``gpu_types`` (``edge``:
    catalogue names, speed null; ``paper``: memory and speed given), added to the
    preset's own types."""
    servers: list[ServerGroup] = Field(min_length=1)
    """The cluster of the scenario: groups of servers of these types (a different server
    count scales the arrival rate as ``cluster_sizes`` does)."""


class TraceScenario(_Strict):
    """The trace-replay scenario: a GenTD26 request trace converted by
    :func:`eat.sim.traces.convert_gentd26` (docs/traces.md) and replayed by a preset
    built from the training preset (:func:`eat.sim.traces.preset_for_trace`)."""

    path: str | None
    """The GenTD26 ``lora_request_trace.csv`` when you have it (it is not shipped: its
    terms allow research use only); null: a synthetic file in its format, drawn from
    ``synthetic_seed``."""
    n_models: dict[PresetName, PositiveInt]
    """Per preset: the most frequent base models kept as distinct models (models; an
    agent reads the scenario only with at least as many model slots)."""
    synthetic_requests: PositiveInt
    """Requests of the synthetic file (requests; unused with ``path``)."""
    synthetic_seed: Seed
    """Seed of the synthetic file (unused with ``path``)."""


GeneralisationWorkload = Literal["mmpp", "diurnal", "trace"]


class GeneralisationSpec(_Strict):
    """The generalisation tests of the ``evaluate`` stage
    (:mod:`eat.evaluation.generalisation`): the heuristics and the learned agents trained
    on each unmodified preset, loaded without retraining, on workloads, clusters and
    model mixes they were not trained on; every scheduler's mean reward relative to the
    best heuristic on the same workloads, with crossed bootstrap intervals."""

    presets: list[PresetName] = Field(min_length=1)
    """Training presets whose agents are tested (each scenario is derived from one)."""
    schedulers: list[SchedulerName] = Field(min_length=1)
    """Heuristics and learned agents run on every scenario (planners are not: too slow
    for this many scenarios); at least one heuristic, the best of which is the
    reference."""
    rates: dict[PresetName, list[PositiveFloat]]
    """Arrival rates per preset (tasks/s) on its training cluster; scenarios with another
    number of servers scale them by the ratio of server counts (the same load per
    server)."""
    n_seeds: PositiveInt
    """How many of seeds.test each scenario and rate runs (episodes)."""
    n_train_seeds: PositiveInt
    """Training seeds of each learned agent (seeds.train[:n_train_seeds])."""
    workloads: list[GeneralisationWorkload]
    """Workload shifts from the training preset's Poisson arrivals: ``mmpp`` bursts and
    ``diurnal`` load with the preset's own settings, ``trace`` replay (``trace``)."""
    cluster_sizes: list[PositiveInt]
    """Cluster sizes (servers), each with the training cluster's mix of GPU types in the
    same proportions (largest remainder) and the arrival rate scaled with the size."""
    gpu_mix: dict[PresetName, GpuMix]
    """Per preset: a cluster of GPU types its training cluster does not have (none for a
    preset without an entry)."""
    model_variants: list[Annotated[int, Field(ge=2)]]
    """Model mixes: each model of the preset becomes this many distinct models (fine-tunes
    sharing its architecture, footprint and resolutions, its share split evenly), so more
    models compete for memory and residency matters more."""
    trace: TraceScenario
    """The trace of the ``trace`` workload."""

    @model_validator(mode="after")
    def _consistent(self) -> GeneralisationSpec:
        planners = [name for name in self.schedulers if name in get_args(PlannerName)]
        if planners:
            raise ValueError(
                f"schedulers has planners {planners}; the generalisation tests run heuristics "
                "and learned agents only"
            )
        if not any(name in get_args(HeuristicName) for name in self.schedulers):
            raise ValueError("schedulers needs a heuristic: the best one is the reference")
        for name, keyed in (("rates", self.rates), ("trace.n_models", self.trace.n_models)):
            missing = [preset for preset in self.presets if preset not in keyed]
            if missing:
                raise ValueError(f"{name} has no value for preset(s) {missing}")
        return self


class ExactSettings(_Strict):
    """The gap to the exact optimum (``eat.schedulers.exact``): the small episodes of a
    preset solved by a CP-SAT model to proven optimality, and named schedulers run on
    exactly the same episodes (``reports/evaluate/optimum.csv``, docs/exact.md)."""

    presets: list[Literal["edge"]] = Field(min_length=1)
    """Presets solved exactly. Only ``edge`` is modelled: on ``paper`` the reference rule,
    not the scheduler, picks the servers from the warm-group state (docs/exact.md)."""
    tasks: PositiveInt
    """Tasks per small episode (the small episodes' ``workload.total_tasks``; at most
    ``queue_window`` and ``avg_wait_window + 1``): the N that solves in seconds
    (benchmarks/results/exact_optimum.json measures it)."""
    episodes: PositiveInt
    """Small episodes per arrival rate: workload seeds ``seeds.test[:episodes]`` at every
    rate of ``evaluate.rates``."""
    schedulers: list[SchedulerName] = Field(min_length=1)
    """Schedulers run on the small episodes; among ``evaluate.schedulers``, with
    ``random`` (the gap's zero) and ``clairvoyant`` (its distance from the optimum is
    reported). Learned agents run their first training seed's model."""
    time_limit_s: PositiveFloat
    """Wall-clock limit of one solve (s); a solve stopped by it reports its best
    schedule, its bound and status ``feasible``, and its episode leaves the gap shares."""
    workers: PositiveInt
    """CP-SAT search workers (threads) of one solve; 1 finds the same schedule on every
    run."""
    time_unit_s: PositiveFloat
    """The model's integer time unit (s): arrivals, durations and deadlines are rounded
    to it, which bounds the replay tolerance (docs/exact.md)."""
    reward_unit: Annotated[float, Field(gt=0, le=1)]
    """The model's integer reward unit (reward units): the objective's resolution."""

    @model_validator(mode="after")
    def _references(self) -> ExactSettings:
        missing = [name for name in ("random", "clairvoyant") if name not in self.schedulers]
        if missing:
            raise ValueError(
                f"optimum.schedulers must include {missing}: the gap shares run from random "
                "to the optimum, and the clairvoyant planner's distance from it is reported"
            )
        return self


class ScaleEvaluation(_Strict):
    """Does a scheduler's advantage on a small preset hold on a thousand GPUs? The large
    preset's episodes (``eat.evaluation.scale``), compared with the small preset's
    episodes of the same evaluation."""

    preset: Literal["metro"]
    """The large preset evaluated (generated from ``env.metro``)."""
    versus: PresetName
    """The small preset of ``env.presets`` it is compared with; learned agents run from
    their models trained on it (the attention encoder reads the large preset's pooled
    tokens)."""
    schedulers: list[SchedulerName] = Field(min_length=1)
    """Heuristics and learned agents run on the large preset at every rate of
    ``evaluate.rates.<preset>``; ``first_fit``, whose reward the advantages are relative
    to, must be among them, and all of them among ``evaluate.schedulers``."""
    tasks: PositiveInt
    """Tasks per large-preset episode (tasks; the preset's own episodes take minutes)."""
    n_seeds: PositiveInt
    """Test seeds per (scheduler, rate) on the large preset: seeds.test[:n_seeds]."""
    n_train_seeds: PositiveInt
    """Training seeds of each learned agent run there: seeds.train[:n_train_seeds]."""
    planner_tasks: PositiveInt
    """Tasks per episode of ``rollout``, its base heuristic and ``first_fit`` at the
    large preset's middle rate on its first test seed (tasks; a planner's decision at a
    thousand GPUs costs tens of milliseconds)."""

    @model_validator(mode="after")
    def _reference(self) -> ScaleEvaluation:
        if "first_fit" not in self.schedulers:
            raise ValueError("schedulers must include 'first_fit': advantages are relative to it")
        planners = [name for name in self.schedulers if name in get_args(PlannerName)]
        if planners:
            raise ValueError(
                f"schedulers has planners {planners}; rollout runs in its own shorter "
                "episodes (planner_tasks)"
            )
        return self


def repeated_names(names: list[str]) -> list[str]:
    """The names that ``names`` lists more than once, sorted."""
    return sorted({name for name in names if names.count(name) > 1})


class EvaluateSection(_Strict):
    """The ``evaluate`` stage: every scheduler over every preset's arrival-rate sweep on
    the same test workloads, means with bootstrap confidence intervals (crossed over
    training and test seeds for the learned agents), and the comparisons of ``eat``."""

    schedulers: list[SchedulerName] = Field(min_length=1)
    """Schedulers evaluated: heuristics, planners (``planners``), and learned agents
    loaded from the ``train`` stage's models (every training seed)."""
    reference: PlannerName
    """The reference whose share of the gap from ``random`` each scheduler closes (on
    reward and on latency); it must be among ``schedulers``, as must ``random``."""
    parallel: Literal["ray", "serial"]
    """``ray``: episodes in parallel through Ray (a local instance on loopback, or the
    cluster at ``ray_address``), with the same results as ``serial``."""
    ray_address: str | None
    """null: a local Ray instance; else the address of an existing cluster."""
    num_cpus: PositiveInt | None
    """Local Ray: cores to use (null: all)."""
    rates: dict[PresetName, list[PositiveFloat]]
    """Arrival-rate sweep per preset (tasks/s)."""
    n_seeds: PositiveInt
    """How many of seeds.test each (scheduler, rate) point runs (episodes)."""
    confidence: Annotated[float, Field(gt=0, lt=1)]
    """Two-sided level of the bootstrap confidence intervals (dimensionless)."""
    bootstrap_resamples: Annotated[int, Field(ge=100)]
    """Bootstrap resamples per interval (resamples)."""
    gantt: GanttSpec
    """The episode drawn as a Gantt chart."""
    slo: SloSweep
    """The SLO sweep."""
    generalisation: GeneralisationSpec | None
    """The generalisation tests (``reports/evaluate/generalisation.csv``); null: none."""
    optimum: ExactSettings | None
    """The gap to the proven optimum of small episodes (``reports/evaluate/optimum.csv``);
    null: none."""
    scale: ScaleEvaluation | None
    """Each scheduler's advantage on a small preset against the same on a thousand
    GPUs (``reports/evaluate/scale_advantage.csv``); null: none."""

    @model_validator(mode="after")
    def _reference(self) -> EvaluateSection:
        repeated = repeated_names(self.schedulers)
        if repeated:
            raise ValueError(
                f"schedulers lists {repeated} more than once (one set of results each)"
            )
        missing = [name for name in ("random", self.reference) if name not in self.schedulers]
        if missing:
            raise ValueError(
                f"schedulers must include {missing}: the gap-closed shares run from random to "
                f"the reference {self.reference!r}"
            )
        if self.optimum is not None:
            outside = [name for name in self.optimum.schedulers if name not in self.schedulers]
            if outside:
                raise ValueError(
                    f"optimum.schedulers has {outside}, not among evaluate.schedulers; choose "
                    f"from {self.schedulers}"
                )
            unswept = [preset for preset in self.optimum.presets if preset not in self.rates]
            if unswept:
                raise ValueError(
                    f"optimum.presets has {unswept}, which evaluate.rates lacks; choose from "
                    f"{sorted(self.rates)}"
                )
        return self


class AblationVariant(_Strict):
    """An ablation run: the ``eat`` agent with another encoder, actor or chain length."""

    encoder: Literal["attention", "mlp"]
    """State encoder (as SACConfig ``encoder``)."""
    actor: Literal["diffusion", "gaussian"]
    """Actor head (as SACConfig ``actor``)."""
    denoising_steps: PositiveInt
    """Steps K of the diffusion actor's reverse chain (steps; unused by ``gaussian``)."""
    init: Literal["scratch", "bc"]
    """Warm start (as SACConfig ``init``)."""
    bc_weight: NonNegativeFloat
    """Weight of the teacher-imitation term during SAC (as SACConfig ``bc_weight``)."""


class ScaleTraining(_Strict):
    """Learned agents trained on a large preset as well, on shortened episodes (their
    models: ``models/<preset>/<agent>/seed<seed>``; ``evaluate.scale`` runs them as
    ``<agent>_<preset>``). Every hyperparameter is the ``train`` section's, resolved for
    this preset: the dict-valued ones need a value for it."""

    preset: Literal["metro"]
    """The large preset trained on."""
    agents: list[TaughtAgentName] = Field(min_length=1)
    """Agents trained on it (SAC-family: the third-party learners are not)."""
    n_seeds: PositiveInt
    """Training runs per agent (seeds.train[:n_seeds])."""
    tasks: PositiveInt
    """Tasks per training and validation episode (tasks; the preset's own: 20,000)."""


class AblationSpec(_Strict):
    """Variants of the ``eat`` agent trained beside the agents and evaluated on one
    preset; every other hyperparameter is the ``train`` section's."""

    preset: PresetName
    """Preset the variants are trained and evaluated on."""
    n_seeds: PositiveInt
    """Training runs per variant (seeds.train[:n_seeds])."""
    variants: dict[str, AblationVariant] = Field(min_length=1)
    """Variant name (the model folder's and the report's name) -> what it changes."""


EncoderKind = Literal["attention", "mlp"]
ActorKind = Literal["diffusion", "gaussian"]
CompletionName = Literal["learned", "immediate_reward"]


class SACConfig(_Strict):
    """Every hyperparameter of one training run, resolved for one agent and preset.

    The ``train`` section of ``params.yaml`` carries the same keys (any of them as one
    value, or ``{paper: ..., edge: ...}`` per preset; ``encoder`` and ``actor`` come from
    the agent, :data:`eat.schedulers.rl.AGENTS`); :mod:`eat.schedulers.rl.sac` trains
    with it and every checkpoint saves it."""

    # --- what is trained
    encoder: EncoderKind
    """``attention`` (per-token actions, any cluster size) or ``mlp`` (flat)."""
    actor: ActorKind
    """``diffusion`` (DDPM chain + Gaussian head) or ``gaussian`` (plain SAC head)."""
    completion: CompletionName
    """How an action becomes a dispatch. ``learned``: every part of it is decoded from
    the action (wait or dispatch, task, steps, gang size, servers;
    :mod:`eat.sim.encoding`). ``immediate_reward``: the action decides whether to
    dispatch and which task; that task's gang and steps are the ones with the highest
    immediate reward (:class:`eat.schedulers.heuristics.RewardCompletion`, greedy's
    search for one task), in training (the learner's own decisions) and wherever the
    checkpoint is deployed."""
    width: PositiveInt
    """Attention: token embedding width; MLP encoder: its hidden width is twice this."""
    heads: PositiveInt
    """Attention heads per transformer block (``width`` must be divisible by it)."""
    layers: PositiveInt
    """Transformer blocks of the attention encoder."""
    hidden: PositiveInt
    """Hidden width of the actor heads, the denoiser and the critic MLPs."""
    denoising_steps: PositiveInt
    """Steps K of the diffusion actor's DDPM reverse chain (reference: 10)."""
    beta_schedule: Literal["linear", "cosine", "vp"]
    """Noise schedule of the chain (reference: linear)."""
    beta_start: Annotated[float, Field(gt=0, lt=1)]
    """First beta of the noise schedule."""
    beta_end: Annotated[float, Field(gt=0, lt=1)]
    """Last beta of the noise schedule (>= beta_start)."""
    # --- SAC
    gamma: Annotated[float, Field(gt=0, le=1)]
    """Discount per ``discount_time_s`` of simulated time."""
    discount_time_s: PositiveFloat
    """Simulated seconds over which rewards are discounted by ``gamma``."""
    n_step: PositiveInt
    """Rewards summed before bootstrapping (reference: 3)."""
    tau: Annotated[float, Field(gt=0, le=1)]
    """Polyak rate of the target critics."""
    batch_size: PositiveInt
    """Transitions per gradient step."""
    buffer_size: PositiveInt
    """Capacity of the replay buffer (transitions)."""
    learning_rate: PositiveFloat
    """Adam step size of actor, critics and temperature."""
    entropy: Literal["fixed", "learned"]
    """``fixed``: alpha stays ``alpha``; ``learned``: tuned towards the target entropy."""
    alpha: PositiveFloat
    """Entropy temperature (initial value when learned; reference: fixed 0.05)."""
    target_entropy_per_slot: float
    """Target entropy per valid action slot when learned (SAC's heuristic: -1)."""
    reward_scale: PositiveFloat
    """Rewards are multiplied by this for learning (evaluation uses the simulator's)."""
    learning_starts: Annotated[int, Field(ge=0)]
    """Decisions with uniformly random actions before SAC updates (``init: scratch``)."""
    updates_per_step: PositiveFloat
    """Gradient updates per environment decision (fractions update every 1/x steps)."""
    policy_frequency: PositiveInt
    """Actor (and temperature) updates every this many critic updates."""
    # --- demonstrations
    init: Literal["scratch", "bc"]
    """``scratch``: random warm-up; ``bc``: teacher episodes in the buffer and behaviour
    cloning of the actor before SAC."""
    demo_episodes: Annotated[int, Field(ge=0)]
    """Teacher-driven episodes collected first (``init: bc``)."""
    bc_updates: Annotated[int, Field(ge=0)]
    """Behaviour-cloning gradient steps on the teacher episodes (``init: bc``)."""
    bc_learning_rate: PositiveFloat
    """Adam step size of behaviour cloning (its own optimiser)."""
    bc_loss: Literal["mse", "decision"]
    """Behaviour-cloning loss. ``mse``: squared error between the sampled action and the
    teacher's action vector. ``decision``: the deployed (deterministic) action scored on
    the decision it decodes to: logistic loss on dispatch-or-wait, cross-entropy over
    the dispatchable task slots, a logistic loss per free server (chosen or not), and
    squared error on steps and gang size (:func:`eat.schedulers.rl.sac.decision_loss`)."""
    critic_warmup_updates: Annotated[int, Field(ge=0)]
    """Critic-only SAC steps after behaviour cloning (policy evaluation of the clone)."""
    bc_weight: NonNegativeFloat
    """Weight of the teacher-imitation term kept in the actor loss during SAC (TD3+BC
    scaling by mean |Q|); 0 is pure SAC after the warm start."""
    dagger_rounds: Annotated[int, Field(ge=0)]
    """Rounds of expert iteration (DAgger) after behaviour cloning (only with ``init:
    bc``: it starts from the clone of the teacher): the learner drives
    ``dagger_episodes`` episodes, the teacher labels every state the learner visits, and
    the actor is cloned again on every label so far; 0: none."""
    dagger_episodes: Annotated[int, Field(ge=0)]
    """Learner-driven episodes per DAgger round."""
    dagger_updates: Annotated[int, Field(ge=0)]
    """Behaviour-cloning gradient steps after each DAgger round (on all labels so far)."""
    slot_assignment: Literal["identity", "permuted"]
    """Model slots of the training observations (:mod:`eat.sim.encoding`): ``identity``
    (the preset's i-th model in slot i, as every evaluation observes), or ``permuted``
    (a random slot per model each training episode, from the episode seed, so that
    every slot is trained for presets with more models than this one)."""
    label_during_sac: bool
    """Label SAC's own states with the teacher as well (one teacher decision per SAC
    decision: costly with a planner as the teacher); false: the imitation term
    (``bc_weight``) uses the labels gathered before SAC."""
    # --- run
    total_steps: PositiveInt
    """Environment decisions of SAC (after the teacher episodes)."""
    eval_every: PositiveInt
    """Validate (and keep the best policy) every this many decisions."""
    seed: Seed
    """Training seed: networks, replay sampling and the training workloads."""
    device: Literal["cpu", "cuda"]
    """Resolved torch device (``train.device: auto`` picks one)."""

    @model_validator(mode="after")
    def _consistent(self) -> SACConfig:
        if self.beta_end < self.beta_start:
            raise ValueError(f"beta_end ({self.beta_end}) < beta_start ({self.beta_start})")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        return self


class Sb3Config(_Strict):
    """Hyperparameters of the third-party learners (``ppo``: stable-baselines3 PPO on the
    continuous environment; ``maskable_ppo``: sb3-contrib MaskablePPO on the discrete view),
    the same for both and every preset (:mod:`eat.training.sb3`). Their decisions per run
    are ``eat``'s (:func:`eat.training.sb3.decision_budget`); ``eval_every``,
    ``select_by``, the validation seeds and ``device`` are the ``train`` section's; every
    other PPO setting is stable-baselines3's default (MLP policy 64 x 64, GAE lambda 0.95,
    clip range 0.2)."""

    n_steps: PositiveInt
    """Decisions collected per rollout before each PPO update (decisions; one
    environment)."""
    batch_size: Annotated[int, Field(gt=1)]
    """Minibatch of each gradient step (decisions; divides n_steps)."""
    learning_rate: PositiveFloat
    """Adam step size of the policy and value networks."""
    n_epochs: PositiveInt
    """Passes over each rollout (epochs)."""
    gamma: Annotated[float, Field(gt=0, le=1)]
    """Discount per decision (PPO discounts decisions, not simulated time)."""
    ent_coef: NonNegativeFloat
    """Weight of the entropy bonus in the loss."""

    @model_validator(mode="after")
    def _whole_minibatches(self) -> Sb3Config:
        if self.n_steps % self.batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must divide n_steps ({self.n_steps}): "
                "a rollout is split into whole minibatches"
            )
        return self


RUN_FIELDS = ("encoder", "actor", "seed", "device")
"""SACConfig fields that the run sets (agent, seed, device), not the ``train`` section."""
HYPERPARAMETERS = tuple(name for name in SACConfig.model_fields if name not in RUN_FIELDS)
"""The SACConfig fields the ``train`` section sets, each one value or one per preset."""


def _per_preset_fields(model: type[BaseModel], names: tuple[str, ...]) -> dict[str, Any]:
    """``name: (T | dict[PresetName, T], Field(description=...))`` for every field of
    ``model`` in ``names``, with its constraints and documentation."""
    fields: dict[str, Any] = {}
    for name in names:
        info = model.model_fields[name]
        value_type = (
            Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        )
        doc = f"{info.description} One value, or one per preset."
        fields[name] = (value_type | dict[PresetName, value_type], Field(description=doc))
    return fields


TrainHyperparameters = create_model(
    "TrainHyperparameters",
    __base__=_Strict,
    __doc__="The SAC hyperparameters of :class:`SACConfig`, each one value or one per preset.",
    **_per_preset_fields(SACConfig, HYPERPARAMETERS),
)


class TrainSection(TrainHyperparameters):  # type: ignore[misc,valid-type]
    """The ``train`` stage: which learned agents are trained, how runs are executed, and
    the SAC hyperparameters (:class:`SACConfig`'s fields; a value given per preset,
    ``{paper: ..., edge: ...}``, is resolved per run)."""

    agents: list[AgentName] = Field(min_length=1)
    """Learned agents trained (``eat``: attention + diffusion; ``d2sac``: MLP +
    diffusion; ``sac``: MLP + Gaussian; ``ppo``: stable-baselines3 PPO, ``maskable_ppo``:
    sb3-contrib MaskablePPO on the discrete view, both with ``sb3``'s settings)."""
    presets: list[PresetName] = Field(min_length=1)
    """Presets every agent is trained on."""
    n_seeds: PositiveInt
    """Training runs per agent and preset, seeded with seeds.train[:n_seeds]."""
    validation_seeds: PositiveInt
    """How many of seeds.validation the periodic validation runs (at every rate)."""
    select_by: Literal["reward", "last"]
    """Which policy a run outputs: the best validation reward, or the last."""
    device: Literal["auto", "cpu", "cuda"]
    """Torch device of every run: ``auto`` is CUDA when available, else CPU."""
    parallel: Literal["ray", "serial"]
    """``ray``: runs in parallel through Ray (local, or the cluster at ray_address);
    ``serial``: one after another in this process."""
    ray_address: str | None
    """null: a local Ray instance; else the address of an existing cluster."""
    num_cpus: PositiveInt | None
    """Local Ray: cores to use (null: all)."""
    torch_threads: PositiveInt
    """torch.set_num_threads of every run (tiny networks are fastest on one thread)."""
    checkpoint_every: PositiveInt
    """Decisions between resumable checkpoints (written at episode ends)."""
    teacher: dict[PresetName, HeuristicName | TeacherPlanner | None]
    """Whose decisions are the demonstrations and labels (init bc, DAgger, bc_weight >
    0): a heuristic, or ``rollout``, the online planner with the settings of
    ``planners.rollout`` (``clairvoyant`` is not a teacher: it sees the episode's
    future, which the learner cannot)."""
    ablation: AblationSpec | None
    """Ablation variants of ``eat`` trained beside the agents (null: none)."""
    scale: ScaleTraining | None
    """Agents trained on a large preset as well (null: none)."""
    sb3: Sb3Config
    """The third-party learners ``ppo`` and ``maskable_ppo`` (when ``agents`` has them)."""
    agreement: list[TaughtAgentName]
    """Agents of ``agents`` whose output policy (first training seed, every preset of
    ``presets``) is compared with its teacher decision by decision on the validation
    episodes (``reports/train/agreement.csv``). Empty: none."""

    @property
    def trained_presets(self) -> list[str]:
        """``presets``, and the large preset of ``scale`` when set."""
        extra = [self.scale.preset] if self.scale is not None else []
        return [*self.presets, *(p for p in extra if p not in self.presets)]

    def resolve(self, name: str, preset: str) -> Any:
        """The value of hyperparameter ``name`` for ``preset``."""
        value = getattr(self, name)
        return value[preset] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _consistent(self) -> TrainSection:
        presets = list(self.trained_presets)
        for name in HYPERPARAMETERS:
            value = getattr(self, name)
            if isinstance(value, dict):
                missing = [p for p in presets if p not in value]
                if missing:
                    raise ValueError(f"{name} has no value for preset(s) {missing}")
        missing = [p for p in presets if p not in self.teacher]
        if missing:
            raise ValueError(f"teacher has no value for preset(s) {missing}")
        for preset in presets:
            learns_from_teacher = (
                self.resolve("init", preset) == "bc" or self.resolve("bc_weight", preset) > 0
            )
            if learns_from_teacher and self.teacher[preset] is None:
                raise ValueError(f"init 'bc' / bc_weight > 0 need a teacher for {preset!r}")

        repeated = repeated_names(self.agents)
        if repeated:
            raise ValueError(f"agents lists {repeated} more than once (one set of runs each)")
        unknown = [agent for agent in self.agreement if agent not in self.agents]
        if unknown:
            raise ValueError(f"agreement names {unknown}, which agents does not train")
        untaught = [preset for preset in self.presets if self.teacher.get(preset) is None]
        if self.agreement and untaught:
            raise ValueError(
                f"agreement compares policies with their teacher, and presets {untaught} "
                "have none (teacher: null); set a teacher there or leave agreement empty"
            )
        if self.ablation is not None:
            clash = sorted(set(self.ablation.variants) & set(get_args(AgentName)))
            if clash:
                raise ValueError(f"ablation variant names {clash} clash with agent names")
        # every run's resolved hyperparameters must form a valid SACConfig
        for preset in presets:
            values = {name: self.resolve(name, preset) for name in HYPERPARAMETERS}
            try:
                SACConfig(encoder="attention", actor="diffusion", seed=0, device="cpu", **values)
            except ValidationError as error:
                raise ValueError(
                    f"preset {preset!r}: " + "; ".join(e["msg"] for e in error.errors())
                ) from None
        return self


class TestbedSizing(_Strict):
    """What the testbed serves at one model size (``tiny`` on CPU, ``real`` on GPUs)."""

    memory_budget_mb: PositiveFloat
    """Model cache of each worker: resident weights (MB); LRU eviction beyond it."""
    models: dict[ProfileModel, ModelMix] = Field(min_length=1)
    """Models served, their share of the workload and their resolutions (multiples of 8
    times the UNet's downsampling factor: 16 px for the tiny UNets, 64 px for SD 1.x)."""


class TestbedWorkload(_Strict):
    """The workload replayed on the testbed and simulated with the same seed."""

    process: Literal["poisson", "mmpp", "diurnal", "trace"]
    """As env.edge.workload.process (burst, diurnal and deadline settings come from there)."""
    trace_path: str | None
    """trace: the CSV to replay (as env.edge.workload.trace_path); null otherwise."""
    rate: PositiveFloat
    """Arrival rate (tasks/s)."""
    total_tasks: PositiveInt
    """Tasks in the workload (tasks; all arrive after t = 0)."""
    seed: Seed
    """Workload seed (the same tasks for every scheduler, testbed and simulator)."""
    prompts: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    """Task ``i`` uses ``prompts[i % len(prompts)]``."""

    @model_validator(mode="after")
    def _trace(self) -> TestbedWorkload:
        if self.process == "trace" and not self.trace_path:
            raise ValueError("process 'trace' needs trace_path")
        return self


class TestbedProfile(_Strict):
    """Profiling of the testbed's own hardware (the simulator's latency source)."""

    warmup: Annotated[int, Field(ge=0)]
    """Untimed calls before each measurement (calls)."""
    repeats: PositiveInt
    """Timed calls per measurement (calls; the median is used)."""
    cold_start_trials: PositiveInt
    """``from_pretrained`` loads timed per component (loads)."""


class TestbedLoadTest(_Strict):
    """A bounded burst of HTTP requests on loopback after the comparison (0: none)."""

    requests: Annotated[int, Field(ge=0, le=1000)]
    """Requests of the burst (requests; 0: no load test)."""
    concurrency: PositiveInt
    """Requests in flight at most (requests)."""
    timeout_s: PositiveFloat
    """Budget of the whole burst (s): the test stops by itself."""
    scheduler: SchedulerName
    """Scheduler of the served testbed (a heuristic: the load test loads no trained agent)."""
    model: ProfileModel
    """Requested model, at its smallest resolution of the active sizing."""
    deadline_s: PositiveFloat
    """Deadline of every request, after its arrival (s)."""


class TestbedService(_Strict):
    """The HTTP job API of ``eat testbed-serve`` (docs/serving.md)."""

    job_store: str | None
    """SQLite file of the durable job store (WAL mode); null: jobs.sqlite3 in the work folder."""
    max_queued_jobs: PositiveInt
    """Accepted jobs waiting for a gang; a job beyond it gets 429 with Retry-After."""
    admission: Literal["queue_bound", "predicted_deadline"]
    """``queue_bound``: refuse only past max_queued_jobs; ``predicted_deadline``: also
    refuse a job whose deadline the shadow simulator predicts cannot be met."""
    max_body_bytes: Annotated[int, Field(ge=1024, le=2**24)]
    """Larger request bodies get 413 before they are read in full."""
    api_keys_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """Environment variable with comma-separated API keys (hashed on load, never stored)."""
    api_keys_file: str | None
    """Absolute path, outside the repository, of a file of key hashes (eat testbed-keygen)."""
    rate_limit_per_s: PositiveFloat
    """Requests per second per API key (token bucket); beyond it: 429."""
    rate_limit_burst: PositiveInt
    """Requests a key may send at once before rate_limit_per_s applies."""
    store_retry_s: PositiveFloat
    """Interval between retries of a result the job store could not write."""
    shutdown_timeout_s: PositiveFloat
    """Graceful stop: running gangs get this long to finish; queued jobs stay in the store."""
    recent_tasks: PositiveInt
    """Completed tasks whose records the controller keeps in memory (the store keeps all)."""

    @model_validator(mode="after")
    def _key_file(self) -> TestbedService:
        path = self.api_keys_file
        if path is not None and not path.startswith(("/", "~")):
            raise ValueError(
                f"api_keys_file must be an absolute path outside the repository: {path!r}"
            )
        return self


class TestbedSection(_Strict):
    """The ``testbed`` stage: the real serving system (``eat.testbed``) against the
    simulator built from the profile of the same hardware."""

    address: str | None
    """Ray cluster address (edge machines joined with ``ray start``); null: an embedded
    Ray on this machine, listening on 127.0.0.1 only."""
    workers: PositiveInt
    """Edge servers (Ray actors): one GPU each on CUDA, one core each on CPU."""
    device: Literal["auto", "cpu", "cuda"]
    """``auto``: CUDA when available, else CPU."""
    model_size: Literal["auto", "real", "tiny"]
    """``auto``: the real architectures on CUDA, the tiny ones on CPU."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"]
    """``auto``: float16 on CUDA, float32 on CPU."""
    model_dirs: dict[ProfileModel, str | None]
    """Diffusers model folders with real weights per model; null: random weights of the
    architecture, saved once under model_root. Nothing is ever downloaded."""
    model_root: str | None
    """Where random-weight model folders are saved; null: ~/.cache/eat/testbed-models."""
    threads: PositiveInt
    """torch threads per worker (and for the profile of the same hardware)."""
    object_store_mb: PositiveInt
    """Object store of the embedded Ray (MB, 2^20 bytes); unused with ``address``."""
    noise_scheduler: Literal["ddim", "euler"]
    """Diffusers noise scheduler of the reverse loop (deterministic: eta 0)."""
    guidance_scale: NonNegativeFloat
    """Classifier-free guidance (> 1: on, a batch of 2 per UNet call)."""
    margin_rows: Annotated[int, Field(ge=0)]
    """Overlap margin of a row patch (latent rows, rounded up to the UNet's factor)."""
    gang_sizes: list[PositiveInt] = Field(min_length=1)
    """Patch counts the schedulers may choose (servers; the testbed preset's
    allowed_gang_sizes)."""
    min_steps: PositiveInt
    """Fewest denoising steps a dispatch may use (steps)."""
    max_steps: PositiveInt
    """Most denoising steps a dispatch may use (steps, >= min_steps)."""
    schedulers: list[SchedulerName] = Field(min_length=1)
    """Heuristics, and trained agents (models of the train stage, preset learned_preset,
    first training seed)."""
    learned_preset: PresetName
    """Preset whose trained agents drive the testbed
    (``models/<learned_preset>/<agent>/seed<seeds.train[0]>``)."""
    max_restarts: Annotated[int, Field(ge=0)]
    """Ray restarts of a killed worker (an empty cache after each)."""
    max_attempts: PositiveInt
    """Attempts of a task whose gang failed before it is reported failed."""
    restart_timeout_s: PositiveFloat
    """How long the controller waits for a dead worker to answer again after Ray
    restarts it (s); past it the server stays out of service."""
    expected_restart_s: PositiveFloat
    """Predicted down time of a dead worker, for the schedulers (s)."""
    hang_factor: Annotated[float, Field(ge=1.0)]
    """A gang with no result after max(hang_min_s, hang_factor x its predicted duration)
    is hung: its unresponsive members (or, if all answer, the whole gang) are killed and
    restarted by Ray, and the task is re-run."""
    hang_min_s: PositiveFloat
    """The shortest time without a result before a gang counts as hung (s)."""
    ping_timeout_s: PositiveFloat
    """How long a member of a late gang has to answer a ping before it counts as hung
    (s)."""
    workload: TestbedWorkload
    """The workload replayed on the testbed and simulated."""
    profile: TestbedProfile
    """Profiling of the workers' hardware before the runs."""
    load_test: TestbedLoadTest
    """The HTTP load test after the runs."""
    service: TestbedService
    """The HTTP job API of ``eat testbed-serve``."""
    grid_images: Annotated[int, Field(ge=0)]
    """Images shown in the report's grid (images)."""
    tiny: TestbedSizing
    """What a CPU testbed serves (the miniature architectures)."""
    real: TestbedSizing
    """What a GPU testbed serves (the released architectures)."""

    @model_validator(mode="after")
    def _consistent(self) -> TestbedSection:
        if self.max_steps < self.min_steps:
            raise ValueError(f"max_steps ({self.max_steps}) < min_steps ({self.min_steps})")
        too_big = [size for size in self.gang_sizes if size > self.workers]
        if too_big:
            raise ValueError(f"gang_sizes {too_big} exceed the {self.workers} workers")
        for name in ("tiny", "real"):
            sizing = getattr(self, name)
            odd = {m: r for m, mix in sizing.models.items() for r in mix.resolutions if r % 16}
            if odd:
                raise ValueError(f"{name}.models: resolutions must be multiples of 16, got {odd}")
            spec = self.load_test
            if spec.requests and spec.model not in sizing.models:
                raise ValueError(
                    f"load_test.model {spec.model!r} is not served at size {name}; choose one "
                    f"of {sorted(sizing.models)}"
                )
        unknown = sorted(set(self.model_dirs) - set(self.tiny.models) - set(self.real.models))
        if unknown:
            raise ValueError(f"model_dirs has {unknown}, which no sizing serves")
        return self


class Params(_Strict):
    """The whole ``params.yaml``: one section per stage, plus the presets, the seeds and
    the heuristics' settings that several stages read."""

    profile: ProfileSection
    """The ``profile`` stage."""
    env: EnvSection
    """The simulated presets (``build_env``, ``train``, ``evaluate``; ``testbed`` reads
    ``env.edge``)."""
    seeds: SeedsSection
    """Disjoint training, validation and test seeds."""
    schedulers: SchedulerSettings
    """The heuristics' fixed choices."""
    planners: PlannersSection
    """The search-based schedulers (``evaluate``)."""
    build_env: BuildEnvSection
    """The ``build_env`` stage."""
    train: TrainSection
    """The ``train`` stage."""
    evaluate: EvaluateSection
    """The ``evaluate`` stage."""
    testbed: TestbedSection
    """The ``testbed`` stage."""

    @model_validator(mode="after")
    def _cross(self) -> Params:
        for preset in self.env.presets:
            if preset not in self.evaluate.rates:
                raise ValueError(f"evaluate.rates has no sweep for preset {preset!r}")
        agents = [name for name in self.evaluate.schedulers if name in get_args(AgentName)]
        for name in agents:
            if name not in self.train.agents:
                raise ValueError(
                    f"evaluate.schedulers has {name!r}, which train.agents does not train "
                    f"({self.train.agents})"
                )
        if agents:
            untrained = [p for p in self.env.presets if p not in self.train.presets]
            if untrained:
                raise ValueError(
                    f"evaluate.schedulers has agents {agents} but train.presets lacks {untrained}"
                )
        for preset in self.train.trained_presets:
            if preset not in self.evaluate.rates:
                raise ValueError(
                    f"train trains on {preset!r}, which evaluate.rates lacks (its training "
                    "episodes draw their rate from there)"
                )
        scale = self.train.scale
        if scale is not None and scale.n_seeds > len(self.seeds.train):
            raise ValueError(
                f"train.scale.n_seeds ({scale.n_seeds}) exceeds the {len(self.seeds.train)} "
                "seeds in seeds.train"
            )
        if self.train.n_seeds > len(self.seeds.train):
            raise ValueError(
                f"train.n_seeds ({self.train.n_seeds}) exceeds the "
                f"{len(self.seeds.train)} seeds in seeds.train"
            )
        if self.train.validation_seeds > len(self.seeds.validation):
            raise ValueError(
                f"train.validation_seeds ({self.train.validation_seeds}) exceeds the "
                f"{len(self.seeds.validation)} seeds in seeds.validation"
            )
        if self.evaluate.slo.n_seeds > len(self.seeds.test):
            raise ValueError(
                f"evaluate.slo.n_seeds ({self.evaluate.slo.n_seeds}) exceeds the "
                f"{len(self.seeds.test)} seeds in seeds.test"
            )
        if self.evaluate.slo.n_train_seeds > self.train.n_seeds:
            raise ValueError(
                f"evaluate.slo.n_train_seeds ({self.evaluate.slo.n_train_seeds}) exceeds "
                f"train.n_seeds ({self.train.n_seeds})"
            )
        if self.evaluate.n_seeds > len(self.seeds.test):
            raise ValueError(
                f"evaluate.n_seeds ({self.evaluate.n_seeds}) exceeds the "
                f"{len(self.seeds.test)} seeds in seeds.test"
            )
        testbed_agents = [n for n in self.testbed.schedulers if n in get_args(AgentName)]
        untrained = [n for n in testbed_agents if n not in self.train.agents]
        if untrained:
            raise ValueError(
                f"testbed.schedulers has {untrained}, which train.agents does not train "
                f"({self.train.agents})"
            )
        if testbed_agents and self.testbed.learned_preset not in self.train.presets:
            raise ValueError(
                f"testbed.learned_preset {self.testbed.learned_preset!r} is not in "
                f"train.presets ({self.train.presets})"
            )
        self._cross_generalisation()
        self._cross_optimum()
        self._cross_planners()
        self._cross_scale()
        return self

    def _cross_scale(self) -> None:
        spec = self.evaluate.scale
        if spec is None:
            return
        where = "evaluate.scale"
        if spec.versus not in self.env.presets:
            raise ValueError(
                f"{where}.versus {spec.versus!r} is not in env.presets ({self.env.presets})"
            )
        if spec.preset not in self.evaluate.rates:
            raise ValueError(f"evaluate.rates has no sweep for {where}.preset {spec.preset!r}")
        outside = [name for name in spec.schedulers if name not in self.evaluate.schedulers]
        if outside:
            raise ValueError(
                f"{where}.schedulers has {outside}, not among evaluate.schedulers; choose "
                f"from {self.evaluate.schedulers}"
            )
        for key, count, limit, seeds in (
            ("n_seeds", spec.n_seeds, len(self.seeds.test), "seeds.test"),
            ("n_train_seeds", spec.n_train_seeds, self.train.n_seeds, "train.n_seeds"),
        ):
            if count > limit:
                raise ValueError(f"{where}.{key} ({count}) exceeds {seeds} ({limit})")

    def _cross_planners(self) -> None:
        """Every preset a planner runs on (evaluated, teaching, or in the planner scenario
        of ``evaluate.scale``) has its base heuristic and horizon."""
        needs: dict[str, set[str]] = {}
        for name in self.evaluate.schedulers:
            if name in get_args(PlannerName):
                needs.setdefault(name, set()).update(self.env.presets)
        for preset, teacher in self.train.teacher.items():
            if teacher == "rollout" and preset in self.train.trained_presets:
                needs.setdefault("rollout", set()).add(preset)
        if self.evaluate.scale is not None:  # its planner scenario
            needs.setdefault("rollout", set()).add(self.evaluate.scale.preset)
        for name, presets in needs.items():
            search: RolloutSettings = getattr(self.planners, name)
            for preset in sorted(presets):
                if preset not in search.base:
                    raise ValueError(
                        f"planners.{name}.base has no heuristic for preset {preset!r}; "
                        f"it has {sorted(search.base)}"
                    )
                if isinstance(search.horizon, dict) and preset not in search.horizon:
                    raise ValueError(
                        f"planners.{name}.horizon has no value for preset {preset!r}; "
                        f"it has {sorted(search.horizon)}"
                    )

    def _cross_optimum(self) -> None:
        spec = self.evaluate.optimum
        if spec is None:
            return
        where = "evaluate.optimum"
        unknown = [preset for preset in spec.presets if preset not in self.env.presets]
        if unknown:
            raise ValueError(
                f"{where}.presets has {unknown}, which env.presets lacks; choose from "
                f"{self.env.presets}"
            )
        if spec.episodes > len(self.seeds.test):
            raise ValueError(
                f"{where}.episodes ({spec.episodes}) exceeds the {len(self.seeds.test)} seeds "
                "in seeds.test"
            )
        for name in spec.presets:
            preset = self.env.preset(name)
            limit = min(preset.queue_window, preset.reward.avg_wait_window + 1)
            if spec.tasks > limit:
                raise ValueError(
                    f"{where}.tasks ({spec.tasks}) exceeds {limit} on preset {name!r}: the "
                    "exact model needs every queued task visible (queue_window) and in "
                    "avg_wait (avg_wait_window + 1)"
                )

    def _cross_generalisation(self) -> None:
        spec = self.evaluate.generalisation
        if spec is None:
            return
        where = "evaluate.generalisation"
        unknown = [preset for preset in spec.presets if preset not in self.env.presets]
        if unknown:
            raise ValueError(f"{where}.presets has {unknown}, which env.presets lacks")
        agents = [name for name in spec.schedulers if name in get_args(AgentName)]
        untrained = [name for name in agents if name not in self.train.agents]
        if untrained:
            raise ValueError(
                f"{where}.schedulers has {untrained}, which train.agents does not train "
                f"({self.train.agents})"
            )
        if agents:
            missing = [preset for preset in spec.presets if preset not in self.train.presets]
            if missing:
                raise ValueError(f"{where} tests agents on {missing}, which train.presets lacks")
        if spec.n_seeds > len(self.seeds.test):
            raise ValueError(
                f"{where}.n_seeds ({spec.n_seeds}) exceeds the {len(self.seeds.test)} seeds in "
                "seeds.test"
            )
        if spec.n_train_seeds > self.train.n_seeds:
            raise ValueError(
                f"{where}.n_train_seeds ({spec.n_train_seeds}) exceeds train.n_seeds "
                f"({self.train.n_seeds})"
            )
        for name in spec.presets:
            preset = self.env.preset(name)
            largest = max(preset.workload.gang_sizes, default=1)
            small = [size for size in spec.cluster_sizes if size < largest]
            if small:
                raise ValueError(
                    f"{where}.cluster_sizes {small} are smaller than preset {name!r}'s largest "
                    f"task gang size ({largest})"
                )
            mix = spec.gpu_mix.get(name)
            if mix is None:
                continue
            trained_on = {group.gpu for group in preset.servers}
            seen = sorted({group.gpu for group in mix.servers} & trained_on)
            if seen:
                raise ValueError(
                    f"{where}.gpu_mix.{name} uses {seen}, which the training cluster of "
                    f"{name!r} has; the mix must be unseen"
                )
            undefined = sorted(
                {group.gpu for group in mix.servers} - set(mix.gpu_types) - set(preset.gpu_types)
            )
            if undefined:
                raise ValueError(
                    f"{where}.gpu_mix.{name}.servers use {undefined}, which neither its "
                    "gpu_types nor the preset's define"
                )


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``Model``, ``Model | None``,
    ``dict[str, Model]``, ``list[Model]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys allowed where ``loc`` (a pydantic error location) found an unknown key."""
    current: type[BaseModel] | None = model
    skip_key = False
    for part in loc[:-1]:
        if skip_key:  # a dict key or list index, not a field
            skip_key = False
            continue
        field = current.model_fields.get(str(part)) if current is not None else None
        if field is None:
            return None
        current = _model_in(field.annotation)
        skip_key = get_origin(field.annotation) in (dict, list)
    return sorted(current.model_fields) if current is not None else None


def _union_branch(part: Any) -> str | None:
    """``scalar`` or ``dict`` when a location part is a union member's tag (pydantic names
    the branch it tried, e.g. ``constrained-float`` or ``dict[literal[...],float]``)."""
    if not isinstance(part, str) or part == "[key]":
        return None
    if part.startswith("dict["):
        return "dict"
    if "[" in part or part.startswith("constrained-") or part in _SCALAR_TAGS:
        return "scalar"
    return None


_SCALAR_TAGS = frozenset({"int", "float", "str", "bool", "none"})


def _format_errors(error: ValidationError, source: str) -> str:
    """One line per problem: the dotted key path, what is wrong, the value given. A value
    that may be one value or one per preset (``T | dict[preset, T]``) reports only the
    branch its input took."""
    lines = []
    for item in error.errors():
        raw_loc = tuple(part for part in item["loc"] if part not in ("function-after",))
        branches = [_union_branch(part) for part in raw_loc]
        branch = next((b for b in branches if b is not None), None)
        if branch == "scalar" and isinstance(item.get("input"), dict):
            continue  # a dict was given: the per-preset branch reports it
        if branch == "dict" and item["type"] == "dict_type":
            continue  # a single value was given: the scalar branch reports it
        is_key = "[key]" in raw_loc
        loc = tuple(part for part, tag in zip(raw_loc, branches, strict=True) if tag is None)
        loc = tuple(part for part in loc if part != "[key]")  # (..., bad key, "[key]")
        path = ".".join(str(part) for part in loc) or "<root>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(Params, loc)
            message = "unknown key" + (f"; allowed keys: {allowed}" if allowed else "")
        elif item["type"] == "missing":
            message = "required key is missing"
        elif is_key:
            message = f"key {item.get('input')!r} is not allowed: {message}"
        if item["type"] not in ("missing", "extra_forbidden", "value_error") and not is_key:
            message += f" (got {item.get('input')!r})"
        lines.append(f"  {path}: {message}")
    return "\n".join([f"{source}: {len(lines)} invalid value(s)", *lines])


def validate_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a parsed ``params.yaml`` mapping; raise :class:`ParamsError` on any problem."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_format_errors(error, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a ``params.yaml`` file."""
    path = Path(path)
    with path.open() as handle:
        raw = yaml.safe_load(handle)
    return validate_params(raw, source=str(path))


def repo_params_path() -> Path:
    """``params.yaml`` at the root of the source checkout this package was imported from."""
    return Path(__file__).resolve().parent.parent / "params.yaml"


def apply_overrides(
    raw: dict[str, Any], overrides: dict[str, Any], where: str = ""
) -> dict[str, Any]:
    """``raw`` with ``overrides`` merged in, mapping by mapping (a new dict). Every key of
    ``overrides`` must exist in ``raw``: an override file cannot add keys by mistake."""
    merged = dict(raw)
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in raw:
            raise ParamsError(f"override {path!r}: no such key; allowed keys: {sorted(raw)}")
        if isinstance(value, dict) and isinstance(raw[key], dict) and value:
            merged[key] = apply_overrides(raw[key], value, path)
        else:
            merged[key] = value
    return merged


def load_params_with_overrides(path: str | Path, overrides_path: str | Path) -> dict[str, Any]:
    """``params.yaml`` with an override file (``params.quick.yaml``) merged in, validated;
    returned as a plain mapping, ready to be written as a params file."""
    raw = yaml.safe_load(Path(path).read_text())
    overrides = yaml.safe_load(Path(overrides_path).read_text()) or {}
    merged = apply_overrides(raw, overrides)
    validate_params(merged, source=f"{path} + {overrides_path}")
    return merged

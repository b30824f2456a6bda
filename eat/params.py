"""Load and validate ``params.yaml``, the single source of truth for every stage.

Every section of ``params.yaml`` has a pydantic model here with ``extra="forbid"``,
so an unknown key, a value of the wrong type or a value out of range stops the run
with a :class:`ParamsError` that names the dotted key path and what is allowed.
The models carry no pipeline defaults on purpose: the values live in
``params.yaml`` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PresetName = Literal["paper", "edge"]
SchedulerName = Literal["random", "fifo", "first_fit", "greedy", "eft", "warm_first", "edf"]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]


class ParamsError(ValueError):
    """A ``params.yaml`` value is missing, unknown, mistyped or out of range."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------
# Workload and task mix
# ---------------------------------------------------------------------------


class ModelMix(_Strict):
    """Share of requests and resolutions for one diffusion model."""

    share: Annotated[float, Field(gt=0, le=1)]
    """Fraction of requests that ask for this model (shares are renormalised)."""
    resolutions: list[PositiveInt] = Field(min_length=1)
    """Image side lengths (pixels) requested, drawn uniformly."""


class DeadlineConfig(_Strict):
    """QoS target of each task: ``deadline = arrival + slack * nominal``."""

    mode: Literal["none", "slack"]
    """``none``: tasks have no deadline; ``slack``: deadline from a slack factor."""
    slack_min: PositiveFloat
    slack_max: PositiveFloat
    reference_gpu: str
    """GPU type whose warm single-server latency at ``reference_steps`` is the nominal."""
    reference_steps: PositiveInt

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
    """Tasks already queued at t = 0."""
    total_tasks: PositiveInt
    """Tasks per episode, the initial ones included."""
    burst_ratio: Annotated[float, Field(ge=1)]
    """mmpp: arrival rate in the burst state over the rate in the calm state."""
    burst_share: Annotated[float, Field(gt=0, lt=1)]
    """mmpp: long-run share of time spent in the burst state."""
    burst_mean_duration_s: PositiveFloat
    """mmpp: mean sojourn in the burst state (s)."""
    diurnal_period_s: PositiveFloat
    """diurnal: period of the rate modulation (s)."""
    diurnal_amplitude: Annotated[float, Field(ge=0, lt=1)]
    """diurnal: relative amplitude of the sinusoidal rate."""
    trace_path: str | None
    """trace: CSV with columns arrival, model, resolution and optionally deadline, gang_size."""
    models: dict[str, ModelMix] = Field(min_length=1)
    gang_sizes: list[PositiveInt]
    """paper-style presets: gang size drawn uniformly per task from this list; empty
    when the scheduler chooses the gang."""
    deadline: DeadlineConfig

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
    memory_gb: PositiveFloat
    speed: PositiveFloat
    """Per-step throughput relative to the profiled GPU (H200 = 1.0)."""


class ServerGroup(_Strict):
    gpu: str
    count: PositiveInt


class ModelSpec(_Strict):
    memory_gb: PositiveFloat
    """Resident footprint: weights of every component plus working memory."""
    profile_model: str
    """Model name in the latency profile whose per-step rows this model uses."""


class PaperLatency(_Strict):
    """The reference simulator's typed-in tables, indexed by gang size."""

    per_step_s: dict[int, PositiveFloat]
    reload_s: dict[int, NonNegativeFloat]

    @model_validator(mode="after")
    def _same_keys(self) -> PaperLatency:
        if set(self.per_step_s) != set(self.reload_s):
            raise ValueError(
                f"per_step_s keys {sorted(self.per_step_s)} and reload_s keys "
                f"{sorted(self.reload_s)} must be the same gang sizes"
            )
        return self


class ProfileLatency(_Strict):
    """Latencies looked up in a measured profile (``eat/data``), scaled per GPU type."""

    step_profile: str
    """CSV in eat/data (or a path) with op=step, decode and encode rows."""
    cold_start_profile: str
    """CSV in eat/data (or a path) with op=cold_start_from_disk rows (bytes on disk)."""
    batch: Literal[1, 2]
    """2: classifier-free-guidance pair on one server; 1: one branch."""
    load_bandwidth_gbps: PositiveFloat
    """Disk-to-GPU load bandwidth of a cold start (GB/s)."""
    cold_start_overhead_s: NonNegativeFloat
    """Fixed cost of a cold start beyond reading weights: process start, CUDA context."""


class NetworkConfig(_Strict):
    bandwidth_gbps: PositiveFloat
    """Server-to-server link bandwidth for patch exchange (GB/s)."""
    latency_s: NonNegativeFloat
    """Per-exchange latency (s), paid once per denoising step by a gang of 2+."""
    activation_bytes_per_latent_pixel: NonNegativeFloat
    """Bytes exchanged per step per latent pixel of the whole image (patch boundaries
    and stale activations, DistriFusion-style)."""
    overlap: Literal["sequential", "overlapped"]
    """``sequential``: step pace = compute + communication; ``overlapped``: max of both."""
    client_bandwidth_gbps: PositiveFloat
    """Server-to-client bandwidth for returning the image (GB/s)."""
    image_bytes_per_pixel: NonNegativeFloat
    """Encoded image size per pixel (PNG of a natural image: about 1.5-2 bytes)."""


class QualityConfig(_Strict):
    curve: Literal["eat_reference", "saturating"]
    """``eat_reference``: q(s) = 0 for s < 5, 0.16 log6(s) - 0.02 for 5 <= s <= 30,
    0.27 above (zzf1955/EAT); ``saturating``: q_max (1 - exp(-s / tau))."""
    q_max: PositiveFloat
    tau: PositiveFloat


class RewardConfig(_Strict):
    """r = min(cap, scale / (avg_wait + duration + wait)) + quality_weight * q
    - deadline_penalty * missed."""

    latency_scale: PositiveFloat
    latency_cap: PositiveFloat
    quality_weight: NonNegativeFloat
    deadline_penalty: NonNegativeFloat
    avg_wait_window: PositiveInt
    """How many still-queued tasks enter avg_wait (the reference uses 10)."""


class PresetConfig(_Strict):
    """One simulated system: cluster, latency model, workload, quality and reward."""

    kind: Literal["paper", "edge"]
    """``paper``: gang size fixed per task and servers chosen by the reference's warm-group
    rule; ``edge``: the scheduler chooses gang size and servers; models have
    memory-limited residency."""
    gpu_types: dict[str, GpuType] = Field(min_length=1)
    servers: list[ServerGroup] = Field(min_length=1)
    models: dict[str, ModelSpec] = Field(min_length=1)
    allowed_gang_sizes: list[PositiveInt] = Field(min_length=1)
    min_steps: PositiveInt
    max_steps: PositiveInt
    paper_latency: PaperLatency | None
    profile_latency: ProfileLatency | None
    network: NetworkConfig
    latency_noise_cv: NonNegativeFloat
    """Coefficient of variation of a multiplicative gamma noise on compute time; 0 is
    deterministic, 1 is exponential service."""
    quality: QualityConfig
    reward: RewardConfig
    workload: WorkloadConfig
    queue_window: PositiveInt
    """Queued tasks visible to the scheduler (FIFO order)."""
    time_scale_s: PositiveFloat
    """Divides times in the observation."""
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
        for name in self.workload.models:
            if name not in self.models:
                raise ValueError(
                    f"workload.models: {name!r} is not in models; choose one of "
                    f"{sorted(self.models)}"
                )
        if self.kind == "paper":
            if self.paper_latency is None:
                raise ValueError("kind 'paper' needs paper_latency")
            sizes = self.workload.gang_sizes
            if not sizes:
                raise ValueError("kind 'paper' needs workload.gang_sizes (gang fixed per task)")
            missing = sorted(set(sizes) - set(self.paper_latency.per_step_s))
            if missing:
                raise ValueError(f"workload.gang_sizes {missing} have no paper_latency entry")
        else:
            if self.profile_latency is None:
                raise ValueError("kind 'edge' needs profile_latency")
            if self.workload.deadline.mode == "slack" and (
                self.workload.deadline.reference_gpu not in self.gpu_types
            ):
                raise ValueError(
                    f"workload.deadline.reference_gpu {self.workload.deadline.reference_gpu!r}"
                    f" is not in gpu_types; choose one of {sorted(self.gpu_types)}"
                )
        n_servers = sum(group.count for group in self.servers)
        too_big = [size for size in self.workload.gang_sizes if size > n_servers]
        if too_big:
            raise ValueError(f"workload.gang_sizes {too_big} exceed the {n_servers} servers")
        return self

    @property
    def n_servers(self) -> int:
        return sum(group.count for group in self.servers)


class EnvSection(_Strict):
    presets: list[PresetName] = Field(min_length=1)
    """Presets the pipeline builds and evaluates."""
    paper: PresetConfig
    edge: PresetConfig

    @model_validator(mode="after")
    def _kinds(self) -> EnvSection:
        if self.paper.kind != "paper" or self.edge.kind != "edge":
            raise ValueError("env.paper must have kind 'paper' and env.edge kind 'edge'")
        return self

    def preset(self, name: str) -> PresetConfig:
        if name not in ("paper", "edge"):
            raise ParamsError(f"preset {name!r} is not supported; choose one of ['edge', 'paper']")
        return getattr(self, name)


class SeedsSection(_Strict):
    """Workload seeds: disjoint sets so that nothing is evaluated on what it trained on."""

    train: list[Seed] = Field(min_length=1)
    validation: list[Seed] = Field(min_length=1)
    test: list[Seed] = Field(min_length=1)

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
    """Steps used by fifo, first_fit and warm_first (and by the warm floor)."""
    fixed_gang_size: PositiveInt
    """edge: gang size used by fifo, first_fit and warm_first."""
    target_quality: Annotated[float, Field(ge=0)]
    """eft: fewest steps whose quality reaches this."""


class BuildEnvSection(_Strict):
    sample_episodes: PositiveInt
    """Episodes simulated per preset for the sanity plots."""
    sample_scheduler: SchedulerName
    sample_rate: dict[PresetName, PositiveFloat]


class GanttSpec(_Strict):
    preset: PresetName
    scheduler: SchedulerName
    rate: PositiveFloat


class EvaluateSection(_Strict):
    schedulers: list[SchedulerName] = Field(min_length=1)
    rates: dict[PresetName, list[PositiveFloat]]
    """Arrival-rate sweep per preset (tasks/s)."""
    n_seeds: PositiveInt
    """How many of seeds.test each (scheduler, rate) point runs."""
    confidence: Annotated[float, Field(gt=0, lt=1)]
    bootstrap_resamples: Annotated[int, Field(ge=100)]
    gantt: GanttSpec


class Params(_Strict):
    env: EnvSection
    seeds: SeedsSection
    schedulers: SchedulerSettings
    build_env: BuildEnvSection
    evaluate: EvaluateSection

    @model_validator(mode="after")
    def _cross(self) -> Params:
        for preset in self.env.presets:
            if preset not in self.evaluate.rates:
                raise ValueError(f"evaluate.rates has no sweep for preset {preset!r}")
        if self.evaluate.n_seeds > len(self.seeds.test):
            raise ValueError(
                f"evaluate.n_seeds ({self.evaluate.n_seeds}) exceeds the "
                f"{len(self.seeds.test)} seeds in seeds.test"
            )
        return self


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


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid value(s)"]
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if part not in ("function-after",))
        path = ".".join(str(part) for part in loc) or "<root>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(Params, loc)
            message = "unknown key" + (f"; allowed keys: {allowed}" if allowed else "")
        elif item["type"] == "missing":
            message = "required key is missing"
        if item["type"] not in ("missing", "extra_forbidden"):
            message += f" (got {item.get('input')!r})"
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


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

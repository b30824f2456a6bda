"""The edge server: a long-lived Ray actor with its own device and model cache.

:class:`EdgeWorker` plays two roles, one task at a time (the controller never books a
server into two gangs):

- **leader** (:meth:`EdgeWorker.run_task`, the first server of the gang): makes the
  model resident on every member (cold starts run in parallel), encodes the prompt,
  runs the reverse loop, and at every step sends the step's model input to the other
  members, computes its own band meanwhile, gathers their bands (one
  ``ray.get(list)``), steps the scheduler on the whole latent, and finally decodes the
  image and encodes the PNG;
- **member** (:meth:`EdgeWorker.denoise`): one band's guided noise prediction for one
  step. It is a pure function of its arguments and of the model weights, so running it
  twice gives the same result (idempotent).

Fault tolerance (Ray's actor fault-tolerance model): the actor is created with an
explicit ``max_restarts`` (a killed process is restarted, and its constructor rebuilds
every piece of state from :class:`WorkerConfig`: an empty cache, so the first task
after a restart is a real cold start) and ``max_task_retries=0``: a method that was
running when the process died is *not* retried by Ray; the controller re-runs the
whole task on the gang the scheduler picks next. A member's death surfaces in the
leader as :class:`GangMemberFailed` naming the server, which the controller reads.

Timings are measured where they happen (durations on the worker's clock), so they do
not depend on clocks agreeing across machines.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from eat.testbed import require
from eat.testbed.engine import (
    Band,
    Conditioning,
    GenerationRequest,
    decode,
    denoise_band,
    encode_prompt,
    initial_latent,
    png_bytes,
    reverse_loop,
    row_bands,
)
from eat.testbed.models import (
    DType,
    LoadedModel,
    ModelCache,
    SchedulerKind,
    load_model,
    prepare_model_folder,
)

Device = Literal["cpu", "cuda"]


@dataclass(frozen=True)
class ModelSource:
    """Where a worker finds a model: a folder path, or the recipe to make it."""

    folder: str | None
    """A diffusers model folder (real weights), or None: made from the recipe below."""
    size: Literal["real", "tiny"]
    seed: int
    root: str
    """Where made folders live (on every machine; made once, then reused)."""

    def resolve(self, model: str, dtype: DType, scheduler: SchedulerKind) -> Path:
        if self.folder is not None:
            return Path(self.folder)
        return prepare_model_folder(
            Path(self.root), model, self.size, seed=self.seed, scheduler=scheduler, dtype=dtype
        )


@dataclass(frozen=True)
class WorkerConfig:
    """Everything an :class:`EdgeWorker` is built from (also after a restart)."""

    server_id: int
    device: Device
    dtype: DType
    threads: int
    """torch intra-op threads of this process."""
    memory_budget_bytes: int
    """Model cache budget (weights of resident models)."""
    models: dict[str, ModelSource]
    model_bytes: dict[str, int]
    """Resident bytes of each model (weights in ``dtype``): what the cache budgets."""
    scheduler: SchedulerKind
    margin: int
    """Overlap margin of a row patch in latent rows (rounded up to the UNet alignment)."""
    warm_loading_path: bool = True
    """Load and evict one model at start-up (see EdgeWorkerImpl.__init__)."""
    cpu_affinity: tuple[int, ...] | None = None
    """CPU cores this worker's process may run on (None: any). On a CPU testbed with
    no more workers than cores, one core each: the edge server's own processor."""


@dataclass(frozen=True)
class TaskSpec:
    """One attempt at one task, as the controller sends it to the gang's leader."""

    task_id: int
    attempt: int
    model: str
    request: GenerationRequest
    servers: tuple[int, ...]
    """The gang, leader first."""
    return_image: bool = True


@dataclass
class GangResult:
    """What the leader returns: the image and every measured duration (seconds)."""

    task_id: int
    attempt: int
    servers: tuple[int, ...]
    png: bytes | None
    member_cold_start_s: tuple[float, ...]
    """Load time of each member (0 where the model was resident)."""
    member_evicted: tuple[tuple[str, ...], ...]
    resident_after: dict[int, list[str]]
    """Each member's resident models after the task, least recently used first."""
    setup_s: float
    """Dispatch on the leader to the first step: the slowest member's load and the
    prompt encoding."""
    encode_s: float
    step_s: list[float]
    decode_s: float
    png_s: float
    leader_s: float
    """Whole method on the leader."""
    bands: list[tuple[int, int, int, int]] = field(default_factory=list)
    pid: int = 0


class GangMemberFailed(RuntimeError):
    """A member of the gang died (or failed) during a task."""

    def __init__(self, server_ids: list[int], message: str) -> None:
        super().__init__(message)
        self.server_ids = server_ids

    def __reduce__(self) -> tuple:  # picklable through Ray
        return (GangMemberFailed, (self.server_ids, str(self)))


class EdgeWorkerImpl:
    """The actor's body (wrapped by :func:`edge_worker_class`; plain Python for tests)."""

    def __init__(self, config: WorkerConfig) -> None:
        torch = require("torch")
        require("diffusers")
        require("transformers")
        self.config = config
        if config.cpu_affinity is not None:
            _pin_process(set(config.cpu_affinity))
        torch.set_num_threads(config.threads)
        if config.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"server {config.server_id}: device 'cuda' was asked for but this process "
                "sees no CUDA device"
            )
        self.device = "cuda" if config.device == "cuda" else "cpu"
        self.cache = ModelCache(config.memory_budget_bytes, config.model_bytes, self._load)
        if config.warm_loading_path:
            # The first from_pretrained of a process also imports and initialises the
            # loading code (about 1 s here): pay it once at start-up, so that every cold
            # start the testbed measures is a model load, not process warm-up.
            smallest = min(config.model_bytes, key=config.model_bytes.__getitem__)
            self.cache.get(smallest)
            self.cache.clear()
        self.started = time.time()
        self.tasks_run = 0

    # -- cache ---------------------------------------------------------------------------
    def _load(self, name: str) -> LoadedModel:
        source = self.config.models[name]
        folder = source.resolve(name, self.config.dtype, self.config.scheduler)
        return load_model(
            name,
            folder,
            device=self.device,
            dtype=self.config.dtype,
            scheduler=self.config.scheduler,
        )

    def load(self, model: str) -> dict[str, Any]:
        """Make ``model`` resident (idempotent); what it cost."""
        _, event = self.cache.get(model)
        return {
            "server": self.config.server_id,
            "cold": event.cold,
            "seconds": event.load_seconds,
            "evicted": event.evicted,
            "resident": self.cache.resident(),
        }

    # -- control -------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        """Identity and state (answered while a task runs: the control concurrency group)."""
        torch = require("torch")
        return {
            "server": self.config.server_id,
            "pid": os.getpid(),
            "node": _node_id(),
            "device": self.device,
            "device_name": torch.cuda.get_device_name() if self.device == "cuda" else "cpu",
            "resident": self.cache.resident(),
            "started": self.started,
            "tasks_run": self.tasks_run,
            "cpu_affinity": sorted(os.sched_getaffinity(0)),
        }

    def reset_cache(self) -> list[str]:
        """Evict every model (a run that must start cold); returns what was resident."""
        evicted = self.cache.resident()
        self.cache.clear()
        return evicted

    def echo(self, payload: np.ndarray) -> int:
        """Receive a payload (the exchange probe's far end)."""
        return int(payload.nbytes)

    def probe_exchange(self, peer: Any, nbytes: int, repeats: int) -> list[float]:
        """Seconds of ``repeats`` calls that send ``nbytes`` to ``peer`` and wait for it."""
        ray = require("ray")
        payload = np.zeros(nbytes // 4, dtype=np.float32)
        ray.get(peer.echo.remote(payload))  # warm the path
        seconds = []
        for _ in range(repeats):
            began = time.perf_counter()
            ray.get(peer.echo.remote(payload))
            seconds.append(time.perf_counter() - began)
        return seconds

    # -- member ----------------------------------------------------------------------------
    def denoise(
        self,
        model: str,
        sample: np.ndarray,
        timestep: np.ndarray,
        cond: dict[str, Any],
        band: tuple[int, int, int, int],
    ) -> np.ndarray:
        """One band's guided noise prediction for one step (pure; see the module docstring)."""
        torch = require("torch")
        loaded, _ = self.cache.get(model)
        sample_t = torch.from_numpy(np.ascontiguousarray(sample)).to(loaded.device, loaded.dtype)
        conditioning = Conditioning.from_wire(cond, loaded.device, loaded.dtype)
        t = torch.from_numpy(np.asarray(timestep)).to(loaded.device)
        noise = denoise_band(loaded, sample_t, t, conditioning, Band(*band))
        return _numpy(noise)

    # -- leader ----------------------------------------------------------------------------
    def run_task(self, spec: TaskSpec, members: list[Any]) -> GangResult:
        """Run one task on the gang ``[self, *members]`` (see the module docstring)."""
        ray = require("ray") if members else None
        torch = require("torch")
        began = time.perf_counter()
        member_ids = list(spec.servers[1:])
        # 1. make the model resident everywhere (members load in parallel with us)
        loads = [member.load.remote(spec.model) for member in members]
        own = self.load(spec.model)
        reports = [own, *self._gather(loads, member_ids)]
        loaded, _ = self.cache.get(spec.model)
        # 2. the prompt (leader only), the initial noise and the bands
        encode_began = time.perf_counter()
        cond = encode_prompt(loaded, spec.request)
        encode_s = time.perf_counter() - encode_began
        setup_s = time.perf_counter() - began
        latents = initial_latent(loaded, spec.request, cond.embeds.dtype)
        bands = row_bands(
            latents.shape[2], len(spec.servers), self.config.margin, loaded.unet_alignment
        )
        cond_ref = ray.put(cond.to_wire()) if ray is not None else None

        # 3. every step: members' bands remotely, ours here, then gather (one ray.get)
        def noise_fn(sample: Any, t: Any) -> Any:
            if not members:
                return denoise_band(loaded, sample, t, cond, bands[0])
            sample_np = _numpy(sample)
            # small arrays travel inline with the call; large ones once through the
            # object store, shared by every member
            assert ray is not None
            sample_ref = sample_np if sample_np.nbytes <= INLINE_BYTES else ray.put(sample_np)
            t_np = _numpy(t)
            refs = [
                member.denoise.remote(spec.model, sample_ref, t_np, cond_ref, _tuple(band))
                for member, band in zip(members, bands[1:], strict=True)
            ]
            mine = denoise_band(loaded, sample, t, cond, bands[0])
            others = self._gather(refs, member_ids)
            parts = [mine] + [
                torch.from_numpy(np.ascontiguousarray(o)).to(loaded.device, mine.dtype)
                for o in others
            ]
            return torch.cat(parts, dim=2)

        loop = reverse_loop(loaded, latents, spec.request.steps, noise_fn)
        # 4. decode and encode the image
        decode_began = time.perf_counter()
        image = decode(loaded, loop.latents)
        decode_s = time.perf_counter() - decode_began
        png_began = time.perf_counter()
        png = png_bytes(image) if spec.return_image else None
        png_s = time.perf_counter() - png_began
        self.tasks_run += 1
        return GangResult(
            task_id=spec.task_id,
            attempt=spec.attempt,
            servers=spec.servers,
            png=png,
            member_cold_start_s=tuple(float(r["seconds"]) for r in reports),
            member_evicted=tuple(tuple(r["evicted"]) for r in reports),
            resident_after={int(r["server"]): list(r["resident"]) for r in reports},
            setup_s=setup_s,
            encode_s=encode_s,
            step_s=loop.step_seconds,
            decode_s=decode_s,
            png_s=png_s,
            leader_s=time.perf_counter() - began,
            bands=[_tuple(band) for band in bands],
            pid=os.getpid(),
        )

    def _gather(self, refs: list[Any], server_ids: list[int]) -> list[Any]:
        """``ray.get`` of the members' calls; a dead member becomes GangMemberFailed."""
        if not refs:
            return []
        ray = require("ray")
        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as error:
            failed = []
            for ref, server in zip(refs, server_ids, strict=True):
                try:
                    ray.get(ref, timeout=0)
                except ray.exceptions.GetTimeoutError:
                    continue
                except ray.exceptions.RayActorError:
                    failed.append(server)
            raise GangMemberFailed(
                failed or server_ids, f"gang member(s) {failed or server_ids} died: {error}"
            ) from None


def _pin_process(cores: set[int]) -> None:
    """Restrict every thread of this process to ``cores`` (``sched_setaffinity`` acts on
    one thread; threads created later inherit their creator's mask)."""
    tasks = Path("/proc/self/task")
    tids = [int(entry.name) for entry in tasks.iterdir()] if tasks.is_dir() else [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cores)
        except ProcessLookupError:  # the thread ended meanwhile
            continue


def _numpy(tensor: Any) -> np.ndarray:
    torch = require("torch")
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()


def _tuple(band: Band) -> tuple[int, int, int, int]:
    return (band.own_start, band.own_stop, band.ext_start, band.ext_stop)


def _node_id() -> str:
    ray = sys.modules.get("ray")  # never imported here just to ask (plain-Python use)
    if ray is None or not ray.is_initialized():
        return "local"
    return ray.get_runtime_context().get_node_id()


#: Step inputs up to this size are passed by value (Ray inlines small arguments).
INLINE_BYTES = 64 * 1024

CONTROL_GROUP = "control"
COMPUTE_GROUP = "compute"


@functools.cache
def edge_worker_class() -> Any:
    """The Ray actor class (built lazily so that importing this module needs no Ray).

    Two concurrency groups of one thread each: ``compute`` (load, denoise, run_task, one
    at a time, in call order) and ``control`` (ping, answered while a task runs)."""
    ray = require("ray")

    @ray.remote(concurrency_groups={CONTROL_GROUP: 1, COMPUTE_GROUP: 1})
    class EdgeWorker(EdgeWorkerImpl):
        @ray.method(concurrency_group=CONTROL_GROUP)
        def ping(self) -> dict[str, Any]:
            return EdgeWorkerImpl.ping(self)

        @ray.method(concurrency_group=COMPUTE_GROUP)
        def load(self, model: str) -> dict[str, Any]:
            return EdgeWorkerImpl.load(self, model)

        @ray.method(concurrency_group=COMPUTE_GROUP)
        def denoise(self, model, sample, timestep, cond, band):  # type: ignore[no-untyped-def]
            return EdgeWorkerImpl.denoise(self, model, sample, timestep, cond, band)

        @ray.method(concurrency_group=COMPUTE_GROUP)
        def reset_cache(self) -> list[str]:
            return EdgeWorkerImpl.reset_cache(self)

        @ray.method(concurrency_group=COMPUTE_GROUP)
        def echo(self, payload: np.ndarray) -> int:
            return EdgeWorkerImpl.echo(self, payload)

        @ray.method(concurrency_group=COMPUTE_GROUP)
        def probe_exchange(self, peer: Any, nbytes: int, repeats: int) -> list[float]:
            return EdgeWorkerImpl.probe_exchange(self, peer, nbytes, repeats)

        @ray.method(concurrency_group=COMPUTE_GROUP)
        def run_task(self, spec: TaskSpec, members: list[Any]) -> GangResult:
            return EdgeWorkerImpl.run_task(self, spec, members)

    return EdgeWorker

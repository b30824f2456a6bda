"""Latency profiler of Stable Diffusion components (diffusers + PyTorch).

It measures, on whatever device it is given (CUDA or CPU):

- ``op=step``: one UNet forward pass (one denoising step) on the latent of one row
  patch: an image of ``resolution``^2 pixels split into ``patches`` patches is the
  compute one server does per step when the task runs on ``patches`` servers (no
  communication). ``batch=2`` is the classifier-free-guidance pair, ``batch=1`` one
  branch. ``graph=True`` rows replay the call from a captured CUDA graph (what
  patch-parallel engines do; eager SD 1.x steps are launch-bound on fast GPUs).
- ``op=decode``: the VAE decoding one image (batch 1); ``op=encode``: each text encoder
  on a batch of prompts (token ids, no tokenizer needed).
- ``op=init_random_on_device``: building a component with random weights on the device
  (``params`` column); ``op=load_pretrained``: loading it from the user's model folder.
- ``op=cold_start_from_disk``: ``from_pretrained`` of a locally saved model folder until
  the weights are on the device (``bytes`` on disk; the files are in the page cache, so
  this is a lower bound of a real cold start). The profiler saves the folder itself
  (``save_seconds``) unless the user gave one.

Timing: CUDA events around each call after warm-up calls, with the median, minimum and
maximum of ``repeats`` timed calls; on CPU ``time.perf_counter`` with a deliberate
``torch.set_num_threads``. ``peak_mib`` is ``torch.cuda.max_memory_allocated`` during
the measurement (weights included), on CUDA only.

Every row carries the device name, dtype, settings and library versions (tidy CSV); a
metadata dict describes the run as a whole. Nothing is downloaded: weights are random
or come from a local folder (``local_files_only=True``).
"""

from __future__ import annotations

import gc
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from eat.architectures import (
    COMPONENTS,
    PROMPT_TOKENS,
    VAE_SCALE,
    ModelSize,
    build_component,
    check_model,
    component_folder,
    load_component,
    parameter_count,
    patch_shape,
    unet_inputs,
)

log = logging.getLogger(__name__)

Device = Literal["cuda", "cpu"]
StepMode = Literal["eager", "cuda_graph"]
DType = Literal["float16", "bfloat16", "float32"]

#: Columns of a profile CSV, in order (the shipped reference profiles have a subset).
PROFILE_COLUMNS = [
    "op",
    "model",
    "component",
    "resolution",
    "patches",
    "batch",
    "latent_h",
    "latent_w",
    "graph",
    "seconds",
    "seconds_min",
    "seconds_max",
    "repeats",
    "warmup",
    "trial",
    "peak_mib",
    "bytes",
    "params",
    "save_seconds",
    "device",
    "device_type",
    "dtype",
    "model_size",
    "weights",
    "timer",
    "threads",
    "seed",
    "torch",
    "diffusers",
    "transformers",
    "cuda",
]


@dataclass(frozen=True)
class ProfileRun:
    """Everything one profiling run does; every field is written into the rows or the
    metadata. ``eat.stages.profile`` builds it from ``params.yaml``'s ``profile``."""

    device: Device
    """Where to measure; ``cuda`` is the current CUDA device."""
    model_size: ModelSize
    """``real``: the released architectures; ``tiny``: miniature ones (CPU smoke runs)."""
    dtype: DType
    models: tuple[str, ...]
    """Model families to profile (``sd15``, ``sdxl``)."""
    resolutions: dict[str, tuple[int, ...]]
    """Image side lengths (pixels) per model."""
    patches: tuple[int, ...]
    batches: tuple[int, ...]
    step_modes: tuple[StepMode, ...]
    """``eager`` and/or ``cuda_graph`` (CUDA only)."""
    warmup: int
    repeats: int
    cold_start_trials: int
    threads: int
    """``torch.set_num_threads`` for the run (intra-op threads on CPU)."""
    seed: int
    """Seeds the random weights (``torch.manual_seed``) and the input generator."""
    model_dirs: dict[str, str | None] = field(default_factory=dict)
    """Local diffusers model folders per model (``unet/``, ``vae/``, ...); absent or
    None: random weights."""

    def __post_init__(self) -> None:
        for model in self.models:
            check_model(model)
            if model not in self.resolutions or not self.resolutions[model]:
                raise ValueError(f"no resolutions given for model {model!r}")
        if self.device not in ("cuda", "cpu"):
            raise ValueError(f"device {self.device!r} is not supported; choose one of cuda, cpu")
        if "cuda_graph" in self.step_modes and self.device != "cuda":
            raise ValueError("step mode 'cuda_graph' needs device 'cuda'")
        for mode in self.step_modes:
            if mode not in ("eager", "cuda_graph"):
                raise ValueError(
                    f"step mode {mode!r} is not supported; choose one of eager, cuda_graph"
                )
        if self.repeats < 1 or self.warmup < 0 or self.cold_start_trials < 0:
            raise ValueError("repeats must be >= 1, warmup and cold_start_trials >= 0")
        for model in self.models:
            for resolution in self.resolutions[model]:
                for patches in self.patches:
                    patch_shape(resolution, patches)  # raises on an impossible split


@dataclass(frozen=True)
class Timing:
    """Seconds of one call: median, minimum and maximum over the timed repeats."""

    seconds: float
    seconds_min: float
    seconds_max: float
    peak_mib: float | None


@dataclass
class ProfileResult:
    frame: pd.DataFrame
    """One row per measurement (columns :data:`PROFILE_COLUMNS`)."""
    metadata: dict[str, Any]


# ---------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------


def _torch() -> Any:
    import torch

    return torch


def synchronize(device: Device) -> None:
    if device == "cuda":
        _torch().cuda.synchronize()


def time_call(
    fn: Callable[[], Any], *, device: Device, warmup: int, repeats: int, graph: bool
) -> Timing:
    """Time ``fn`` (a call on fixed inputs) after ``warmup`` calls.

    ``graph=True`` captures one call in a CUDA graph (after warming up on a side stream,
    as capture requires) and times its replays.
    """
    torch = _torch()
    cuda = device == "cuda"
    if graph and not cuda:
        raise ValueError("CUDA graph capture needs device 'cuda'")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    call = fn
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(warmup, 1)):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            fn()
        call = cuda_graph.replay
    for _ in range(warmup):
        call()
    synchronize(device)
    times = []
    if cuda:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        for start, end in zip(starts, ends, strict=True):
            start.record()
            call()
            end.record()
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) / 1e3 for start, end in zip(starts, ends, strict=True)]
    else:
        for _ in range(repeats):
            began = time.perf_counter()
            call()
            times.append(time.perf_counter() - began)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    if graph:
        del cuda_graph
    return Timing(statistics.median(times), min(times), max(times), peak)


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


def quiet_libraries() -> None:
    """Silence diffusers' and transformers' progress bars and advisory warnings (the
    profiler's own log says what it does)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


def library_versions() -> dict[str, str]:
    import diffusers
    import transformers

    torch = _torch()
    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda or "",
    }


def device_name(device: Device) -> str:
    torch = _torch()
    if device == "cuda":
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine() or "cpu"


def disk_bytes(path: Path) -> int:
    """Bytes of every file under ``path``: what a cold start reads from disk."""
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


class Profiler:
    """Runs a :class:`ProfileRun`: ``Profiler(run).run(work_dir)``."""

    def __init__(self, run: ProfileRun) -> None:
        torch = _torch()
        self.config = run
        if run.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device")
        self.device = torch.device(run.device)
        self.dtype = getattr(torch, run.dtype)
        self.generator = torch.Generator().manual_seed(run.seed)
        self.rows: list[dict[str, Any]] = []
        self.skipped: dict[str, str] = {}
        """Measurements not taken, and why (see :meth:`_time_auxiliary`)."""
        self._constant: dict[str, Any] = {}

    # -- helpers ----------------------------------------------------------------------
    def _row(self, **values: Any) -> None:
        self.rows.append({**self._constant, **values})

    def _free(self) -> None:
        gc.collect()
        if self.config.device == "cuda":
            _torch().cuda.empty_cache()

    def _time(self, fn: Callable[[], Any], graph: bool) -> dict[str, Any]:
        """Timing columns of one measurement (with its warm-up and repeat counts)."""
        timing = time_call(
            fn,
            device=self.config.device,
            warmup=self.config.warmup,
            repeats=self.config.repeats,
            graph=graph,
        )
        return {**asdict(timing), "warmup": self.config.warmup, "repeats": self.config.repeats}

    def _time_auxiliary(
        self, fn: Callable[[], Any], mode: StepMode, graph: bool, what: str
    ) -> dict[str, Any] | None:
        """Time a decode or an encode. A CUDA-graph capture that fails is recorded in the
        metadata (``skipped``) rather than ending a GPU run: the latency model then uses
        the eager rows of that op. Steps are never skipped."""
        torch = _torch()
        try:
            with torch.inference_mode():
                return self._time(fn, graph)
        except RuntimeError as error:
            if not graph:
                raise
            self.skipped[f"{what} {mode}"] = f"{type(error).__name__}: {error}"[:500]
            log.warning("CUDA graph capture of %s failed: %s", what, error)
            torch.cuda.synchronize()
            return None

    def _modes(self) -> list[tuple[StepMode, bool]]:
        return [(mode, mode == "cuda_graph") for mode in self.config.step_modes]

    def _component(self, model: str, component: str) -> Any:
        """The component on the device: loaded from the user's folder, or built there
        with random weights (``torch.manual_seed(seed)`` first)."""
        torch = _torch()
        folder = self.config.model_dirs.get(model)
        began = time.perf_counter()
        if folder:
            module = self._from_pretrained(component, component_folder(Path(folder), component))
            op, extra = (
                "load_pretrained",
                {"bytes": disk_bytes(component_folder(Path(folder), component))},
            )
        else:
            torch.manual_seed(self.config.seed)
            with torch.device(self.device):
                module = build_component(model, component, self.config.model_size)
            module = module.to(dtype=self.dtype)
            op, extra = "init_random_on_device", {}
        module.eval().requires_grad_(False)
        synchronize(self.config.device)
        self._row(
            op=op,
            model=model,
            component=component,
            seconds=time.perf_counter() - began,
            params=parameter_count(module),
            **extra,
        )
        return module

    def _from_pretrained(self, component: str, folder: Path) -> Any:
        return load_component(component, folder, self.dtype).to(self.device)

    # -- measurements -----------------------------------------------------------------
    def profile_steps(self, model: str, unet: Any) -> None:
        torch = _torch()
        for resolution in self.config.resolutions[model]:
            for patches in self.config.patches:
                shape = patch_shape(resolution, patches)
                for batch in self.config.batches:
                    inputs = unet_inputs(
                        unet,
                        batch,
                        shape.latent_h,
                        shape.latent_w,
                        device=self.device,
                        dtype=self.dtype,
                        generator=self.generator,
                    )

                    def step(inputs: dict[str, Any] = inputs) -> Any:
                        return unet(**inputs, return_dict=False)[0]

                    for _mode, graph in self._modes():
                        with torch.inference_mode():
                            timing = self._time(step, graph)
                        self._row(
                            op="step",
                            model=model,
                            component="unet",
                            resolution=resolution,
                            patches=patches,
                            batch=batch,
                            latent_h=shape.latent_h,
                            latent_w=shape.latent_w,
                            graph=graph,
                            **timing,
                        )
                    del inputs
                    self._free()

    def profile_decode(self, model: str, vae: Any) -> None:
        torch = _torch()
        channels = vae.config.latent_channels
        for resolution in self.config.resolutions[model]:
            side = resolution // VAE_SCALE
            latent = torch.randn(1, channels, side, side, generator=self.generator)
            latent = latent.to(device=self.device, dtype=self.dtype)

            def decode(latent: Any = latent) -> Any:
                return vae.decode(latent, return_dict=False)[0]

            for mode, graph in self._modes():
                timing = self._time_auxiliary(decode, mode, graph, f"{model} vae {resolution}")
                if timing is None:
                    continue
                self._row(
                    op="decode",
                    model=model,
                    component="vae",
                    resolution=resolution,
                    batch=1,
                    latent_h=side,
                    latent_w=side,
                    graph=graph,
                    **timing,
                )
            del latent
            self._free()

    def profile_encode(self, model: str, component: str, encoder: Any) -> None:
        torch = _torch()
        batch = max(self.config.batches)
        vocab = encoder.config.vocab_size
        ids = torch.randint(0, vocab, (batch, PROMPT_TOKENS), generator=self.generator)
        ids = ids.to(self.device)

        def encode() -> Any:
            return encoder(input_ids=ids, output_hidden_states=True)

        for mode, graph in self._modes():
            timing = self._time_auxiliary(encode, mode, graph, f"{model} {component}")
            if timing is None:
                continue
            self._row(
                op="encode",
                model=model,
                component=component,
                batch=batch,
                graph=graph,
                **timing,
            )

    def profile_cold_start(self, model: str, component: str, module: Any, work_dir: Path) -> None:
        """``from_pretrained`` of a local folder until the weights are on the device."""
        folder = self.config.model_dirs.get(model)
        save_seconds = None
        if folder:
            path = component_folder(Path(folder), component)
        else:
            path = component_folder(work_dir / model, component)
            began = time.perf_counter()
            module.save_pretrained(path, safe_serialization=True)
            save_seconds = time.perf_counter() - began
        size = disk_bytes(path)
        for trial in range(self.config.cold_start_trials):
            self._free()
            synchronize(self.config.device)
            began = time.perf_counter()
            loaded = self._from_pretrained(component, path)
            synchronize(self.config.device)
            seconds = time.perf_counter() - began
            self._row(
                op="cold_start_from_disk",
                model=model,
                component=component,
                trial=trial,
                bytes=size,
                seconds=seconds,
                save_seconds=save_seconds,
            )
            del loaded

    def run(self, work_dir: Path | None = None) -> ProfileResult:
        """Measure everything; ``work_dir`` receives the saved model folders (a temporary
        folder, removed afterwards, when None)."""
        torch = _torch()
        config = self.config
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        started = datetime.now(UTC)
        began = time.perf_counter()
        quiet_libraries()
        versions = library_versions()
        self._constant = {
            "device": device_name(config.device),
            "device_type": config.device,
            "dtype": config.dtype,
            "model_size": config.model_size,
            "timer": "cuda_event" if config.device == "cuda" else "perf_counter",
            "threads": config.threads,
            "seed": config.seed,
            **versions,
        }
        try:
            with tempfile.TemporaryDirectory(prefix="eat-profile-") as scratch:
                folders = Path(work_dir) if work_dir is not None else Path(scratch)
                for model in config.models:
                    weights = "pretrained" if config.model_dirs.get(model) else "random"
                    self._constant["weights"] = weights
                    for component in COMPONENTS[model]:
                        log.info("profiling %s %s on %s", model, component, config.device)
                        module = self._component(model, component)
                        if component == "unet":
                            self.profile_steps(model, module)
                        elif component == "vae":
                            self.profile_decode(model, module)
                        else:
                            self.profile_encode(model, component, module)
                        if config.cold_start_trials:
                            self.profile_cold_start(model, component, module, folders)
                        del module
                        self._free()
        finally:
            torch.set_num_threads(previous_threads)
        frame = pd.DataFrame(self.rows)
        frame = frame.reindex(columns=PROFILE_COLUMNS)
        metadata = {
            "run": {
                **asdict(config),
                "models": list(config.models),
                "resolutions": {m: list(r) for m, r in config.resolutions.items()},
            },
            "device": device_properties(config.device),
            "versions": versions,
            "host": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "threads": config.threads,
            },
            "started_utc": started.isoformat(timespec="seconds"),
            "wall_seconds": time.perf_counter() - began,
            "rows": len(frame),
            "skipped": dict(self.skipped),
        }
        return ProfileResult(frame, metadata)


def device_properties(device: Device) -> dict[str, Any]:
    """Name and, on CUDA, the properties torch reports for the current device."""
    torch = _torch()
    if device != "cuda":
        return {"type": "cpu", "name": device_name("cpu"), "cuda_available": False}
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "type": "cuda",
        "name": props.name,
        "total_memory_mib": props.total_memory / 2**20,
        "multiprocessors": props.multi_processor_count,
        "capability": f"{props.major}.{props.minor}",
        "cudnn": torch.backends.cudnn.version(),
        "cuda_available": True,
    }


def run_profile(run: ProfileRun, work_dir: Path | None = None) -> ProfileResult:
    """Profile with :class:`Profiler` (see the module docstring)."""
    return Profiler(run).run(work_dir)

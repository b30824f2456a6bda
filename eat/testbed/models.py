"""Model folders, the locally built tokenizer, cold starts and the LRU model cache.

A *model folder* is a diffusers pipeline folder (``model_index.json``, ``unet/``,
``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``, plus ``text_encoder_2/``
and ``tokenizer_2/`` for SDXL), the layout ``StableDiffusionPipeline.from_pretrained``
reads. It is either

- the user's folder with real weights (``testbed.model_dirs`` in ``params.yaml``;
  loaded with ``local_files_only=True``, nothing is downloaded), or
- made once at set-up by :func:`prepare_model_folder`: the real architectures
  (``size="real"``) or their miniature versions (``size="tiny"``) of
  :mod:`eat.architectures` with seeded random weights, saved as
  safetensors. A marker file records how it was made; an unchanged folder is reused.

**Tokenizer.** No tokenizer files can be downloaded, so a folder we make gets a real
``transformers.CLIPTokenizer`` (CLIP's byte-level BPE, lower-casing and its
``<|startoftext|>``/``<|endoftext|>`` framing) built from a vocabulary this module
writes deterministically: CLIP's 256 byte symbols, each also with the end-of-word
mark ``</w>``, then the two special tokens, and no merges. Prompts therefore become
one token per character (up to 75 characters; longer prompts are truncated, as CLIP
does at 77 tokens). The end-of-text token has the highest id, as in CLIP's real
vocabulary, so the text encoder's pooled output (taken at the highest id) sits at
the end of the prompt. A user folder's own ``tokenizer/`` is used as it is.

**Cold start.** :func:`load_model` is what a server does when a model is not
resident: ``from_pretrained`` of every component from the folder, then ``.to(device)``
(CUDA synchronised): the real cost, not a sleep. :class:`ModelCache` keeps models
resident up to a byte budget and evicts the least recently used.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from eat.architectures import (
    COMPONENTS,
    ModelSize,
    build_component,
    check_model,
    component_folder,
    load_component,
)
from eat.testbed import require

log = logging.getLogger(__name__)

SchedulerKind = Literal["ddim", "euler"]
DType = Literal["float32", "float16", "bfloat16"]
MARKER = "eat_testbed.json"
FOLDER_FORMAT = 1

#: The noise schedule of the released SD 1.5 / SDXL checkpoints (scheduler_config.json).
SD_NOISE_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}
SCHEDULER_CLASSES = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler"}
PIPELINE_CLASSES = {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}


def check_scheduler(kind: str) -> None:
    if kind not in SCHEDULER_CLASSES:
        raise ValueError(
            f"noise scheduler {kind!r} is not supported; choose one of {sorted(SCHEDULER_CLASSES)}"
        )


def make_noise_scheduler(kind: SchedulerKind) -> Any:
    """A fresh diffusers scheduler with SD's noise schedule (DDIM: eta 0, no clipping)."""
    check_scheduler(kind)
    diffusers = require("diffusers")
    cls = getattr(diffusers, SCHEDULER_CLASSES[kind])
    extra = {"clip_sample": False, "set_alpha_to_one": False} if kind == "ddim" else {}
    return cls(**SD_NOISE_SCHEDULE, **extra)


# ---------------------------------------------------------------------------------------
# The tokenizer (built locally, see the module docstring)
# ---------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from the 256 bytes to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(code) for code in codes], strict=True))


def clip_vocabulary() -> dict[str, int]:
    """The deterministic vocabulary: 256 byte symbols, the same with ``</w>``, then
    ``<|startoftext|>`` and ``<|endoftext|>`` (514 tokens; the real CLIP vocabulary has
    the same first 512 entries and ends with the same two special tokens)."""
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def build_tokenizer(max_length: int = 77) -> Any:
    """A real ``CLIPTokenizer`` over :func:`clip_vocabulary` (no merges)."""
    transformers = require("transformers")
    with tempfile.TemporaryDirectory(prefix="eat-tokenizer-") as scratch:
        vocab_file, merges_file = Path(scratch) / "vocab.json", Path(scratch) / "merges.txt"
        vocab_file.write_text(json.dumps(clip_vocabulary(), ensure_ascii=False))
        merges_file.write_text("#version: 0.2\n")
        tokenizer = transformers.CLIPTokenizer(
            str(vocab_file),
            str(merges_file),
            pad_token="<|endoftext|>",
            model_max_length=max_length,
        )
    return tokenizer


# ---------------------------------------------------------------------------------------
# Model folders
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderRecipe:
    """How :func:`prepare_model_folder` makes a folder (written to its marker file)."""

    model: str
    size: ModelSize
    dtype: DType
    seed: int
    scheduler: SchedulerKind
    format: int = FOLDER_FORMAT


def weight_file_bytes(path: Path) -> int:
    """Bytes of the weight files under ``path`` (safetensors / bin): what the model
    occupies once resident."""
    return sum(
        item.stat().st_size
        for item in Path(path).rglob("*")
        if item.is_file() and item.suffix in (".safetensors", ".bin")
    )


def _torch_dtype(dtype: str) -> Any:
    torch = require("torch")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(
            f"dtype {dtype!r} is not supported; choose one of float32, float16, bfloat16"
        )
    return getattr(torch, dtype)


def build_pipeline(
    model: str, size: ModelSize, *, seed: int, scheduler: SchedulerKind, dtype: DType = "float32"
) -> Any:
    """The diffusers pipeline of ``model`` with seeded random weights (every component
    from :func:`eat.architectures.build_component`), in memory, built on the
    current default device: the testbed builds on the CPU, whose generator gives the
    same weights on every machine."""
    check_model(model)
    torch = require("torch")
    diffusers = require("diffusers")
    components: dict[str, Any] = {}
    for index, component in enumerate(COMPONENTS[model]):
        torch.manual_seed(seed + index)
        module = build_component(model, component, size)
        components[component] = module.to(dtype=_torch_dtype(dtype)).eval()
    components["tokenizer"] = build_tokenizer()
    noise = make_noise_scheduler(scheduler)
    if model == "sd15":
        return diffusers.StableDiffusionPipeline(
            vae=components["vae"],
            text_encoder=components["text_encoder"],
            tokenizer=components["tokenizer"],
            unet=components["unet"],
            scheduler=noise,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    return diffusers.StableDiffusionXLPipeline(
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        text_encoder_2=components["text_encoder_2"],
        tokenizer=components["tokenizer"],
        tokenizer_2=build_tokenizer(),
        unet=components["unet"],
        scheduler=noise,
        add_watermarker=False,
    )


def prepare_model_folder(
    root: Path,
    model: str,
    size: ModelSize,
    *,
    seed: int,
    scheduler: SchedulerKind,
    dtype: DType = "float32",
) -> Path:
    """Make (once) the folder of ``model`` with random weights under ``root`` and return it.

    A folder whose marker records the same recipe is reused as it is; any other content
    is replaced. Weights are saved as safetensors in ``dtype``."""
    recipe = FolderRecipe(model, size, dtype, seed, scheduler)
    folder = Path(root) / f"{model}-{size}-{dtype}-seed{seed}-{scheduler}"
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == asdict(recipe):
        return folder
    began = time.perf_counter()
    pipeline = build_pipeline(model, size, seed=seed, scheduler=scheduler, dtype=dtype)
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    pipeline.save_pretrained(partial, safe_serialization=True)
    (partial / MARKER).write_text(json.dumps(asdict(recipe), indent=2, sort_keys=True) + "\n")
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    partial.rename(folder)  # atomic: a reader never sees a half-written folder
    log.info("saved %s (%s) in %.1f s", folder, recipe, time.perf_counter() - began)
    return folder


def model_family(folder: Path) -> str:
    """``sd15`` or ``sdxl`` from a folder's ``model_index.json``."""
    index = json.loads((Path(folder) / "model_index.json").read_text())
    for family, name in PIPELINE_CLASSES.items():
        if index.get("_class_name") == name:
            return family
    raise ValueError(
        f"{folder}: pipeline {index.get('_class_name')!r} is not supported; choose a folder "
        f"of one of {sorted(PIPELINE_CLASSES.values())}"
    )


# ---------------------------------------------------------------------------------------
# Loading (the cold start) and the cache
# ---------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """One model resident on a server's device."""

    name: str
    family: str
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler_kind: SchedulerKind
    device: Any
    dtype: Any
    nbytes: int
    load_seconds: float

    def new_scheduler(self) -> Any:
        """A fresh noise scheduler for one task (schedulers carry per-run state)."""
        return make_noise_scheduler(self.scheduler_kind)

    @property
    def unet_alignment(self) -> int:
        """Latent rows a patch height must be a multiple of: the UNet halves the
        resolution once per down block but the last."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)


def module_bytes(module: Any) -> int:
    """Bytes of the parameters and buffers of a torch module."""
    total = sum(p.numel() * p.element_size() for p in module.parameters())
    return int(total + sum(b.numel() * b.element_size() for b in module.buffers()))


def load_model(
    name: str, folder: Path, *, device: str, dtype: DType, scheduler: SchedulerKind
) -> LoadedModel:
    """The cold start: ``from_pretrained`` of every component of ``folder`` (local files
    only) and the move to ``device``; returns the resident model and its load time."""
    torch = require("torch")
    require("diffusers")  # the clear error of a missing dependency, before any load
    transformers = require("transformers")
    folder = Path(folder)
    family = model_family(folder)
    torch_dtype = _torch_dtype(dtype)
    began = time.perf_counter()
    unet = load_component("unet", component_folder(folder, "unet"), torch_dtype)
    vae = load_component("vae", component_folder(folder, "vae"), torch_dtype)
    encoders = [
        load_component("text_encoder", component_folder(folder, "text_encoder"), torch_dtype)
    ]
    tokenizers = [
        transformers.CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    ]
    if family == "sdxl":
        encoders.append(
            load_component(
                "text_encoder_2", component_folder(folder, "text_encoder_2"), torch_dtype
            )
        )
        tokenizers.append(
            transformers.CLIPTokenizer.from_pretrained(
                folder / "tokenizer_2", local_files_only=True
            )
        )
    modules = [unet, vae, *encoders]
    for module in modules:
        module.to(device).eval().requires_grad_(False)
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    return LoadedModel(
        name=name,
        family=family,
        unet=unet,
        vae=vae,
        text_encoders=encoders,
        tokenizers=tokenizers,
        scheduler_kind=scheduler,
        device=torch.device(device),
        dtype=torch_dtype,
        nbytes=sum(module_bytes(module) for module in modules),
        load_seconds=seconds,
    )


class ModelCacheError(RuntimeError):
    """A model cannot be made resident (it alone exceeds the memory budget)."""


@dataclass
class CacheEvent:
    """What :meth:`ModelCache.get` did."""

    model: str
    cold: bool
    load_seconds: float
    evicted: list[str] = field(default_factory=list)


class ModelCache:
    """Models resident on one server, least recently used first, within a byte budget.

    ``sizes`` gives each model's expected resident bytes (weights on disk in the load
    dtype); before a load, least recently used models are evicted until the new one
    fits. ``loader(name)`` performs the cold start."""

    def __init__(
        self, budget_bytes: int, sizes: dict[str, int], loader: Callable[[str], LoadedModel]
    ) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"memory budget must be > 0 bytes, got {budget_bytes}")
        self.budget_bytes = int(budget_bytes)
        self.sizes = dict(sizes)
        self._loader = loader
        self._resident: OrderedDict[str, LoadedModel] = OrderedDict()

    def resident(self) -> list[str]:
        """Resident model names, least recently used first."""
        return list(self._resident)

    def used_bytes(self) -> int:
        return sum(self.sizes[name] for name in self._resident)

    def get(self, name: str) -> tuple[LoadedModel, CacheEvent]:
        """The model, loading it (after LRU evictions) if it is not resident."""
        if name not in self.sizes:
            raise KeyError(f"model {name!r} is not served here; choose one of {sorted(self.sizes)}")
        if name in self._resident:
            self._resident.move_to_end(name)
            return self._resident[name], CacheEvent(name, cold=False, load_seconds=0.0)
        need = self.sizes[name]
        if need > self.budget_bytes:
            raise ModelCacheError(
                f"model {name!r} needs {need} bytes; the memory budget is {self.budget_bytes}"
            )
        began = time.perf_counter()
        evicted = []
        while self._resident and self.used_bytes() + need > self.budget_bytes:
            victim, _ = self._resident.popitem(last=False)
            evicted.append(victim)
        if evicted:
            _release_device_memory()
        loaded = self._loader(name)
        self._resident[name] = loaded
        # the cold start a task pays: evictions (freeing device memory) and the load
        return loaded, CacheEvent(name, True, time.perf_counter() - began, evicted)

    def clear(self) -> None:
        self._resident.clear()
        _release_device_memory()


def _release_device_memory() -> None:
    """Return evicted weights to the device (CUDA's caching allocator keeps them
    otherwise). On CPU, reference counting already freed them: no full GC pass (which
    costs up to a second in a process holding torch and diffusers)."""
    torch = require("torch")
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        import gc

        gc.collect()
        torch.cuda.empty_cache()

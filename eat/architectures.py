"""The Stable Diffusion architectures the profiler measures, written out as config dicts.

Two model families, each a set of components (diffusers / transformers classes):

============  =================================================================
``sd15``      SD 1.x: ``unet`` (UNet2DConditionModel, 860 M parameters), ``vae``
              (AutoencoderKL, 84 M), ``text_encoder`` (CLIP ViT-L/14, 123 M)
``sdxl``      SDXL base: ``unet`` (2.57 G), ``vae`` (same architecture as SD's),
              ``text_encoder`` (CLIP ViT-L/14) and ``text_encoder_2`` (OpenCLIP
              ViT-bigG/14 with projection, 695 M)
============  =================================================================

``REAL`` holds the configs of the released checkpoints (the ``config.json`` files of
``stable-diffusion-v1-5`` and ``stable-diffusion-xl-base-1.0``); ``TINY`` holds
miniature versions of the same block structure (the sizes diffusers' own unit tests
use) for CPU smoke runs and tests. Latency does not depend on weight values, so the
profiler builds these with random weights unless it is given a local model folder.

This module also measures, from a forward pass on PyTorch's ``meta`` device (shapes
only, no memory, no compute), what patch parallelism has to exchange per denoising
step (:func:`exchange_coefficients`) and the size of every component
(:func:`architecture_table`), which ``eat/data/sd_architecture.csv`` ships for the
real architectures.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

ModelSize = Literal["real", "tiny"]
MODELS = ("sd15", "sdxl")
COMPONENTS: dict[str, tuple[str, ...]] = {
    "sd15": ("unet", "vae", "text_encoder"),
    "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2"),
}
#: Latent pixels per image pixel side: SD's VAE downsamples by 8 (the tiny VAE as well).
VAE_SCALE = 8
#: Prompt length of CLIP's tokenizer (every SD text encoder pads to it).
PROMPT_TOKENS = 77

# --- SD 1.x (stable-diffusion-v1-5 unet/config.json) ------------------------------------
_SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
# --- SDXL base 1.0 (stable-diffusion-xl-base-1.0 unet/config.json) ----------------------
_SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "transformer_layers_per_block": (1, 2, 10),
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 2048,
    "attention_head_dim": (5, 10, 20),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
# --- SD VAE (stable-diffusion-v1-5 vae/config.json; SDXL's VAE has the same layers) -----
_SD_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
}
# --- CLIP ViT-L/14 text tower (openai/clip-vit-large-patch14, SD's text_encoder) --------
_CLIP_L: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": PROMPT_TOKENS,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
# --- OpenCLIP ViT-bigG/14 text tower with projection (SDXL's text_encoder_2) ------------
_CLIP_BIGG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "projection_dim": 1280,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": PROMPT_TOKENS,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}

# --- tiny versions (the sizes of diffusers' and transformers' own unit tests) -----------
_TINY_SD15_UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "norm_num_groups": 32,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
}
_TINY_SDXL_UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "transformer_layers_per_block": (1, 2),
    "norm_num_groups": 32,
    "cross_attention_dim": 64,
    "attention_head_dim": (2, 4),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    # 6 time ids x 8 + the 32-wide pooled text embedding of the tiny second encoder
    "projection_class_embeddings_input_dim": 80,
}
# Four blocks like the real VAE (so it also upsamples latents by 8), narrow channels.
_TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (8, 16, 16, 16),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 64,
}
_TINY_CLIP: dict[str, Any] = {
    "vocab_size": 1000,
    "hidden_size": 32,
    "intermediate_size": 37,
    "projection_dim": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": PROMPT_TOKENS,
    "hidden_act": "gelu",
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}

REAL: dict[str, dict[str, dict[str, Any]]] = {
    "sd15": {"unet": _SD15_UNET, "vae": _SD_VAE, "text_encoder": _CLIP_L},
    "sdxl": {
        "unet": _SDXL_UNET,
        "vae": _SD_VAE,
        "text_encoder": _CLIP_L,
        "text_encoder_2": _CLIP_BIGG,
    },
}
TINY: dict[str, dict[str, dict[str, Any]]] = {
    "sd15": {"unet": _TINY_SD15_UNET, "vae": _TINY_VAE, "text_encoder": _TINY_CLIP},
    "sdxl": {
        "unet": _TINY_SDXL_UNET,
        "vae": _TINY_VAE,
        "text_encoder": _TINY_CLIP,
        "text_encoder_2": _TINY_CLIP,
    },
}
#: Parameter counts of the released checkpoints (the reference profile's ``params``
#: column for the UNets; the tests check the configs above against them).
REAL_PARAMETERS = {
    ("sd15", "unet"): 859_520_964,
    ("sdxl", "unet"): 2_567_463_684,
    ("sd15", "vae"): 83_653_863,
    ("sd15", "text_encoder"): 123_060_480,
    ("sdxl", "text_encoder_2"): 694_659_840,
}


def check_model(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"model {model!r} is not supported; choose one of {list(MODELS)}")


def component_config(model: str, component: str, size: ModelSize) -> dict[str, Any]:
    """A copy of the constructor arguments of one component."""
    check_model(model)
    if size not in ("real", "tiny"):
        raise ValueError(f"model size {size!r} is not supported; choose one of ['real', 'tiny']")
    table = REAL if size == "real" else TINY
    if component not in table[model]:
        raise ValueError(
            f"{model} has no component {component!r}; choose one of {list(COMPONENTS[model])}"
        )
    return copy.deepcopy(table[model][component])


def component_class(component: str) -> type:
    """The diffusers / transformers class of a component (imported lazily: heavy)."""
    try:
        if component == "unet":
            from diffusers import UNet2DConditionModel

            return UNet2DConditionModel
        if component == "vae":
            from diffusers import AutoencoderKL

            return AutoencoderKL
        if component == "text_encoder":
            from transformers import CLIPTextModel

            return CLIPTextModel
        if component == "text_encoder_2":
            from transformers import CLIPTextModelWithProjection

            return CLIPTextModelWithProjection
    except ImportError as error:  # pragma: no cover - both are pinned dependencies
        raise ImportError(
            f"profiling needs diffusers and transformers ({error}); install the package "
            "with its pinned dependencies: pip install -e ."
        ) from error
    raise ValueError(
        f"component {component!r} is not supported; choose one of "
        "['unet', 'vae', 'text_encoder', 'text_encoder_2']"
    )


def component_folder(model_folder: Path, component: str) -> Path:
    """Where a model folder keeps one component (diffusers' layout: ``<folder>/unet``,
    ``<folder>/vae``, ``<folder>/text_encoder``...)."""
    return Path(model_folder) / component


def load_component(component: str, folder: Path, dtype: Any) -> Any:
    """``from_pretrained`` of one saved component (``folder`` is its own folder), local
    files only, in ``dtype``: the one loader of the profiler's cold starts and of the
    testbed's workers (transformers names the dtype argument ``dtype``, diffusers
    ``torch_dtype``)."""
    cls = component_class(component)
    if component.startswith("text_encoder"):
        return cls.from_pretrained(folder, dtype=dtype, local_files_only=True)
    return cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)


def build_component(model: str, component: str, size: ModelSize) -> Any:
    """Construct one component with random weights on the current default device.

    Wrap the call in ``with torch.device(...)`` to build it directly on a GPU (fast) or on
    ``meta`` (no memory: for shapes and parameter counts).
    """
    config = component_config(model, component, size)
    cls = component_class(component)
    if component.startswith("text_encoder"):
        from transformers import CLIPTextConfig

        return cls(CLIPTextConfig(**config))
    return cls(**config)


def parameter_count(module: Any) -> int:
    return int(sum(parameter.numel() for parameter in module.parameters()))


# ---------------------------------------------------------------------------------------
# Inputs of one denoising step
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchShape:
    """The latent one server denoises when an image is split into ``patches`` row patches."""

    resolution: int
    patches: int
    latent_h: int
    latent_w: int

    @property
    def pixels_per_patch(self) -> float:
        return self.resolution * self.resolution / self.patches


def patch_shape(resolution: int, patches: int) -> PatchShape:
    """Row patches of a square image: the latent's rows split evenly (floor), as in the
    reference profile (1440 px on 4 patches: 45 of 180 latent rows)."""
    if resolution % VAE_SCALE:
        raise ValueError(f"resolution {resolution} is not a multiple of {VAE_SCALE}")
    side = resolution // VAE_SCALE
    if patches < 1 or side // patches < 1:
        raise ValueError(f"cannot split {side} latent rows into {patches} patches")
    return PatchShape(resolution, patches, side // patches, side)


def unet_inputs(
    unet: Any, batch: int, latent_h: int, latent_w: int, *, device: Any, dtype: Any, generator: Any
) -> dict[str, Any]:
    """Keyword arguments of one UNet call: noisy latent, timestep, prompt embeddings and,
    for SDXL, the pooled text embedding and the six size/crop time ids."""
    import torch

    config = unet.config

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    inputs: dict[str, Any] = {
        "sample": noise(batch, config.in_channels, latent_h, latent_w),
        "timestep": torch.full((batch,), 500, device=device, dtype=torch.long),
        "encoder_hidden_states": noise(batch, PROMPT_TOKENS, config.cross_attention_dim),
    }
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {
            "text_embeds": noise(batch, pooled),
            "time_ids": noise(batch, 6),
        }
    return inputs


# ---------------------------------------------------------------------------------------
# What patch parallelism exchanges (DistriFusion, Li et al., CVPR 2024)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExchangeCoefficients:
    """Elements one member of a patch-parallel gang receives per step and per sample,
    from the activation sizes of the UNet (DistriFusion's displaced patch parallelism,
    ``distrifuser/modules/pp``):

    - every self-attention layer all-gathers its K and V projections of the whole image:
      ``kv_per_latent_px * L^2 * (n - 1) / n`` for a latent of ``L x L`` on ``n`` members;
    - every padded convolution but the first all-gathers two boundary bands of
      ``padding`` rows from each member: ``halo_per_latent_col * L * (n - 1)``;
    - every GroupNorm all-gathers its per-group statistics: ``groupnorm * (n - 1)``;
    - the predicted noise (the UNet's output latent) is all-gathered after each step:
      ``latent_per_latent_px * L^2 * (n - 1) / n``.
    """

    kv_per_latent_px: float
    halo_per_latent_col: float
    groupnorm: float
    latent_per_latent_px: float

    def elements(self, latent_side: int, patches: int) -> float:
        if patches <= 1:
            return 0.0
        area = latent_side * latent_side * (patches - 1) / patches
        peers = patches - 1
        return (
            (self.kv_per_latent_px + self.latent_per_latent_px) * area
            + self.halo_per_latent_col * latent_side * peers
            + self.groupnorm * peers
        )


def _modules(unet: Any) -> Iterator[tuple[str, Any]]:
    yield from unet.named_modules()


def exchange_coefficients(unet: Any, latent_side: int | None = None) -> ExchangeCoefficients:
    """Measure :class:`ExchangeCoefficients` with hooks on one full-image forward pass.

    Run it on a model built on the ``meta`` device: the pass then only propagates shapes.
    """
    import torch
    from diffusers.models.attention_processor import Attention
    from torch import nn

    side = int(latent_side or unet.config.sample_size)
    totals = {"kv": 0.0, "halo": 0.0, "groupnorm": 0.0}
    handles = []

    def on_attention(module: Any, args: tuple, kwargs: dict) -> None:
        if module.is_cross_attention or kwargs.get("encoder_hidden_states") is not None:
            return
        hidden = args[0] if args else kwargs["hidden_states"]
        tokens = hidden.shape[1] if hidden.ndim == 3 else hidden.shape[2] * hidden.shape[3]
        totals["kv"] += tokens * 2 * module.to_k.out_features

    def on_conv(module: Any, args: tuple) -> None:
        padding = module.padding[0] if isinstance(module.padding, tuple) else 0
        if padding > 0:
            totals["halo"] += 2 * padding * module.in_channels * args[0].shape[-1]

    def on_norm(module: Any, args: tuple) -> None:
        totals["groupnorm"] += 2 * module.num_groups

    for name, module in _modules(unet):
        if isinstance(module, Attention):
            handles.append(module.register_forward_pre_hook(on_attention, with_kwargs=True))
        elif isinstance(module, nn.Conv2d) and name != "conv_in":  # the input is not split
            handles.append(module.register_forward_pre_hook(on_conv))
        elif isinstance(module, nn.GroupNorm):
            handles.append(module.register_forward_pre_hook(on_norm))
    try:
        device = next(unet.parameters()).device
        dtype = next(unet.parameters()).dtype
        generator = torch.Generator().manual_seed(0)
        if device.type == "meta":
            inputs = _meta_inputs(unet, side)
        else:
            inputs = unet_inputs(
                unet, 1, side, side, device=device, dtype=dtype, generator=generator
            )
        with torch.no_grad():
            unet(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    area = float(side * side)
    return ExchangeCoefficients(
        kv_per_latent_px=totals["kv"] / area,
        halo_per_latent_col=totals["halo"] / side,
        groupnorm=totals["groupnorm"],
        latent_per_latent_px=float(unet.config.out_channels),
    )


def _meta_inputs(unet: Any, side: int) -> dict[str, Any]:
    import torch

    config = unet.config
    dtype = next(unet.parameters()).dtype
    meta = {"device": "meta", "dtype": dtype}
    inputs: dict[str, Any] = {
        "sample": torch.empty(1, config.in_channels, side, side, **meta),
        "timestep": torch.tensor([500], device="meta"),
        "encoder_hidden_states": torch.empty(1, PROMPT_TOKENS, config.cross_attention_dim, **meta),
    }
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.empty(1, pooled, **meta),
            "time_ids": torch.empty(1, 6, **meta),
        }
    return inputs


#: Quantities of :func:`architecture_table` (column ``quantity``) and their meaning.
ARCHITECTURE_QUANTITIES = {
    "params": "parameters of the component",
    "fp16_bytes": "bytes of its weights in float16 (what safetensors stores, without header)",
    "exchange_kv_per_latent_px": "UNet: self-attention K/V elements per latent pixel of the image",
    "exchange_halo_per_latent_col": "UNet: conv boundary elements per latent column, per peer",
    "exchange_groupnorm": "UNet: GroupNorm statistics per peer",
    "exchange_latent_per_latent_px": "UNet: output latent elements per latent pixel",
}


def architecture_table(size: ModelSize = "real", models: tuple[str, ...] = MODELS) -> pd.DataFrame:
    """Sizes of every component and the UNets' exchange coefficients, measured on the
    ``meta`` device (tidy: model, component, quantity, value)."""
    import torch

    rows = []
    for model in models:
        for component in COMPONENTS[model]:
            with torch.device("meta"):
                module = build_component(model, component, size)
            params = parameter_count(module)
            rows.append((model, component, "params", float(params)))
            rows.append((model, component, "fp16_bytes", float(2 * params)))
            if component == "unet":
                coefficients = exchange_coefficients(module.to(torch.float16))
                for field, value in vars(coefficients).items():
                    rows.append((model, component, f"exchange_{field}", float(value)))
            del module
    return pd.DataFrame(rows, columns=["model", "component", "quantity", "value"])

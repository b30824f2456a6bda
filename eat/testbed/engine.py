"""The diffusion math of one task, split into row patches.

The noise schedule (a diffusers scheduler: ``set_timesteps``, ``scale_model_input``,
``step``) stays separate from the denoiser (the UNet), and the reverse loop is written
out in :func:`reverse_loop`, as in diffusers' ``pipeline_stable_diffusion``. Every
step follows that pipeline exactly (classifier-free guidance on the pair
``[unconditional, conditional]``, SDXL's pooled text embedding and size/crop time ids,
``eta = 0``), so with one patch the result *is* the pipeline's result for the same
seed and inputs (``tests/test_testbed_engine.py`` checks equality).

**Patch parallelism.** The latent's rows are split into ``n`` contiguous *owned* bands
(boundaries on multiples of the UNet's downsampling factor, so every band survives
the UNet's down/up sampling). Member ``i`` runs the UNet on its band extended by
``margin`` rows of overlap on each interior side (:class:`Band`), keeps the noise
prediction of its owned rows and discards the margin: the margin gives the
convolutions and the self-attention of rows near a patch boundary real context
from the neighbour. **Exchange (synchronous, every step):** after each member's
UNet call, the owned noise predictions are gathered into the full-image prediction,
the scheduler steps the full latent once, and the new latent is what every member
reads at the next step. This is exact for the scheduler (it always sees the whole
image) and approximate only inside the UNet (a patch sees ``margin`` rows of its
neighbours instead of the whole image); DistriFusion's alternative, stale
activations of the previous step for the whole image inside every layer, needs
hooks in every convolution and attention layer and overlaps communication with
compute on NCCL; it is not implemented here (see the README).
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from eat.architectures import VAE_SCALE
from eat.testbed import require
from eat.testbed.models import LoadedModel


@dataclass(frozen=True)
class GenerationRequest:
    """What one task asks for."""

    prompt: str
    resolution: int
    """Image side length in pixels (square images)."""
    steps: int
    guidance_scale: float
    seed: int
    """Seeds the initial noise (a CPU ``torch.Generator``, as the pipelines use)."""
    negative_prompt: str | None = None
    """None: the pipelines' default (empty prompt on SD 1.x, zeros on SDXL)."""


# ---------------------------------------------------------------------------------------
# Row patches
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """Latent rows of one patch: ``[own_start, own_stop)`` owned, ``[ext_start, ext_stop)``
    computed (owned plus the overlap margin on interior sides)."""

    own_start: int
    own_stop: int
    ext_start: int
    ext_stop: int

    @property
    def computed_rows(self) -> int:
        return self.ext_stop - self.ext_start

    @property
    def owned_rows(self) -> int:
        return self.own_stop - self.own_start


def aligned_margin(margin: int, align: int) -> int:
    """``margin`` latent rows rounded up to a multiple of the UNet alignment."""
    if margin < 0:
        raise ValueError(f"overlap margin must be >= 0 latent rows, got {margin}")
    return -(-margin // align) * align


def row_bands(rows: int, patches: int, margin: int, align: int) -> list[Band]:
    """Split ``rows`` latent rows into ``patches`` bands (see the module docstring).

    Owned boundaries are ``align * floor(units * i / patches)`` with
    ``units = rows / align``; ``margin`` is rounded up to a multiple of ``align``."""
    if patches < 1:
        raise ValueError(f"patches must be >= 1, got {patches}")
    if rows % align:
        raise ValueError(
            f"{rows} latent rows are not a multiple of the UNet alignment {align}; "
            f"choose a resolution that is a multiple of {align * VAE_SCALE} pixels"
        )
    units = rows // align
    if units < patches:
        raise ValueError(
            f"cannot split {rows} latent rows into {patches} patches of at least {align} rows"
        )
    margin = aligned_margin(margin, align)
    cuts = [align * (units * i // patches) for i in range(patches + 1)]
    bands = []
    for start, stop in itertools.pairwise(cuts):
        bands.append(Band(start, stop, max(0, start - margin), min(rows, stop + margin)))
    return bands


# ---------------------------------------------------------------------------------------
# Conditioning (prompt encoding), following the diffusers pipelines
# ---------------------------------------------------------------------------------------


@dataclass
class Conditioning:
    """The text conditioning of one task, batched ``[unconditional, conditional]`` when
    classifier-free guidance is on."""

    embeds: Any
    """(B, 77, D) prompt embeddings."""
    text_embeds: Any | None
    """SDXL: (B, P) pooled embedding of the second text encoder."""
    time_ids: Any | None
    """SDXL: (B, 6) original size, crop corner and target size."""
    guidance_scale: float
    guided: bool

    def to_wire(self) -> dict[str, Any]:
        """Numpy arrays (zero-copy in Ray's object store)."""
        return {
            "embeds": _to_numpy(self.embeds),
            "text_embeds": None if self.text_embeds is None else _to_numpy(self.text_embeds),
            "time_ids": None if self.time_ids is None else _to_numpy(self.time_ids),
            "guidance_scale": self.guidance_scale,
            "guided": self.guided,
        }

    @staticmethod
    def from_wire(wire: dict[str, Any], device: Any, dtype: Any) -> Conditioning:
        def tensor(array: np.ndarray | None) -> Any:
            return None if array is None else _to_torch(array, device, dtype)

        return Conditioning(
            tensor(wire["embeds"]),
            tensor(wire["text_embeds"]),
            tensor(wire["time_ids"]),
            float(wire["guidance_scale"]),
            bool(wire["guided"]),
        )


def _to_numpy(tensor: Any) -> np.ndarray:
    torch = require("torch")
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()


def _to_torch(array: np.ndarray, device: Any, dtype: Any) -> Any:
    torch = require("torch")
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)


def guidance_on(model: LoadedModel, guidance_scale: float) -> bool:
    """Classifier-free guidance, as the pipelines decide it."""
    return guidance_scale > 1.0 and model.unet.config.time_cond_proj_dim is None


def _tokens(tokenizer: Any, text: str, max_length: int) -> Any:
    return tokenizer(
        text, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    ).input_ids


def encode_prompt(model: LoadedModel, request: GenerationRequest) -> Conditioning:
    """Encode the prompt as ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` do."""
    torch = require("torch")
    guided = guidance_on(model, request.guidance_scale)
    device = model.device
    with torch.inference_mode():
        if model.family == "sd15":
            tokenizer, encoder = model.tokenizers[0], model.text_encoders[0]
            ids = _tokens(tokenizer, request.prompt, tokenizer.model_max_length)
            embeds = encoder(ids.to(device))[0].to(dtype=encoder.dtype)
            if guided:
                negative = request.negative_prompt or ""
                uncond = encoder(_tokens(tokenizer, negative, ids.shape[-1]).to(device))[0]
                embeds = torch.cat([uncond.to(dtype=encoder.dtype), embeds])
            return Conditioning(embeds, None, None, request.guidance_scale, guided)

        # SDXL: penultimate hidden states of both encoders, concatenated; pooled output
        # of the second (the projection).
        def both(text: str, max_length: int | None) -> tuple[Any, Any]:
            hidden, pooled = [], None
            for tokenizer, encoder in zip(model.tokenizers, model.text_encoders, strict=True):
                ids = _tokens(tokenizer, text, max_length or tokenizer.model_max_length)
                out = encoder(ids.to(device), output_hidden_states=True)
                if pooled is None and out[0].ndim == 2:
                    pooled = out[0]
                hidden.append(out.hidden_states[-2])
            return torch.concat(hidden, dim=-1), pooled

        embeds, pooled = both(request.prompt, None)
        size = request.resolution
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=embeds.dtype)
        if guided:
            if request.negative_prompt is None:  # force_zeros_for_empty_prompt
                neg_embeds, neg_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
            else:
                neg_embeds, neg_pooled = both(request.negative_prompt, embeds.shape[1])
            embeds = torch.cat([neg_embeds, embeds])
            pooled = torch.cat([neg_pooled, pooled])
            time_ids = torch.cat([time_ids, time_ids])
        dtype = model.text_encoders[-1].dtype
        return Conditioning(
            embeds.to(dtype=dtype, device=device),
            pooled.to(device),
            time_ids.to(device),
            request.guidance_scale,
            guided,
        )


def initial_latent(model: LoadedModel, request: GenerationRequest, dtype: Any) -> Any:
    """The pipelines' ``prepare_latents`` with a CPU generator seeded by the request."""
    torch = require("torch")
    side = request.resolution // VAE_SCALE
    if request.resolution % VAE_SCALE:
        raise ValueError(f"resolution {request.resolution} is not a multiple of {VAE_SCALE}")
    generator = torch.Generator("cpu").manual_seed(request.seed)
    channels = model.unet.config.in_channels
    latent = torch.randn((1, channels, side, side), generator=generator, dtype=dtype)
    return latent.to(model.device)


# ---------------------------------------------------------------------------------------
# One patch's step, the reverse loop, decoding
# ---------------------------------------------------------------------------------------


def denoise_band(
    model: LoadedModel, sample: Any, timestep: Any, cond: Conditioning, band: Band
) -> Any:
    """Guided noise prediction of ``band``'s owned rows.

    ``sample`` is the whole scaled model input ``(1, C, H, W)`` of this step (one copy;
    it is duplicated for guidance here). The UNet sees the band with its margin."""
    torch = require("torch")
    rows = sample[:, :, band.ext_start : band.ext_stop]
    batch = torch.cat([rows] * 2) if cond.guided else rows
    added = None
    if cond.text_embeds is not None:
        added = {"text_embeds": cond.text_embeds, "time_ids": cond.time_ids}
    with torch.inference_mode():
        noise = model.unet(
            batch,
            timestep,
            encoder_hidden_states=cond.embeds,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]
        if cond.guided:
            uncond, text = noise.chunk(2)
            noise = uncond + cond.guidance_scale * (text - uncond)
    offset = band.own_start - band.ext_start
    return noise[:, :, offset : offset + band.owned_rows]


#: Computes the full-image guided noise prediction of one step from the scaled model
#: input (``(1, C, H, W)``) and the timestep: all bands, locally or across a gang.
NoiseFn = Callable[[Any, Any], Any]


@dataclass
class LoopResult:
    latents: Any
    step_seconds: list[float]
    """Wall time of every step: every member's UNet call, the exchange and the
    scheduler step (CUDA synchronised)."""


def reverse_loop(
    model: LoadedModel, latents: Any, steps: int, noise_fn: NoiseFn, scheduler: Any | None = None
) -> LoopResult:
    """The reverse diffusion loop over ``steps`` steps (pipeline_stable_diffusion's loop)."""
    torch = require("torch")
    scheduler = scheduler or model.new_scheduler()
    # 1. timesteps on the device, begin index 0 (as the pipelines set them)
    scheduler.set_timesteps(steps, device=model.device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    # 2. initial noise scaled by the scheduler's sigma
    latents = latents * scheduler.init_noise_sigma
    cuda = model.device.type == "cuda"
    seconds = []
    for t in scheduler.timesteps:
        began = time.perf_counter()
        # 3. x_t -> model input (identity for DDIM, 1/sqrt(sigma^2+1) for Euler)
        sample = scheduler.scale_model_input(latents, t)
        # 4. guided noise prediction eps(x_t, t), every patch, gathered
        noise = noise_fn(sample, t)
        # 5. x_t -> x_{t-1} on the whole latent (eta = 0: no noise is drawn)
        with torch.inference_mode():
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - began)
    return LoopResult(latents, seconds)


def local_noise_fn(model: LoadedModel, cond: Conditioning, bands: list[Band]) -> NoiseFn:
    """Every band computed in this process, one after the other."""
    torch = require("torch")

    def noise(sample: Any, t: Any) -> Any:
        return torch.cat([denoise_band(model, sample, t, cond, band) for band in bands], dim=2)

    return noise


def decode(model: LoadedModel, latents: Any) -> np.ndarray:
    """VAE decode to an ``(H, W, 3)`` float image in [0, 1] (the pipelines' ``np`` output;
    SDXL's fp16 VAE is upcast as its pipeline does)."""
    torch = require("torch")
    vae = model.vae
    with torch.inference_mode():
        upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        work = vae.to(torch.float32) if upcast else vae
        z = latents.to(next(iter(work.post_quant_conv.parameters())).dtype)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean_t = torch.tensor(mean).view(1, 4, 1, 1).to(z.device, z.dtype)
            std_t = torch.tensor(std).view(1, 4, 1, 1).to(z.device, z.dtype)
            z = z * std_t / vae.config.scaling_factor + mean_t
        else:
            z = z / vae.config.scaling_factor
        image = work.decode(z, return_dict=False)[0]
        if upcast:
            vae.to(torch.float16)
        image = (image / 2 + 0.5).clamp(0, 1)
    return image.cpu().permute(0, 2, 3, 1).float().numpy()[0]


def png_bytes(image: np.ndarray) -> bytes:
    """An ``(H, W, 3)`` float image in [0, 1] as PNG (rounded as diffusers' numpy_to_pil)."""
    pil = require("PIL.Image")
    buffer = io.BytesIO()
    pil.fromarray((image * 255).round().astype("uint8")).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class GenerationOutput:
    image: np.ndarray
    latents: Any
    encode_seconds: float
    step_seconds: list[float]
    decode_seconds: float


def generate(
    model: LoadedModel, request: GenerationRequest, patches: int = 1, margin: int = 0
) -> GenerationOutput:
    """One task in this process: encode, ``patches`` bands per step, decode. The
    reference for the gang's distributed run (same bands, same arithmetic)."""
    began = time.perf_counter()
    cond = encode_prompt(model, request)
    encode_seconds = time.perf_counter() - began
    latents = initial_latent(model, request, cond.embeds.dtype)
    bands = row_bands(latents.shape[2], patches, margin, model.unet_alignment)
    loop = reverse_loop(model, latents, request.steps, local_noise_fn(model, cond, bands))
    began = time.perf_counter()
    image = decode(model, loop.latents)
    return GenerationOutput(
        image, loop.latents, encode_seconds, loop.step_seconds, time.perf_counter() - began
    )

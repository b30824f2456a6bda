"""The DDPM noise schedule and the denoiser network of the diffusion actor.

Following diffusers' split (``schedulers/scheduling_ddpm.py`` versus the model), the
:class:`DDPMScheduler` holds the noise schedule and the reverse-step arithmetic only;
the :class:`Denoiser` is a plain network that predicts the noise; the reverse chain
itself is written out in :meth:`eat.schedulers.rl.actors.DiffusionActor.sample`.

Reference: Ho, Jain and Abbeel, "Denoising Diffusion Probabilistic Models" (2020),
equations cited as "eq. (n) of DDPM". The EAT reference actor uses 10 steps and a
linear beta schedule from 1e-4 to 2e-2; both are constructor arguments here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn

BetaSchedule = Literal["linear", "cosine", "vp"]
BETA_SCHEDULES: tuple[str, ...] = ("linear", "cosine", "vp")


@dataclass(frozen=True)
class DDPMConfig:
    """Every constructor argument of :class:`DDPMScheduler` (saved with the weights)."""

    num_train_timesteps: int
    beta_schedule: BetaSchedule
    beta_start: float
    beta_end: float
    clip_sample_range: float
    """Predicted clean samples are clipped to [-range, range] (diffusers' ``clip_sample``)."""


class DDPMStepOutput(NamedTuple):
    prev_sample: torch.Tensor
    """x_{t-1}."""
    pred_original_sample: torch.Tensor
    """The model's estimate of x_0 at this step (after clipping)."""


def make_betas(schedule: BetaSchedule, n: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """The variance schedule beta_1..beta_n (float64 for accurate cumulative products)."""
    if schedule == "linear":  # Ho et al. 2020
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if schedule == "cosine":  # Nichol and Dhariwal 2021, eq. (17)
        s = 0.008
        steps = torch.arange(n + 1, dtype=torch.float64) / n
        alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    if (
        schedule == "vp"
    ):  # variance preserving SDE discretised (Song et al. 2021), as in Diffusion-QL
        t = torch.arange(1, n + 1, dtype=torch.float64)
        b_min, b_max = 0.1, 10.0
        alpha = torch.exp(-b_min / n - 0.5 * (b_max - b_min) * (2 * t - 1) / n**2)
        return 1 - alpha
    raise ValueError(f"beta_schedule {schedule!r} is not supported; choose one of {BETA_SCHEDULES}")


class DDPMScheduler:
    """Noise schedule of a DDPM and its reverse step (no learnable parameters)."""

    def __init__(
        self,
        num_train_timesteps: int = 10,
        beta_schedule: BetaSchedule = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 2e-2,
        clip_sample_range: float = 1.0,
    ) -> None:
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, "
                f"beta_end={beta_end}"
            )
        if clip_sample_range <= 0:
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
        self.config = DDPMConfig(
            num_train_timesteps, beta_schedule, beta_start, beta_end, clip_sample_range
        )
        betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        self.betas = betas.float()
        self.alphas = alphas.float()
        self.alphas_cumprod = alphas_cumprod.float()
        # Posterior q(x_{t-1} | x_t, x_0) = N(mean, beta_tilde), eq. (6)-(7) of DDPM.
        self.posterior_variance = (betas * (1 - previous) / (1 - alphas_cumprod)).float()
        self.posterior_mean_coef_x0 = (betas * previous.sqrt() / (1 - alphas_cumprod)).float()
        self.posterior_mean_coef_xt = (
            (1 - previous) * alphas.sqrt() / (1 - alphas_cumprod)
        ).float()
        # Python floats of the per-step coefficients: the reverse step multiplies small
        # tensors by them, and scalar tensors would cost an operator call each.
        self._sqrt_alpha_bar = alphas_cumprod.sqrt().tolist()
        self._sqrt_one_minus_alpha_bar = (1 - alphas_cumprod).sqrt().tolist()
        self._coef_x0 = self.posterior_mean_coef_x0.tolist()
        self._coef_xt = self.posterior_mean_coef_xt.tolist()
        self._posterior_std = self.posterior_variance.sqrt().tolist()
        self.set_timesteps(num_train_timesteps)

    def to_dict(self) -> dict:
        return asdict(self.config)

    def set_timesteps(self, num_inference_steps: int) -> None:
        """The reverse chain visits every training timestep, last first. (The actor is
        trained through its chain, so inference uses the training schedule unchanged.)"""
        if num_inference_steps != self.config.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps ({num_inference_steps}) must equal num_train_timesteps "
                f"({self.config.num_train_timesteps}): the actor is trained through its chain"
            )
        self.timesteps = list(range(num_inference_steps - 1, -1, -1))

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """Sample q(x_t | x_0), eq. (4) of DDPM."""
        return self._sqrt_alpha_bar[t] * original + self._sqrt_one_minus_alpha_bar[t] * noise

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        sample: torch.Tensor,
        noise: torch.Tensor | None,
    ) -> DDPMStepOutput:
        """One reverse step x_t -> x_{t-1} given the predicted noise ``model_output``.

        ``noise`` (standard normal, shaped like ``sample``) is added with the posterior
        variance; None gives the deterministic mean path (used in evaluation)."""
        # 1. sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t), eq. (4)
        sqrt_alpha_bar, sqrt_one_minus = self._sqrt_alpha_bar[t], self._sqrt_one_minus_alpha_bar[t]
        # 2. predicted x_0 from the predicted noise, eq. (15)
        pred_original = (sample - sqrt_one_minus * model_output) * (1.0 / sqrt_alpha_bar)
        # 3. clip it to the data range (diffusers' clip_sample)
        limit = self.config.clip_sample_range
        pred_original = pred_original.clamp(-limit, limit)
        # 4. posterior mean of x_{t-1} given x_t and the predicted x_0, eq. (7)
        mean = self._coef_x0[t] * pred_original + self._coef_xt[t] * sample
        # 5. add posterior noise (none at t = 0), eq. (7): sigma_t^2 = beta_tilde_t
        if noise is None or t == 0:
            return DDPMStepOutput(mean, pred_original)
        return DDPMStepOutput(mean + self._posterior_std[t] * noise, pred_original)


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of the integer timestep."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        half = dim // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half) / max(1, half - 1))
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[..., None] * self.frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Denoiser(nn.Module):
    """epsilon_theta(x_t, t, condition): an MLP on [x_t, time embedding, condition]
    (the reference: [x, t-embedding(16), state] -> 256 -> 256 -> 256, Mish).

    The first layer of an MLP on a concatenation is a sum of one linear map per part;
    the condition's part is the same at every step of a chain, so
    :meth:`project_condition` computes it once per chain and :meth:`forward` adds it.
    Works on any leading shape: per token (B, T, k) with a per-token condition, or
    flat (B, k)."""

    def __init__(self, sample_dim: int, cond_dim: int, hidden: int, time_dim: int = 16) -> None:
        super().__init__()
        self.config = {
            "sample_dim": sample_dim,
            "cond_dim": cond_dim,
            "hidden": hidden,
            "time_dim": time_dim,
        }
        self.time_embedding = nn.Sequential(
            SinusoidalTimeEmbedding(time_dim),
            nn.Linear(time_dim, time_dim),
            nn.SiLU(),
            nn.Linear(time_dim, hidden),
        )
        self.sample_in = nn.Linear(sample_dim, hidden)
        self.condition_in = nn.Linear(cond_dim, hidden, bias=False)
        self.net = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, sample_dim)
        )

    def project_condition(self, condition: torch.Tensor) -> torch.Tensor:
        """The condition's share of the first layer (once per chain)."""
        return self.condition_in(condition)

    def embed_times(self, timesteps: list[int], device: torch.device) -> torch.Tensor:
        """The time embeddings of a whole chain in one call: (len(timesteps), hidden)."""
        return self.time_embedding(torch.tensor(timesteps, device=device))

    def forward(
        self, sample: torch.Tensor, time: torch.Tensor, projected_condition: torch.Tensor
    ) -> torch.Tensor:
        """epsilon for ``sample`` at the step whose embedding is ``time`` (hidden,),
        broadcast over every sample (and token)."""
        return self.net(self.sample_in(sample) + projected_condition + time)


__all__ = [
    "BETA_SCHEDULES",
    "DDPMConfig",
    "DDPMScheduler",
    "DDPMStepOutput",
    "Denoiser",
    "SinusoidalTimeEmbedding",
    "make_betas",
]

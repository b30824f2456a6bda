"""Actors: a squashed-Gaussian SAC actor and the diffusion actor, each on either encoder.

Both end in the same squashed-Gaussian head, so both give SAC a tractable
log-probability:

1. the encoder reads the state (per token for ``attention``, flat for ``mlp``);
2. (diffusion only) a DDPM reverse chain, conditioned on the state encoding, turns
   Gaussian noise ``x_K`` into an action-shaped sample ``x_0`` (per token: a
   :data:`TOKEN_ACTION_DIM`-vector per token; flat: one value per action slot);
3. a head maps the condition (and ``x_0``) to a mean ``mu`` and a log standard
   deviation ``log_sigma`` per action slot;
4. ``u = mu + sigma * eps`` (``eps ~ N(0, I)``; ``u = mu`` in deterministic mode) and
   the action is ``a = tanh(u)`` in [-1, 1];
5. ``log pi(a | s, x_0) = sum over valid slots of [log N(u; mu, sigma) -
   log(1 - tanh(u)^2)]`` (eq. (21) of Haarnoja et al. 2018, SAC).

For the diffusion actor this is the log-density of the action *given the chain's
sample* ``x_0``, exactly as the EAT reference's Gaussian head on its diffusion output:
the marginal density over the chain's noise is intractable. SAC's entropy term
``-alpha log pi`` is therefore a one-sample estimate of the conditional entropy
``H(a | s, x_0)``, which is at most the entropy of the action's marginal ``H(a | s)``;
the chain's own noise adds exploration that the entropy term does not credit.
Gradients flow through the head, the whole chain (reparameterised: every noise draw
is an input) and the encoder. Masked action slots (``info["action_mask"]`` False: their
value does not change the decision) are left out of the sum, so the entropy is over
what the action really decides.

Deterministic mode (evaluation, the scheduler): the chain starts from ``x_K = 0`` and
follows the posterior means without noise, and ``a = tanh(mu)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from eat.params import ActorKind
from eat.schedulers.rl.diffusion import DDPMScheduler, Denoiser
from eat.schedulers.rl.networks import (
    TOKEN_ACTION_DIM,
    NetworkSpec,
    TokenLayout,
    make_encoder,
    tokens_to_flat,
)

ACTOR_KINDS: tuple[str, ...] = ("diffusion", "gaussian")
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
TANH_EPS = 1e-6
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class ActorOutput(NamedTuple):
    action: torch.Tensor
    """(B, A) in [-1, 1]: sampled, or the mean in deterministic mode."""
    log_prob: torch.Tensor
    """(B,) log pi(a | s) over the valid slots (module docstring)."""
    mean_action: torch.Tensor
    """(B, A) tanh(mu): the deterministic action."""
    mean: torch.Tensor
    """(B, A) mu before the squash (the logits a decision-level imitation loss reads)."""


def squashed_gaussian(
    mu: torch.Tensor, raw_log_std: torch.Tensor, mask: torch.Tensor | None, deterministic: bool
) -> ActorOutput:
    """Steps 4-5 of the module docstring."""
    # CleanRL's bounded log std: tanh into [LOG_STD_MIN, LOG_STD_MAX].
    log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw_log_std) + 1)
    std = log_std.exp()
    u = mu if deterministic else mu + std * torch.randn_like(mu)
    action = torch.tanh(u)
    # log N(u; mu, sigma) - log(1 - tanh(u)^2), eq. (21) of SAC
    gaussian = -0.5 * ((u - mu) / std) ** 2 - log_std - HALF_LOG_2PI
    per_slot = gaussian - torch.log(1 - action.pow(2) + TANH_EPS)
    if mask is not None:
        per_slot = per_slot * mask
    return ActorOutput(action, per_slot.sum(-1), torch.tanh(mu), mu)


class GaussianActor(nn.Module):
    """SAC's squashed-Gaussian actor. ``attention``: a shared per-token head on
    [token encoding, context]; ``mlp``: a head on the flat state feature."""

    def __init__(
        self, spec: NetworkSpec, n_tokens: int, in_features: int, action_size: int
    ) -> None:
        super().__init__()
        self.kind = spec.encoder
        self.encoder = make_encoder(spec, n_tokens, in_features)
        out = 2 * TOKEN_ACTION_DIM if spec.encoder == "attention" else 2 * action_size
        cond = 2 * spec.width if spec.encoder == "attention" else self.encoder.width
        self.head = nn.Sequential(
            nn.Linear(cond, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, out)
        )

    def forward(
        self, obs: torch.Tensor, mask: torch.Tensor | None = None, deterministic: bool = False
    ) -> ActorOutput:
        layout = TokenLayout.of(obs)
        encoded = self.encoder(obs, layout)
        if self.kind == "attention":
            context = encoded.context.unsqueeze(1).expand_as(encoded.tokens)
            mu, raw_log_std = self.head(torch.cat([encoded.tokens, context], -1)).chunk(2, -1)
            mu, raw_log_std = tokens_to_flat(mu, layout), tokens_to_flat(raw_log_std, layout)
        else:
            mu, raw_log_std = self.head(encoded.context).chunk(2, -1)
        return squashed_gaussian(mu, raw_log_std, mask, deterministic)


class DiffusionActor(nn.Module):
    """The diffusion actor: a DDPM reverse chain conditioned on the state encoding,
    then the squashed-Gaussian head (module docstring). ``attention``: the chain
    denoises a (T, 3) per-token sample, each token conditioned on [its encoding,
    context]; ``mlp``: a flat sample of the action's size conditioned on the state
    feature."""

    def __init__(
        self, spec: NetworkSpec, n_tokens: int, in_features: int, action_size: int
    ) -> None:
        super().__init__()
        self.kind = spec.encoder
        self.encoder = make_encoder(spec, n_tokens, in_features)
        self.sample_dim = TOKEN_ACTION_DIM if spec.encoder == "attention" else action_size
        cond = 2 * spec.width if spec.encoder == "attention" else self.encoder.width
        self.scheduler = DDPMScheduler(
            spec.denoising_steps, spec.beta_schedule, spec.beta_start, spec.beta_end
        )
        self.denoiser = Denoiser(self.sample_dim, cond, spec.hidden)
        self.head = nn.Sequential(
            nn.Linear(cond + self.sample_dim, spec.hidden),
            nn.ReLU(),
            nn.Linear(spec.hidden, 2 * self.sample_dim),
        )

    def condition(self, obs: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        encoded = self.encoder(obs, layout)
        if self.kind == "attention":
            context = encoded.context.unsqueeze(1).expand_as(encoded.tokens)
            return torch.cat([encoded.tokens, context], -1)
        return encoded.context

    def sample(self, condition: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """The reverse chain x_K -> x_0 (step 2 of the module docstring)."""
        shape = (*condition.shape[:-1], self.sample_dim)
        if deterministic:
            x = condition.new_zeros(shape)
        else:
            x = torch.randn(shape, device=condition.device)
        projected = self.denoiser.project_condition(condition)
        times = self.denoiser.embed_times(self.scheduler.timesteps, condition.device)
        for i, t in enumerate(self.scheduler.timesteps):
            predicted_noise = self.denoiser(x, times[i], projected)
            noise = None if deterministic else torch.randn_like(x)
            x = self.scheduler.step(predicted_noise, t, x, noise).prev_sample
        return x

    def forward(
        self, obs: torch.Tensor, mask: torch.Tensor | None = None, deterministic: bool = False
    ) -> ActorOutput:
        layout = TokenLayout.of(obs)
        condition = self.condition(obs, layout)
        x0 = self.sample(condition, deterministic)
        mu, raw_log_std = self.head(torch.cat([condition, x0], -1)).chunk(2, -1)
        if self.kind == "attention":
            mu, raw_log_std = tokens_to_flat(mu, layout), tokens_to_flat(raw_log_std, layout)
        return squashed_gaussian(mu, raw_log_std, mask, deterministic)


def make_actor(
    spec: NetworkSpec, n_tokens: int, in_features: int, action_size: int
) -> GaussianActor | DiffusionActor:
    """The actor ``spec`` describes, for observations of ``n_tokens`` x ``in_features``."""
    if spec.actor == "gaussian":
        return GaussianActor(spec, n_tokens, in_features, action_size)
    if spec.actor == "diffusion":
        return DiffusionActor(spec, n_tokens, in_features, action_size)
    raise ValueError(f"actor {spec.actor!r} is not supported; choose one of {ACTOR_KINDS}")


__all__ = [
    "ACTOR_KINDS",
    "ActorKind",
    "ActorOutput",
    "DiffusionActor",
    "GaussianActor",
    "make_actor",
    "squashed_gaussian",
]

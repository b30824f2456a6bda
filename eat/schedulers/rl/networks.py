"""State encoders, the token/flat action layout, and the twin-Q critics.

The observation (:mod:`eat.sim.encoding`) is a set of tokens: ``W`` task slots, ``S``
servers and one global token, with the same ``F`` columns each. The action is flat,
``3 + W + S`` values aligned with the tokens: the global token owns ``a[0:3]`` (gate,
steps, gang size), task slot ``i`` owns ``a[3 + i]`` and server ``j`` owns
``a[3 + W + j]``.

Two ways to read it:

``attention`` (per token)
    :class:`AttentionEncoder` embeds every token (a linear map of its columns plus a
    learned token-type embedding), runs pre-norm transformer blocks (multi-head
    self-attention and an MLP, each with a residual connection and layer
    normalisation; empty task slots are masked as keys), and returns one encoding per
    token plus their masked mean (the context). Actors then emit a
    :data:`TOKEN_ACTION_DIM`-vector *per token* with shared weights and
    :func:`tokens_to_flat` assembles the flat action, so the same network runs on any
    number of servers and any queue window. Permuting server tokens permutes their
    action values and leaves everything else unchanged (tested).

``mlp`` (flat)
    :class:`MLPEncoder` flattens the ``T x F`` observation into an MLP and emits the
    flat action directly: the classical SAC / D2SAC set-up, tied to one cluster size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from eat.params import ActorKind, EncoderKind, SACConfig
from eat.sim.encoding import N_GLOBAL_ACTIONS, TYPE_SERVER

ENCODER_KINDS: tuple[str, ...] = ("attention", "mlp")


@dataclass(frozen=True)
class NetworkSpec:
    """The architecture of an actor and its critics: the network fields of
    :class:`~eat.params.SACConfig`, the one argument every constructor here takes."""

    encoder: EncoderKind
    actor: ActorKind
    width: int
    heads: int
    layers: int
    hidden: int
    denoising_steps: int
    beta_schedule: str
    beta_start: float
    beta_end: float

    @classmethod
    def of(cls, config: SACConfig) -> NetworkSpec:
        return cls(
            encoder=config.encoder,
            actor=config.actor,
            width=config.width,
            heads=config.heads,
            layers=config.layers,
            hidden=config.hidden,
            denoising_steps=config.denoising_steps,
            beta_schedule=config.beta_schedule,
            beta_start=config.beta_start,
            beta_end=config.beta_end,
        )


TOKEN_ACTION_DIM = N_GLOBAL_ACTIONS
"""Action values per token: the global token uses all 3, task and server tokens the first."""
PRESENT_COLUMN = 3
TOKEN_TASK, TOKEN_SERVER, TOKEN_GLOBAL = 0, 1, 2


# ---------------------------------------------------------------------------
# Token layout
# ---------------------------------------------------------------------------


class TokenLayout(NamedTuple):
    """How many task slots (``window``) and servers an observation has."""

    window: int
    servers: int

    @property
    def n_tokens(self) -> int:
        return self.window + self.servers + 1

    @property
    def action_size(self) -> int:
        return N_GLOBAL_ACTIONS + self.window + self.servers

    @staticmethod
    def of(obs: torch.Tensor) -> TokenLayout:
        """Read the layout from an observation batch ``(B, T, F)``: server tokens carry
        their type column even when every task slot is empty."""
        servers = int(obs[0, :, TYPE_SERVER].sum().item())
        return TokenLayout(obs.shape[1] - servers - 1, servers)

    def type_ids(self, device: torch.device) -> torch.Tensor:
        """Token type by position (empty task slots are still task slots)."""
        key = (self, str(device))
        if key not in _TYPE_IDS:
            ids = [TOKEN_TASK] * self.window + [TOKEN_SERVER] * self.servers + [TOKEN_GLOBAL]
            # a normal tensor even when first asked for under inference_mode (a decision),
            # so that training, which saves it for backward, can reuse it
            with torch.inference_mode(False):
                _TYPE_IDS[key] = torch.tensor(ids, device=device)
        return _TYPE_IDS[key]


_TYPE_IDS: dict[tuple[TokenLayout, str], torch.Tensor] = {}
"""Cache of :meth:`TokenLayout.type_ids` (a decision should not rebuild it)."""


def tokens_to_flat(per_token: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``(B, T, 3)`` per-token values -> ``(B, 3 + W + S)`` flat action."""
    w, s = layout.window, layout.servers
    return torch.cat([per_token[:, -1, :], per_token[:, :w, 0], per_token[:, w : w + s, 0]], dim=-1)


def flat_to_tokens(flat: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``(B, 3 + W + S)`` flat action -> ``(B, T, 3)`` per-token values (unused
    components zero). Inverse of :func:`tokens_to_flat` on the used components."""
    w, s = layout.window, layout.servers
    batch = flat.shape[0]
    out = flat.new_zeros(batch, layout.n_tokens, TOKEN_ACTION_DIM)
    out[:, -1, :] = flat[:, :N_GLOBAL_ACTIONS]
    out[:, :w, 0] = flat[:, N_GLOBAL_ACTIONS : N_GLOBAL_ACTIONS + w]
    out[:, w : w + s, 0] = flat[:, N_GLOBAL_ACTIONS + w :]
    return out


# ---------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------


class EncoderOutput(NamedTuple):
    tokens: torch.Tensor | None
    """(B, T, width) per-token encodings (attention), None for the flat encoder."""
    context: torch.Tensor
    """(B, width) a summary of the whole state."""


ADDITIVE_MASK_TOKENS = 64
"""From this many tokens the padding mask is additive (0 / -inf floats) instead of
boolean: on CPU, attention's inference fast path runs a boolean padding mask through a
masked softmax that costs ~5x the attention itself at a few hundred tokens (15 ms
against 3 ms at 461 tokens on one core); the additive mask computes the same function
(outputs within 1e-7). Below it the boolean mask stays, so networks on the small
presets (tens of tokens) give exactly the outputs they always gave."""


class TransformerBlock(nn.Module):
    """Pre-norm block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.norm_attention = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """``padding``: True (boolean) or -inf (additive) where a token is absent."""
        h = self.norm_attention(x)
        attended, _ = self.attention(h, h, h, key_padding_mask=padding, need_weights=False)
        x = x + attended
        return x + self.mlp(self.norm_mlp(x))


class AttentionEncoder(nn.Module):
    """Self-attention over the observation tokens (module docstring)."""

    def __init__(self, in_features: int, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.config = {"in_features": in_features, "width": width, "heads": heads, "layers": layers}
        self.embed = nn.Linear(in_features, width)
        self.type_embedding = nn.Embedding(3, width)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.width = width

    def forward(self, obs: torch.Tensor, layout: TokenLayout) -> EncoderOutput:
        present = obs[..., PRESENT_COLUMN] > 0.5
        x = self.embed(obs) + self.type_embedding(layout.type_ids(obs.device))
        padding = ~present
        if obs.shape[-2] >= ADDITIVE_MASK_TOKENS:
            padding = torch.zeros_like(padding, dtype=x.dtype).masked_fill(padding, -math.inf)
        for block in self.blocks:
            x = block(x, padding)
        x = self.norm(x)
        weights = present.float().unsqueeze(-1)
        context = (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return EncoderOutput(x, context)


class MLPEncoder(nn.Module):
    """The flattened observation through a two-layer MLP."""

    def __init__(self, n_tokens: int, in_features: int, width: int) -> None:
        super().__init__()
        self.config = {"n_tokens": n_tokens, "in_features": in_features, "width": width}
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_tokens * in_features, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
        )
        self.width = width

    def forward(self, obs: torch.Tensor, layout: TokenLayout) -> EncoderOutput:
        return EncoderOutput(None, self.net(obs))


def make_encoder(
    spec: NetworkSpec, n_tokens: int, in_features: int
) -> AttentionEncoder | MLPEncoder:
    if spec.encoder == "attention":
        return AttentionEncoder(in_features, spec.width, spec.heads, spec.layers)
    if spec.encoder == "mlp":  # twice as wide: one vector carries the whole state
        return MLPEncoder(n_tokens, in_features, 2 * spec.width)
    raise ValueError(f"encoder {spec.encoder!r} is not supported; choose one of {ENCODER_KINDS}")


def twin_q_heads(in_features: int, hidden: int) -> nn.ModuleList:
    """The two Q heads of a critic: MLPs from ``in_features`` to one value each."""
    return nn.ModuleList(
        nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
        for _ in range(2)
    )


# ---------------------------------------------------------------------------
# Critics
# ---------------------------------------------------------------------------


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to ``mask``; all zeros where none is valid."""
    scores = scores.masked_fill(mask < 0.5, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(weights, nan=0.0)


class AttentionCritic(nn.Module):
    """Twin Q(s, a) on one attention encoding of the state.

    The state is encoded once (:meth:`encode`, shared by both heads; the targets are a
    copy of the whole module). Each head reads the action the way the decoder does:
    the task the action picks is the highest-scoring valid task slot, the servers the
    highest-scoring free servers, so a head pools the task encodings with a softmax of
    their scores (a differentiable argmax, learned sharpness), the server encodings
    with a softmax and with sigmoids of their scores (a soft top-k), and an MLP maps
    [context, global token, global action values, pooled task, pooled servers] to Q.
    It reads any number of task slots and servers; masked slots get no weight."""

    def __init__(self, in_features: int, width: int, heads: int, layers: int, hidden: int) -> None:
        super().__init__()
        self.encoder = AttentionEncoder(in_features, width, heads, layers)
        self.log_sharpness = nn.Parameter(torch.full((2,), 1.6))  # e^1.6 ~ 5
        self.q_heads = twin_q_heads(5 * width + N_GLOBAL_ACTIONS, hidden)

    def encode(self, obs: torch.Tensor, layout: TokenLayout) -> EncoderOutput:
        return self.encoder(obs, layout)

    def heads(
        self, state: EncoderOutput, action: torch.Tensor, mask: torch.Tensor, layout: TokenLayout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w, s = layout.window, layout.servers
        g = N_GLOBAL_ACTIONS
        tokens = state.tokens
        sharp = self.log_sharpness.exp()
        task_weights = masked_softmax(sharp[0] * action[:, g : g + w], mask[:, g : g + w])
        server_scores = sharp[1] * action[:, g + w :]
        server_mask = mask[:, g + w :]
        server_weights = masked_softmax(server_scores, server_mask)
        server_soft = torch.sigmoid(server_scores) * server_mask
        task = torch.einsum("bw,bwd->bd", task_weights, tokens[:, :w])
        server_top = torch.einsum("bs,bsd->bd", server_weights, tokens[:, w : w + s])
        server_subset = torch.einsum("bs,bsd->bd", server_soft, tokens[:, w : w + s]) / s
        features = torch.cat(
            [
                state.context,
                tokens[:, -1],
                action[:, :g] * mask[:, :g],
                task,
                server_top,
                server_subset,
            ],
            dim=-1,
        )
        q1, q2 = (head(features).squeeze(-1) for head in self.q_heads)
        return q1, q2

    def forward(
        self, obs: torch.Tensor, action: torch.Tensor, mask: torch.Tensor, layout: TokenLayout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.encode(obs, layout), action, mask, layout)


class MLPCritic(nn.Module):
    """Twin Q(s, a) = MLP([flattened observation, flat action (masked slots zeroed)])."""

    def __init__(self, n_tokens: int, in_features: int, action_size: int, hidden: int) -> None:
        super().__init__()
        self.q_heads = twin_q_heads(n_tokens * in_features + action_size, hidden)

    def encode(self, obs: torch.Tensor, layout: TokenLayout) -> EncoderOutput:
        return EncoderOutput(None, obs.flatten(1))

    def heads(
        self, state: EncoderOutput, action: torch.Tensor, mask: torch.Tensor, layout: TokenLayout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = torch.cat([state.context, action * mask], dim=-1)
        q1, q2 = (head(features).squeeze(-1) for head in self.q_heads)
        return q1, q2

    def forward(
        self, obs: torch.Tensor, action: torch.Tensor, mask: torch.Tensor, layout: TokenLayout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.encode(obs, layout), action, mask, layout)


def make_critic(
    spec: NetworkSpec, n_tokens: int, in_features: int, action_size: int
) -> AttentionCritic | MLPCritic:
    if spec.encoder == "attention":
        return AttentionCritic(in_features, spec.width, spec.heads, spec.layers, spec.hidden)
    if spec.encoder == "mlp":
        return MLPCritic(n_tokens, in_features, action_size, spec.hidden)
    raise ValueError(f"encoder {spec.encoder!r} is not supported; choose one of {ENCODER_KINDS}")


__all__ = [
    "ENCODER_KINDS",
    "TOKEN_ACTION_DIM",
    "AttentionCritic",
    "AttentionEncoder",
    "EncoderKind",
    "EncoderOutput",
    "MLPCritic",
    "MLPEncoder",
    "NetworkSpec",
    "TokenLayout",
    "TransformerBlock",
    "flat_to_tokens",
    "make_critic",
    "make_encoder",
    "masked_softmax",
    "tokens_to_flat",
    "twin_q_heads",
]

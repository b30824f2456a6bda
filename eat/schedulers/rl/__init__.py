"""Learned schedulers: soft actor-critic with attention or MLP encoders and diffusion or
Gaussian actors.

Agents (``train.agents`` in ``params.yaml``):

| agent | encoder | actor |
|---|---|---|
| ``eat`` | attention over task and server tokens | diffusion (DDPM chain + Gaussian head) |
| ``d2sac`` | MLP on the flattened observation | diffusion |
| ``sac`` | MLP on the flattened observation | squashed Gaussian |

Modules: :mod:`~eat.schedulers.rl.sac` (hyperparameters, replay buffer, n-step returns,
update), :mod:`~eat.schedulers.rl.networks` (encoders, critics, token layout),
:mod:`~eat.schedulers.rl.actors`, :mod:`~eat.schedulers.rl.diffusion` (noise schedule and
denoiser), :mod:`~eat.schedulers.rl.agent` (the scheduler interface and checkpoints).
Torch is imported by these modules only, so heuristics-only use stays light.
"""

from __future__ import annotations

AGENTS: dict[str, dict[str, str]] = {
    "eat": {"encoder": "attention", "actor": "diffusion"},
    "d2sac": {"encoder": "mlp", "actor": "diffusion"},
    "sac": {"encoder": "mlp", "actor": "gaussian"},
}
"""Encoder and actor of each named agent."""

__all__ = ["AGENTS"]

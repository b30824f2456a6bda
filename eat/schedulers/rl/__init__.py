"""Learned schedulers: soft actor-critic with attention or MLP encoders and diffusion or
Gaussian actors.

Agents (``train.agents`` in ``params.yaml``):

| agent | encoder | actor |
|---|---|---|
| ``eat`` | attention over task and server tokens | diffusion (DDPM chain + Gaussian head) |
| ``d2sac`` | MLP on the flattened observation | diffusion |
| ``sac`` | MLP on the flattened observation | squashed Gaussian |

Beside them, the third-party learners :data:`SB3_AGENTS` (stable-baselines3 PPO and
sb3-contrib MaskablePPO, MLP policies) train through the same environment.

Modules: :mod:`~eat.schedulers.rl.sac` (hyperparameters, replay buffer, n-step returns,
update), :mod:`~eat.schedulers.rl.networks` (encoders, critics, token layout),
:mod:`~eat.schedulers.rl.actors`, :mod:`~eat.schedulers.rl.diffusion` (noise schedule and
denoiser), :mod:`~eat.schedulers.rl.agent` (the scheduler interface and checkpoints),
:mod:`~eat.schedulers.rl.sb3` (the third-party learners' policies as schedulers).
Torch is imported by these modules only, so heuristics-only use stays light.
"""

from __future__ import annotations

AGENTS: dict[str, dict[str, str]] = {
    "eat": {"encoder": "attention", "actor": "diffusion"},
    "d2sac": {"encoder": "mlp", "actor": "diffusion"},
    "sac": {"encoder": "mlp", "actor": "gaussian"},
}
"""Encoder and actor of each named agent."""

SB3_AGENTS: dict[str, str] = {"ppo": "PPO", "maskable_ppo": "MaskablePPO"}
"""Third-party learners trained through the package's environments, by algorithm:
stable-baselines3 PPO on ``eat/EdgeCluster-v3``, sb3-contrib MaskablePPO on its discrete
view ``eat/EdgeClusterDiscrete-v3`` (:mod:`eat.training.sb3`,
:mod:`~eat.schedulers.rl.sb3`)."""

LEARNED_AGENTS: tuple[str, ...] = (*AGENTS, *SB3_AGENTS)
"""Every learned agent: evaluated from the ``train`` stage's models, one per training seed."""

__all__ = ["AGENTS", "LEARNED_AGENTS", "SB3_AGENTS"]

"""Trained agents as schedulers, and their checkpoints.

A checkpoint is a folder: ``config.json`` (the agent's name, preset, every
hyperparameter of :class:`~eat.schedulers.rl.sac.SACConfig`, the observation shapes it was
trained on and the package versions) next to ``actor.pt`` (the actor's weights).
:func:`load_actor` rebuilds the actor from the config alone, so a checkpoint is
self-describing (diffusers' ``register_to_config``). The resumable training state
(critics, optimisers, replay buffer, random states) is a separate ``resume.pt`` written
by :mod:`eat.train`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from eat.params import SACConfig
from eat.schedulers.policy import PolicyScheduler
from eat.schedulers.rl.actors import DiffusionActor, GaussianActor
from eat.schedulers.rl.sac import build_actor
from eat.sim.encoding import N_FEATURES, Encoder
from eat.sim.simulator import Simulator

CHECKPOINT_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "actor.pt"


def save_actor(
    directory: Path,
    actor: torch.nn.Module,
    config: SACConfig,
    shapes: dict[str, int],
    *,
    agent: str,
    preset: str,
    extra: dict | None = None,
) -> None:
    """Write ``config.json`` and ``actor.pt`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "format": CHECKPOINT_FORMAT,
        "agent": agent,
        "preset": preset,
        "sac": config.model_dump(),
        "shapes": shapes,
        "versions": {"torch": torch.__version__},
        **(extra or {}),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    state = {name: tensor.detach().cpu() for name, tensor in actor.state_dict().items()}
    torch.save(state, directory / WEIGHTS_FILE)


def load_actor(directory: Path, device: str = "cpu") -> tuple[GaussianActor | DiffusionActor, dict]:
    """Rebuild the actor from ``config.json`` and load ``actor.pt`` (eval mode)."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}: not an eat checkpoint")
    record = json.loads(config_path.read_text())
    if record.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{config_path}: checkpoint format {record.get('format')!r} is not supported; "
            f"expected {CHECKPOINT_FORMAT}"
        )
    config = SACConfig.model_validate({**record["sac"], "device": device})
    actor = build_actor(config, record["shapes"]).to(device)
    state = torch.load(directory / WEIGHTS_FILE, map_location=device, weights_only=True)
    actor.load_state_dict(state)
    actor.eval()
    return actor, record


class RLScheduler(PolicyScheduler):
    """A trained actor behind the :class:`Scheduler` interface.

    ``decide`` observes the simulator exactly as the Gymnasium environment does
    (:class:`~eat.sim.encoding.Encoder`), runs the actor deterministically (the
    diffusion chain's mean path, ``a = tanh(mu)``) and decodes the action, so every
    evaluation runs it through :func:`eat.evaluation.runner.run_episode` like a heuristic.
    """

    def __init__(
        self,
        actor: torch.nn.Module,
        name: str = "rl",
        device: str = "cpu",
        *,
        trained_on: str | None = None,
    ) -> None:
        self.actor = actor.eval()
        self.device = device
        self.trained_on = trained_on
        """The preset the actor was trained on (for error messages)."""
        super().__init__(self._deterministic_action, name)

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        super().reset(sim, rng)
        self.check_fits(self.encoder(sim))

    def check_fits(self, encoder: Encoder) -> None:
        """Refuse an observation the network cannot read: any encoder needs the column
        count it was trained with (it grows with the number of models); an MLP encoder
        also needs the same number of tokens (queue window + servers + 1)."""
        config = self.actor.encoder.config
        trained_models = config["in_features"] - N_FEATURES
        fixed_tokens = "n_tokens" in config  # the MLP encoder reads a flat vector
        fits = config["in_features"] == encoder.n_features and (
            not fixed_tokens or config["n_tokens"] == encoder.n_tokens
        )
        if fits:
            return
        where = f" on preset {self.trained_on!r}" if self.trained_on else ""
        trained = f"{trained_models} model(s)"
        if fixed_tokens:
            trained += f" and {config['n_tokens']} tokens (queue window + servers + 1)"
        kind = "an MLP encoder (a fixed input size)" if fixed_tokens else "an attention encoder"
        raise ValueError(
            f"scheduler {self.name!r} has {kind} trained{where} for {trained}; this "
            f"simulator has {len(encoder.models)} model(s) and {encoder.n_tokens} tokens "
            f"(window {encoder.window} + {encoder.n_server_tokens} "
            f"{'server groups' if encoder.pooled else 'servers'} + 1). "
            + (
                "Use an attention agent (eat), which reads any cluster size, or train on "
                "this cluster."
                if fixed_tokens
                else "Train on a preset with the same models."
            )
        )

    def _deterministic_action(self, observation: np.ndarray, mask: np.ndarray) -> np.ndarray:
        obs = torch.from_numpy(observation).to(self.device).unsqueeze(0)
        with torch.inference_mode():
            out = self.actor(obs, None, deterministic=True)
        return out.action[0].cpu().numpy()


def load_scheduler(directory: Path, name: str | None = None, device: str = "cpu") -> RLScheduler:
    """A checkpoint as a scheduler (named after its agent unless ``name`` is given)."""
    actor, record = load_actor(directory, device)
    return RLScheduler(actor, name or record["agent"], device, trained_on=record.get("preset"))


__all__ = [
    "CHECKPOINT_FORMAT",
    "RLScheduler",
    "build_actor",
    "load_actor",
    "load_scheduler",
    "save_actor",
]

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
from typing import ClassVar

import numpy as np
import torch

from eat.params import SACConfig
from eat.schedulers.base import Scheduler
from eat.schedulers.rl.actors import DiffusionActor, GaussianActor
from eat.schedulers.rl.sac import build_actor
from eat.sim.encoding import Encoder
from eat.sim.simulator import Dispatch, Simulator

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


class RLScheduler(Scheduler):
    """A trained actor behind the :class:`Scheduler` interface.

    ``decide`` observes the simulator exactly as the Gymnasium environment does
    (:class:`~eat.sim.encoding.Encoder`), runs the actor deterministically (the
    diffusion chain's mean path, ``a = tanh(mu)``) and decodes the action, so every
    evaluation runs it through :func:`eat.evaluation.runner.run_episode` like a heuristic.
    """

    name: ClassVar[str] = "rl"

    def __init__(self, actor: torch.nn.Module, name: str = "rl", device: str = "cpu") -> None:
        self.actor = actor.eval()
        self.name = name  # type: ignore[misc]
        self.device = device
        self._encoder: Encoder | None = None

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        self.rng = rng
        self._encoder = Encoder(sim)

    def action(self, sim: Simulator) -> np.ndarray:
        """The deterministic flat action at the current decision epoch."""
        if self._encoder is None or self._encoder.sim is not sim:
            self._encoder = Encoder(sim)
        obs = torch.from_numpy(self._encoder.observe()).to(self.device).unsqueeze(0)
        with torch.inference_mode():
            out = self.actor(obs, None, deterministic=True)
        return out.action[0].cpu().numpy()

    def decide(self, sim: Simulator) -> Dispatch | None:
        action = self.action(sim)
        assert self._encoder is not None
        return self._encoder.decode(action)


def load_scheduler(directory: Path, name: str | None = None, device: str = "cpu") -> RLScheduler:
    """A checkpoint as a scheduler (named after its agent unless ``name`` is given)."""
    actor, record = load_actor(directory, device)
    return RLScheduler(actor, name or record["agent"], device)


__all__ = [
    "CHECKPOINT_FORMAT",
    "RLScheduler",
    "build_actor",
    "load_actor",
    "load_scheduler",
    "save_actor",
]

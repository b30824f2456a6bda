"""Trained agents as schedulers, and their checkpoints.

A checkpoint is a folder: ``config.json`` (the agent's name, preset, every
hyperparameter of :class:`~eat.schedulers.rl.sac.SACConfig`, the observation shapes it was
trained on and the package versions) next to ``actor.pt`` (the actor's weights).
How the actor's actions become dispatches (``completion`` of
:class:`~eat.params.SACConfig`) is part of the config, so a checkpoint decides alike
wherever it is loaded.
:func:`load_actor` rebuilds the actor from the config alone, so a checkpoint is
self-describing (diffusers' ``register_to_config``). The resumable training state
(critics, optimisers, replay buffer, random states) is a separate ``resume.pt`` written
by :mod:`eat.train`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from eat.params import CompletionName, SACConfig
from eat.schedulers.policy import PolicyScheduler, make_completion
from eat.schedulers.rl.actors import DiffusionActor, GaussianActor
from eat.schedulers.rl.sac import build_actor
from eat.sim.encoding import N_FEATURES, server_token_count
from eat.sim.simulator import Simulator

if TYPE_CHECKING:
    from eat.schedulers.rl.sb3 import Sb3Scheduler

CHECKPOINT_FORMAT = 2
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
    (:class:`~eat.sim.encoding.Encoder`, with the model slots the actor was built for and
    the identity slot assignment), runs the actor deterministically (the diffusion
    chain's mean path, ``a = tanh(mu)``) and decodes the action, completed as the actor
    was trained (``completion``: :func:`~eat.schedulers.policy.make_completion`), so every
    evaluation runs it through :func:`eat.evaluation.runner.run_episode` like a heuristic.
    """

    def __init__(
        self,
        actor: torch.nn.Module,
        name: str = "rl",
        device: str = "cpu",
        *,
        trained_on: str | None = None,
        completion: CompletionName = "learned",
    ) -> None:
        self.actor = actor.eval()
        self.device = device
        self.trained_on = trained_on
        """The preset the actor was trained on (for error messages)."""
        config = self.actor.encoder.config
        super().__init__(
            self._deterministic_action,
            name,
            model_slots=config["in_features"] - N_FEATURES,
            completion=make_completion(completion),
        )
        self.completion_name = completion

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        problem = self.misfit(sim)
        if problem is not None:
            raise ValueError(problem)
        super().reset(sim, rng)

    def misfit(self, sim: Simulator) -> str | None:
        """Why the network cannot read ``sim``'s observation, or None when it can: any
        encoder reads at most as many models as it has model slots; an MLP encoder also
        needs the same number of tokens (queue window + servers + 1)."""
        config = self.actor.encoder.config
        fixed_tokens = "n_tokens" in config  # the MLP encoder reads a flat vector
        n_models = len(sim.preset.models)
        n_server_tokens = server_token_count(sim)
        server_tokens = "server groups" if sim.preset.server_tokens == "per_group" else "servers"
        n_tokens = sim.preset.queue_window + n_server_tokens + 1
        assert self.model_slots is not None  # set from the network in __init__
        fits = n_models <= self.model_slots and (
            not fixed_tokens or config["n_tokens"] == n_tokens
        )
        if fits:
            return None
        where = f" on preset {self.trained_on!r}" if self.trained_on else ""
        trained = f"{self.model_slots} model slot(s)"
        if fixed_tokens:
            trained += f" and {config['n_tokens']} tokens (queue window + servers + 1)"
        kind = "an MLP encoder (a fixed input size)" if fixed_tokens else "an attention encoder"
        advice = (
            "Use an attention agent (eat), which reads any cluster size, or train on this "
            "cluster."
            if fixed_tokens and config["n_tokens"] != n_tokens
            else "Train with at least as many model slots (model_slots of the preset)."
        )
        return (
            f"scheduler {self.name!r} has {kind} trained{where} for {trained}; this "
            f"simulator has {n_models} model(s) and {n_tokens} tokens (window "
            f"{sim.preset.queue_window} + {n_server_tokens} {server_tokens} + 1). {advice}"
        )

    def _deterministic_action(self, observation: np.ndarray, mask: np.ndarray) -> np.ndarray:
        obs = torch.from_numpy(observation).to(self.device).unsqueeze(0)
        with torch.inference_mode():
            out = self.actor(obs, None, deterministic=True)
        return out.action[0].cpu().numpy()


def load_scheduler(
    directory: Path, name: str | None = None, device: str = "cpu"
) -> RLScheduler | Sb3Scheduler:
    """A checkpoint as a scheduler (named after its agent unless ``name`` is given): an
    ``eat`` actor, or a third-party learner's policy (:mod:`eat.schedulers.rl.sb3`)."""
    config_path = Path(directory) / CONFIG_FILE
    if config_path.is_file():
        from eat.schedulers.rl.sb3 import is_sb3_checkpoint, load_sb3_scheduler

        if is_sb3_checkpoint(json.loads(config_path.read_text())):
            return load_sb3_scheduler(directory, name, device)
    actor, record = load_actor(directory, device)
    return RLScheduler(
        actor,
        name or record["agent"],
        device,
        trained_on=record.get("preset"),
        completion=record["sac"]["completion"],
    )


__all__ = [
    "CHECKPOINT_FORMAT",
    "RLScheduler",
    "build_actor",
    "load_actor",
    "load_scheduler",
    "save_actor",
]

"""The third-party learners' policies (stable-baselines3 PPO, sb3-contrib MaskablePPO) as
schedulers, and their checkpoints.

A checkpoint is a folder: ``config.json`` (the agent's name, preset, algorithm, its
hyperparameters, the observation shape, the *action view*: the continuous action's size,
or the discrete action table of :mod:`eat.sim.discrete`, and the package versions) next to
``policy.pt`` (the policy's state dict: shared MLP, action head, value head, and the log
standard deviation of the continuous policy). :func:`load_sb3_policy` rebuilds the policy
from the config alone and loads the weights without unpickling code (sb3's own ``.zip``
pickles its spaces and schedules and stamps the time of saving into the archive, so its
bytes change from run to run; these files depend on the training seed only).

:class:`Sb3Scheduler` decides exactly as the policy acted in training: the environment's
observation (:class:`~eat.sim.encoding.Encoder`), the deterministic action
(``policy.predict(..., deterministic=True)``), then the environment's decoding: the
continuous env's :meth:`~eat.sim.encoding.Encoder.decode`, or the discrete table's
:meth:`~eat.sim.discrete.DiscreteActions.dispatch` with the action masks applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import sb3_contrib
import stable_baselines3
import torch
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import ConstantSchedule

from eat.schedulers.base import Scheduler
from eat.sim.discrete import DiscreteActions
from eat.sim.encoding import SLACK_CLIP, Encoder
from eat.sim.env import OBSERVATION_HIGH
from eat.sim.simulator import Dispatch, Simulator

SB3_CHECKPOINT_FORMAT = 1
CONFIG_FILE = "config.json"
POLICY_FILE = "policy.pt"
POLICY_CLASSES: dict[str, type[ActorCriticPolicy]] = {
    "PPO": ActorCriticPolicy,
    "MaskablePPO": MaskableActorCriticPolicy,
}
"""The policy class of each algorithm (the ``MlpPolicy`` of each library)."""


def observation_space(shape: tuple[int, int]) -> gym.spaces.Box:
    """The observation space of ``eat/EdgeCluster-v3`` for a token grid of ``shape``."""
    return gym.spaces.Box(-SLACK_CLIP, OBSERVATION_HIGH, shape, np.float32)


def action_space(view: dict[str, Any]) -> gym.spaces.Space:
    """The action space of an action view (module docstring)."""
    if view["kind"] == "continuous":
        return gym.spaces.Box(-1.0, 1.0, (view["size"],), np.float32)
    if view["kind"] == "discrete":
        return gym.spaces.Discrete(view["n"])
    raise ValueError(
        f"action view {view['kind']!r} is not supported; choose one of ['continuous', 'discrete']"
    )


def save_sb3_policy(
    directory: Path,
    state: dict[str, torch.Tensor],
    *,
    shapes: dict[str, int],
    agent: str,
    preset: str,
    algorithm: str,
    hyperparameters: dict[str, Any],
    action_view: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``config.json`` and ``policy.pt`` (the policy's ``state``) into ``directory``;
    ``shapes``: the observation's ``n_tokens`` and ``in_features``."""
    if algorithm not in POLICY_CLASSES:
        raise ValueError(
            f"algorithm {algorithm!r} is not supported; choose one of {sorted(POLICY_CLASSES)}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "format": SB3_CHECKPOINT_FORMAT,
        "agent": agent,
        "preset": preset,
        "algorithm": algorithm,
        "sb3": hyperparameters,
        "shapes": {"n_tokens": shapes["n_tokens"], "in_features": shapes["in_features"]},
        "action_view": action_view,
        "versions": {
            "torch": torch.__version__,
            "stable_baselines3": stable_baselines3.__version__,
            "sb3_contrib": sb3_contrib.__version__,
        },
        **(extra or {}),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    torch.save({name: t.detach().cpu() for name, t in state.items()}, directory / POLICY_FILE)


def is_sb3_checkpoint(record: dict[str, Any]) -> bool:
    """Whether a ``config.json`` record is one of :func:`save_sb3_policy`."""
    return record.get("algorithm") in POLICY_CLASSES


def load_sb3_policy(directory: Path, device: str = "cpu") -> tuple[ActorCriticPolicy, dict]:
    """Rebuild the policy from ``config.json`` and load ``policy.pt`` (eval mode)."""
    config_path = Path(directory) / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}: not a checkpoint")
    record = json.loads(config_path.read_text())
    if not is_sb3_checkpoint(record) or record.get("format") != SB3_CHECKPOINT_FORMAT:
        raise ValueError(
            f"{config_path}: algorithm {record.get('algorithm')!r}, format "
            f"{record.get('format')!r} is not a stable-baselines3 checkpoint of format "
            f"{SB3_CHECKPOINT_FORMAT} (algorithms {sorted(POLICY_CLASSES)})"
        )
    shapes = record["shapes"]
    policy = POLICY_CLASSES[record["algorithm"]](
        observation_space((shapes["n_tokens"], shapes["in_features"])),
        action_space(record["action_view"]),
        ConstantSchedule(0.0),  # builds the optimiser, which a loaded policy never steps
    ).to(device)
    state = torch.load(Path(directory) / POLICY_FILE, map_location=device, weights_only=True)
    policy.load_state_dict(state)
    policy.set_training_mode(False)
    return policy, record


class Sb3Scheduler(Scheduler):
    """A stable-baselines3 policy behind the :class:`Scheduler` interface (module
    docstring)."""

    def __init__(
        self,
        policy: ActorCriticPolicy,
        action_view: dict[str, Any],
        name: str,
        *,
        trained_on: str | None = None,
    ) -> None:
        self.policy = policy
        self.action_view = action_view
        self.name = name  # type: ignore[misc]  # an instance name, unlike the heuristics'
        self.trained_on = trained_on
        """The preset the policy was trained on (for error messages)."""
        self._encoder: Encoder | None = None
        self._actions: DiscreteActions | None = None

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        self.rng = rng
        self._bind(sim)

    def _views(self, sim: Simulator) -> tuple[Encoder, DiscreteActions | None, str | None]:
        """``sim``'s encoding and discrete table (None for ``ppo``), and why they do not
        match the policy's (None when they do)."""
        encoder = Encoder(sim)
        where = f" on preset {self.trained_on!r}" if self.trained_on else ""
        shape = (encoder.n_tokens, encoder.n_features)
        if shape != self.policy.observation_space.shape:
            return (
                encoder,
                None,
                f"scheduler {self.name!r} has an MLP policy trained{where} on observations of "
                f"shape {self.policy.observation_space.shape} (tokens: queue window + servers "
                f"+ 1, columns: 13 + models); this simulator's are {shape}. Train on this "
                "cluster, or use an attention agent (eat), which reads any cluster size.",
            )
        actions = None
        if self.action_view["kind"] == "discrete":
            actions = DiscreteActions(sim, self.action_view["steps_levels"])
            if actions.describe() != self.action_view:
                return (
                    encoder,
                    actions,
                    f"scheduler {self.name!r} was trained{where} on the discrete actions "
                    f"{self.action_view}; this simulator's are {actions.describe()}",
                )
        return encoder, actions, None

    def misfit(self, sim: Simulator) -> str | None:
        """Why the policy cannot read ``sim``'s observation or act on its discrete table,
        or None when it can: an MLP policy needs the observation shape it was trained on
        (tokens: queue window + servers + 1; columns: 13 + models), and MaskablePPO the
        same discrete table."""
        return self._views(sim)[2]

    def _bind(self, sim: Simulator) -> Encoder:
        """The encoding (and discrete table) of ``sim``, checked against the policy's
        (:meth:`misfit`)."""
        if self._encoder is not None and self._encoder.sim is sim:
            return self._encoder
        encoder, actions, problem = self._views(sim)
        if problem is not None:
            raise ValueError(problem)
        self._encoder, self._actions = encoder, actions
        return encoder

    def decide(self, sim: Simulator) -> Dispatch | None:
        encoder = self._bind(sim)
        observation = encoder.observe()
        if self._actions is None:
            action, _ = self.policy.predict(observation, deterministic=True)
            return encoder.decode(action)
        assert isinstance(self.policy, MaskableActorCriticPolicy)  # the discrete view's
        mask = self._actions.mask()
        action, _ = self.policy.predict(observation, deterministic=True, action_masks=mask)
        return self._actions.dispatch(int(action))


def load_sb3_scheduler(
    directory: Path, name: str | None = None, device: str = "cpu"
) -> Sb3Scheduler:
    """A checkpoint of :func:`save_sb3_policy` as a scheduler (named after its agent
    unless ``name`` is given)."""
    policy, record = load_sb3_policy(directory, device)
    return Sb3Scheduler(
        policy, record["action_view"], name or record["agent"], trained_on=record.get("preset")
    )


__all__ = [
    "POLICY_CLASSES",
    "SB3_CHECKPOINT_FORMAT",
    "Sb3Scheduler",
    "is_sb3_checkpoint",
    "load_sb3_policy",
    "load_sb3_scheduler",
    "observation_space",
    "save_sb3_policy",
]

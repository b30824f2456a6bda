"""Soft actor-critic, written to be read (CleanRL's ``sac_continuous_action.py`` layout).

One module holds the seeding block, the replay buffer, the
time-aware n-step returns and the update. The encoders, actors and critics it trains
live in :mod:`eat.schedulers.rl.networks` and :mod:`eat.schedulers.rl.actors`; the rollout
loop, validation and checkpoints in :mod:`eat.training.loop`; the hyperparameters
(:class:`eat.params.SACConfig`) are defined with the params schema.

Equations cited as in Haarnoja et al., "Soft Actor-Critic Algorithms and
Applications" (2018): soft Q target eq. (3), critic loss eq. (5), actor loss eq. (7),
temperature loss eq. (18).

**Time-aware discounting.** The environment decides at irregular simulated times
(``info["dt"]``: from a few milliseconds to minutes). A reward earned ``Delta t``
seconds after the decision being valued is discounted by
``gamma ** (Delta t / discount_time_s)``, and an n-step transition bootstraps with
``gamma ** ((t_{k+n} - t_k) / discount_time_s)``: a semi-MDP discount (Bradtke and Duff
1995), so that waiting is not free and dispatching several tasks at the same instant
is not discounted between them. A fixed per-decision discount would make the value of
an hour depend on how many decisions fall into it.
"""

from __future__ import annotations

import copy
import random
from collections import deque
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from eat.params import SACConfig
from eat.schedulers.rl.actors import DiffusionActor, GaussianActor, make_actor
from eat.schedulers.rl.networks import NetworkSpec, TokenLayout, make_critic
from eat.sim.encoding import N_GLOBAL_ACTIONS

EntropyMode = Literal["fixed", "learned"]
InitMode = Literal["scratch", "bc"]
DEMO_CLIP = 0.95


# ---------------------------------------------------------------------------
# Seeding: every source of randomness, in one place
# ---------------------------------------------------------------------------


def seed_everything(seed: int, device: str) -> np.random.Generator:
    """Seed python, torch (and cuda) and return the run's numpy generator; the
    environment is seeded by its first ``reset(seed=...)``."""
    random.seed(seed)
    torch.manual_seed(seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------
# Replay buffer and time-aware n-step returns
# ---------------------------------------------------------------------------


class BufferSamples(NamedTuple):
    obs: torch.Tensor
    mask: torch.Tensor
    """(B, A) float: 1 where the action slot matters."""
    action: torch.Tensor
    demo: torch.Tensor
    """(B, A): the teacher's action at this state (zeros where none)."""
    has_demo: torch.Tensor
    reward: torch.Tensor
    """n-step discounted (scaled) reward."""
    discount: torch.Tensor
    """gamma ** (elapsed / discount_time_s) from this state to the bootstrap state."""
    next_obs: torch.Tensor
    next_mask: torch.Tensor
    done: torch.Tensor
    """1 where the episode terminated within the n steps (no bootstrap)."""


class Transition(NamedTuple):
    obs: np.ndarray
    mask: np.ndarray
    action: np.ndarray
    demo: np.ndarray | None
    reward: float
    discount: float
    next_obs: np.ndarray
    next_mask: np.ndarray
    done: bool


class ReplayBuffer:
    """Fixed-capacity FIFO of n-step transitions in preallocated numpy arrays."""

    def __init__(
        self, capacity: int, obs_shape: tuple[int, ...], action_size: int, rng: np.random.Generator
    ) -> None:
        self.capacity = capacity
        self.rng = rng
        self.obs = np.zeros((capacity, *obs_shape), np.float32)
        self.next_obs = np.zeros((capacity, *obs_shape), np.float32)
        self.mask = np.zeros((capacity, action_size), np.float32)
        self.next_mask = np.zeros((capacity, action_size), np.float32)
        self.action = np.zeros((capacity, action_size), np.float32)
        self.demo = np.zeros((capacity, action_size), np.float32)
        self.has_demo = np.zeros(capacity, np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.discount = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, np.float32)
        self.position = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, transition: Transition) -> None:
        i = self.position
        self.obs[i] = transition.obs
        self.mask[i] = transition.mask
        self.action[i] = transition.action
        if transition.demo is None:
            self.demo[i] = 0.0
            self.has_demo[i] = 0.0
        else:
            self.demo[i] = np.clip(transition.demo, -DEMO_CLIP, DEMO_CLIP)
            self.has_demo[i] = 1.0
        self.reward[i] = transition.reward
        self.discount[i] = transition.discount
        self.next_obs[i] = transition.next_obs
        self.next_mask[i] = transition.next_mask
        self.done[i] = float(transition.done)
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, device: str) -> BufferSamples:
        if self.size == 0:
            raise ValueError("sample() from an empty replay buffer")
        index = self.rng.integers(0, self.size, size=batch_size)

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(array[index], device=device)

        return BufferSamples(
            tensor(self.obs),
            tensor(self.mask),
            tensor(self.action),
            tensor(self.demo),
            tensor(self.has_demo),
            tensor(self.reward),
            tensor(self.discount),
            tensor(self.next_obs),
            tensor(self.next_mask),
            tensor(self.done),
        )

    ARRAYS = (
        "obs",
        "next_obs",
        "mask",
        "next_mask",
        "action",
        "demo",
        "has_demo",
        "reward",
        "discount",
        "done",
    )

    def state_dict(self) -> dict:
        state = {name: getattr(self, name)[: self.size].copy() for name in self.ARRAYS}
        state.update(position=self.position, size=self.size, rng=self.rng.bit_generator.state)
        return state

    def load_state_dict(self, state: dict) -> None:
        for name in self.ARRAYS:
            getattr(self, name)[: state["size"]] = state[name]
        self.position, self.size = state["position"], state["size"]
        self.rng.bit_generator.state = state["rng"]


class NStepAccumulator:
    """Turns one-step experience into time-aware n-step transitions (module docstring).

    ``push`` the decision at simulated time ``time`` with its reward and the state it
    led to at ``next_time``; it returns the transitions that became complete."""

    def __init__(self, n_step: int, gamma: float, discount_time_s: float) -> None:
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        self.n_step, self.gamma, self.discount_time_s = n_step, gamma, discount_time_s
        self.pending: deque = deque()

    def discount(self, elapsed: float) -> float:
        return float(self.gamma ** (elapsed / self.discount_time_s))

    def _emit(self, next_obs, next_mask, next_time: float, done: bool) -> Transition:
        obs, mask, action, demo, _, start = self.pending[0]
        # 1. discounted sum of the rewards of the (up to) n decisions, each discounted
        #    by the simulated time from the first decision to its own
        reward = sum(self.discount(time - start) * r for *_, r, time in self.pending)
        # 2. bootstrap discount: time from the first decision to the bootstrap state
        discount = self.discount(next_time - start)
        self.pending.popleft()
        return Transition(obs, mask, action, demo, reward, discount, next_obs, next_mask, done)

    def push(
        self,
        obs: np.ndarray,
        mask: np.ndarray,
        action: np.ndarray,
        demo: np.ndarray | None,
        reward: float,
        time: float,
        next_obs: np.ndarray,
        next_mask: np.ndarray,
        next_time: float,
        terminated: bool,
        truncated: bool,
    ) -> list[Transition]:
        self.pending.append((obs, mask, action, demo, reward, time))
        ready = []
        if len(self.pending) == self.n_step:
            ready.append(self._emit(next_obs, next_mask, next_time, terminated))
        if terminated or truncated:
            while self.pending:  # truncation bootstraps, termination does not
                ready.append(self._emit(next_obs, next_mask, next_time, terminated))
        return ready


# ---------------------------------------------------------------------------
# The agent: networks, optimisers and the update
# ---------------------------------------------------------------------------


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error over the valid slots."""
    return ((prediction - target) ** 2 * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def decision_loss(
    mean: torch.Tensor, demo: torch.Tensor, mask: torch.Tensor, layout: TokenLayout
) -> torch.Tensor:
    """Per-sample imitation loss of the decision an action decodes to
    (:mod:`eat.sim.encoding`), on the pre-squash mean ``mean`` of the deployed action.

    The teacher's action vector ``demo`` (:meth:`~eat.sim.encoding.Encoder.encode`)
    names a decision: dispatch or wait (``demo[0] > 0``), the task slot (its largest
    slot value), the servers (positive server values), steps and gang size. Decoding
    takes the arg-max dispatchable slot and the top-scoring free servers, so squared
    error on those values spends capacity on exact scores that do not matter and misses
    the ranking that does. Here: a logistic loss on the gate; when the teacher
    dispatches, cross-entropy over the valid task slots, a logistic loss per valid
    server (chosen or not), and squared error on the squashed steps and gang values
    (their decoded value is a bin of them). ``mask`` marks the valid slots."""
    w = layout.window
    gate_target = (demo[:, 0] > 0).float()
    loss = F.binary_cross_entropy_with_logits(mean[:, 0], gate_target, reduction="none")
    slots = slice(N_GLOBAL_ACTIONS, N_GLOBAL_ACTIONS + w)
    slot_mask = mask[:, slots] > 0
    slot_logits = mean[:, slots].masked_fill(~slot_mask, -1e9)
    target_slot = demo[:, slots].masked_fill(~slot_mask, -2.0).argmax(-1)
    slot_loss = F.cross_entropy(slot_logits, target_slot, reduction="none")
    servers = slice(N_GLOBAL_ACTIONS + w, None)
    server_mask = mask[:, servers]
    server_loss = (
        F.binary_cross_entropy_with_logits(
            mean[:, servers], (demo[:, servers] > 0).float(), reduction="none"
        )
        * server_mask
    ).sum(-1) / server_mask.sum(-1).clamp(min=1.0)
    squashed = torch.tanh(mean[:, 1:N_GLOBAL_ACTIONS])
    value_loss = ((squashed - demo[:, 1:N_GLOBAL_ACTIONS]) ** 2 * mask[:, 1:N_GLOBAL_ACTIONS]).sum(
        -1
    )
    dispatched = gate_target * slot_mask.any(-1).float()
    return loss + dispatched * (slot_loss + server_loss + value_loss)


def build_actor(config: SACConfig, shapes: dict[str, int]) -> GaussianActor | DiffusionActor:
    """The actor that ``config`` describes, for observations of ``shapes`` (``n_tokens``,
    ``in_features``, ``action_size``): the one constructor used for training, checkpoints
    and evaluation."""
    return make_actor(
        NetworkSpec.of(config), shapes["n_tokens"], shapes["in_features"], shapes["action_size"]
    )


class SAC:
    """Actor, twin critics with targets and the temperature, and their updates."""

    def __init__(self, config: SACConfig, n_tokens: int, in_features: int, action_size: int):
        self.config = config
        self.device = config.device
        self.shapes = {"n_tokens": n_tokens, "in_features": in_features, "action_size": action_size}
        self.actor = build_actor(config, self.shapes).to(self.device)

        # Twin critics in one module (one state encoding, two Q heads) and its target copy.
        self.qf = make_critic(NetworkSpec.of(config), n_tokens, in_features, action_size).to(
            self.device
        )
        self.qf_target = copy.deepcopy(self.qf)
        for parameter in self.qf_target.parameters():
            parameter.requires_grad_(False)
        self.q_optimizer = torch.optim.Adam(self.qf.parameters(), lr=config.learning_rate)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.learning_rate)
        self.bc_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.bc_learning_rate)
        self.log_alpha = torch.tensor(
            float(np.log(config.alpha)), device=self.device, requires_grad=True
        )
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=config.learning_rate)
        self.n_updates = 0

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.exp().item())

    def update(self, batch: BufferSamples, *, train_actor: bool = True) -> dict[str, float]:
        """One SAC gradient step on a batch; returns the losses for logging.

        ``train_actor=False`` updates the critics only (policy evaluation of the
        current actor, used right after behaviour cloning)."""
        config = self.config
        layout = TokenLayout.of(batch.obs)
        alpha = self.log_alpha.exp().detach()
        # 1. soft Q target with the n-step, time-discounted return, eq. (3):
        #    y = R + (1 - done) * Gamma * (min_i Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi(s')
        with torch.no_grad():
            next_pi = self.actor(batch.next_obs, batch.next_mask)
            next_q1, next_q2 = self.qf_target(
                batch.next_obs, next_pi.action, batch.next_mask, layout
            )
            next_v = torch.min(next_q1, next_q2) - alpha * next_pi.log_prob
            target = batch.reward + (1 - batch.done) * batch.discount * next_v
        # 2. critic loss, eq. (5) (masked slots do not change the decision: Q ignores them)
        q1, q2 = self.qf(batch.obs, batch.action, batch.mask, layout)
        qf1_loss, qf2_loss = F.mse_loss(q1, target), F.mse_loss(q2, target)
        self.q_optimizer.zero_grad()
        (qf1_loss + qf2_loss).backward()
        self.q_optimizer.step()
        self.n_updates += 1
        logs = {
            "losses/qf1_loss": qf1_loss.item(),
            "losses/qf2_loss": qf2_loss.item(),
            "losses/qf_values": q1.mean().item(),
        }

        if train_actor and self.n_updates % config.policy_frequency == 0:
            # 3. actor loss, eq. (7): E[alpha log pi(a|s) - min_i Q_i(s, a)], a reparameterised
            #    (the state encoding of the just-updated critic enters as a constant)
            with torch.no_grad():
                state = self.qf.encode(batch.obs, layout)
            pi = self.actor(batch.obs, batch.mask)
            pi_q1, pi_q2 = self.qf.heads(state, pi.action, batch.mask, layout)
            q = torch.min(pi_q1, pi_q2)
            actor_loss = (alpha * pi.log_prob - q).mean()
            logs["losses/actor_loss"] = actor_loss.item()
            # 4. optional teacher term, scaled by mean |Q| as in TD3+BC (Fujimoto and Gu 2021)
            if config.bc_weight > 0 and batch.has_demo.sum() > 0:
                imitation = masked_mse(pi.action, batch.demo, batch.mask)
                imitation = (imitation * batch.has_demo).sum() / batch.has_demo.sum()
                actor_loss = actor_loss + config.bc_weight * q.abs().mean().detach() * imitation
                logs["losses/bc_loss"] = imitation.item()
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            # 5. temperature, eq. (18): J(alpha) = E[-alpha (log pi + target entropy)],
            #    target entropy = target_entropy_per_slot x valid action slots
            if config.entropy == "learned":
                target_entropy = config.target_entropy_per_slot * batch.mask.sum(-1)
                alpha_loss = (
                    -self.log_alpha.exp() * (pi.log_prob.detach() + target_entropy)
                ).mean()
                self.alpha_optimizer.zero_grad()
                alpha_loss.backward()
                self.alpha_optimizer.step()
                logs["losses/alpha_loss"] = alpha_loss.item()
            logs["losses/alpha"] = self.alpha
            logs["losses/log_prob"] = pi.log_prob.mean().item()

        # 6. Polyak averaging of the target critics
        with torch.no_grad():
            for p, p_target in zip(self.qf.parameters(), self.qf_target.parameters(), strict=True):
                p_target.mul_(1 - config.tau).add_(config.tau * p)
        return logs

    def bc_update(self, batch: BufferSamples) -> dict[str, float]:
        """Behaviour cloning on the labelled transitions (``config.bc_loss``): ``mse``
        fits the sampled action to the teacher's on the valid slots (demo targets
        clipped to +-0.95 so that tanh pre-activations stay finite); ``decision`` scores
        the deterministic action on the decision it decodes to (:func:`decision_loss`)."""
        weights = batch.has_demo
        if self.config.bc_loss == "decision":
            pi = self.actor(batch.obs, batch.mask, deterministic=True)
            per_sample = decision_loss(pi.mean, batch.demo, batch.mask, TokenLayout.of(batch.obs))
        else:
            pi = self.actor(batch.obs, batch.mask)
            per_sample = masked_mse(pi.action, batch.demo, batch.mask)
        loss = (per_sample * weights).sum() / weights.sum().clamp(min=1.0)
        self.bc_optimizer.zero_grad()
        loss.backward()
        self.bc_optimizer.step()
        return {"losses/bc_loss": loss.item()}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "qf": self.qf.state_dict(),
            "qf_target": self.qf_target.state_dict(),
            "q_optimizer": self.q_optimizer.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "bc_optimizer": self.bc_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "n_updates": self.n_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.qf.load_state_dict(state["qf"])
        self.qf_target.load_state_dict(state["qf_target"])
        self.q_optimizer.load_state_dict(state["q_optimizer"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.bc_optimizer.load_state_dict(state["bc_optimizer"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.n_updates = state["n_updates"]


__all__ = [
    "SAC",
    "BufferSamples",
    "EntropyMode",
    "InitMode",
    "NStepAccumulator",
    "ReplayBuffer",
    "SACConfig",
    "Transition",
    "masked_mse",
    "seed_everything",
]

"""Any policy over the environment's observations, as a :class:`~eat.schedulers.base.Scheduler`.

A policy trained on ``gymnasium.make("eat/EdgeCluster-v3")`` (by this package or any
other library) maps an observation and its action mask to an action. Wrapped in
:class:`PolicyScheduler`, it decides on a live :class:`~eat.sim.simulator.Simulator`
through the same encoding as the environment (:class:`~eat.sim.encoding.Encoder`:
``observe``, ``action_mask``, ``decode``), so :func:`eat.evaluation.runner.run_episode`
and ``sweep`` evaluate it on exactly the workloads, metrics and seeds of every other
scheduler::

    scheduler = PolicyScheduler(lambda obs, mask: model.predict(obs)[0], name="mine")
    result = run_episode(preset, scheduler, rate=0.5, seed=1000)

The observation has the preset's ``model_slots`` model columns unless ``model_slots``
says how many the policy was trained with (the identity slot assignment, as in every
evaluation). ``completion`` (a :data:`Completion`, such as
:class:`~eat.schedulers.heuristics.RewardCompletion`) rewrites each decoded dispatch,
for a policy trained to choose only when to dispatch and which task.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from eat.params import CompletionName
from eat.schedulers.base import Scheduler
from eat.schedulers.heuristics import RewardCompletion
from eat.sim.encoding import Encoder
from eat.sim.simulator import Dispatch, Simulator

Policy = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``policy(observation, action_mask) -> action`` in the environment's spaces."""

Completion = Callable[[Simulator, Dispatch], Dispatch]
"""``completion(sim, dispatch) -> dispatch``: the dispatch a decoded one becomes."""


def make_completion(name: CompletionName) -> Completion | None:
    """The completion called ``name`` (:attr:`eat.params.SACConfig.completion`); None
    for ``learned``, which executes the decoded dispatch as it is."""
    if name == "learned":
        return None
    if name == "immediate_reward":
        return RewardCompletion()
    raise ValueError(
        f"completion {name!r} is not supported; choose 'learned' or 'immediate_reward'"
    )


def decode_completed(
    encoder: Encoder, action: np.ndarray, completion: Completion | None
) -> Dispatch | None:
    """The dispatch ``action`` decodes to on ``encoder``'s simulator, rewritten by
    ``completion`` when there is one and the action dispatches (waiting stays waiting).
    Deployment (:class:`PolicyScheduler`) and training (the learner's own steps in
    :func:`eat.training.loop.train_run`) decide through this one function."""
    dispatch = encoder.decode(action)
    if dispatch is None or completion is None:
        return dispatch
    return completion(encoder.sim, dispatch)


class PolicyScheduler(Scheduler):
    """Decides with ``policy`` on the environment's observation (module docstring)."""

    def __init__(
        self,
        policy: Policy,
        name: str = "policy",
        *,
        model_slots: int | None = None,
        completion: Completion | None = None,
    ) -> None:
        self.policy = policy
        self.completion = completion
        self.name = name  # type: ignore[misc]  # an instance name, unlike the heuristics'
        self.model_slots = model_slots
        """Model columns of the policy's observations (None: the preset's)."""
        self._encoder: Encoder | None = None

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        self.rng = rng
        self._encoder = Encoder(sim, self.model_slots)

    def encoder(self, sim: Simulator) -> Encoder:
        """The encoding of ``sim`` (made on first use when ``reset`` was not called)."""
        if self._encoder is None or self._encoder.sim is not sim:
            self._encoder = Encoder(sim, self.model_slots)
        return self._encoder

    def action(self, sim: Simulator) -> np.ndarray:
        """The policy's action at the current decision epoch."""
        encoder = self.encoder(sim)
        return np.asarray(self.policy(encoder.observe(), encoder.action_mask()))

    def decide(self, sim: Simulator) -> Dispatch | None:
        return decode_completed(self.encoder(sim), self.action(sim), self.completion)

"""The discrete-action view of the environment: every decision as one of a fixed set of
actions, with a mask of those that can be applied now, for learners of discrete policies
(sb3-contrib's MaskablePPO reads ``action_masks()``).

The action table of a simulator (:class:`DiscreteActions`) has ``1 + window x gangs x
levels`` actions, a number fixed by the preset:

- action 0 waits for the next event;
- action ``1 + (slot * gangs + gang) * levels + level`` dispatches the task in visible
  queue slot ``slot`` (oldest first) on gang choice ``gang`` with ``steps_levels[level]``
  denoising steps; a task with steps of its own (a trace's request) runs with those at
  every level, as the continuous environment runs it whatever its steps value says.

Gang choices (:data:`GANG_RULES`): where the preset's placement rule chooses the servers
(``paper``: the task's own gang size on the reference rule's servers) there is one,
``reference``. Where the scheduler places (``edge``) there are two per allowed gang size
``k``, in the order of ``allowed_gang_sizes``:

- ``fastest``: the ``k`` fastest free servers that can hold the task's model (those
  holding it first on equal speed, then lower id);
- ``warm``: the ``k`` fastest free servers holding the model now (none if fewer hold it).

These are the two candidate gangs of :meth:`~eat.sim.placement.Placement.candidate_gangs`:
for any task, size and number of steps one of them is a shortest-duration gang, so the
table holds the best gang of every size (the greedy heuristic's search space, with the
steps on levels). Steps levels: ``steps_levels`` values evenly spaced from ``min_steps``
to ``max_steps``, both included, rounded (``env.discrete.steps_levels`` of
``params.yaml``).

An action is *feasible* (unmasked) when it can be applied now as exactly the dispatch it
names: waiting while an event is pending (as the continuous environment allows it); a
dispatch when its slot holds a task and its gang choice has a gang of free servers now
(the steps levels are always allowed). :meth:`DiscreteActions.dispatch` refuses any other
action with a :class:`MaskedActionError` that says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from eat import register_env
from eat.params import PresetConfig, load_params, repo_params_path
from eat.sim.env import EdgeClusterEnv
from eat.sim.placement import Gang
from eat.sim.simulator import Dispatch, Simulator
from eat.sim.workload import Task

GangRule = Literal["reference", "fastest", "warm"]
GANG_RULES: tuple[GangRule, ...] = ("fastest", "warm")
"""The gang choices per allowed size where the scheduler places (module docstring)."""
WAIT = 0
"""The action that waits for the next event."""


class MaskedActionError(ValueError):
    """A discrete action that cannot be applied now (it is masked)."""


def spaced_steps(preset: PresetConfig, count: int) -> tuple[int, ...]:
    """``count`` steps values evenly spaced over ``[min_steps, max_steps]``, both
    included, rounded to integers (distinct: ``count`` at most the range's size)."""
    span = preset.max_steps - preset.min_steps + 1
    if not 2 <= count <= span:
        raise ValueError(
            f"steps_levels must be in [2, {span}] (max_steps - min_steps + 1 of the preset: "
            f"steps {preset.min_steps}..{preset.max_steps}), got {count}"
        )
    values = np.rint(np.linspace(preset.min_steps, preset.max_steps, count)).astype(int)
    return tuple(int(value) for value in values)


@dataclass(frozen=True)
class GangChoice:
    """How a discrete action picks the servers of its task."""

    size: int | None
    """Gang size (servers); None: the task's own, where the placement rule fixes it."""
    rule: GangRule
    """``reference``: the placement rule's servers; ``fastest``, ``warm``: the module
    docstring's."""

    def __str__(self) -> str:
        return self.rule if self.size is None else f"{self.rule} gang of {self.size}"


@dataclass(frozen=True)
class ActionMeaning:
    """What a dispatching discrete action names (waiting is :data:`WAIT`)."""

    slot: int
    """Visible queue slot of the task (0: oldest)."""
    gang: GangChoice
    steps: int
    """Denoising steps."""

    def __str__(self) -> str:
        return f"slot {self.slot}, {self.gang}, {self.steps} steps"


class DiscreteActions:
    """The action table of one simulator (module docstring): its size, the mask of the
    feasible actions now, and the dispatch each names."""

    def __init__(self, sim: Simulator, levels: Sequence[int]) -> None:
        preset = sim.preset
        self.sim = sim
        self.window = preset.queue_window
        self.steps_levels = tuple(int(steps) for steps in levels)
        outside = [s for s in self.steps_levels if not preset.min_steps <= s <= preset.max_steps]
        if outside or len(set(self.steps_levels)) != len(self.steps_levels):
            raise ValueError(
                f"steps levels {list(self.steps_levels)} must be distinct values in "
                f"[{preset.min_steps}, {preset.max_steps}] (the preset's steps)"
            )
        if sim.placement.scheduler_places:
            self.gangs = tuple(
                GangChoice(size, rule) for size in sim.allowed_gang_sizes for rule in GANG_RULES
            )
        else:
            self.gangs = (GangChoice(None, "reference"),)
        self.n = 1 + self.window * len(self.gangs) * len(self.steps_levels)
        """Number of actions (wait included)."""

    # ------------------------------------------------------------------ the table
    def index(self, slot: int, gang: int, level: int) -> int:
        """The action of task slot ``slot``, gang choice ``gang`` and steps level ``level``
        (indices into ``gangs`` and ``steps_levels``)."""
        return 1 + (slot * len(self.gangs) + gang) * len(self.steps_levels) + level

    def meaning(self, action: int) -> ActionMeaning | None:
        """What ``action`` names (None: wait)."""
        action = self._checked(action)
        if action == WAIT:
            return None
        rest, level = divmod(action - 1, len(self.steps_levels))
        slot, gang = divmod(rest, len(self.gangs))
        return ActionMeaning(slot, self.gangs[gang], self.steps_levels[level])

    def _checked(self, action: Any) -> int:
        index = int(action)
        if index != action or not 0 <= index < self.n:
            raise ValueError(f"action {action!r} is not in Discrete({self.n})")
        return index

    # ------------------------------------------------------------------ gangs
    def _fastest_first(self, task: Task) -> list[int]:
        """The free servers that can hold the task's model: faster first, those holding
        it first on equal speed, then lower id (the order of ``candidate_gangs``)."""
        sim = self.sim
        free = sim.placement.capable(task, free_only=True)
        warm = dict(zip(free, sim.placement.warm(task, free), strict=True))
        return sorted(free, key=lambda i: (-sim.servers[i].speed, not warm[i], i))

    def gang(self, task: Task, choice: GangChoice) -> Gang | None:
        """The servers ``choice`` gives ``task`` now, or None if it gives none."""
        placement = self.sim.placement
        if choice.rule == "reference":
            (size,) = placement.gang_sizes(task)  # the rule fixes one size per task
            return placement.choose_servers(task, size, None)
        assert choice.size is not None  # the scheduler's rules name a size
        if choice.size not in placement.feasible_gang_sizes(task):
            return None
        order = self._fastest_first(task)
        if choice.rule == "warm":
            order = [i for i, warm in zip(order, placement.warm(task, order), strict=True) if warm]
            if len(order) < choice.size:
                return None
        return tuple(sorted(order[: choice.size]))

    # ------------------------------------------------------------------ mask and dispatch
    def mask(self) -> np.ndarray:
        """Which actions are feasible now (bool, one per action; module docstring)."""
        sim = self.sim
        mask = np.zeros(self.n, dtype=bool)
        mask[WAIT] = sim.next_event_time() is not None
        blocks = mask[1:].reshape(self.window, len(self.gangs), len(self.steps_levels))
        for slot, task in enumerate(sim.window()):
            for g, choice in enumerate(self.gangs):
                blocks[slot, g, :] = self.gang(task, choice) is not None
        return mask

    def problem(self, action: int) -> str | None:
        """Why ``action`` cannot be applied now (None: it can)."""
        sim = self.sim
        meaning = self.meaning(action)
        if meaning is None:
            if sim.next_event_time() is None:
                return "no event is pending, so waiting would never change anything"
            return None
        window = sim.window()
        if meaning.slot >= len(window):
            return f"task slot {meaning.slot} is empty (the visible queue holds {len(window)})"
        task = window[meaning.slot]
        if self.gang(task, meaning.gang) is not None:
            return None
        free = self.sim.placement.capable(task, free_only=True)
        holding = sum(sim.placement.warm(task, free))
        return (
            f"task {task.task_id} ({task.model}, gang sizes {sim.placement.gang_sizes(task)}) "
            f"has no {meaning.gang}: {len(free)} free servers can hold {task.model}, "
            f"{holding} of them hold it now"
        )

    def dispatch(self, action: int) -> Dispatch | None:
        """The dispatch ``action`` names (None: wait); :class:`MaskedActionError` if it
        cannot be applied now."""
        problem = self.problem(action)
        if problem is not None:
            raise MaskedActionError(
                f"action {action} ({self.meaning(action) or 'wait'}) is masked at "
                f"t={self.sim.now}: {problem}"
            )
        meaning = self.meaning(action)
        if meaning is None:
            return None
        task = self.sim.window()[meaning.slot]
        servers = self.gang(task, meaning.gang)
        assert servers is not None  # checked by problem()
        steps = meaning.steps if task.steps is None else task.steps
        return Dispatch(task.task_id, steps, servers)

    def describe(self) -> dict[str, Any]:
        """The table as plain data (saved with a policy trained on it)."""
        return {
            "kind": "discrete",
            "n": self.n,
            "window": self.window,
            "gangs": [{"size": g.size, "rule": g.rule} for g in self.gangs],
            "steps_levels": list(self.steps_levels),
        }


class EdgeClusterDiscreteEnv(EdgeClusterEnv):
    """The episodes of :class:`~eat.sim.env.EdgeClusterEnv` with a discrete action space.

    ## Description
    The same simulator, workloads, observation, reward and episode end as
    ``eat/EdgeCluster-v3``; only the action differs: a decision is one of a fixed table
    of dispatches (task slot x gang choice x steps level) or waiting
    (:mod:`eat.sim.discrete`). ``action_masks()`` says which are feasible now, as
    sb3-contrib's ``MaskablePPO`` expects.

    ## Action Space
    ``Discrete(1 + queue_window x gangs x steps_levels)``: 0 waits; ``1 + (slot * gangs
    + gang) * levels + level`` dispatches the task of queue slot ``slot`` on gang choice
    ``gang`` with ``steps_levels[level]`` steps. Gang choices: ``paper``, one (the
    reference rule's servers for the task's own size): ``Discrete(51)`` with 5 levels;
    ``edge``, ``fastest`` and ``warm`` per allowed size (8 for sizes 1, 2, 4, 8):
    ``Discrete(401)``. ``action_masks()`` (and ``info["action_mask"]``): a bool array,
    True for the actions that apply as exactly the dispatch they name; wait is True
    exactly when the continuous environment can wait (an event is pending).

    A masked action is a member of the action space, so :meth:`step` accepts it (as
    Gymnasium's API and its checkers expect of every ``action_space.sample()``) but
    refuses to apply it: nothing changes (same state and decision epoch, reward 0,
    ``info["dt"]`` 0) and ``info["refused"]`` says why. A scheduler that decides through
    the table (:meth:`DiscreteActions.dispatch`) gets a :class:`MaskedActionError`
    instead.

    ## Observation Space
    That of ``eat/EdgeCluster-v3`` (:class:`~eat.sim.env.EdgeClusterEnv`).

    ## Rewards
    That of ``eat/EdgeCluster-v3`` for an applied action; 0 for a refused one.

    ## Starting State
    That of ``eat/EdgeCluster-v3``: ``reset(seed=s)`` gives the workload of
    ``episode_rngs(s)``, the same as ``run_episode(..., seed=s)``.

    ## Episode End
    That of ``eat/EdgeCluster-v3``; refused actions count towards ``max_episode_steps``.

    ## Arguments
    Those of :class:`~eat.sim.env.EdgeClusterEnv`, and ``steps_levels`` (how many steps
    values; None: ``env.discrete.steps_levels`` of the params file).

    ## Version History
    - v3: the observation of ``eat/EdgeCluster-v3`` (a fixed number of model slots).
    - v2: initial version, over the v2 observation.
    """

    def __init__(
        self,
        preset: str | PresetConfig = "paper",
        rate: float | Sequence[float] = 0.05,
        params_path: str | None = None,
        steps_levels: int | None = None,
    ) -> None:
        if isinstance(preset, str) or steps_levels is None:
            params = load_params(params_path or repo_params_path())
            preset = params.env.preset(preset) if isinstance(preset, str) else preset
            steps_levels = (
                params.env.discrete.steps_levels if steps_levels is None else steps_levels
            )
        super().__init__(preset, rate)
        self.actions = DiscreteActions(self.sim, spaced_steps(preset, steps_levels))
        self.action_space = gym.spaces.Discrete(self.actions.n)

    def action_masks(self) -> np.ndarray:
        """The feasible actions now (class docstring); MaskablePPO calls it."""
        return self.actions.mask()

    def _info(self, **extra: Any) -> dict[str, Any]:
        return {**super()._info(**extra), "action_mask": self.action_masks()}

    def step(
        self, action: int | np.integer | np.ndarray
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.sim.done:
            raise RuntimeError("step() called after the episode terminated; call reset()")
        problem = self.actions.problem(action)
        if problem is not None:
            refused = f"action {int(action)} ({self.actions.meaning(action) or 'wait'}): {problem}"
            info = self._info(dt=0.0, dispatched=False, refused=refused)
            return self.encoder.observe(), 0.0, False, False, info
        return self.apply(self.actions.dispatch(action))


register_env()  # importing this module directly registers the id too

"""Rollout planning: a base heuristic improved by simulating what each candidate leads to.

At every decision epoch :class:`RolloutScheduler` (Bertsekas' rollout algorithm):

1. lists the candidate decisions: the base heuristic's own decision, the best
   ``candidates`` dispatches by immediate reward (every dispatchable task x candidate
   gang x steps, as :class:`~eat.schedulers.heuristics.GreedyScheduler` ranks them), and
   waiting for the next event when one is pending;
2. draws ``samples`` futures, the same for every candidate (common random numbers): the
   tasks that have not arrived yet (at most ``future_tasks`` of them), sampled from the
   preset's workload process at the episode's arrival rate (``rollout``: the real
   future stays unseen), or the episode's true future (``clairvoyant``), and a
   latency-noise stream per sample;
3. scores each candidate by the mean return of its continuations: a fork of the
   simulator (:meth:`~eat.sim.simulator.Simulator.fork`) applies the candidate, then the
   base heuristic decides until ``horizon`` dispatches (the candidate's own included)
   have been made; the return is the sum of the environment's rewards of those
   dispatches (:func:`eat.sim.reward.dispatch_reward`);
4. takes the best candidate; on a tie, the base's own decision.

Every candidate is scored over the same number of dispatches, so waiting is not
favoured by a shorter sum. Because the base's decision is always a candidate and the
continuations follow the base, the planner improves on the base as far as the sampled
continuations predict the real ones (the policy-improvement property of rollout).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from eat.params import Params, RolloutSettings, SchedulerSettings
from eat.schedulers.base import Scheduler
from eat.schedulers.heuristics import TimingCache, dispatch_table, make_scheduler
from eat.sim.simulator import Dispatch, Simulator
from eat.sim.workload import Task, sample_future_tasks

FUTURE_ID_OFFSET = 1_000_000
"""Sampled future tasks get ids from here on, apart from the episode's own."""


def best_dispatches(sim: Simulator, count: int, cache: TimingCache) -> list[Dispatch]:
    """The ``count`` dispatches with the highest immediate reward (ties: lower task id,
    fewer servers, fewer steps, as :class:`~eat.schedulers.heuristics.GreedyScheduler`)."""
    return dispatch_table(sim, sim.dispatchable(), cache).ranked(count)


class RolloutScheduler(Scheduler):
    """Rollout planning over a base heuristic (module docstring)."""

    name: ClassVar[str] = "rollout"

    def __init__(
        self,
        settings: SchedulerSettings,
        search: RolloutSettings,
        base: str,
        horizon: int,
        *,
        clairvoyant: bool = False,
        name: str | None = None,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1 dispatch, got {horizon}")
        self.settings = settings
        self.search = search
        self.horizon = horizon
        self.clairvoyant = clairvoyant
        if name is not None:
            self.name = name  # type: ignore[misc]  # the clairvoyant variant's own name
        self.base = make_scheduler(base, settings)
        self.continuation = make_scheduler(base, settings)
        self.cache = TimingCache()

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        self.rng = rng
        self.base.reset(sim, np.random.default_rng(rng.integers(2**63)))
        if not self.clairvoyant and sim.arrival_rate is None:
            raise ValueError(
                f"{self.name} samples future arrivals at the episode's arrival rate, but the "
                "simulator has none (reset it with arrival_rate=...)"
            )

    # -- candidates and futures ----------------------------------------------------------
    def candidates(self, sim: Simulator) -> list[Dispatch | None]:
        """Step 1 of the module docstring; the base's decision first."""
        own = self.base.decide(sim)
        found: list[Dispatch | None] = [own]
        for dispatch in best_dispatches(sim, self.search.candidates, self.cache):
            if dispatch not in found:
                found.append(dispatch)
        if sim.next_event_time() is not None and None not in found:
            found.append(None)
        return found

    def futures(self, sim: Simulator) -> list[tuple[list[Task] | None, int]]:
        """Step 2: (the tasks that have not arrived, or None to keep the true ones; a
        seed of the continuation's noise and base decisions) per sample."""
        draws = []
        remaining = len(sim.tasks) - sim.n_arrived
        if self.search.future_tasks is not None:
            remaining = min(remaining, self.search.future_tasks)
        for _ in range(self.search.samples):
            seed = int(self.rng.integers(2**63))
            if self.clairvoyant:
                draws.append((None, seed))
                continue
            rate = sim.arrival_rate
            assert rate is not None  # checked in reset
            tasks = sample_future_tasks(
                sim.preset.workload,
                rate,
                sim.now,
                remaining,
                FUTURE_ID_OFFSET + sim.n_arrived,
                np.random.default_rng(seed),
                sim.nominal_latency,
                sim.standalone_latency,
            )
            draws.append((tasks, seed))
        return draws

    def rollout_return(
        self, sim: Simulator, first: Dispatch | None, future: list[Task] | None, seed: int
    ) -> float:
        """Step 3: the return of ``first`` followed by the base, on one future."""
        fork = sim.fork(records=False)
        if future is not None:
            fork.replace_future_arrivals(future)
        noise, decisions = np.random.SeedSequence(seed).spawn(2)
        if fork.rng is not None and not self.clairvoyant:
            fork.rng = np.random.default_rng(noise)
        self.continuation.reset(fork, np.random.default_rng(decisions))
        total, dispatches = 0.0, 0
        if first is None:
            ongoing = fork.wait()
        else:
            total += fork.dispatch(first).reward
            dispatches += 1
            ongoing = fork.advance()
        while ongoing and dispatches < self.horizon:
            decision = self.continuation.decide(fork)
            if decision is None:
                ongoing = fork.wait()
            else:
                total += fork.dispatch(decision).reward
                dispatches += 1
                ongoing = fork.advance()
        return total

    def decide(self, sim: Simulator) -> Dispatch | None:
        options = self.candidates(sim)
        if len(options) == 1:
            return options[0]
        futures = self.futures(sim)
        best, best_score = options[0], -math.inf
        for option in options:  # the base's decision first: it wins ties
            score = float(
                np.mean([self.rollout_return(sim, option, tasks, seed) for tasks, seed in futures])
            )
            if score > best_score + 1e-9:
                best, best_score = option, score
        return best


def planner_for(
    name: str, settings: SchedulerSettings, search: RolloutSettings, preset: str
) -> RolloutScheduler:
    """The planner ``name`` (``rollout`` or ``clairvoyant``) with the search settings
    ``search`` (``planners.<name>``) on ``preset``: its base heuristic and horizon for it."""
    if preset not in search.base:
        raise ValueError(
            f"planners.{name}.base has no heuristic for preset {preset!r}; it has {sorted(search.base)}"
        )
    return RolloutScheduler(
        settings,
        search,
        search.base[preset],
        search.horizon_for(preset),
        clairvoyant=name == "clairvoyant",
        name=name,
    )


def make_planner(name: str, params: Params, preset: str) -> RolloutScheduler:
    """``rollout`` or ``clairvoyant`` with the settings of ``params.planners``."""
    if name not in ("rollout", "clairvoyant"):
        raise ValueError(
            f"planner {name!r} is not supported; choose one of ['clairvoyant', 'rollout']"
        )
    search: RolloutSettings = getattr(params.planners, name)
    return planner_for(name, params.schedulers, search, preset)

"""The one interface every scheduler implements, heuristic or learned."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from eat.sim.simulator import Dispatch, Simulator


class Scheduler(ABC):
    """Decides, at each decision epoch of a :class:`Simulator`, what to start.

    ``decide`` returns a :class:`Dispatch` (task, steps and, on the edge preset, the
    servers) or ``None`` to wait until the next event. It may read any state of the
    simulator (queue window, servers, residency, ``preview`` of a dispatch) but must
    not change it. All randomness comes from the generator given to ``reset``.
    """

    name: ClassVar[str]

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        """Called at the start of every episode."""
        self.rng = rng

    @abstractmethod
    def decide(self, sim: Simulator) -> Dispatch | None:
        """The decision at the current epoch (``sim.has_decision()`` is True)."""

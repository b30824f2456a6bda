"""Steps-to-quality curves.

The default, ``eat_reference``, is the curve of the EAT authors' public simulator
(zzf1955/EAT, "EAT Simu"; see shared/reference/eat_reference_model.md):
q(s) = 0 for s < 5, 0.16 * log6(s) - 0.02 for 5 <= s <= 30, and 0.27 above 30.
It drops past 30 steps (q(30) = 0.2837 > 0.27), which we keep to reproduce the
paper setting exactly.
"""

from __future__ import annotations

import math

from eat.params import QualityConfig


class QualityCurve:
    """Image quality as a function of the number of denoising steps."""

    def __init__(self, config: QualityConfig, max_steps: int) -> None:
        self.config = config
        # Tabulate once: schedulers query quality thousands of times per episode.
        self._table = [self._evaluate(steps) for steps in range(max_steps + 1)]

    def _evaluate(self, steps: int) -> float:
        if self.config.curve == "eat_reference":
            if steps < 5:
                return 0.0
            if steps <= 30:
                return 0.16 * math.log(steps, 6) - 0.02
            return 0.27
        if self.config.curve == "saturating":
            return self.config.q_max * (1.0 - math.exp(-steps / self.config.tau))
        raise ValueError(
            f"quality curve {self.config.curve!r} is not supported; choose one of "
            "['eat_reference', 'saturating']"
        )

    @property
    def table(self) -> list[float]:
        """``table[s]`` is the quality of ``s`` steps, up to the preset's max_steps."""
        return self._table

    def __call__(self, steps: int) -> float:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if steps < len(self._table):
            return self._table[steps]
        return self._evaluate(steps)

    def fewest_steps_reaching(self, target: float, min_steps: int, max_steps: int) -> int:
        """Fewest steps in [min_steps, max_steps] with quality >= target (else the best)."""
        best = max(range(min_steps, max_steps + 1), key=self.__call__)
        for steps in range(min_steps, max_steps + 1):
            if self(steps) >= target:
                return steps
        return best

"""The simulator's one error type (SimPy's habit: misuse raises, with the bad value)."""


class SimulationError(RuntimeError):
    """The simulator was misused (an invalid dispatch, waiting with nothing to wait for)."""

"""Schedulers: one interface (:class:`Scheduler`) for heuristics and learned agents."""

from eat.schedulers.base import Scheduler
from eat.schedulers.heuristics import (
    SCHEDULERS,
    EarliestFinishTimeScheduler,
    EdfScheduler,
    FifoScheduler,
    FirstFitScheduler,
    GreedyScheduler,
    RandomScheduler,
    WarmFirstScheduler,
    make_scheduler,
)

__all__ = [
    "SCHEDULERS",
    "EarliestFinishTimeScheduler",
    "EdfScheduler",
    "FifoScheduler",
    "FirstFitScheduler",
    "GreedyScheduler",
    "RandomScheduler",
    "Scheduler",
    "WarmFirstScheduler",
    "make_scheduler",
]

"""Schedulers: one interface (:class:`Scheduler`) for heuristics and learned agents."""

from eat.agents.base import Scheduler

__all__ = ["Scheduler"]

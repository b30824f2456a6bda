"""Evaluation: run schedulers on seeded workloads and compare them.

:mod:`~eat.evaluation.runner` (one episode, sweeps, the warm floor),
:mod:`~eat.evaluation.metrics` (episode metrics, bootstrap intervals, DVC metrics,
reduction tables), :mod:`~eat.evaluation.trained` (trained agents: every training seed
on every test seed, crossed bootstrap), :mod:`~eat.evaluation.figures`.
"""

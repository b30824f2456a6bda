"""Simulator speed, on one core: tasks per second through the Gymnasium API (random
valid actions); through the raw simulator with every heuristic (the episode loop of
:func:`eat.evaluation.runner.simulate` on workloads drawn beforehand: no Gymnasium
wrapper, no workload generation, no pandas frames); and the cost of
:meth:`~eat.sim.simulator.Simulator.fork` in the middle of an episode, for both presets.

Run: ``python benchmarks/sim_speed.py [--seconds 5]``. It writes
``benchmarks/results/sim_speed.json`` (``--out`` elsewhere) and ends with
``RESULT edge_raw_first_fit_tasks_per_s=<n>`` and, last,
``RESULT edge_raw_greedy_tasks_per_s=<n>``. For scale: the reference implementation
(zzf1955/EAT) steps time in 0.1 s ticks, about 150 environment steps per task.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from eat.benchmarking import report
from eat.evaluation.runner import scheduler_rng, simulate
from eat.params import load_params, repo_params_path
from eat.schedulers import SCHEDULERS, make_scheduler
from eat.sim.encoding import N_GLOBAL_ACTIONS
from eat.sim.env import EdgeClusterEnv
from eat.sim.simulator import Simulator, episode_rngs, make_tasks


def random_valid_action(mask: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform values, always dispatching, with one valid task slot chosen uniformly."""
    action = rng.uniform(-1.0, 1.0, mask.shape[0]).astype(np.float32)
    action[0] = 1.0
    task_slots = np.flatnonzero(mask[N_GLOBAL_ACTIONS : N_GLOBAL_ACTIONS + window])
    action[N_GLOBAL_ACTIONS : N_GLOBAL_ACTIONS + window] = -1.0
    action[N_GLOBAL_ACTIONS + rng.choice(task_slots)] = 1.0
    return action


def env_speed(env: EdgeClusterEnv, seconds: float) -> tuple[float, float]:
    """(tasks/s, steps/s) of random valid actions through reset/step."""
    rng = np.random.default_rng(0)
    _, info = env.reset(seed=0)
    window = env.preset.queue_window
    tasks = steps = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or tasks == 0:
        _, _, terminated, truncated, info = env.step(
            random_valid_action(info["action_mask"], window, rng)
        )
        steps += 1
        if terminated or truncated:
            tasks += len(env.sim.records)
            _, info = env.reset()
    elapsed = time.perf_counter() - started
    return tasks / elapsed, steps / elapsed


def scheduler_speed(preset, name: str, settings, rate: float, seconds: float) -> float:
    """Tasks per second of whole episodes of the raw simulator driven by ``name``."""
    sim = Simulator(preset)
    scheduler = make_scheduler(name, settings)
    workloads = []
    for seed in range(20):
        workload_rng, _ = episode_rngs(seed)
        workloads.append(make_tasks(sim, rate, workload_rng))
    tasks, seed, elapsed = 0, 0, 0.0
    while elapsed < seconds or tasks == 0:
        workload = workloads[seed % len(workloads)]
        _, noise_rng = episode_rngs(seed % len(workloads))
        started = time.perf_counter()
        simulate(sim, scheduler, workload, noise_rng, scheduler_rng(name, seed))
        elapsed += time.perf_counter() - started
        tasks += len(workload)
        seed += 1
    return tasks / elapsed


def fork_cost_us(preset, settings, rate: float, repeats: int = 2000) -> float:
    """Microseconds per fork of a simulator half-way through an episode (first_fit)."""
    sim = Simulator(preset)
    workload_rng, noise_rng = episode_rngs(0)
    tasks = make_tasks(sim, rate, workload_rng)
    sim.reset(tasks, noise_rng)
    scheduler = make_scheduler("first_fit", settings)
    scheduler.reset(sim, scheduler_rng("first_fit", 0))
    ongoing = sim.advance()
    while ongoing and len(sim.records) < len(tasks) // 2:
        decision = scheduler.decide(sim)
        if decision is None:
            ongoing = sim.wait()
        else:
            sim.dispatch(decision)
            ongoing = sim.advance()
    started = time.perf_counter()
    for _ in range(repeats):
        sim.fork(records=False)
    return (time.perf_counter() - started) / repeats * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--params", default=str(repo_params_path()))
    parser.add_argument("--out", type=Path, default=None, help="result JSON")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    params = load_params(args.params)
    results: dict[str, float] = {}
    for name in ("paper", "edge"):
        preset = params.env.preset(name)
        rate = params.build_env.sample_rate[name]
        tasks_per_s, steps_per_s = env_speed(EdgeClusterEnv(preset, rate), args.seconds)
        results[f"{name}_env_tasks_per_s"] = tasks_per_s
        results[f"{name}_env_steps_per_s"] = steps_per_s
        print(f"{name:5s} gymnasium  {rate:g}/s: {tasks_per_s:9.0f} tasks/s {steps_per_s:9.0f} steps/s")
        for scheduler in SCHEDULERS:
            speed = scheduler_speed(preset, scheduler, params.schedulers, rate, args.seconds / 2)
            results[f"{name}_raw_{scheduler}_tasks_per_s"] = speed
            print(f"{name:5s} {scheduler:10s} {rate:g}/s: {speed:9.0f} tasks/s (raw simulator)")
        fork_us = fork_cost_us(preset, params.schedulers, rate)
        results[f"{name}_fork_us"] = fork_us
        print(f"{name:5s} fork of a mid-episode simulator: {fork_us:.1f} us")
    report(
        "sim_speed",
        results,
        notes=(
            f"one core, {args.seconds:g} s per Gymnasium measurement and half that per "
            "scheduler, each preset at its build_env.sample_rate, params.yaml episodes"
        ),
        out=args.out,
        headline="edge_raw_greedy_tasks_per_s",
    )


if __name__ == "__main__":
    main()

"""Simulator speed: tasks and environment steps per second, through the Gymnasium API and
with each heuristic scheduler, for both presets, on one core.

Run: ``python benchmarks/sim_speed.py [--seconds 5]``. The last line reads
``RESULT paper_env_tasks_per_s=<number>``. For scale: the reference implementation
(zzf1955/EAT) steps time in 0.1 s ticks, about 150 environment steps per task.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from eat.evaluation.runner import run_episode
from eat.params import load_params, repo_params_path
from eat.schedulers import make_scheduler
from eat.sim.encoding import N_GLOBAL_ACTIONS
from eat.sim.env import EdgeClusterEnv


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
    while time.perf_counter() - started < seconds:
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
    tasks, seed = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        tasks += len(run_episode(preset, make_scheduler(name, settings), rate, seed).tasks)
        seed += 1
    return tasks / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--params", default=str(repo_params_path()))
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    params = load_params(args.params)
    results = {}
    for name in ("paper", "edge"):
        preset = params.env.preset(name)
        rate = params.build_env.sample_rate[name]
        tasks_per_s, steps_per_s = env_speed(EdgeClusterEnv(preset, rate), args.seconds)
        results[name] = tasks_per_s
        print(
            f"{name:5s} gymnasium  rate {rate:g}/s: {tasks_per_s:10.0f} tasks/s "
            f"{steps_per_s:10.0f} env steps/s"
        )
        for scheduler in params.evaluate.schedulers:
            speed = scheduler_speed(preset, scheduler, params.schedulers, rate, args.seconds / 2)
            print(f"{name:5s} {scheduler:10s} rate {rate:g}/s: {speed:10.0f} tasks/s")
    print(f"RESULT paper_env_tasks_per_s={results['paper']:.0f}")


if __name__ == "__main__":
    main()

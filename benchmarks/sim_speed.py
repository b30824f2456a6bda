"""Simulator speed, on one core: tasks per second through the Gymnasium API (random
valid actions); through the raw simulator with every heuristic (the episode loop of
:func:`eat.evaluation.runner.simulate` on workloads drawn beforehand: no Gymnasium
wrapper, no workload generation, no pandas frames); the cost of
:meth:`~eat.sim.simulator.Simulator.fork` in the middle of an episode; and the ``rollout``
planner's decisions per second from a mid-episode state (``<preset>_rollout_decisions_per_s``,
its time per decision over half the measurement time), for both presets.

Then the cost against cluster size: clusters of the ``metro`` spec with ``--sizes``
GPUs (the same seed: the smaller ones are the first sites of the larger), each at the
arrival rate that offers it the load of ``evaluate.rates.metro``'s middle rate on metro
(:func:`eat.evaluation.scale.nominal_capacity`): raw simulator tasks/s with
``first_fit`` (``scale_<n>_raw_first_fit_tasks_per_s``, the best of three runs), the fork's cost, and the
per-decision time (median and p99) of every heuristic, the ``rollout`` planner and
``eat`` (an attention actor of the ``train`` section's size with fresh weights: a
decision does the same arithmetic whatever the weights) from the same mid-episode state
(a ``greedy`` episode half-way through, 12 tasks per GPU and at least 2,000, so that
the cluster is past its cold start), each driving its own continuation. Last, the
peak Python memory (tracemalloc) of one ``metro`` episode of ``--memory-tasks`` tasks
and of a quarter of it (at metro's lowest evaluation rate), run and summarised by
:func:`~eat.evaluation.runner.run_episode` with ``first_fit``, records kept in memory
and streamed to disk, and the process's peak resident memory at the end.

Run: ``python benchmarks/sim_speed.py [--seconds 5]``. It writes
``benchmarks/results/sim_speed.json`` (``--out`` elsewhere) and ends with
``RESULT edge_raw_first_fit_tasks_per_s=<n>`` and, last,
``RESULT edge_raw_greedy_tasks_per_s=<n>``. For scale: the reference implementation
(zzf1955/EAT) steps time in 0.1 s ticks, about 150 environment steps per task.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

import numpy as np
import torch

from eat.benchmarking import report
from eat.evaluation.runner import run_episode, scheduler_rng, simulate
from eat.evaluation.scale import nominal_capacity
from eat.params import Params, PresetConfig, load_params, metro_preset, repo_params_path
from eat.schedulers import SCHEDULERS, make_scheduler
from eat.schedulers.base import Scheduler
from eat.schedulers.rollout import make_planner
from eat.sim.encoding import N_GLOBAL_ACTIONS, Encoder
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


def scale_preset(params: Params, gpus: int, tasks: int) -> tuple[PresetConfig, float]:
    """The metro cluster of ``gpus`` GPUs with ``tasks`` per episode, and the arrival rate
    that offers it the load of metro's middle evaluation rate."""
    preset = metro_preset(params.env.metro, params.env.edge, gpus=gpus).with_tasks(tasks)
    metro = params.env.preset("metro")
    rates = params.evaluate.rates["metro"]
    load = rates[len(rates) // 2] / nominal_capacity(metro)
    return preset, load * nominal_capacity(preset)


def eat_scheduler(params: Params, sim: Simulator) -> Scheduler:
    """``eat`` with fresh weights, sized for ``sim``'s observation."""
    from eat.schedulers.rl import AGENTS
    from eat.schedulers.rl.agent import RLScheduler, build_actor
    from eat.training.loop import sac_config

    config = sac_config(params, "edge", params.seeds.train[0], dict(AGENTS["eat"]))
    encoder = Encoder(sim)
    shapes = {
        "n_tokens": encoder.n_tokens,
        "in_features": encoder.n_features,
        "action_size": encoder.action_size,
    }
    torch.manual_seed(0)
    actor = build_actor(config.model_copy(update={"device": "cpu"}), shapes)
    return RLScheduler(actor, "eat", completion=config.completion)


def mid_episode(preset: PresetConfig, params: Params, rate: float) -> Simulator:
    """A simulator half-way through an episode driven by greedy."""
    sim = Simulator(preset)
    workload_rng, noise_rng = episode_rngs(0)
    tasks = make_tasks(sim, rate, workload_rng)
    sim.reset(tasks, noise_rng, arrival_rate=rate)
    greedy = make_scheduler("greedy", params.schedulers)
    greedy.reset(sim, scheduler_rng("greedy", 0))
    ongoing = sim.advance()
    while ongoing and sim.n_records < len(tasks) // 2:
        decision = greedy.decide(sim)
        if decision is None:
            ongoing = sim.wait()
        else:
            sim.dispatch(decision)
            ongoing = sim.advance()
    return sim


def decision_ms(state: Simulator, scheduler: Scheduler, seconds: float, most: int) -> np.ndarray:
    """Milliseconds per decision of ``scheduler`` driving a fork of ``state`` for about
    ``seconds`` of decisions (at least 3, at most ``most``)."""
    # One untimed decision first: a network's first call at a new token count sets up
    # its kernels (seconds, once per process), which is not a per-decision cost.
    warm = state.fork(records=False)
    scheduler.reset(warm, scheduler_rng(scheduler.name, 0))
    scheduler.decide(warm)
    sim = state.fork(records=False)
    scheduler.reset(sim, scheduler_rng(scheduler.name, 0))
    times: list[float] = []
    spent, ongoing = 0.0, True
    while ongoing and len(times) < most and (spent < seconds or len(times) < 3):
        started = time.perf_counter()
        decision = scheduler.decide(sim)
        elapsed = time.perf_counter() - started
        times.append(elapsed)
        spent += elapsed
        if decision is None:
            ongoing = sim.wait()
        else:
            sim.dispatch(decision)
            ongoing = sim.advance()
    return np.asarray(times) * 1e3


def scale_speed(params: Params, sizes: list[int], seconds: float) -> dict[str, float]:
    """The cluster-size figures of the module docstring."""
    results: dict[str, float] = {}
    for gpus in sizes:
        # long enough that half-way through the cluster is past its cold start
        preset, rate = scale_preset(params, gpus, tasks=max(2000, 12 * gpus))
        # the best of three: other work on a shared machine only ever slows a run down
        speed = max(
            scheduler_speed(preset, "first_fit", params.schedulers, rate, seconds / 6)
            for _ in range(3)
        )
        results[f"scale_{gpus}_raw_first_fit_tasks_per_s"] = speed
        state = mid_episode(preset, params, rate)
        started, repeats = time.perf_counter(), 200
        for _ in range(repeats):
            state.fork(records=False)
        results[f"scale_{gpus}_fork_us"] = (time.perf_counter() - started) / repeats * 1e6
        print(
            f"metro {gpus:5d} GPUs ({state.n_sites} sites) at {rate:.1f}/s: "
            f"{speed:9.0f} tasks/s (raw, first_fit), fork {results[f'scale_{gpus}_fork_us']:.0f} us"
        )
        schedulers: dict[str, Scheduler] = {
            name: make_scheduler(name, params.schedulers) for name in SCHEDULERS
        }
        schedulers["rollout"] = make_planner("rollout", params, "metro")
        schedulers["eat"] = eat_scheduler(params, state)
        for name, scheduler in schedulers.items():
            ms = decision_ms(state, scheduler, seconds / 4, most=2000)
            results[f"scale_{gpus}_{name}_decision_ms_median"] = float(np.median(ms))
            results[f"scale_{gpus}_{name}_decision_ms_p99"] = float(np.percentile(ms, 99))
            print(
                f"metro {gpus:5d} GPUs {name:10s} decision: median {np.median(ms):8.3f} ms, "
                f"p99 {np.percentile(ms, 99):8.3f} ms ({ms.size} decisions)"
            )
    small, large = min(sizes), max(sizes)
    results["scale_raw_tasks_per_s_ratio"] = (
        results[f"scale_{small}_raw_first_fit_tasks_per_s"]
        / results[f"scale_{large}_raw_first_fit_tasks_per_s"]
    )
    return results


def memory(params: Params, tasks: int) -> dict[str, float]:
    """Peak memory of metro episodes of ``tasks`` and ``tasks // 4`` tasks."""
    metro = params.env.preset("metro")
    rate = min(params.evaluate.rates["metro"])  # first_fit keeps up with the lowest
    scheduler = make_scheduler("first_fit", params.schedulers)
    results: dict[str, float] = {}
    for count in (tasks // 4, tasks):
        preset = metro.with_tasks(count)
        for mode in ("memory", "streamed"):
            with tempfile.TemporaryDirectory() as directory:
                records_dir = Path(directory) if mode == "streamed" else None
                tracemalloc.start()
                result = run_episode(preset, scheduler, rate, seed=0, records_dir=records_dir)
                result.metrics()
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            results[f"metro_{count}_tasks_peak_mb_{mode}"] = peak / 1e6
            print(f"metro {count:7d} tasks, records in {mode:8s}: peak {peak / 1e6:8.1f} MB")
    results["metro_peak_bytes_per_task_streamed"] = (
        results[f"metro_{tasks}_tasks_peak_mb_streamed"] * 1e6 / tasks
    )
    if resource is not None:  # kilobytes on Linux
        results["process_max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--params", default=str(repo_params_path()))
    parser.add_argument("--out", type=Path, default=None, help="result JSON")
    parser.add_argument(
        "--sizes", default="8,64,256,1024", help="GPUs of the metro clusters (comma-separated)"
    )
    parser.add_argument(
        "--memory-tasks", type=int, default=100_000, help="tasks of the metro memory episode"
    )
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    torch.set_num_threads(1)
    params = load_params(args.params)
    results: dict[str, float] = {}
    for name in ("paper", "edge"):
        preset = params.env.preset(name)
        rate = params.build_env.sample_rate[name]
        tasks_per_s, steps_per_s = env_speed(EdgeClusterEnv(preset, rate), args.seconds)
        results[f"{name}_env_tasks_per_s"] = tasks_per_s
        results[f"{name}_env_steps_per_s"] = steps_per_s
        print(
            f"{name:5s} gymnasium  {rate:g}/s: {tasks_per_s:9.0f} tasks/s {steps_per_s:9.0f} steps/s"
        )
        for scheduler in SCHEDULERS:
            speed = scheduler_speed(preset, scheduler, params.schedulers, rate, args.seconds / 2)
            results[f"{name}_raw_{scheduler}_tasks_per_s"] = speed
            print(f"{name:5s} {scheduler:10s} {rate:g}/s: {speed:9.0f} tasks/s (raw simulator)")
        fork_us = fork_cost_us(preset, params.schedulers, rate)
        results[f"{name}_fork_us"] = fork_us
        print(f"{name:5s} fork of a mid-episode simulator: {fork_us:.1f} us")
        planner = make_planner("rollout", params, name)
        times = decision_ms(mid_episode(preset, params, rate), planner, args.seconds / 2, 1000)
        results[f"{name}_rollout_decisions_per_s"] = 1e3 / float(times.mean())
        results[f"{name}_rollout_decision_ms_median"] = float(np.median(times))
        print(
            f"{name:5s} rollout    {rate:g}/s: {1e3 / times.mean():9.1f} decisions/s, median "
            f"{np.median(times):.2f} ms ({len(times)} decisions)"
        )
    sizes = [int(size) for size in args.sizes.split(",")]
    results.update(scale_speed(params, sizes, args.seconds))
    results.update(memory(params, args.memory_tasks))
    report(
        "sim_speed",
        results,
        notes=(
            f"one core, {args.seconds:g} s per Gymnasium measurement and half that per "
            "scheduler, each preset at its build_env.sample_rate, params.yaml episodes; "
            f"metro clusters of {args.sizes} GPUs at equal offered load, decisions from a "
            f"greedy mid-episode state (eat: fresh weights); memory: metro episodes of "
            f"{args.memory_tasks // 4} and {args.memory_tasks} tasks, first_fit"
        ),
        out=args.out,
        headline="edge_raw_greedy_tasks_per_s",
    )


if __name__ == "__main__":
    main()

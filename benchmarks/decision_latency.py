"""Time per scheduling decision of every learned agent (and the heuristics), one CPU thread.

Each agent decides through the :class:`~eat.schedulers.Scheduler` interface inside
:func:`eat.evaluation.runner.run_episode`, so a decision includes building the observation
(``Encoder.observe``), the actor's deterministic forward pass (for the diffusion actors
the whole reverse chain), decoding and the completion the agent was trained with.
Networks come from the trained models in ``--models`` when they exist, else they are
built from ``params.yaml`` with fresh weights: a decision does the same arithmetic
whatever the weights. The third-party learners (``ppo``, ``maskable_ppo``) are timed
from their trained models only (a fresh stable-baselines3 policy needs its training
setup).

    .venv/bin/python benchmarks/decision_latency.py [--preset paper] [--episodes 20]

It writes ``benchmarks/results/decision_latency.json`` (``--out`` elsewhere); the last
line reads ``RESULT eat_decision_ms_median=<number>``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from eat.benchmarking import report
from eat.evaluation.runner import run_episode
from eat.params import load_params
from eat.schedulers import make_scheduler
from eat.schedulers.rl import AGENTS, SB3_AGENTS
from eat.schedulers.rl.agent import CONFIG_FILE, RLScheduler, build_actor, load_scheduler
from eat.sim.encoding import Encoder
from eat.sim.simulator import Simulator
from eat.training.loop import sac_config

REPO = Path(__file__).resolve().parent.parent


def model_dir(params, preset: str, name: str, models: Path) -> Path:
    """The first training seed's model folder of agent ``name``."""
    return models / preset / name / f"seed{params.seeds.train[0]}"


def fresh_scheduler(params, preset: str, name: str, overrides: dict) -> RLScheduler:
    """Agent ``name`` with fresh weights of its trained size (no trained model here)."""
    config = sac_config(params, preset, params.seeds.train[0], overrides)
    config = config.model_copy(update={"device": "cpu"})
    encoder = Encoder(Simulator(params.env.preset(preset)))
    shapes = {
        "n_tokens": encoder.n_tokens,
        "in_features": encoder.n_features,
        "action_size": encoder.action_size,
    }
    torch.manual_seed(0)
    return RLScheduler(build_actor(config, shapes), name, completion=config.completion)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--models", default=str(REPO / "models"), type=Path)
    parser.add_argument("--preset", default="paper", choices=["paper", "edge"])
    parser.add_argument("--episodes", default=20, type=int)
    parser.add_argument("--out", type=Path, default=None, help="result JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    params = load_params(args.params)
    preset = params.env.preset(args.preset)
    rates = params.evaluate.rates[args.preset]
    candidates: dict[str, dict] = dict(AGENTS)
    if params.train.ablation is not None and params.train.ablation.preset == args.preset:
        candidates.update(
            {name: spec.model_dump() for name, spec in params.train.ablation.variants.items()}
        )
    schedulers: dict = {}
    trained, untimed = [], []  # loaded from --models; third-party learners without one
    for name in (*candidates, *SB3_AGENTS):
        directory = model_dir(params, args.preset, name, args.models)
        if (directory / CONFIG_FILE).is_file():
            schedulers[name] = load_scheduler(directory, name)
            trained.append(name)
        elif name in candidates:
            schedulers[name] = fresh_scheduler(params, args.preset, name, candidates[name])
        else:
            untimed.append(name)  # a fresh stable-baselines3 policy needs its training setup
    for name in ("random", "eft", "warm_first", "greedy"):
        schedulers[name] = make_scheduler(name, params.schedulers)
    print(f"decision time on one CPU thread, preset {args.preset}, {args.episodes} episodes")
    print(f"{'scheduler':<20} {'decisions':>9} {'median ms':>10} {'p99 ms':>8}")
    for scheduler in schedulers.values():  # warm-up of every one before any timing
        for rate in rates:
            run_episode(preset, scheduler, rate, params.seeds.validation[0])
    medians, results = {}, {}
    for name, scheduler in schedulers.items():
        seconds: list[float] = []
        for episode in range(args.episodes):
            rate = rates[episode % len(rates)]
            seed = params.seeds.validation[episode % len(params.seeds.validation)]
            seconds += run_episode(preset, scheduler, rate, seed).decision_seconds
        ms = np.asarray(seconds) * 1e3
        medians[name] = float(np.median(ms))
        results[f"{name}_decision_ms_median"] = medians[name]
        results[f"{name}_decision_ms_p99"] = float(np.percentile(ms, 99))
        print(f"{name:<20} {ms.size:>9} {medians[name]:>10.3f} {np.percentile(ms, 99):>8.3f}")
    report(
        "decision_latency",
        results,
        notes=(
            f"one CPU thread, preset {args.preset}, {args.episodes} episodes on the "
            f"validation seeds; networks: trained models for {sorted(trained) or 'none'}, "
            "fresh weights of the same size for the others"
            + (f"; not timed (no trained model): {untimed}" if untimed else "")
        ),
        out=args.out,
        headline="eat_decision_ms_median",
    )


if __name__ == "__main__":
    main()

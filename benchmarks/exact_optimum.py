"""How many tasks the exact model solves to proven optimality, and how fast: the CP-SAT
model of :mod:`eat.schedulers.exact` on the small episodes of the ``edge`` preset (every
rate of ``evaluate.rates.edge``, workload seeds ``seeds.test[:episodes]``), for several
episode sizes N, with ``evaluate.optimum``'s settings (its time limit, one worker).

Run: ``python benchmarks/exact_optimum.py [--sizes 2:5 3:5 4:5 5:1] [--time-limit 60]``
(``N:episodes`` per rate). It writes ``benchmarks/results/exact_optimum.json`` (``--out``
elsewhere): per N the share of episodes proven optimal and the median and largest solve
time (s, building the model excluded), the largest model, and the replay check (the
largest distance between the simulator's reward of an optimal schedule and the solver's
objective, against the rounding tolerance). The last line reads
``RESULT n<tasks>_solve_s_max=<s>`` for N = ``evaluate.optimum.tasks``, the N the
pipeline runs.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from eat.benchmarking import report
from eat.params import load_params, repo_params_path
from eat.schedulers.exact import ExactModel, replay, small_episode, small_preset


def parse_size(text: str) -> tuple[int, int]:
    tasks, _, episodes = text.partition(":")
    return int(tasks), int(episodes or 1)


def presolve_check(small, settings, rates, seeds) -> dict[str, float]:
    """The same episodes with CP-SAT's presolve on: how many it proves optimal, how far
    its objective lies from the presolve-off optimum (positive: presolve found less,
    though it claims optimality), and its solve times."""
    proven, worse, difference, times = 0, 0, 0.0, []
    for rate in rates:
        for seed in seeds:
            episode = small_episode(small, rate, seed)
            off = ExactModel(small, episode, settings).solve()
            on = ExactModel(small, episode, settings).solve(presolve=True)
            times.append(on.wall_s)
            if on.proven and off.proven:
                proven += 1
                gap = off.objective - on.objective
                difference = max(difference, gap)
                worse += gap > off.tolerance
            print(
                f"presolve on, rate={rate:g} seed={seed}: {on.status} in {on.wall_s:.2f} s, "
                f"objective {on.objective:.6f} (off: {off.status}, {off.objective:.6f})",
                flush=True,
            )
    tasks = settings.tasks
    return {
        f"n{tasks}_presolve_on_proven_share": proven / len(times),
        f"n{tasks}_presolve_on_worse_episodes": worse,
        f"n{tasks}_presolve_on_objective_shortfall_max": difference,
        f"n{tasks}_presolve_on_solve_s_max": max(times),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", nargs="+", default=["2:5", "3:5", "4:5", "5:1"], help="N:episodes per rate"
    )
    parser.add_argument("--time-limit", type=float, default=None, help="s per solve")
    parser.add_argument(
        "--presolve-check",
        type=int,
        default=3,
        help="N whose episodes are also solved with presolve on",
    )
    parser.add_argument("--params", default=str(repo_params_path()))
    parser.add_argument("--out", type=Path, default=None, help="result JSON")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    spec = params.evaluate.optimum
    if spec is None:
        raise SystemExit("evaluate.optimum is null in the params: nothing sets the model up")
    update = {"workers": 1}
    if args.time_limit is not None:
        update["time_limit_s"] = args.time_limit
    preset = params.env.preset("edge")
    rates = params.evaluate.rates["edge"]
    results: dict[str, float] = {}
    for tasks, episodes in map(parse_size, args.sizes):
        settings = spec.model_copy(update={**update, "tasks": tasks})
        small = small_preset(preset, settings)
        times, proven, variables, replay_error, ratio = [], 0, 0, 0.0, 0.0
        for rate in rates:
            for seed in params.seeds.test[:episodes]:
                episode = small_episode(small, rate, seed)
                model = ExactModel(small, episode, settings)
                result = model.solve()
                times.append(result.wall_s)
                variables = max(variables, result.size.variables)
                if result.proven:
                    proven += 1
                    total = float(replay(small, episode, result)["reward"].sum())
                    error = abs(total - result.objective)
                    replay_error = max(replay_error, error)
                    ratio = max(ratio, error / result.tolerance)
                print(
                    f"N={tasks} rate={rate:g} seed={seed}: {result.status} in "
                    f"{result.wall_s:.2f} s, objective {result.objective:.6f}, bound "
                    f"{result.bound:.6f}",
                    flush=True,
                )
        if tasks == args.presolve_check:
            results.update(presolve_check(small, settings, rates, params.seeds.test[:episodes]))
        results[f"n{tasks}_episodes"] = len(times)
        results[f"n{tasks}_proven_share"] = proven / len(times)
        results[f"n{tasks}_solve_s_median"] = statistics.median(times)
        results[f"n{tasks}_solve_s_max"] = max(times)
        results[f"n{tasks}_variables_max"] = variables
        results[f"n{tasks}_replay_error_max"] = replay_error
        results[f"n{tasks}_replay_error_over_tolerance_max"] = ratio
    headline = f"n{spec.tasks}_solve_s_max"
    if headline not in results:
        raise SystemExit(f"--sizes lacks N = evaluate.optimum.tasks = {spec.tasks}")
    time_limit = update.get("time_limit_s", spec.time_limit_s)
    report(
        "exact_optimum",
        results,
        notes=(
            f"CP-SAT (one worker, presolve off, {time_limit:g} s limit per solve) on edge "
            f"small episodes at rates {rates} of evaluate.rates, seeds.test[:episodes]; sizes "
            f"(N:episodes per rate) {' '.join(args.sizes)}; solve times exclude building the "
            "model; the replay error is the simulator's reward of the optimal schedule minus "
            "the objective"
        ),
        out=args.out,
        headline=headline,
    )


if __name__ == "__main__":
    main()

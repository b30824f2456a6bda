"""Schedulers at 8 and at 1,000 GPUs: does each one's advantage on the ``edge`` preset
hold on ``metro``? An opt-in evaluation, outside ``dvc repro`` (metro is not in
``env.presets``: its episodes cost minutes, the default pipeline's budget does not
have them).

Two scenarios, each on the same workloads for every scheduler of it:

- ``heuristics``: every heuristic on ``edge`` at ``evaluate.rates.edge`` and on
  ``metro`` at ``evaluate.rates.metro`` (``--metro-tasks`` tasks per episode), on the
  first ``--n-seeds`` test seeds;
- ``planner``: ``rollout`` with its base (``greedy``) and ``first_fit``, at each
  preset's middle rate on one seed (``--planner-tasks`` tasks on metro: a rollout
  decision costs ~100 ms there);

plus learned agents named with ``--agents`` (trained on ``edge``, read from
``--models-dir``/edge/<agent>/seed<train seed>: the attention encoder reads metro's
pooled tokens) in the ``heuristics`` scenario, when their checkpoints exist.

A scheduler's *advantage* is its mean reward per task minus ``first_fit``'s on the same
episodes, relative to ``first_fit``'s (a share); it *holds* when it has the same
direction on both presets (better, worse, or within 0.5%: none). Outputs: ``reports/scale/episodes.csv`` (one row per episode),
``reports/scale/advantage.csv`` (one row per scenario x scheduler x preset),
``reports/scale/comparison.csv`` (8 and 1,000 GPUs side by side),
``benchmarks/results/scale_eval.json`` (the advantages, wall time per preset and the
process's peak resident memory, in the benchmark schema) and the table between the
markers of ``docs/scale.md``.

Run: ``python benchmarks/scale_eval.py [--n-seeds 2] [--metro-tasks 4000]``; the last
line is ``RESULT peak_rss_mb=<n>``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd

from eat.benchmarking import report
from eat.evaluation.sweep import SchedulerFactory, grid, run_sweep
from eat.params import Params, PresetConfig, load_params, repo_params_path
from eat.schedulers import SCHEDULERS

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

REFERENCE = "first_fit"
TIE = 0.005
"""Advantages within half a percent of first_fit's reward count as none."""
BEGIN, END = "<!-- scale-results:begin -->", "<!-- scale-results:end -->"


def shortened(preset: PresetConfig, tasks: int | None) -> PresetConfig:
    if tasks is None:
        return preset
    workload = preset.workload.model_copy(update={"total_tasks": tasks})
    return preset.model_copy(update={"workload": workload})


def agent_available(models_dir: Path, agent: str, train_seed: int) -> bool:
    from eat.stages.paths import model_dir

    return (model_dir(models_dir, "edge", agent, train_seed)).is_dir()


def train_quick(params_path: Path, agents: list[str], models_dir: Path) -> None:
    """Train ``agents`` on ``edge`` on the quick budget (``params.quick.yaml`` merged in:
    one training seed, a few hundred decisions) into ``models_dir``: a stand-in for
    ``dvc repro``'s agents that shows what a small-preset agent does on metro, not how
    well a fully trained one would."""
    from eat.params import load_params_with_overrides, validate_params
    from eat.training.loop import resolve_runs, train_run, write_run

    quick = validate_params(
        load_params_with_overrides(params_path, params_path.parent / "params.quick.yaml")
    )
    for spec in resolve_runs(quick, include_ablation=False):
        if spec.agent in agents and spec.preset_name == "edge":
            print(f"training {spec.agent} on edge, seed {spec.config.seed} (quick budget)")
            write_run(train_run(spec), models_dir)


def sweep(
    params: Params,
    preset_name: str,
    preset: PresetConfig,
    schedulers: list[str],
    agents: list[str],
    rates: list[float],
    seeds: list[int],
    models_dir: Path,
    train_seeds: list[int],
) -> pd.DataFrame:
    """One row per episode; agents come from the edge models whatever the preset."""
    frames = []
    if schedulers:
        jobs = grid(schedulers, rates, seeds)
        frames.append(
            run_sweep(
                preset_name,
                preset,
                jobs,
                SchedulerFactory(params, preset_name),
                progress=False,
            ).episodes
        )
    if agents:
        jobs = grid(agents, rates, seeds, train_seeds)
        frames.append(
            run_sweep(
                preset_name,
                preset,
                jobs,
                SchedulerFactory(params, "edge", models_dir),
                progress=False,
            ).episodes
        )
    return pd.concat(frames, ignore_index=True)


def advantage(episodes: pd.DataFrame) -> pd.DataFrame:
    """Per scenario x preset x scheduler: means over episodes and the advantage over
    ``first_fit`` on the same (rate, seed) episodes (module docstring)."""
    rows = []
    for (scenario, preset), frame in episodes.groupby(["scenario", "preset"], sort=False):
        reference = frame[frame["scheduler"] == REFERENCE].set_index(["rate", "seed"])
        for scheduler, own in frame.groupby("scheduler", sort=False):
            mean = own.groupby(["rate", "seed"])["reward_mean"].mean()
            base = reference["reward_mean"].reindex(mean.index)
            rows.append(
                {
                    "scenario": scenario,
                    "preset": preset,
                    "scheduler": scheduler,
                    "n_servers": int(own["n_servers"].iloc[0]),
                    "episodes": len(own),
                    "tasks_per_episode": float(own["n_tasks"].mean()),
                    "reward_mean": float(own["reward_mean"].mean()),
                    "deadline_attainment": float(own["deadline_attainment"].mean()),
                    "latency_mean": float(own["latency_mean"].mean()),
                    "utilisation": float(own["utilisation"].mean()),
                    "advantage": float(((mean - base) / base.abs()).mean()),
                }
            )
    return pd.DataFrame(rows)


def sign(share: float) -> int:
    """The direction of an advantage: within ``TIE`` of first_fit counts as none."""
    return 0 if abs(share) <= TIE else (1 if share > 0 else -1)


def comparison(table: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario x scheduler: its figures at 8 GPUs (edge) and at 1,000
    (metro) side by side, and whether its advantage over first_fit keeps its direction."""
    rows = []
    for (scenario, scheduler), own in table.groupby(["scenario", "scheduler"], sort=False):
        if scheduler == REFERENCE or set(own["preset"]) != {"edge", "metro"}:
            continue
        small = own[own["preset"] == "edge"].iloc[0]
        large = own[own["preset"] == "metro"].iloc[0]
        row = {"scenario": scenario, "scheduler": scheduler}
        for key in ("advantage", "deadline_attainment", "utilisation"):
            row[f"{key}_8"], row[f"{key}_1000"] = small[key], large[key]
        row["holds"] = "yes" if sign(small["advantage"]) == sign(large["advantage"]) else "no"
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| scenario | scheduler | advantage over first_fit, 8 GPUs | 1,000 GPUs | holds | "
        "deadlines met, 8 | 1,000 | utilisation, 8 | 1,000 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in comparison(table).itertuples():
        lines.append(
            f"| {row.scenario} | {row.scheduler} | {row.advantage_8:+.1%} | "
            f"{row.advantage_1000:+.1%} | {row.holds} | {row.deadline_attainment_8:.1%} | "
            f"{row.deadline_attainment_1000:.1%} | {row.utilisation_8:.1%} | "
            f"{row.utilisation_1000:.1%} |"
        )
    lines.append("")
    for (scenario, preset), own in table.groupby(["scenario", "preset"], sort=False):
        first = own.iloc[0]
        lines.append(
            f"- {scenario}, {preset} ({first.n_servers} GPUs): {first.episodes} episode(s) "
            f"per scheduler of {first.tasks_per_episode:.0f} tasks; first_fit's reward per "
            f"task {float(own[own['scheduler'] == REFERENCE]['reward_mean'].iloc[0]):.2f}"
        )
    return "\n".join(lines)


def render_docs(path: Path, table: pd.DataFrame, source: str) -> None:
    """Replace the block between the markers of ``path`` with the table."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    block = f"{BEGIN}\n<!-- generated by benchmarks/scale_eval.py from {source} -->\n\n"
    path.write_text(head + block + markdown(table) + f"\n\n{END}" + tail)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default=str(repo_params_path()))
    parser.add_argument("--n-seeds", type=int, default=2)
    parser.add_argument("--edge-tasks", type=int, default=None, help="default: the preset's")
    parser.add_argument("--metro-tasks", type=int, default=4000)
    parser.add_argument("--planner-tasks", type=int, default=600)
    parser.add_argument("--agents", default="eat", help="learned agents (comma-separated)")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--reports", type=Path, default=Path("reports/scale"))
    parser.add_argument("--docs", type=Path, default=Path("docs/scale.md"))
    parser.add_argument("--out", type=Path, default=None, help="result JSON")
    parser.add_argument(
        "--train-quick",
        action="store_true",
        help="train the agents missing from --models-dir on edge on the quick budget first",
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    seeds = list(params.seeds.test[: args.n_seeds])
    named = list(filter(None, args.agents.split(",")))
    if args.train_quick:
        first = params.seeds.train[0]
        todo = [agent for agent in named if not agent_available(args.models_dir, agent, first)]
        if todo:
            train_quick(Path(args.params), todo, args.models_dir)
    # the training seeds whose checkpoints exist (dvc repro: train.n_seeds; quick: one)
    train_seeds = [
        seed
        for seed in params.seeds.train[: params.train.n_seeds]
        if all(agent_available(args.models_dir, agent, seed) for agent in named)
    ]
    agents = named if train_seeds else []
    missing = sorted(set(named) - set(agents))
    heuristics = [name for name in SCHEDULERS if name != "random"]
    frames, results = [], {}
    for preset_name, tasks, planner_tasks in (
        ("edge", args.edge_tasks, args.edge_tasks),
        ("metro", args.metro_tasks, args.planner_tasks),
    ):
        base = params.env.preset(preset_name)
        rates = list(params.evaluate.rates[preset_name])
        started = time.perf_counter()
        episodes = sweep(
            params,
            preset_name,
            shortened(base, tasks),
            heuristics,
            agents,
            rates,
            seeds,
            args.models_dir,
            train_seeds,
        )
        frames.append(episodes.assign(scenario="heuristics"))
        middle = [rates[len(rates) // 2]]
        planned = sweep(
            params,
            preset_name,
            shortened(base, planner_tasks),
            ["rollout", "greedy", REFERENCE],
            [],
            middle,
            seeds[:1],
            args.models_dir,
            train_seeds,
        )
        frames.append(planned.assign(scenario="planner"))
        results[f"{preset_name}_wall_s"] = time.perf_counter() - started
        print(f"{preset_name}: {results[f'{preset_name}_wall_s']:.0f} s")
    episodes = pd.concat(frames, ignore_index=True)
    if "n_servers" not in episodes:
        episodes["n_servers"] = episodes["preset"].map(
            {name: params.env.preset(name).n_servers for name in ("edge", "metro")}
        )
    table = advantage(episodes)
    args.reports.mkdir(parents=True, exist_ok=True)
    episodes.to_csv(args.reports / "episodes.csv", index=False)
    table.to_csv(args.reports / "advantage.csv", index=False)
    comparison(table).to_csv(args.reports / "comparison.csv", index=False)
    render_docs(args.docs, table, str(args.reports / "advantage.csv"))
    for row in table.itertuples():
        results[f"{row.scenario}_{row.preset}_{row.scheduler}_advantage"] = row.advantage
        results[f"{row.scenario}_{row.preset}_{row.scheduler}_reward_mean"] = row.reward_mean
    if resource is not None:  # kilobytes on Linux
        results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    report(
        "scale_eval",
        results,
        notes=(
            f"serial, {len(seeds)} test seed(s); metro episodes of {args.metro_tasks} tasks "
            f"(planner: {args.planner_tasks}, one seed, middle rate); advantage = reward per "
            f"task relative to first_fit on the same episodes; agents run: {agents or 'none'}"
            + (
                f" (training seeds {train_seeds}, quick budget)"
                if args.train_quick and agents
                else ""
            )
            + (f"; not trained here (no checkpoint): {missing}" if missing else "")
        ),
        out=args.out,
        headline="peak_rss_mb" if "peak_rss_mb" in results else None,
    )


if __name__ == "__main__":
    main()

"""Schedulers at 8 and at 1,000 GPUs: does each one's advantage on the ``edge`` preset
hold on ``metro``? An opt-in evaluation, outside ``dvc repro`` (metro is not in
``env.presets``: its episodes cost minutes, the default pipeline's budget does not
have them).

Two scenarios, each on the same workloads for every scheduler of it:

- ``heuristics``: every heuristic on ``edge`` at ``evaluate.rates.edge`` and on
  ``metro`` at ``evaluate.rates.metro`` (``--metro-tasks`` tasks per episode), on the
  first test seeds (``--edge-seeds``, ``--n-seeds`` on metro);
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
import json
import os
import tempfile
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
SPEED_BEGIN, SPEED_END = "<!-- scale-speed:begin -->", "<!-- scale-speed:end -->"
SPEED_FILE = Path("benchmarks/results/sim_speed.json")
TARGET_RATIO, TARGET_MS = 3.0, 10.0
"""The targets: simulator tasks/s at the largest size within 3x of the smallest;
greedy and eat under 10 ms median per decision at the largest size."""


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


def load_check(params: Params, tasks: int, seed: int) -> pd.DataFrame:
    """``greedy`` on full-length metro episodes at every ``evaluate.rates.metro`` rate,
    records streamed to disk: the load the rates put on the cluster (``utilisation``,
    the share of GPU-seconds busy), which short episodes, dominated by the first cold
    starts, do not show; and the memory of a long episode with streamed records."""
    from eat.evaluation.runner import run_episode
    from eat.schedulers import make_scheduler

    preset = shortened(params.env.preset("metro"), tasks)
    rows = []
    for rate in params.evaluate.rates["metro"]:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as directory:
            result = run_episode(
                preset,
                make_scheduler("greedy", params.schedulers),
                rate,
                seed,
                records_dir=Path(directory),
            )
            metrics = result.metrics()
        rows.append(
            {
                "rate": rate,
                "seed": seed,
                "n_tasks": metrics["n_tasks"],
                "utilisation": metrics["utilisation"],
                "deadline_attainment": metrics["deadline_attainment"],
                "latency_mean": metrics["latency_mean"],
                "wall_s": time.perf_counter() - started,
            }
        )
        print(f"load: greedy at {rate}/s, {tasks} tasks: {rows[-1]['utilisation']:.1%} busy")
    return pd.DataFrame(rows)


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


def markdown(table: pd.DataFrame, load: pd.DataFrame | None = None) -> str:
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
    if load is not None:
        busy = ", ".join(f"{row.utilisation:.0%} at {row.rate:g}/s" for row in load.itertuples())
        lines.append(
            f"- load, metro: greedy on {load['n_tasks'].iloc[0]:.0f}-task episodes (seed "
            f"{load['seed'].iloc[0]}) keeps the GPUs busy {busy}"
        )
    return "\n".join(lines)


def speed_markdown(record: dict) -> str:
    """The cluster-size figures of ``sim_speed.json`` and whether the targets are met."""
    results = record["results"]
    sizes = sorted(
        {
            int(key.split("_")[1])
            for key in results
            if key.endswith("_raw_first_fit_tasks_per_s") and key.startswith("scale_")
        }
    )
    names = ["first_fit", "greedy", "eft", "edf", "rollout", "eat"]
    lines = [
        "| GPUs | raw tasks/s (first_fit) | fork (ms) | "
        + " | ".join(f"{name} median / p99 (ms)" for name in names)
        + " |",
        "|---" * (3 + len(names)) + "|",
    ]
    for size in sizes:
        cells = [
            str(size),
            f"{results[f'scale_{size}_raw_first_fit_tasks_per_s']:.0f}",
            f"{results[f'scale_{size}_fork_us'] / 1e3:.2f}",
        ]
        for name in names:
            median = results.get(f"scale_{size}_{name}_decision_ms_median")
            p99 = results.get(f"scale_{size}_{name}_decision_ms_p99")
            cells.append("n/a" if median is None else f"{median:.3g} / {p99:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    small, large = sizes[0], sizes[-1]
    ratio = results["scale_raw_tasks_per_s_ratio"]
    verdict = []
    verdict.append(
        f"- simulator tasks/s (first_fit): {results[f'scale_{small}_raw_first_fit_tasks_per_s']:.0f} "
        f"at {small} GPUs, {results[f'scale_{large}_raw_first_fit_tasks_per_s']:.0f} at {large}: "
        f"a ratio of {ratio:.2f} (target: at most {TARGET_RATIO:g}): "
        f"{'met' if ratio <= TARGET_RATIO else 'missed'}"
    )
    for name in ("greedy", "eat"):
        median = results[f"scale_{large}_{name}_decision_ms_median"]
        met = "met" if median < TARGET_MS else "missed"
        verdict.append(
            f"- {name} at {large} GPUs: {median:.3g} ms median per decision "
            f"(target: under {TARGET_MS:g} ms): {met}"
        )
    memory = [key for key in results if key.endswith("_tasks_peak_mb_streamed")]
    for key in sorted(memory, key=lambda k: int(k.split("_")[1])):
        tasks = int(key.split("_")[1])
        kept = results[key.replace("_streamed", "_memory")]
        verdict.append(
            f"- peak traced memory of a {tasks}-task metro episode: {kept:.0f} MB with records "
            f"in memory, {results[key]:.0f} MB streamed to disk"
        )
    machine = record.get("machine", {})
    verdict.append(
        f"- measured {record.get('measured_utc', '?')} on {machine.get('cpus', '?')} CPUs, "
        f"load average {machine.get('load_average_1m_at_end', '?')} at the end (above about "
        "one per core, other work shared the machine and the timings are upper bounds)"
    )
    return "\n".join([*lines, "", *verdict])


def render_speed(path: Path, speed_file: Path) -> None:
    """The block between the speed markers of ``path``, from ``speed_file`` if present."""
    if not speed_file.is_file():
        return
    record = json.loads(speed_file.read_text())
    text = path.read_text()
    if SPEED_BEGIN not in text or SPEED_END not in text:
        return
    head, rest = text.split(SPEED_BEGIN, 1)
    _, tail = rest.split(SPEED_END, 1)
    block = f"{SPEED_BEGIN}\n<!-- generated by benchmarks/scale_eval.py from {speed_file} -->\n\n"
    path.write_text(head + block + speed_markdown(record) + f"\n\n{SPEED_END}" + tail)


def render_docs(
    path: Path, table: pd.DataFrame, source: str, load: pd.DataFrame | None = None
) -> None:
    """Replace the block between the markers of ``path`` with the table."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    block = f"{BEGIN}\n<!-- generated by benchmarks/scale_eval.py from {source} -->\n\n"
    path.write_text(head + block + markdown(table, load) + f"\n\n{END}" + tail)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default=str(repo_params_path()))
    parser.add_argument("--n-seeds", type=int, default=2, help="metro test seeds")
    parser.add_argument("--edge-seeds", type=int, default=5, help="edge test seeds")
    parser.add_argument("--edge-tasks", type=int, default=None, help="default: the preset's")
    parser.add_argument("--metro-tasks", type=int, default=4000)
    parser.add_argument("--planner-tasks", type=int, default=600)
    parser.add_argument("--agents", default="eat", help="learned agents (comma-separated)")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--reports", type=Path, default=Path("reports/scale"))
    parser.add_argument("--docs", type=Path, default=Path("docs/scale.md"))
    parser.add_argument("--out", type=Path, default=None, help="result JSON")
    parser.add_argument(
        "--speed", type=Path, default=SPEED_FILE, help="sim_speed results for the speed table"
    )
    parser.add_argument(
        "--train-quick",
        action="store_true",
        help="train the agents missing from --models-dir on edge on the quick budget first",
    )
    parser.add_argument(
        "--load-tasks",
        type=int,
        default=20_000,
        help="tasks of the greedy load episodes on metro (0: none)",
    )
    parser.add_argument(
        "--load-only",
        action="store_true",
        help="run the load episodes only, merged into the outputs of an earlier run",
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.load_only:
        load_only(params, args)
        return
    seeds_of = {
        "edge": list(params.seeds.test[: args.edge_seeds]),
        "metro": list(params.seeds.test[: args.n_seeds]),
    }
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
        seeds = seeds_of[preset_name]
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
    load = None
    if args.load_tasks > 0:
        load = load_check(params, args.load_tasks, params.seeds.test[0])
        load.to_csv(args.reports / "load.csv", index=False)
        results.update(load_results(load))
    render_docs(args.docs, table, str(args.reports / "advantage.csv"), load)
    render_speed(args.docs, args.speed)
    for row in table.itertuples():
        results[f"{row.scenario}_{row.preset}_{row.scheduler}_advantage"] = row.advantage
        results[f"{row.scenario}_{row.preset}_{row.scheduler}_reward_mean"] = row.reward_mean
    if resource is not None:  # kilobytes on Linux
        results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    report(
        "scale_eval",
        results,
        notes=(
            f"serial; test seeds: edge {args.edge_seeds}, metro {args.n_seeds}; metro episodes of {args.metro_tasks} tasks "
            f"(planner: {args.planner_tasks}, one seed, middle rate); advantage = reward per "
            f"task relative to first_fit on the same episodes; agents run: {agents or 'none'}"
            + (
                f" (training seeds {train_seeds}, quick budget)"
                if args.train_quick and agents
                else ""
            )
            + (f"; not trained here (no checkpoint): {missing}" if missing else "")
            + (f"; load: greedy, {args.load_tasks}-task metro episodes" if load is not None else "")
        ),
        out=args.out,
        headline="peak_rss_mb" if "peak_rss_mb" in results else None,
    )


def load_results(load: pd.DataFrame) -> dict[str, float]:
    results = {f"load_{row.rate:g}_utilisation": row.utilisation for row in load.itertuples()}
    results["load_wall_s"] = float(load["wall_s"].sum())
    return results


def load_only(params: Params, args: argparse.Namespace) -> None:
    """The load episodes alone, merged into an earlier run's results file and docs."""
    load = load_check(params, args.load_tasks, params.seeds.test[0])
    load.to_csv(args.reports / "load.csv", index=False)
    table = pd.read_csv(args.reports / "advantage.csv", keep_default_na=False)
    render_docs(args.docs, table, str(args.reports / "advantage.csv"), load)
    render_speed(args.docs, args.speed)
    path = args.out or Path("benchmarks/results/scale_eval.json")
    record = json.loads(path.read_text())
    results = {**record["results"], **load_results(load)}
    if resource is not None:  # the larger of both runs' peaks
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        results["peak_rss_mb"] = max(results.get("peak_rss_mb", 0.0), peak)
    report(
        "scale_eval",
        results,
        notes=record["notes"] + f"; load: greedy, {args.load_tasks}-task metro episodes",
        out=path,
        headline="peak_rss_mb",
    )


if __name__ == "__main__":
    main()

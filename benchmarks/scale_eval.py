"""Full-length ``metro`` episodes: the load ``evaluate.rates.metro`` puts on a thousand
GPUs, and the memory of such an episode. The schedulers' advantages at scale are the
``evaluate`` stage's (``evaluate.scale``: shortened episodes,
``reports/evaluate/scale_advantage.csv``); this measures what short episodes cannot
show: the steady load of the 20,000-task episodes the rates were chosen for.

``greedy`` runs one full-length metro episode per rate of ``evaluate.rates.metro``
(``--load-tasks`` tasks, records streamed to disk) and reports each rate's
``utilisation`` (the share of GPU-seconds busy), deadline attainment and wall time;
``benchmarks/results/scale_eval.json`` gets them with the process's peak resident
memory. It also renders the cluster-size speed table of
``benchmarks/results/sim_speed.json`` between the markers of ``docs/scale.md``.

Run: ``python benchmarks/scale_eval.py [--load-tasks 20000]``; the last line is
``RESULT peak_rss_mb=<n>``.
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
from eat.params import Params, load_params, repo_params_path

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

SPEED_BEGIN, SPEED_END = "<!-- scale-speed:begin -->", "<!-- scale-speed:end -->"
SPEED_FILE = Path("benchmarks/results/sim_speed.json")
TARGET_RATIO, TARGET_MS = 3.0, 10.0
"""The targets: simulator tasks/s at the largest size within 3x of the smallest;
greedy and eat under 10 ms median per decision at the largest size."""


def load_check(params: Params, tasks: int, seed: int) -> pd.DataFrame:
    """``greedy`` on full-length metro episodes at every ``evaluate.rates.metro`` rate,
    records streamed to disk: the load the rates put on the cluster (``utilisation``,
    the share of GPU-seconds busy), which short episodes, dominated by the first cold
    starts, do not show; and the memory of a long episode with streamed records."""
    from eat.evaluation.runner import run_episode
    from eat.schedulers import make_scheduler

    preset = params.env.preset("metro").with_tasks(tasks)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default=str(repo_params_path()))
    parser.add_argument("--load-tasks", type=int, default=20_000, help="tasks per episode")
    parser.add_argument("--docs", type=Path, default=Path("docs/scale.md"))
    parser.add_argument("--out", type=Path, default=None, help="result JSON")
    parser.add_argument(
        "--speed", type=Path, default=SPEED_FILE, help="sim_speed results for the speed table"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    load = load_check(params, args.load_tasks, params.seeds.test[0])
    results = load_results(load)
    render_speed(args.docs, args.speed)
    if resource is not None:  # kilobytes on Linux
        results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    report(
        "scale_eval",
        results,
        notes=(
            f"serial; greedy, one {args.load_tasks}-task metro episode per rate of "
            f"evaluate.rates.metro (seed {params.seeds.test[0]}), records streamed to disk"
        ),
        out=args.out,
        headline="peak_rss_mb" if "peak_rss_mb" in results else None,
    )


def load_results(load: pd.DataFrame) -> dict[str, float]:
    results = {f"load_{row.rate:g}_utilisation": row.utilisation for row in load.itertuples()}
    for row in load.itertuples():
        results[f"load_{row.rate:g}_deadline_attainment"] = row.deadline_attainment
        results[f"load_{row.rate:g}_wall_s"] = row.wall_s
    results["load_wall_s"] = float(load["wall_s"].sum())
    return results


if __name__ == "__main__":
    main()

"""Command line: every stage of the pipeline without notebooks (``eat ...`` or
``python -m eat ...``), one subcommand per stage, and a few tools around them.

Each stage subcommand runs the same ``run(params, paths)`` as its notebook
(:mod:`eat.stages`), with the paths of :class:`eat.stages.paths.Paths` under ``--root``.
Stage modules are imported on use, so ``check-params`` stays fast and ``profile`` needs
neither the simulator nor the schedulers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eat.params import ParamsError, load_params

STAGE_COMMANDS = {
    "profile": "profile this machine's device and decide the edge preset's latency source",
    "build-env": "build, check and describe every selected preset",
    "train": "train the learned agents (every run of params.train, or one with --agent)",
    "evaluate": "evaluate every scheduler over every preset's rate sweep",
    "testbed": "run the workload on the real testbed and in the simulator",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eat", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    parser.add_argument(
        "--root", default=".", type=Path, help="folder the pipeline's outputs go under"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check-params", help="validate the parameters file and exit")
    reference = commands.add_parser(
        "params", help="print the parameter reference (every key: type, range, value, doc)"
    )
    reference.add_argument("--markdown", action="store_true", help="as docs/parameters.md")
    docs = commands.add_parser(
        "docs",
        help="write docs/results.md and the README's headline tables from the committed "
        "reports under --root",
    )
    docs.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 naming every stale file"
    )
    for name, text in STAGE_COMMANDS.items():
        command = commands.add_parser(name, help=text)
        if name in ("train", "evaluate"):
            command.add_argument("--no-progress", action="store_true")
        if name == "train":
            command.add_argument("--agent", help="train only the runs of this agent (or variant)")
            command.add_argument("--preset", help="with --agent: only this preset")
            command.add_argument("--seed", type=int, help="with --agent: only this seed")
    serve = commands.add_parser(
        "testbed-serve", help="serve text-to-image requests over HTTP on the testbed"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", default=8000, type=int)
    serve.add_argument("--scheduler", default="eft")
    serve.add_argument("--work-dir", default="artifacts/testbed-serve", type=Path)
    convert = commands.add_parser(
        "convert-trace",
        help="convert the Alibaba GenTD26 request trace into a replay trace (docs/traces.md)",
    )
    convert.add_argument("input", type=Path, help="lora_request_trace.csv of GenTD26")
    convert.add_argument("output", type=Path, help="the replay trace CSV to write")
    convert.add_argument(
        "--models", required=True, type=int, help="keep the N most frequent base models"
    )
    convert.add_argument(
        "--rate", type=float, help="scale the arrivals to this mean rate (tasks/s)"
    )
    convert.add_argument(
        "--images",
        choices=["tasks", "one"],
        default="tasks",
        help="a request for k images: k tasks (default) or one",
    )
    convert.add_argument(
        "--architecture",
        choices=["auto", "sd15", "sdxl"],
        default="auto",
        help="every model's SD architecture, or auto: from the trace's seconds per step",
    )
    convert.add_argument(
        "--statuses", nargs="+", help="keep only requests of these predict_status values"
    )
    summary = commands.add_parser("summary", help="print mean latency and quality per rate")
    summary.add_argument(
        "--aggregate", type=Path, help="aggregate.csv (default: the evaluate stage's)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "params":
        from eat.reference import parameter_reference

        print(parameter_reference(markdown=args.markdown), end="")
        return 0
    if args.command == "docs":
        return _docs(args.root, check=args.check)
    if args.command == "convert-trace":
        return _convert_trace(args)
    try:
        params = load_params(args.params)
    except (ParamsError, FileNotFoundError) as error:
        print(f"eat: {error}", file=sys.stderr)
        return 2

    from eat.stages.paths import Paths

    paths = Paths(args.root)
    if args.command == "check-params":
        print(f"{args.params}: valid")
    elif args.command == "profile":
        from eat.stages import profile

        print(json.dumps(profile.run(params, paths), indent=2))
    elif args.command == "build-env":
        from eat.stages import build_env

        print(json.dumps(build_env.run(params, paths), indent=2))
    elif args.command == "train":
        return _train(params, paths, args)
    elif args.command == "evaluate":
        from eat.stages import evaluate

        metrics = evaluate.run(params, paths, progress=not args.no_progress)
        print(f"wrote {len(metrics)} metric entries to {paths.evaluate.metrics}")
    elif args.command == "testbed":
        from eat.stages import testbed

        metrics = testbed.run(params, paths)
        print(json.dumps(metrics["schedulers"], indent=2))
    elif args.command == "testbed-serve":
        from eat.stages.common import setup_logging
        from eat.testbed.bed import serve

        setup_logging(args.work_dir / "serve.log")
        serve(
            params,
            args.work_dir,
            scheduler=args.scheduler,
            host=args.host,
            port=args.port,
            models_dir=paths.models,
        )
    elif args.command == "summary":
        import pandas as pd

        from eat.evaluation.metrics import summary_table

        aggregated = pd.read_csv(args.aggregate or paths.evaluate.results / "aggregate.csv")
        with pd.option_context("display.width", 200, "display.max_columns", None):
            for preset in aggregated["preset"].unique():
                for metric in ("latency_mean", "quality_mean"):
                    print(f"\n{preset}: {metric} [95% CI] by arrival rate (tasks/s)")
                    print(summary_table(aggregated, preset, metric).to_string())
    return 0


def _docs(root: Path, *, check: bool) -> int:
    """``eat docs``: render the generated pages; with ``check``, only compare them."""
    from eat.reporting import REGENERATE, ReportError, stale_docs, write_docs

    try:
        if check:
            stale = stale_docs(root)
            for path in stale:
                print(f"eat docs: {path} is stale; regenerate with `{REGENERATE}`", file=sys.stderr)
            return 1 if stale else 0
        for path in write_docs(root):
            print(f"wrote {path}")
    except ReportError as error:
        print(f"eat docs: {error}", file=sys.stderr)
        return 2
    return 0


def _convert_trace(args: argparse.Namespace) -> int:
    """``eat convert-trace``: GenTD26 -> a replay trace (:func:`eat.sim.traces.convert_gentd26`)."""
    from eat.sim.traces import convert_gentd26

    try:
        trace = convert_gentd26(
            args.input,
            n_models=args.models,
            target_rate=args.rate,
            images=args.images,
            architecture=args.architecture,
            statuses=args.statuses,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"eat convert-trace: {error}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    trace.to_csv(args.output, index=False)
    span = float(trace["arrival"].iloc[-1])
    print(
        f"wrote {len(trace)} tasks from {trace['request'].nunique()} requests over "
        f"{span:.0f} s to {args.output}"
    )
    shares = trace.groupby("model", sort=False)["architecture"].agg(["first", "size"])
    for model, row in shares.iterrows():
        print(f"  {model}: {row['first']}, {row['size'] / len(trace):.1%} of the tasks")
    return 0


def _train(params, paths, args: argparse.Namespace) -> int:
    """``eat train``: the whole stage, or the runs of one agent (a preset, a seed)."""
    if args.agent is None:
        if args.preset is not None or args.seed is not None:
            print("eat train: --preset and --seed need --agent", file=sys.stderr)
            return 2
        from eat.stages import train

        summary = train.run(params, paths, progress=not args.no_progress)
        print(f"{summary['runs']} runs; costs in {paths.train.results / 'costs.csv'}")
        return 0
    from eat.stages.common import setup_logging
    from eat.training.matrix import resolve_matrix, train_one, write_result

    specs = [
        spec
        for spec in resolve_matrix(params)
        if spec.agent == args.agent
        and (args.preset is None or spec.preset_name == args.preset)
        and (args.seed is None or spec.config.seed == args.seed)
    ]
    if not specs:
        known = sorted(
            {(spec.agent, spec.preset_name, spec.config.seed) for spec in resolve_matrix(params)}
        )
        print(
            f"eat train: no run matches agent={args.agent} preset={args.preset} "
            f"seed={args.seed}; the runs of params.train are (agent, preset, seed) {known}",
            file=sys.stderr,
        )
        return 2
    setup_logging(paths.train.artifacts / "single_runs.log")
    for spec in specs:
        result = train_one(spec, paths.models / "_resume", progress_bar=not args.no_progress)
        directory = write_result(result, paths.models)
        print(json.dumps(result.summary, indent=2), f"-> {directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

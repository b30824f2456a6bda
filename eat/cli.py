"""Command line: the pipeline's steps without notebooks (``eat ...`` or ``python -m eat``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eat.params import ParamsError, load_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eat", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check-params", help="validate the parameters file and exit")
    profile = commands.add_parser(
        "profile", help="profile this machine's device and decide the edge latency source"
    )
    profile.add_argument("--out", default="reports/profile", type=Path)
    profile.add_argument("--decision", default="reports/latency_source.json", type=Path)
    profile.add_argument("--summary", default="reports/profile_summary.json", type=Path)
    build = commands.add_parser("build-env", help="build and describe every selected preset")
    build.add_argument("--out", default="reports/env", type=Path)
    build.add_argument("--summary", default="reports/env_summary.json", type=Path)
    evaluate = commands.add_parser("evaluate", help="evaluate every scheduler over the sweeps")
    evaluate.add_argument("--out", default="reports/eval", type=Path)
    evaluate.add_argument("--metrics", default="reports/metrics.json", type=Path)
    evaluate.add_argument("--no-progress", action="store_true")
    testbed = commands.add_parser(
        "testbed", help="run the workload on the real testbed and in the simulator"
    )
    testbed.add_argument("--out", default="reports/testbed", type=Path)
    testbed.add_argument("--metrics", default="reports/testbed_metrics.json", type=Path)
    testbed.add_argument("--models", default="models", type=Path, help="trained agents")
    serve = commands.add_parser(
        "testbed-serve", help="serve text-to-image requests over HTTP on the testbed"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", default=8000, type=int)
    serve.add_argument("--scheduler", default="eft")
    serve.add_argument("--work-dir", default="reports/testbed-serve", type=Path)
    serve.add_argument("--models", default="models", type=Path, help="trained agents")
    summary = commands.add_parser("summary", help="print mean latency and quality per rate")
    summary.add_argument("--aggregate", default="reports/eval/aggregate.csv", type=Path)
    args = parser.parse_args(argv)

    try:
        params = load_params(args.params)
    except (ParamsError, FileNotFoundError) as error:
        print(f"eat: {error}", file=sys.stderr)
        return 2

    # Imported here so that check-params stays fast and light.
    from eat import pipeline

    if args.command == "check-params":
        print(f"{args.params}: valid")
    elif args.command == "profile":
        pipeline.setup_logging(args.out / "profile.log")
        summary = pipeline.profile(params, args.out, args.decision)
        pipeline.write_metrics(summary, args.summary)
        print(json.dumps(summary, indent=2))
    elif args.command == "build-env":
        pipeline.setup_logging(args.out / "build_env.log")
        summary = pipeline.build_env(params, args.out)
        pipeline.write_metrics(summary, args.summary)
        print(json.dumps(summary, indent=2))
    elif args.command == "evaluate":
        pipeline.setup_logging(args.out / "evaluate.log")
        metrics = pipeline.evaluate(params, args.out, progress=not args.no_progress)
        pipeline.write_metrics(metrics, args.metrics)
        print(f"wrote {len(metrics)} metric entries to {args.metrics}")
    elif args.command == "testbed":
        from eat.testbed import stage

        pipeline.setup_logging(args.out / "testbed.log")
        metrics = stage.run_stage(params, args.out, models_dir=args.models)
        stage.write_metrics(metrics, args.metrics)
        print(json.dumps(metrics["schedulers"], indent=2))
    elif args.command == "testbed-serve":
        from eat.testbed import stage

        pipeline.setup_logging(args.work_dir / "serve.log")
        stage.serve(
            params,
            args.work_dir,
            scheduler=args.scheduler,
            host=args.host,
            port=args.port,
            models_dir=args.models,
        )
    elif args.command == "summary":
        import pandas as pd

        aggregated = pd.read_csv(args.aggregate)
        with pd.option_context("display.width", 200, "display.max_columns", None):
            for preset in aggregated["preset"].unique():
                for metric in ("latency_mean", "quality_mean"):
                    print(f"\n{preset}: {metric} [95% CI] by arrival rate (tasks/s)")
                    print(pipeline.summary_table(aggregated, preset, metric).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

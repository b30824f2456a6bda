"""Load test of the testbed's HTTP service on loopback: a bounded burst of requests.

Starts the testbed of ``params.yaml`` (``testbed``: workers, models, device), serves it
with uvicorn on 127.0.0.1 (a free port), sends ``--requests`` requests with at most
``--concurrency`` in flight and a ``--timeout`` budget for the whole burst (it stops by
itself), and prints throughput, latency percentiles and errors. Every accepted request
must complete: the exit status is 1 otherwise.

    .venv/bin/python benchmarks/testbed_load.py --requests 24 --concurrency 8

It writes ``benchmarks/results/testbed_load.json`` (``--out`` elsewhere) and ends with
``RESULT`` lines for the throughput, the latency percentiles and, last, the errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300.0, help="budget of the burst (s)")
    parser.add_argument("--scheduler", default=None, help="default: testbed.load_test.scheduler")
    parser.add_argument("--work-dir", default="/tmp/eat-testbed-load")
    parser.add_argument("--out", type=Path, default=None, help="result JSON")
    args = parser.parse_args(argv)
    if not 0 < args.requests <= 1000:
        parser.error("--requests must be in 1..1000")

    import yaml

    from eat.benchmarking import report
    from eat.params import validate_params
    from eat.testbed.bed import build_testbed, run_load_test_stage

    raw = yaml.safe_load(Path(args.params).read_text())
    raw["testbed"]["load_test"].update(
        requests=args.requests, concurrency=args.concurrency, timeout_s=args.timeout
    )
    if args.scheduler:
        raw["testbed"]["load_test"]["scheduler"] = args.scheduler
    params = validate_params(raw, source=args.params)
    bed = build_testbed(params, Path(args.work_dir))
    try:
        load = run_load_test_stage(params, bed.preset, bed.workers, bed.resolved)
    finally:
        bed.close()
    summary = load.summary()
    print(json.dumps(summary, indent=2))
    section = params.testbed
    report(
        "testbed_load",
        {
            "throughput_rps": load.throughput_rps,
            "latency_p50_s": load.latency_p50_s,
            "latency_p95_s": load.latency_p95_s,
            "latency_p99_s": load.latency_p99_s,
            "completed": load.completed,
            "errors": load.errors,
        },
        notes=(
            f"{args.requests} requests, {args.concurrency} in flight, scheduler "
            f"{section.load_test.scheduler}, {section.workers} {bed.resolved.device} workers, "
            f"{bed.resolved.model_size} models, cold caches, uvicorn on 127.0.0.1"
        ),
        out=args.out,
        headline="errors",
    )
    return 0 if load.completed == load.requests else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Load test of the testbed's HTTP service on loopback: a bounded burst of requests.

Starts the testbed of ``params.yaml`` (``testbed``: workers, models, device), serves it
with uvicorn on 127.0.0.1 (a free port), sends ``--requests`` requests with at most
``--concurrency`` in flight and a ``--timeout`` budget for the whole burst (it stops by
itself), and prints throughput, latency percentiles and errors. Every accepted request
must complete: the exit status is 1 otherwise.

    .venv/bin/python benchmarks/testbed_load.py --requests 24 --concurrency 8

The last line reads ``RESULT throughput_rps=<n> p50_s=<n> p95_s=<n> p99_s=<n> errors=<n>``.
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
    args = parser.parse_args(argv)
    if not 0 < args.requests <= 1000:
        parser.error("--requests must be in 1..1000")

    import yaml

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
        report = run_load_test_stage(params, bed.preset, bed.workers, bed.resolved)
    finally:
        bed.close()
    summary = report.summary()
    print(json.dumps(summary, indent=2))
    print(
        f"RESULT throughput_rps={report.throughput_rps:.3f} p50_s={report.latency_p50_s:.3f} "
        f"p95_s={report.latency_p95_s:.3f} p99_s={report.latency_p99_s:.3f} "
        f"errors={report.errors}"
    )
    return 0 if report.completed == report.requests else 1


if __name__ == "__main__":
    raise SystemExit(main())

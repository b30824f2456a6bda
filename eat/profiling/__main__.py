"""``python -m eat.profiling``: the profile stage alone (same as ``eat profile``, without
importing the simulator and the schedulers)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eat.params import ParamsError, load_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eat.profiling", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    parser.add_argument("--out", default="reports/profile", type=Path)
    parser.add_argument("--decision", default="reports/latency_source.json", type=Path)
    parser.add_argument("--summary", default="reports/profile_summary.json", type=Path)
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except (ParamsError, FileNotFoundError) as error:
        print(f"eat: {error}", file=sys.stderr)
        return 2
    from eat.profiling.stage import profile_stage

    summary = profile_stage(params, args.out, args.decision)
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

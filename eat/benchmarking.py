"""What every script in ``benchmarks/`` does with its figures: print them and keep them.

Each benchmark ends with its ``RESULT name=value`` lines (the headline last) and writes
``benchmarks/results/<benchmark>.json``::

    {"benchmark": "sim_speed", "results": {"edge_raw_greedy_tasks_per_s": 9406.0, ...},
     "notes": "what ran, with which settings", "machine": {...}, "measured_utc": "..."}

The documentation's benchmark figures are rendered from these files (``eat docs``), never
typed. Tests run every benchmark on a tiny budget with ``--out`` pointing elsewhere, so
the committed results are those of a real run.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    """Where the figures were measured (timings compare only on one machine)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1m_at_end": round(load[0], 2),
    }


def report(
    benchmark: str,
    results: dict[str, float],
    *,
    notes: str,
    out: Path | None = None,
    headline: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``results`` to ``out`` (default ``benchmarks/results/<benchmark>.json``) and
    print one ``RESULT`` line per figure, ``headline`` last."""
    path = Path(out) if out is not None else RESULTS_DIR / f"{benchmark}.json"
    record = {
        "benchmark": benchmark,
        "results": results,
        "notes": notes,
        "machine": machine(),
        "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")
    names = [name for name in results if name != headline]
    if headline is not None:
        names.append(headline)
    for name in names:
        value = results[name]
        print(
            f"RESULT {name}={value:.6g}" if isinstance(value, float) else f"RESULT {name}={value}"
        )
    return path

"""Compare a measured GPU profile with the shipped reference profiles; write a Markdown
report (device, date, versions, tables) and figures.

Run: ``python benchmarks/compare_profile.py PROFILE.csv [--out docs/gpu_profile_comparison.md]``
(``benchmarks/profile_gpu.sh`` runs it on a GPU machine right after profiling). The
reference is the H200 (CUDA graphs and both eager runs); when the profiled GPU is of a
type with a shipped profile (an H100 or H200), that profile is compared too, which
checks the reproducibility of the shipped numbers on this software stack.

The last line reads ``RESULT median_ratio_vs_h200_cuda_graph=<number>`` (the profiled
GPU's per-step time over the H200's, median over the points both measured).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from eat.latency import figures as profile_figures
from eat.latency.calibration import CalibratedLatency, read_architecture_table
from eat.latency.catalogue import GpuCatalogue
from eat.latency.fit import error_summary, held_out_errors, load_profile, step_points

REFERENCES = {
    "h200": [
        "sd_profile_h200_cudagraph.csv",
        "sd_profile_h200_eager_run1.csv",
        "sd_profile_h200_eager_run2.csv",
    ],
    "h100": ["sd_profile_h100_cudagraph.csv", "sd_profile_h100_eager.csv"],
}
KEYS = ["model", "batch", "resolution", "patches"]


def step_ratios(profile: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per-step time of ``profile`` over ``reference`` on the points both measured."""
    frames = []
    for mode in ("cuda_graph", "eager"):
        ours = step_points(profile, mode)
        theirs = step_points(reference, mode)
        if ours.empty or theirs.empty:
            continue
        both = ours.merge(theirs, on=[*KEYS, "pixels"], suffixes=("", "_reference"))
        frames.append(both.assign(mode=mode, ratio=both["seconds"] / both["seconds_reference"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def other_ops(profile: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Decode, encode and cold-start medians of both, side by side."""
    rows = []
    for op, by in (
        ("decode", ["model", "resolution"]),
        ("encode", ["model", "component"]),
        ("cold_start_from_disk", ["model", "component"]),
    ):
        ours = profile[profile.op == op].groupby(by)["seconds"].median()
        theirs = reference[reference.op == op].groupby(by)["seconds"].median()
        both = pd.concat({"seconds": ours, "seconds_reference": theirs}, axis=1).dropna()
        for key, row in both.iterrows():
            label = " ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
            rows.append(
                {
                    "op": op,
                    "what": label,
                    "seconds": row["seconds"],
                    "seconds_reference": row["seconds_reference"],
                    "ratio": row["seconds"] / row["seconds_reference"],
                }
            )
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".3g") -> str:
    """A GitHub Markdown table (no optional dependency such as tabulate)."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for row in frame.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(profile_path: Path, out: Path, figures: Path, metadata_path: Path | None) -> float:
    profile = load_profile(profile_path)
    device = str(profile["device"].dropna().iloc[0])
    catalogue = GpuCatalogue.load()
    gpu = catalogue.match(device)
    metadata = json.loads(metadata_path.read_text()) if metadata_path else {}
    figures.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    versions = {
        key: profile[key].dropna().iloc[0]
        for key in ("torch", "diffusers", "transformers", "cuda", "dtype")
        if key in profile and profile[key].notna().any()
    }
    lines = [
        "# GPU profile against the shipped reference",
        "",
        f"- device: **{device}** (catalogue type: {gpu or 'not in the catalogue'})",
        f"- compared: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; profiled: "
        f"{metadata.get('started_utc', 'see profile.json')}",
        f"- software: {', '.join(f'{k} {v}' for k, v in versions.items())}",
        f"- profile: `{profile_path}` ({len(profile)} rows); reference: the shipped "
        "H200 profiles (`eat/data`, PROVENANCE.md)",
        "",
    ]
    headline = float("nan")
    comparisons = ["h200"] + ([gpu] if gpu in REFERENCES and gpu != "h200" else [])
    for name in comparisons:
        reference = load_profile(REFERENCES[name])
        ratios = step_ratios(profile, reference)
        lines += [f"## Per-step time against the shipped {name.upper()} profile", ""]
        if ratios.empty:
            lines += ["No step points in common.", ""]
            continue
        summary = (
            ratios.groupby(["mode", "model", "batch"])["ratio"]
            .agg(points="size", median="median", min="min", max="max")
            .reset_index()
        )
        lines += [
            "Time on this GPU over the reference's, on the points both measured "
            "(below 1: faster here).",
            "",
            markdown_table(summary),
            "",
        ]
        if name == "h200":
            graph = ratios[ratios["mode"] == "cuda_graph"]
            headline = float(graph["ratio"].median()) if not graph.empty else float("nan")
            detail = ratios[ratios["mode"] == "cuda_graph"][
                [*KEYS, "seconds", "seconds_reference", "ratio"]
            ]
            if not detail.empty:
                lines += [
                    "<details><summary>every CUDA-graph point</summary>",
                    "",
                    markdown_table(
                        detail.assign(
                            seconds=detail.seconds * 1e3,
                            seconds_reference=detail.seconds_reference * 1e3,
                        ).rename(columns={"seconds": "ms", "seconds_reference": "ms_reference"})
                    ),
                    "",
                    "</details>",
                    "",
                ]
        others = other_ops(profile, reference)
        if not others.empty:
            lines += ["Decode, text encoding and cold start:", "", markdown_table(others), ""]
    # fit quality of this profile, and what the catalogue would have derived for it
    lines += ["## Fit of this profile (leave-one-out)", ""]
    rows = []
    for mode in ("cuda_graph", "eager"):
        if step_points(profile, mode).empty:
            continue
        summary = error_summary(held_out_errors(profile, mode))
        rows.append({"mode": mode, **summary})
    if rows:
        lines += [markdown_table(pd.DataFrame(rows)), ""]
    if gpu is not None and not step_points(profile, "cuda_graph").empty:
        model = CalibratedLatency(
            catalogue,
            {"h200": load_profile(REFERENCES["h200"]), gpu: profile}
            if gpu != "h200"
            else {"h200": profile},
            "h200",
            "cuda_graph",
            read_architecture_table(),
        )
        check = model.derivation_check()
        if not check.empty:
            lines += [
                f"## The catalogue's derivation of a {gpu} from the H200",
                "",
                f"Fitted memory-bound share with this profile: mu = {model.memory_share:.3f}. "
                "Error of the derived per-step time against this measurement:",
                "",
                markdown_table(
                    check.groupby(["model", "batch"])[["error", "error_compute_only"]]
                    .agg(lambda e: float(np.abs(e).mean()))
                    .reset_index()
                ),
                "",
            ]
    mode = "cuda_graph" if not step_points(profile, "cuda_graph").empty else "eager"
    profile_figures.steps_vs_patches(profile, mode, title=device, path=figures / "steps.png")
    profile_figures.speedup_vs_ideal(profile, mode, title=device, path=figures / "speedup.png")
    lines += [
        "## Figures",
        "",
        f"![per-step latency]({figures.name}/steps.png)",
        "",
        f"![speed-up]({figures.name}/speedup.png)",
        "",
    ]
    out.write_text("\n".join(lines))
    return headline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path, help="profile CSV written by the profiler")
    parser.add_argument("--out", type=Path, default=Path("docs/gpu_profile_comparison.md"))
    parser.add_argument("--figures", type=Path, default=None, help="default: next to --out")
    parser.add_argument("--metadata", type=Path, default=None, help="profile.json of the run")
    args = parser.parse_args()
    figures = args.figures or args.out.parent / "gpu_profile"
    headline = compare(args.profile, args.out, figures, args.metadata)
    print(f"wrote {args.out}")
    print(f"RESULT median_ratio_vs_h200_cuda_graph={headline:.4f}")


if __name__ == "__main__":
    main()

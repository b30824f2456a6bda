"""The documentation: generated pages are fresh, every key is documented.

- ``docs/parameters.md`` is the output of ``eat params --markdown`` and every key of
  ``params.yaml`` has a docstring (:mod:`eat.reference`).
- ``docs/results.md`` and the README's headline tables are rendered from the committed
  reports (:mod:`eat.reporting`): the renderer on small frames, the dvc.lock stamp, and
  the freshness of what is committed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from eat import reporting
from eat.cli import main
from eat.reference import REGENERATE as REGENERATE_PARAMETERS
from eat.reference import entries, parameter_reference, undocumented
from eat.reporting import (
    README_END,
    README_START,
    ReportError,
    Reports,
    Source,
    fmt,
    fmt_ci,
    fmt_pct,
    metrics_frame,
    render_headline,
    render_results,
)

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------
# docs/parameters.md
# ---------------------------------------------------------------------------


def test_every_params_key_is_documented():
    assert undocumented() == [], "give these fields (and classes) a docstring in eat/params.py"


def test_parameters_page_is_fresh():
    page = REPO / "docs" / "parameters.md"
    assert page.is_file(), f"docs/parameters.md is missing; generate it: {REGENERATE_PARAMETERS}"
    assert page.read_text() == parameter_reference(markdown=True), (
        f"docs/parameters.md is stale; regenerate it: {REGENERATE_PARAMETERS}"
    )


def test_reference_shows_type_allowed_values_value_and_doc():
    text = parameter_reference(markdown=True)
    # a Literal's choices are its allowed values; the value is params.yaml's
    assert "| `profile.device` | str | one of `auto`, `cuda`, `cpu` | auto |" in text
    # bounds of the field and of the items inside it, grouped
    assert "| `seeds.test` | list[int] | at least 1 item(s); item: >= 0, < 4294967296 |" in text
    # a key under <name> shows the value of every name
    assert (
        "| `env.paper.gpu_types.<name>.memory_gb` | float \\| null | > 0 | {reference: 80.0} |"
        in text
    )
    # a key whose parent is null is not set
    assert "| `env.edge.paper_latency.per_step_s` | {int: float} | value: > 0 | - |" in text
    # every section opens with its class docstring
    assert "## `evaluate`\n\nThe `evaluate` stage:" in text


def test_reference_lists_every_key_of_params_yaml():
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    sections = {row.key: row.model is not None for row in entries(values=values)}

    def walk(node: object, prefix: str) -> None:
        for name, child in node.items():
            key = f"{prefix}{name}"
            if key not in sections:  # a name the user chooses: the reference says <name>
                named = f"{prefix}<name>."
                assert any(k.startswith(named) for k in sections), f"{key} is not in the reference"
                walk(child, named)
            elif sections[key] and isinstance(child, dict):
                walk(child, f"{key}.")

    walk(values, "")


# ---------------------------------------------------------------------------
# eat.reporting: docs/results.md and the README's headline tables
# ---------------------------------------------------------------------------

# (mean, low, high) of latency_mean and quality_mean per scheduler and rate
LATENCY = {
    ("fifo", 0.01): (58.47, 48.71, 68.83),
    ("fifo", 0.05): (156.4, 112.9, 201.2),
    ("random", 0.01): (36.6, 32.8, 40.5),
    ("random", 0.05): (1234.6, 0.004567, 9.996),
    ("eat", 0.01): (36.3, 33.5, 39.3),
    ("eat", 0.05): (44.0, 40.0, 48.0),
}
QUALITY = {"fifo": (0.2674, 0.2674), "random": (0.199, 0.2025), "eat": (0.266, 0.267)}


def small_metrics() -> dict[str, dict]:
    """A metrics.json of one preset, three schedulers, two rates."""
    metrics = {}
    for (scheduler, rate), (mean, low, high) in LATENCY.items():
        quality = QUALITY[scheduler][0 if rate == 0.01 else 1]
        entry = {
            "n_seeds": 10,
            "latency_mean": mean,
            "latency_mean_ci": [low, high],
            "quality_mean": quality,
            "quality_mean_ci": [quality, quality],
            "reward_mean": 8.0,
            "reward_mean_ci": [7.5, 8.5],
        }
        if scheduler == "eat":
            entry["n_train_seeds"] = 5
        metrics[f"paper/{scheduler}/{rate:g}"] = entry
    return metrics


def small_aggregate() -> pd.DataFrame:
    rows = [
        {
            "preset": "paper",
            "scheduler": s,
            "rate": r,
            "n_seeds": 10,
            "steps_mean": 25.0,
            "gang_size_mean": 2.3,
        }
        for s, r in LATENCY
    ]
    return pd.DataFrame(rows)


def small_reports(**optional) -> Reports:
    return Reports(
        metrics=metrics_frame(small_metrics()),
        aggregate=small_aggregate(),
        schedulers=["random", "fifo", "eat"],
        confidence=0.9,
        sources=[
            Source("reports/metrics.json", "evaluate", "reports/metrics.json", "0123abcd" * 4)
        ],
        **optional,
    )


def test_the_renderers_names_follow_the_packages_own():
    """eat.reporting reads reports without importing the simulator or torch, so it keeps
    its own copies of these names: they must stay those of the code that writes them."""
    from eat.evaluation.scale import REFERENCE
    from eat.schedulers.rl import LEARNED_AGENTS

    assert reporting.AGENTS == LEARNED_AGENTS
    assert reporting.SCALE_REFERENCE == REFERENCE


def test_numbers_have_three_significant_digits_and_no_exponent():
    assert [fmt(v) for v in (156.4, 58.47, 0.26743, 1234.6, 9.996, 0.004567, 0)] == [
        "156",
        "58.5",
        "0.267",
        "1235",
        "10.0",
        "0.00457",
        "0",
    ]
    assert fmt(None) == fmt(float("nan")) == "n/a"
    assert fmt_ci(58.47, 48.71, 68.83) == "58.5 [48.7, 68.8]"
    assert fmt_pct(0.1664) == "+16.6%" and fmt_pct(-0.013) == "-1.3%"


def test_headline_renders_latency_intervals_quality_and_stamp():
    text = render_headline(small_reports())
    assert "| scheduler | 0.01 tasks/s | 0.05 tasks/s | quality |" in text
    # schedulers in the repro's order, intervals formatted, quality as a range over rates
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows == [
        "| `random` | 36.6 [32.8, 40.5] | 1235 [0.00457, 10.0] | 0.199-0.203 |",
        "| `fifo` | 58.5 [48.7, 68.8] | 156 [113, 201] | 0.267 |",
        "| `eat` | 36.3 [33.5, 39.3] | 44.0 [40.0, 48.0] | 0.266-0.267 |",
    ]
    assert "(90% bootstrap interval" in text
    assert f"`reports/metrics.json`, stage `evaluate`, md5 `{'0123abcd' * 4}` in `dvc.lock`" in text


def test_results_page_stamps_inputs_and_leaves_out_missing_sections():
    reports = small_reports(missing=["reports/evaluate/ablation.csv"])
    text = render_results(reports)
    assert (
        f"| `reports/metrics.json` | evaluate | `reports/metrics.json` | `{'0123abcd' * 4}` |"
        in text
    )
    assert "| `fifo` | 58.5 [48.7, 68.8] | 156 [113, 201] |" in text  # the latency sweep
    assert "| `fifo` | 25.0 / 2.30 | 25.0 / 2.30 |" in text  # steps / gang, from aggregate.csv
    assert "Test seeds per point: 10; training seeds per learned agent: 5." in text
    assert "_Not shown: `reports/evaluate/ablation.csv` is not in this checkout" in text
    assert "_Not shown: `reports/evaluate/eat_vs_baselines.csv` is not in this checkout" in text
    assert "## Ablation" in text and "## Benchmarks" in text


def test_results_page_compares_eat_with_the_best_heuristic_and_random():
    comparison = pd.DataFrame(
        [
            {
                "preset": "paper",
                "rate": 0.01,
                "scheduler": "fifo",
                "best_heuristic": True,
                "eat_latency": 36.3,
                "latency": 58.47,
                "latency_reduction": 1 - 36.3 / 58.47,
                "eat_reward": 8.0,
                "reward": 7.5,
                "eat_quality": 0.266,
                "quality": 0.267,
            },
            {
                "preset": "paper",
                "rate": 0.01,
                "scheduler": "random",
                "best_heuristic": False,
                "eat_latency": 36.3,
                "latency": 36.6,
                "latency_reduction": 1 - 36.3 / 36.6,
                "eat_reward": 8.0,
                "reward": 8.25,
                "eat_quality": 0.266,
                "quality": 0.199,
            },
        ]
    )
    text = render_results(small_reports(eat_vs_baselines=comparison))
    assert "| 0.01 | 36.3 [33.5, 39.3] | 36.6 [32.8, 40.5] | `fifo` 58.5 [48.7, 68.8] |" in text
    assert "| 0.01 | +0.8%, reward -0.25 | `fifo`: +37.9%, reward +0.50 |" in text


def test_the_targets_compare_eat_with_every_other_learned_agent_rate_by_rate():
    metrics = small_metrics()
    for rate, reward in ((0.01, 7.0), (0.05, 8.5)):  # below eat's 8.0, then above it
        metrics[f"paper/ppo/{rate:g}"] = {**metrics[f"paper/eat/{rate:g}"], "reward_mean": reward}
    text = render_results(dataclasses.replace(small_reports(), metrics=metrics_frame(metrics)))
    assert "| preset | rate (tasks/s) | above `ppo` |" in text
    assert "| `paper` | 0.01 | +1.00 (met) |" in text
    assert "| `paper` | 0.05 | -0.500 (missed) |" in text
    # without another learned agent there is no such table
    assert "above `" not in render_results(small_reports())


def test_the_phase_section_shows_where_the_policy_departs_from_its_teacher():
    phases = pd.DataFrame(
        [
            {
                "preset": "edge",
                "agent": "eat",
                "seed": 0,
                "phase": "bc",
                "val_reward": 11.5,
                "gain": float("nan"),
                "teacher_val_reward": 12.0,
            }
        ]
    )
    agreement = pd.DataFrame(
        [
            {
                "preset": "edge",
                "agent": "eat",
                "seed": 0,
                "teacher": "rollout",
                "decisions": 1733.0,
                "same_decision": 0.364,
                "same_gate": 0.883,
                "same_task": 0.983,
                "same_servers": 0.882,
                "same_steps": 0.436,
                "steps_error": 1.033,
                "teacher_waits": 0.146,
                "learner_waits": 0.077,
            }
        ]
    )
    text = render_results(small_reports(phases=phases, agreement=agreement))
    assert (
        "| `edge` | `eat` (seed 0) | `rollout` | 1733 | 36% | 88% | 15% / 8% | 98% | 88% | 44% (1.03) |"
        in text
    )
    assert "same steps (mean error)" not in render_results(small_reports(phases=phases))


def _write_repo(root: Path, *, benchmark: dict | None = None) -> None:
    """A repository root with the required reports and a dvc.lock that records them."""
    (root / "reports" / "evaluate").mkdir(parents=True)
    (root / "reports" / "metrics.json").write_text(json.dumps(small_metrics()))
    small_aggregate().to_csv(root / "reports" / "evaluate" / "aggregate.csv", index=False)
    if benchmark is not None:
        (root / "benchmarks" / "results").mkdir(parents=True)
        (root / "benchmarks" / "results" / "sim_speed.json").write_text(json.dumps(benchmark))
    lock = {
        "schema": "2.0",
        "stages": {
            "evaluate": {
                "cmd": "papermill ...",
                "params": {
                    "params.yaml": {
                        "evaluate": {"schedulers": ["random", "fifo", "eat"], "confidence": 0.9}
                    }
                },
                "outs": [
                    {"path": out, "hash": "md5", "md5": reporting.dvc_md5(root / out)}
                    for out in ("reports/evaluate", "reports/metrics.json")
                ],
            }
        },
    }
    (root / "dvc.lock").write_text(json.dumps(lock))
    (root / "README.md").write_text(f"# eat\n\n{README_START}\n{README_END}\n\nMore.\n")


def test_dvc_md5_of_a_folder_is_dvcs():
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    folder = Path(__file__).resolve().parent  # any folder with files in subfolders
    tree = Tree()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            md5 = reporting.dvc_md5(path)
            tree.add(path.relative_to(folder).parts, None, HashInfo("md5", md5))
    tree.digest()
    assert reporting.dvc_md5(folder) == tree.hash_info.value


def test_load_reports_stamps_from_dvc_lock(tmp_path):
    benchmark = {
        "benchmark": "sim_speed",
        "results": {"paper_env_tasks_per_s": 10234.6},
        "notes": "one core",
    }
    _write_repo(tmp_path, benchmark=benchmark)
    reports = reporting.load_reports(tmp_path)
    assert reports.confidence == 0.9 and reports.schedulers == ["random", "fifo", "eat"]
    metrics = reports.source("reports/metrics.json")
    assert metrics.stage == "evaluate" and metrics.md5 == reporting.dvc_md5(
        tmp_path / "reports/metrics.json"
    )
    aggregate = reports.source("reports/evaluate/aggregate.csv")
    assert aggregate.out == "reports/evaluate" and aggregate.md5.endswith(".dir")
    assert "reports/evaluate/ablation.csv" in reports.missing
    text = render_results(reports)
    assert "| `paper_env_tasks_per_s` | 10235 |" in text and "one core" in text


def test_required_reports_missing_or_changed_are_errors(tmp_path):
    _write_repo(tmp_path)
    (tmp_path / "reports" / "metrics.json").write_text("{}")
    with pytest.raises(
        ReportError, match=r"reports/metrics\.json \(stage evaluate\) differs from dvc\.lock"
    ):
        reporting.load_reports(tmp_path)
    (tmp_path / "reports" / "evaluate" / "aggregate.csv").unlink()
    with pytest.raises(ReportError, match=r"aggregate\.csv does not exist"):
        reporting.load_reports(tmp_path)


def test_benchmark_results_render_and_other_records_are_named(tmp_path):
    benchmark = {
        "benchmark": "decision_latency",
        "results": {"eat_decision_ms_median": 1.234, "errors": 0},
        "notes": "one thread",
        "measured_utc": "2026-12-01T11:00:00Z",
        "machine": {"cpus": 2},
    }
    _write_repo(tmp_path, benchmark=benchmark)
    (tmp_path / "benchmarks" / "results" / "testbed_gpu_check.json").write_text('{"rows": []}')
    text = render_results(reporting.load_reports(tmp_path))
    assert "### `decision_latency` (`benchmarks/results/sim_speed.json`)" in text
    assert "Measured 2026-12-01T11:00:00Z; cpus 2." in text
    assert "| `eat_decision_ms_median` | 1.23 |\n| `errors` | 0 |" in text
    assert "not rendered here: `benchmarks/results/testbed_gpu_check.json`." in text


def test_benchmark_files_must_follow_the_schema(tmp_path):
    _write_repo(
        tmp_path, benchmark={"benchmark": "sim_speed", "results": {"x": "fast"}, "notes": ""}
    )
    with pytest.raises(
        ReportError, match=r"benchmarks/results/sim_speed\.json is not a benchmark result"
    ):
        reporting.load_reports(tmp_path)


def test_readme_markers_are_required(tmp_path):
    with pytest.raises(ReportError, match="must hold the markers"):
        reporting.splice("# no markers\n", "table\n")
    spliced = reporting.splice(f"a\n{README_START}\nold\n{README_END}\nb\n", "new\n")
    assert spliced == f"a\n{README_START}\nnew\n{README_END}\nb\n"
    assert reporting.readme_block(spliced) == "new\n"


def test_eat_docs_writes_then_check_passes(tmp_path, capsys):
    _write_repo(tmp_path)
    assert main(["--root", str(tmp_path), "docs", "--check"]) == 1
    assert "results.md is stale" in capsys.readouterr().err
    assert main(["--root", str(tmp_path), "docs"]) == 0
    assert main(["--root", str(tmp_path), "docs", "--check"]) == 0
    readme = (tmp_path / "README.md").read_text()
    assert "| `fifo` | 58.5 [48.7, 68.8] | 156 [113, 201] | 0.267 |" in readme
    assert readme.startswith("# eat\n") and readme.endswith("\nMore.\n")
    (tmp_path / "reports" / "metrics.json").unlink()
    assert main(["--root", str(tmp_path), "docs", "--check"]) == 2
    assert "metrics.json does not exist" in capsys.readouterr().err


def test_committed_results_are_fresh():
    """docs/results.md and the README's headline tables are what the committed reports
    render to. Without committed reports this fails: run the full pipeline
    (bash scripts/repro.sh), then `eat docs`, and commit reports/, docs/results.md and
    README.md."""
    metrics = REPO / "reports" / "metrics.json"
    assert metrics.is_file(), (
        "reports/metrics.json is not committed: run bash scripts/repro.sh, then "
        f"{reporting.REGENERATE}, and commit reports/, docs/results.md and README.md"
    )
    stale = [str(path.relative_to(REPO)) for path in reporting.stale_docs(REPO)]
    assert stale == [], f"stale: {stale}; regenerate with {reporting.REGENERATE}"


# ---------------------------------------------------------------------------
# README.md and the guide in docs/
# ---------------------------------------------------------------------------

README_PATH = REPO / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {
        _slug(line.lstrip("#")) for line in page.read_text().splitlines() if line.startswith("#")
    }


def _links(page: Path) -> list[tuple[Path, str]]:
    """Every relative link of ``page`` into docs/ or the README: (target, anchor)."""
    found = []
    for target in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve()
        if resolved.suffix == ".md":
            found.append((resolved, anchor))
    return found


def _readme_doc_links() -> list[str]:
    return sorted(
        {target for target in LINK.findall(README_PATH.read_text()) if target.startswith("docs/")}
    )


def test_readme_is_a_door_of_at_most_300_lines():
    lines = README_PATH.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move explanations into docs/"


@pytest.mark.parametrize("target", _readme_doc_links())
def test_readme_docs_link_resolves(target):
    path, _, anchor = target.partition("#")
    page = REPO / path
    generated = {
        "docs/results.md": reporting.REGENERATE,
        "docs/parameters.md": REGENERATE_PARAMETERS,
    }
    hint = f"; it is generated: {generated[path]}" if path in generated else ""
    assert page.is_file(), f"README.md links {path}, which does not exist{hint}"
    if anchor:
        assert anchor in _anchors(page), f"README.md links {target}: {path} has no such heading"


@pytest.mark.parametrize("page", sorted((REPO / "docs").glob("*.md")), ids=lambda p: p.name)
def test_links_between_docs_resolve(page):
    for target, anchor in _links(page):
        assert target.is_file(), (
            f"{page.name} links {target.relative_to(REPO)}, which does not exist"
        )
        if anchor:
            assert anchor in _anchors(target), (
                f"{page.name} links {target.name}#{anchor}: no such heading"
            )


def test_no_tracker_numbers_in_the_documentation_or_code():
    pattern = re.compile(r"\bissues?\s*#?\s*\d+", re.IGNORECASE)
    files = [README_PATH, REPO / "dvc.yaml", REPO / "params.yaml"]
    for folder, glob in (
        ("docs", "**/*.md"),
        ("eat", "**/*.py"),
        ("eat", "**/*.md"),
        ("notebooks", "*.ipynb"),
    ):
        files += sorted((REPO / folder).glob(glob))
    hits = [
        f"{path.relative_to(REPO)}: {match.group(0)!r}"
        for path in files
        for match in pattern.finditer(path.read_text())
    ]
    assert hits == [], "internal tracker references: " + "; ".join(hits)


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README_PATH.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no ```python example"
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", blocks[0]],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"the README's example failed:\n{done.stderr[-3000:]}"
    assert "greedy: mean latency" in done.stdout and "fastest_alone" in done.stdout


def test_the_paper_scale_settings_of_the_agents_page_are_valid_params():
    """The GPU-workstation block of docs/learned_agents.md, merged into params.yaml."""
    from eat.params import apply_overrides, validate_params

    page = (REPO / "docs" / "learned_agents.md").read_text()
    after = page.split("a buffer of 1e6, MLPs of 256) is, for a GPU workstation:", 1)[1]
    block = after.split("```yaml", 1)[1].split("```", 1)[0]
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    merged = validate_params(apply_overrides(raw, yaml.safe_load(block)))
    assert merged.train.resolve("total_steps", "edge") == 500000

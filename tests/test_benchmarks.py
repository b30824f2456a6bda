"""Every script in benchmarks/ runs on a tiny budget and ends with its RESULT line, so
that none can rot unseen (compare_profile.py is run by tests/test_profiling.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
SCRIPTS = sorted(path.name for path in (REPO / "benchmarks").glob("*.py"))


def run_script(args: list[str], timeout: float = 600, env: dict | None = None) -> str:
    result = subprocess.run(
        args,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def last_result(stdout: str) -> tuple[str, str]:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), f"last line is not a RESULT line: {last!r}"
    name, value = last.removeprefix("RESULT ").split("=", 1)
    return name, value


def test_every_benchmark_script_is_run_by_a_test():
    tested = {path.name for path in (REPO / "tests").glob("*.py")}
    sources = "".join((REPO / "tests" / name).read_text() for name in sorted(tested))
    for script in [*SCRIPTS, "profile_gpu.sh"]:
        assert f'"{script}"' in sources or f"benchmarks/{script}" in sources, script


def test_sim_speed(tmp_path):
    out = tmp_path / "sim_speed.json"
    stdout = run_script(
        [
            sys.executable,
            "benchmarks/sim_speed.py",
            "--seconds",
            "0.2",
            "--sizes",
            "8,16",
            "--memory-tasks",
            "400",
            "--out",
            str(out),
        ]
    )
    assert last_result(stdout)[0] == "edge_raw_greedy_tasks_per_s"
    assert "RESULT edge_raw_first_fit_tasks_per_s=" in stdout
    record = json.loads(out.read_text())
    assert record["benchmark"] == "sim_speed" and record["results"]["paper_env_tasks_per_s"] > 0
    assert record["results"]["scale_16_eat_decision_ms_median"] > 0
    for preset in ("paper", "edge"):
        assert record["results"][f"{preset}_rollout_decisions_per_s"] > 0


def test_scale_eval(tmp_path, params):
    docs = tmp_path / "scale.md"
    docs.write_text("# Scale\n<!-- scale-speed:begin -->\n<!-- scale-speed:end -->\n")
    out = tmp_path / "scale_eval.json"
    stdout = run_script(
        [
            sys.executable,
            "benchmarks/scale_eval.py",
            "--load-tasks",
            "50",
            "--docs",
            str(docs),
            "--out",
            str(out),
        ]
    )
    assert last_result(stdout)[0] == "peak_rss_mb"
    assert "| 1024 |" in docs.read_text()  # the speed table of the committed sim_speed.json
    results = json.loads(out.read_text())["results"]
    for rate in params.evaluate.rates["metro"]:
        assert 0 < results[f"load_{rate:g}_utilisation"] <= 1


def test_exact_optimum(tmp_path):
    out = tmp_path / "exact_optimum.json"
    stdout = run_script(
        [
            sys.executable,
            "benchmarks/exact_optimum.py",
            "--sizes",
            "3:1",
            "--presolve-check",
            "0",
            "--out",
            str(out),
        ]
    )
    name, value = last_result(stdout)
    assert name == "n3_solve_s_max" and float(value) > 0
    results = json.loads(out.read_text())["results"]
    assert results["n3_proven_share"] == 1.0
    assert results["n3_replay_error_over_tolerance_max"] <= 1.0


def test_decision_latency(tmp_path):
    out = tmp_path / "decision_latency.json"
    stdout = run_script(
        [
            sys.executable,
            "benchmarks/decision_latency.py",
            "--episodes",
            "1",
            "--models",
            str(tmp_path / "no-models"),
            "--out",
            str(out),
        ]
    )
    name, value = last_result(stdout)
    assert name == "eat_decision_ms_median" and float(value) > 0
    assert "fresh weights" in json.loads(out.read_text())["notes"]


def test_testbed_load(tmp_path):
    out = tmp_path / "testbed_load.json"
    stdout = run_script(
        [
            sys.executable,
            "benchmarks/testbed_load.py",
            "--requests",
            "2",
            "--concurrency",
            "2",
            "--work-dir",
            str(tmp_path / "bed"),
            "--out",
            str(out),
        ]
    )
    assert last_result(stdout) == ("errors", "0")
    assert json.loads(out.read_text())["results"]["completed"] == 2


def test_testbed_gpu_check_runs_on_cpu_tiny_models(tmp_path):
    out = tmp_path / "check.json"
    stdout = run_script(
        [
            sys.executable,
            "benchmarks/testbed_gpu_check.py",
            "--smoke-cpu",
            "--resolutions",
            "64",
            "--steps",
            "2",
            "--tasks",
            "1",
            "--model-root",
            str(tmp_path / "models"),
            "--out",
            str(out),
        ]
    )
    assert last_result(stdout)[0] == "worst_step_ratio"
    assert json.loads(out.read_text())["rows"]


def test_profile_gpu_script_smoke_on_cpu(tmp_path):
    """The GPU session script's steps (profile stage, comparison) on this CPU."""
    stdout = run_script(
        ["bash", "benchmarks/profile_gpu.sh", "smoke", str(tmp_path)],
        env={"PYTHON": sys.executable},
    )
    assert last_result(stdout)[0] == "median_ratio_vs_h200_cuda_graph"
    assert (tmp_path / "docs" / "gpu_profile_comparison.md").stat().st_size > 0
    assert (
        json.loads((tmp_path / "work" / "reports" / "latency_source.json").read_text())["source"]
        == "reference"
    )

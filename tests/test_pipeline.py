"""The whole DVC pipeline on a tiny parameter set, in a temporary copy of the repository:
``dvc repro``, its outputs and metrics, then ``dvc push`` to a local remote and a fresh
clone restored by ``dvc pull``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow

PRESETS = ("paper", "edge")
RATES = {"paper": [0.03, 0.09], "edge": [0.5, 1.5]}
REQUIRED_FIELDS = (
    "latency_mean",
    "latency_p95",
    "quality_mean",
    "reward_mean",
    "deadline_attainment",
    "cold_starts_per_task",
    "latency_mean_ci",
    "n_seeds",
)


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


def tiny_params() -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["env"]["paper"]["workload"].update(total_tasks=6, initial_tasks=3)
    raw["env"]["edge"]["workload"].update(total_tasks=8)
    raw["build_env"]["sample_episodes"] = 1
    # Profile: the CPU smoke run on the smallest grid (seconds).
    raw["profile"]["tiny"].update(
        resolutions={"sd15": [64, 128], "sdxl": [64]},
        patches=[1, 2],
        batches=[2],
        warmup=0,
        repeats=1,
        cold_start_trials=1,
    )
    # Learned agents: every agent and ablation variant, one seed, a few dozen decisions.
    raw["train"].update(
        n_seeds=1,
        validation_seeds=1,
        width=8,
        heads=2,
        hidden=8,
        batch_size=16,
        total_steps={"paper": 24, "edge": 24},
        eval_every={"paper": 24, "edge": 24},
        demo_episodes={"paper": 1, "edge": 1},
        bc_updates={"paper": 4, "edge": 4},
        critic_warmup_updates=2,
        learning_starts=8,
        num_cpus=2,
    )
    raw["train"]["ablation"]["n_seeds"] = 1
    # Testbed: two CPU workers, 64 px images, three tasks per scheduler, two HTTP requests.
    raw["testbed"].update(
        workers=2,
        min_steps=2,
        max_steps=4,
        schedulers=["fifo", "eat"],
        model_root=".testbed-models",
        profile={"warmup": 0, "repeats": 1, "cold_start_trials": 1},
    )
    raw["testbed"]["workload"].update(total_tasks=3, rate=4.0)
    raw["testbed"]["load_test"].update(requests=2, concurrency=2)
    raw["testbed"]["tiny"]["models"] = {
        "sd15": {"share": 0.5, "resolutions": [64]},
        "sdxl": {"share": 0.5, "resolutions": [64]},
    }
    raw["evaluate"].update(
        rates=RATES,
        n_seeds=2,
        bootstrap_resamples=200,
        gantt={"preset": "edge", "scheduler": "eft", "rate": 0.5},
    )
    return raw


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A git repository holding the working tree's tracked and unignored files."""
    root = tmp_path_factory.mktemp("pipeline")
    repo = root / "repo"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        source = REPO / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    return repo


@pytest.fixture(scope="module")
def env(workdir: Path) -> dict[str, str]:
    environment = dict(os.environ)
    # The stage commands call `python -m papermill`: the test's interpreter, and the copy's
    # own `eat` package ahead of the installed one.
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment["PYTHONPATH"] = str(workdir)
    environment["DVC_NO_ANALYTICS"] = "1"
    environment["GIT_AUTHOR_NAME"] = environment["GIT_COMMITTER_NAME"] = "eat tests"
    environment["GIT_AUTHOR_EMAIL"] = environment["GIT_COMMITTER_EMAIL"] = "tests@localhost"
    return environment


@pytest.fixture(scope="module")
def reproduced(workdir: Path, env: dict[str, str]) -> Path:
    dvc = [sys.executable, "-m", "dvc"]
    run(["git", "init", "-q", "-b", "main"], workdir, env)
    run(["git", "add", "-A"], workdir, env)
    run(["git", "commit", "-qm", "tiny pipeline"], workdir, env)
    run([*dvc, "repro"], workdir, env)
    return workdir


def test_repro_writes_every_output_and_metric(reproduced: Path, env):
    metrics = json.loads((reproduced / "reports/metrics.json").read_text())
    schedulers = yaml.safe_load((reproduced / "params.yaml").read_text())["evaluate"]["schedulers"]
    expected = {
        f"{preset}/{name}/{rate:g}"
        for preset in PRESETS
        for name in schedulers
        for rate in RATES[preset]
    }
    assert set(metrics) == expected
    for key, entry in metrics.items():
        for field in REQUIRED_FIELDS:
            assert field in entry, f"{key} lacks {field}"
        low, high = entry["latency_mean_ci"]
        assert low <= entry["latency_mean"] <= high
        assert entry["n_seeds"] == 2
        assert 0.0 <= entry["deadline_attainment"] <= 1.0
    summary = json.loads((reproduced / "reports/env_summary.json").read_text())
    assert set(summary) == set(PRESETS)
    # No GPU here: the profile stage ran the smoke profile and kept the reference profiles,
    # and the environment says so.
    decision = json.loads((reproduced / "reports/latency_source.json").read_text())
    assert decision["source"] == "reference" and "no CUDA device" in decision["reason"]
    profiled = json.loads((reproduced / "reports/profile_summary.json").read_text())
    assert profiled["device_type"] == "cpu" and profiled["model_size"] == "tiny"
    assert profiled["latency_source"] == "reference"
    assert summary["edge"]["latency_source"].startswith("shipped reference profiles")
    assert (reproduced / "reports/profile/profile.csv").stat().st_size > 0
    for name in ("paper_latency_vs_rate", "edge_latency_cdf", "edge_latency_quality", "gantt"):
        assert (reproduced / f"reports/eval/plots/{name}.png").stat().st_size > 10_000
    for agent in ("eat", "d2sac", "sac"):
        assert (reproduced / f"models/paper/{agent}/seed0/actor.pt").exists()
        assert metrics[f"paper/{agent}/0.03"]["n_train_seeds"] == 1
    assert (reproduced / "reports/eval/eat_vs_baselines.csv").exists()
    assert (reproduced / "reports/eval/plots/ablation.png").stat().st_size > 10_000
    assert (reproduced / "reports/train/plots/paper_training.png").stat().st_size > 10_000
    train_summary = json.loads((reproduced / "reports/train_summary.json").read_text())
    assert train_summary["paper/eat"]["n_seeds"] == 1
    testbed = json.loads((reproduced / "reports/testbed_metrics.json").read_text())
    assert set(testbed["schedulers"]) == {"fifo", "eat"} and testbed["failures"] == 0
    assert all(entry["tasks"] == 3 for entry in testbed["schedulers"].values())
    assert testbed["load_test"]["completed"] == 2 and testbed["setup"]["device"] == "cpu"
    assert (reproduced / "reports/testbed/real_vs_sim_latency.png").stat().st_size > 10_000
    for notebook in ("01_profile", "02_environment", "03_train", "04_evaluate", "05_testbed"):
        executed = nbformat.read(reproduced / f"reports/notebooks/{notebook}.ipynb", as_version=4)
        outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
        assert outputs and not [o for o in outputs if o.output_type == "error"]
    # The source notebooks stay without outputs.
    source = nbformat.read(reproduced / "notebooks/04_evaluate.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in source.cells if c.cell_type == "code")
    status = run([sys.executable, "-m", "dvc", "status"], reproduced, env)
    assert "up to date" in status
    shown = run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], reproduced, env)
    assert "paper/fifo/0.03" in shown


def test_push_then_fresh_clone_pull_restores_outputs(reproduced: Path, env, tmp_path):
    dvc = [sys.executable, "-m", "dvc"]
    remote = tmp_path / "remote"
    run([*dvc, "remote", "add", "-d", "-f", "local", str(remote)], reproduced, env)
    run(["git", "add", "-A"], reproduced, env)
    run(["git", "commit", "-qm", "pipeline outputs and remote"], reproduced, env)
    run([*dvc, "push"], reproduced, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(reproduced), str(clone)], tmp_path, env)
    assert not (clone / "reports/metrics.json").exists()
    run([*dvc, "pull"], clone, {**env, "PYTHONPATH": str(clone)})
    for name in (
        "reports/metrics.json",
        "reports/env_summary.json",
        "reports/eval/aggregate.csv",
        "reports/eval/plots/gantt.png",
        "reports/notebooks/04_evaluate.ipynb",
        "reports/env/edge_latency_table.png",
        "models/paper/eat/seed0/actor.pt",
        "reports/train_summary.json",
    ):
        assert (clone / name).read_bytes() == (reproduced / name).read_bytes(), name
    status = run([*dvc, "status"], clone, {**env, "PYTHONPATH": str(clone)})
    assert "up to date" in status


def test_cli_reproduces_the_notebook_metrics(reproduced: Path, env, tmp_path):
    """The command-line entry point runs the same computation as the evaluate notebook:
    same params, same numbers (all but the wall-clock decision times)."""
    out = tmp_path / "eval"
    run(
        [
            sys.executable,
            "-m",
            "eat",
            "--params",
            "params.yaml",
            "evaluate",
            "--out",
            str(out),
            "--metrics",
            str(tmp_path / "metrics.json"),
            "--no-progress",
        ],
        reproduced,
        env,
    )
    ours = json.loads((tmp_path / "metrics.json").read_text())
    pipeline = json.loads((reproduced / "reports/metrics.json").read_text())
    assert ours.keys() == pipeline.keys()
    for key, entry in ours.items():
        for field, value in entry.items():
            if not field.startswith("decision_ms"):
                assert value == pipeline[key][field], f"{key} {field}"
    summary = run([sys.executable, "-m", "eat", "summary"], reproduced, env)
    assert "paper: latency_mean [95% CI]" in summary and "edge: quality_mean" in summary
    build = run(
        [
            sys.executable,
            "-m",
            "eat",
            "build-env",
            "--out",
            str(tmp_path / "env"),
            "--summary",
            str(tmp_path / "env.json"),
        ],
        reproduced,
        env,
    )
    assert json.loads(build) == json.loads((reproduced / "reports/env_summary.json").read_text())

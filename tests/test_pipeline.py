"""The quick path (``scripts/quick.sh``): every stage through ``dvc repro`` on the quick
parameter set, in a scratch copy that is a git repository of its own; then what a user
does with the results: metrics and plots from git alone, ``dvc push`` and a fresh clone
restored by ``dvc pull``, an experiment with ``dvc exp run -S``, and the command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml

from eat.stages.paths import NOTEBOOKS, Paths
from tests.conftest import REPO

pytestmark = pytest.mark.slow

PRESETS = ("paper", "edge")
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


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment["DVC_NO_ANALYTICS"] = "1"
    environment["GIT_AUTHOR_NAME"] = environment["GIT_COMMITTER_NAME"] = "eat tests"
    environment["GIT_AUTHOR_EMAIL"] = environment["GIT_COMMITTER_EMAIL"] = "tests@localhost"
    return environment


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, env: dict[str, str]) -> Path:
    """``bash scripts/quick.sh DIR``, exactly as the README gives it."""
    copy = tmp_path_factory.mktemp("pipeline") / "quick"
    run(["bash", "scripts/quick.sh", str(copy)], REPO, env, timeout=900)
    return copy


def in_copy(env: dict[str, str], copy: Path) -> dict[str, str]:
    """The copy's own eat package ahead of the installed one."""
    return {**env, "PYTHONPATH": str(copy)}


def test_quick_repro_writes_every_output_and_metric(reproduced: Path, env):
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    quick = yaml.safe_load((REPO / "params.quick.yaml").read_text())
    rates = params["evaluate"]["rates"]
    assert {name: rates[name] for name in quick["evaluate"]["rates"]} == quick["evaluate"][
        "rates"
    ]  # the quick set ran
    paths = Paths(reproduced)
    metrics = json.loads(paths.evaluate.metrics.read_text())
    rates = params["evaluate"]["rates"]
    expected = {
        f"{preset}/{name}/{rate:g}"
        for preset in PRESETS
        for name in params["evaluate"]["schedulers"]
        for rate in rates[preset]
    }
    assert set(metrics) == expected
    for key, entry in metrics.items():
        for field in REQUIRED_FIELDS:
            assert field in entry, f"{key} lacks {field}"
        low, high = entry["latency_mean_ci"]
        assert low <= entry["latency_mean"] <= high
        assert entry["n_seeds"] == params["evaluate"]["n_seeds"]
        assert 0.0 <= entry["deadline_attainment"] <= 1.0
    summary = json.loads(paths.build_env.metrics.read_text())
    assert set(summary) == set(PRESETS)
    # No GPU here: the profile stage ran the smoke profile and kept the reference profiles,
    # and the environment says so.
    decision = json.loads(paths.latency_source.read_text())
    assert decision["source"] == "reference" and "no CUDA device" in decision["reason"]
    profiled = json.loads(paths.profile.metrics.read_text())
    assert profiled["device_type"] == "cpu" and profiled["model_size"] == "tiny"
    assert profiled["latency_source"] == "reference"
    assert summary["edge"]["latency_source"].startswith("shipped reference profiles")
    assert (paths.profile.results / "profile.csv").stat().st_size > 0
    plots = paths.evaluate.artifacts / "plots"
    for name in ("paper_latency_vs_rate", "edge_latency_cdf", "edge_latency_quality", "gantt"):
        assert (plots / f"{name}.png").stat().st_size > 10_000
    first_rate = rates["paper"][0]
    for agent in ("eat", "d2sac", "sac"):
        assert (paths.models / "paper" / agent / "seed0" / "actor.pt").exists()
        assert metrics[f"paper/{agent}/{first_rate:g}"]["n_train_seeds"] == 1
    for agent in ("ppo", "maskable_ppo"):  # the third-party learners, in the default matrix
        assert (paths.models / "edge" / agent / "seed0" / "policy.pt").exists()
        assert metrics[f"edge/{agent}/{rates['edge'][0]:g}"]["n_train_seeds"] == 1
    assert (paths.evaluate.results / "eat_vs_baselines.csv").exists()
    assert (plots / "ablation.png").stat().st_size > 10_000
    assert (paths.train.artifacts / "paper_training.png").stat().st_size > 10_000
    train_summary = json.loads(paths.train.metrics.read_text())
    assert train_summary["paper/eat"]["n_seeds"] == 1
    for preset in params["train"]["presets"]:  # eat against its teacher, decision by decision
        agreement = train_summary["agreement"][f"{preset}/eat"]
        assert agreement["decisions"] > 0 and 0.0 <= agreement["same_gate"] <= 1.0
        # the same weights completed each way, the way they were trained named
        completed = train_summary["completion"][f"{preset}/eat"]
        trained_with = params["train"]["completion"]
        if isinstance(trained_with, dict):
            trained_with = trained_with[preset]
        assert completed["trained_with"] == trained_with
        assert all(np.isfinite(completed[f"{c}_reward"]) for c in ("learned", "immediate_reward"))
    testbed = json.loads(paths.testbed.metrics.read_text())
    assert set(testbed["schedulers"]) == set(params["testbed"]["schedulers"])
    assert testbed["failures"] == 0
    tasks = params["testbed"]["workload"]["total_tasks"]
    assert all(entry["tasks"] == tasks for entry in testbed["schedulers"].values())
    requests = params["testbed"]["load_test"]["requests"]
    assert testbed["load_test"]["completed"] == requests and testbed["setup"]["device"] == "cpu"
    assert (paths.testbed.artifacts / "real_vs_sim_latency.png").stat().st_size > 10_000
    for stage in NOTEBOOKS:
        executed = nbformat.read(paths.stage(stage).notebook, as_version=4)
        outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
        assert outputs and not [o for o in outputs if o.output_type == "error"], stage
    # The source notebooks stay without outputs.
    source = nbformat.read(reproduced / "notebooks/04_evaluate.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in source.cells if c.cell_type == "code")
    copy_env = in_copy(env, reproduced)
    assert "up to date" in run([sys.executable, "-m", "dvc", "status"], reproduced, copy_env)


@pytest.fixture(scope="module")
def committed(reproduced: Path, env) -> Path:
    """The quick run's results committed, as a user commits a repro."""
    run(["git", "add", "-A"], reproduced, env)
    run(["git", "commit", "-qm", "quick results"], reproduced, env)
    return reproduced


def test_results_travel_with_git(committed: Path, env, tmp_path):
    """A fresh clone answers metrics, plots and metrics diff without any dvc pull."""
    dvc = [sys.executable, "-m", "dvc"]
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(committed), str(clone)], tmp_path, env)
    clone_env = in_copy(env, clone)
    assert not (clone / "artifacts").exists() and not (clone / "models").exists()
    shown = json.loads(run([*dvc, "metrics", "show", "--json"], clone, clone_env))
    assert "paper/fifo/0.03" in json.dumps(shown)
    diff = json.loads(run([*dvc, "metrics", "diff", "HEAD~1", "--json"], clone, clone_env))
    assert "reports/metrics.json" in diff  # the quick run changed every metric
    run([*dvc, "plots", "show", "--out", str(tmp_path / "plots")], clone, clone_env)
    assert (tmp_path / "plots" / "index.html").stat().st_size > 1000


def test_push_then_fresh_clone_pull_restores_outputs(committed: Path, env, tmp_path):
    dvc = [sys.executable, "-m", "dvc"]
    copy_env = in_copy(env, committed)
    remote = tmp_path / "remote"
    run([*dvc, "remote", "add", "-d", "-f", "local", str(remote)], committed, copy_env)
    run([*dvc, "push"], committed, copy_env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(committed), str(clone)], tmp_path, env)
    clone_env = in_copy(env, clone)
    run([*dvc, "remote", "add", "-d", "-f", "local", str(remote)], clone, clone_env)
    run([*dvc, "pull"], clone, clone_env)
    for name in (
        "reports/metrics.json",
        "reports/evaluate/aggregate.csv",
        "artifacts/evaluate/plots/gantt.png",
        "artifacts/notebooks/04_evaluate.ipynb",
        "artifacts/build_env/edge_latency_table.png",
        "models/paper/eat/seed0/actor.pt",
    ):
        assert (clone / name).read_bytes() == (committed / name).read_bytes(), name
    assert "up to date" in run([*dvc, "status"], clone, clone_env)


def test_an_experiment_with_a_changed_parameter(committed: Path, env, tmp_path):
    """``dvc exp run -S``: a one-key change re-runs what depends on it, and only that,
    in a clone (``build_env.sample_episodes`` is a parameter of the build_env stage
    alone)."""
    dvc = [sys.executable, "-m", "dvc"]
    clone = tmp_path / "exp"
    shutil.copytree(committed, clone, symlinks=True)
    clone_env = in_copy(env, clone)
    experiment = subprocess.run(
        [*dvc, "exp", "run", "-S", "build_env.sample_episodes=2", "-n", "two-episodes"],
        cwd=clone,
        env=clone_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    said = experiment.stdout + experiment.stderr
    assert experiment.returncode == 0, said[-3000:]
    assert "Running stage 'build_env'" in said
    for stage in ("profile", "train", "evaluate", "testbed"):
        assert f"Running stage '{stage}'" not in said, stage
    shown = json.loads(run([*dvc, "exp", "show", "--json"], clone, clone_env))
    text = json.dumps(shown)
    assert "two-episodes" in text and '"sample_episodes": 2' in text


def test_cli_reproduces_the_notebook_metrics(committed: Path, env, tmp_path):
    """The command line runs the same computation as the evaluate notebook: same params,
    the same files, byte for byte (the wall-clock decision times live apart)."""
    copy_env = in_copy(env, committed)
    root = tmp_path / "cli"
    shutil.copytree(committed / "models", root / "models")
    run(
        [sys.executable, "-m", "eat", "--root", str(root), "evaluate", "--no-progress"],
        committed,
        copy_env,
    )
    ours, pipeline = Paths(root).evaluate, Paths(committed).evaluate
    assert ours.metrics.read_bytes() == pipeline.metrics.read_bytes()
    for name in ("aggregate.csv", "eat_vs_baselines.csv", "ablation.csv", "warm_floor.csv"):
        assert (ours.results / name).read_bytes() == (pipeline.results / name).read_bytes(), name
    assert "decision_ms_mean" in (pipeline.results / "decision_times.csv").read_text()
    summary = run([sys.executable, "-m", "eat", "summary"], committed, copy_env)
    assert "paper: latency_mean [95% CI]" in summary and "edge: quality_mean" in summary
    run([sys.executable, "-m", "eat", "--root", str(root), "build-env"], committed, copy_env)
    assert json.loads(Paths(root).build_env.metrics.read_text()) == json.loads(
        Paths(committed).build_env.metrics.read_text()
    )

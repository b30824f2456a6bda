"""The train matrix and the evaluation sweep on a real multi-node Ray cluster.

A head and two worker nodes, each a raylet of its own with one CPU, started on loopback
the way Ray's own tests start clusters (``ray.cluster_utils.Cluster``); the package
connects to it by address exactly as it connects to a remote cluster
(``train.ray_address``, ``evaluate.ray_address``). Runs and episodes must be spread over
the nodes and give exactly what a serial run in this process gives.
"""

from __future__ import annotations

import pandas as pd
import pytest

from eat.distributed import import_ray, loopback_only
from eat.evaluation.sweep import SchedulerFactory, grid, run_sweep
from eat.training.matrix import run_matrix
from tests.test_rl import tiny_spec

N_NODES = 3


@pytest.fixture(scope="module")
def cluster():
    loopback_only()
    ray = import_ray()
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    for _ in range(N_NODES - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


def test_cluster_has_its_nodes(cluster):
    ray = import_ray()
    ray.init(address=cluster.address)
    try:
        alive = [node for node in ray.nodes() if node["Alive"]]
        assert len(alive) == N_NODES
        assert {node["NodeManagerAddress"] for node in alive} == {"127.0.0.1"}
    finally:
        ray.shutdown()


def test_sweep_on_a_cluster_spreads_and_equals_serial(params, cluster):
    preset = params.env.preset("edge")
    jobs = grid(["greedy", "eft", "random"], [0.5, 1.0], [1000, 1001])
    factory = SchedulerFactory(params, "edge")
    spread = run_sweep(
        "edge",
        preset,
        jobs,
        factory,
        parallel="ray",
        ray_address=cluster.address,
        chunk_size=2,
        progress=False,
    )
    serial = run_sweep("edge", preset, jobs, factory, parallel="serial", progress=False)
    timing = [c for c in serial.episodes.columns if c.startswith("decision_ms")]  # measured
    pd.testing.assert_frame_equal(
        spread.episodes.drop(columns=timing), serial.episodes.drop(columns=timing)
    )
    pd.testing.assert_frame_equal(spread.tasks, serial.tasks)
    assert set(spread.nodes) == set(jobs) and not serial.nodes
    assert len(set(spread.nodes.values())) == N_NODES  # every node ran chunks


def test_train_matrix_on_a_cluster_spreads_and_equals_serial(params, cluster, tmp_path):
    specs = [
        tiny_spec(params, agent="sac", seed=seed, total_steps=40, eval_every=40, bc_updates=10)
        for seed in params.seeds.train[:N_NODES]
    ]
    summaries = run_matrix(
        specs,
        tmp_path / "cluster",
        parallel="ray",
        ray_address=cluster.address,
        num_cpus=None,
        progress=False,
    )
    assert len({summary["node"] for summary in summaries}) == N_NODES
    serial = run_matrix(
        specs, tmp_path / "serial", parallel="serial", ray_address=None, num_cpus=None,
        progress=False,
    )
    assert all("node" not in summary for summary in serial)
    for spec in specs:
        for name in ("actor.pt", "config.json", "curves.csv", "episodes.csv", "summary.json"):
            on_cluster = tmp_path / "cluster" / spec.relative_dir / name
            assert on_cluster.read_bytes() == (tmp_path / "serial" / spec.relative_dir / name).read_bytes()

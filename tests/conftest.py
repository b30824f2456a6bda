"""Shared fixtures: the repository's params.yaml and helpers to tweak presets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from eat.params import Params, PresetConfig, load_params

REPO = Path(__file__).resolve().parent.parent

# Tests run many tiny numpy/torch computations: one thread each avoids oversubscription
# on small machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def params() -> Params:
    return load_params(REPO / "params.yaml")


def tweak(model: Any, **changes: Any) -> Any:
    """Copy a frozen pydantic model with nested changes: ``tweak(p, workload={"total_tasks": 5})``
    re-validates the whole result, so a tweak can never build an invalid preset."""
    data = model.model_dump()
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = _merge(data[key], value)
        else:
            data[key] = value
    return type(model).model_validate(data)


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="session")
def paper(params: Params) -> PresetConfig:
    return params.env.paper


@pytest.fixture(scope="session")
def edge(params: Params) -> PresetConfig:
    return params.env.edge


@pytest.fixture(scope="session")
def testbed_cluster(tmp_path_factory) -> Any:
    """One embedded Ray (loopback only) with three tiny CPU workers, shared by the
    testbed's system and service tests: starting one takes tens of seconds. Its tests
    run one controller at a time on it."""
    from eat.params import validate_params
    from eat.testbed.bed import build_testbed
    from tests.service_support import tiny_raw_params

    tmp = tmp_path_factory.mktemp("testbed")
    params = validate_params(tiny_raw_params(tmp / "models", workers=3))
    testbed = build_testbed(params, tmp)
    yield {
        "params": params,
        "preset": testbed.preset,
        "workers": testbed.workers,
        "folders": testbed.folders,
        "tmp": tmp,
        "exchange": testbed.exchange,
    }
    testbed.close()

"""params.yaml validation: errors name the key path and what is allowed."""

from __future__ import annotations

import copy

import pytest
import yaml

from eat.params import ParamsError, load_params, validate_params
from tests.conftest import REPO


@pytest.fixture()
def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repository_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert set(params.env.presets) == {"paper", "edge"}


def test_unknown_key_names_path_and_allowed_keys(raw):
    raw["evaluate"]["n_seed"] = 3
    with pytest.raises(ParamsError) as error:
        validate_params(raw)
    message = str(error.value)
    assert "evaluate.n_seed: unknown key" in message
    assert "'n_seeds'" in message and "'rates'" in message


def test_unknown_nested_key_in_preset(raw):
    raw["env"]["edge"]["network"]["bandwith_gbps"] = 1.0
    with pytest.raises(
        ParamsError,
        match=r"env\.edge\.network\.bandwith_gbps: unknown key; "
        r"allowed keys: \[.*'bandwidth_gbps'",
    ):
        validate_params(raw)


def test_wrong_type_names_path_and_value(raw):
    raw["env"]["paper"]["queue_window"] = "ten"
    with pytest.raises(ParamsError, match=r"env\.paper\.queue_window: .*integer.*'ten'"):
        validate_params(raw)


def test_out_of_range_value(raw):
    raw["evaluate"]["rates"]["paper"][1] = -0.5
    with pytest.raises(ParamsError, match=r"evaluate\.rates\.paper\.1: .*greater than 0.*-0\.5"):
        validate_params(raw)


def test_bad_choice_lists_allowed_values(raw):
    raw["evaluate"]["schedulers"].append("sjf")
    with pytest.raises(ParamsError, match=r"evaluate\.schedulers\.7: .*'random'.*'edf'.*'sjf'"):
        validate_params(raw)


def test_missing_key(raw):
    del raw["env"]["edge"]["reward"]
    with pytest.raises(ParamsError, match=r"env\.edge\.reward: required key is missing"):
        validate_params(raw)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            lambda r: r["seeds"].__setitem__("test", [0, 1000]),
            r"seeds\.train and seeds\.test share \[0\]",
        ),
        (
            lambda r: r["env"]["edge"]["servers"].append({"gpu": "b200", "count": 1}),
            r"gpu 'b200' is not in gpu_types; choose one of \[.*'h200'",
        ),
        (
            lambda r: r["env"]["paper"]["workload"].__setitem__("initial_tasks", 40),
            r"initial_tasks \(40\) exceeds total_tasks \(32\)",
        ),
        (
            lambda r: r["evaluate"].__setitem__("n_seeds", len(r["seeds"]["test"]) + 1),
            r"n_seeds \(\d+\) exceeds the \d+ seeds in seeds.test",
        ),
        (lambda r: r["env"]["edge"].__setitem__("min_steps", 40), r"max_steps \(30\) < min_steps"),
    ],
)
def test_cross_field_rules(raw, change, pattern):
    broken = copy.deepcopy(raw)
    change(broken)
    with pytest.raises(ParamsError, match=pattern):
        validate_params(broken)


def test_cli_check_params_reports_error(tmp_path, raw, capsys):
    from eat.cli import main

    raw["build_env"]["sample_episodes"] = 0
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["--params", str(path), "check-params"]) == 2
    assert "build_env.sample_episodes" in capsys.readouterr().err
    assert main(["--params", str(REPO / "params.yaml"), "check-params"]) == 0

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
    index = len(raw["evaluate"]["schedulers"]) - 1
    with pytest.raises(
        ParamsError, match=rf"evaluate\.schedulers\.{index}: .*'random'.*'edf'.*'sac'.*'sjf'"
    ):
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
        (
            lambda r: r["planners"]["rollout"].__setitem__("horizon", {"paper": 16}),
            r"planners\.rollout\.horizon has no value for preset 'edge'; it has \['paper'\]",
        ),
        (
            lambda r: r["evaluate"]["scale"].__setitem__("schedulers", ["greedy", "eft"]),
            r"schedulers must include 'first_fit': advantages are relative to it",
        ),
        (
            lambda r: r["evaluate"]["scale"].__setitem__("versus", "metro"),
            r"evaluate\.scale\.versus 'metro' is not in env\.presets",
        ),
        (
            lambda r: (
                r["evaluate"].__setitem__(
                    "schedulers", [s for s in r["evaluate"]["schedulers"] if s != "maskable_ppo"]
                ),
                r["evaluate"]["generalisation"].__setitem__("schedulers", ["greedy", "eat"]),
                r["evaluate"]["scale"]["schedulers"].append("maskable_ppo"),
            ),
            r"evaluate\.scale\.schedulers has \['maskable_ppo'\], not among evaluate\.schedulers",
        ),
        (  # the planner scenario of evaluate.scale runs rollout on metro
            lambda r: r["planners"]["rollout"].__setitem__("horizon", {"paper": 16, "edge": 8}),
            r"planners\.rollout\.horizon has no value for preset 'metro'",
        ),
        (
            lambda r: r["planners"]["clairvoyant"].__setitem__("base", {"edge": "greedy"}),
            r"planners\.clairvoyant\.base has no heuristic for preset 'paper'",
        ),
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


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            lambda r: r["profile"].__setitem__("devices", "cuda"),
            r"profile\.devices: unknown key; allowed keys: \[.*'device'",
        ),
        (
            lambda r: r["profile"].__setitem__("device", "tpu"),
            r"profile\.device: .*'auto', 'cuda' or 'cpu'.*'tpu'",
        ),
        (
            lambda r: r["profile"].__setitem__("device", "cpu"),
            r"device 'cpu' cannot capture CUDA graphs",
        ),
        (
            lambda r: r["profile"]["real"]["resolutions"].__setitem__("sd15", [500]),
            r"resolutions\.sd15 must list multiples of 8",
        ),
        (
            lambda r: r["profile"]["tiny"].__setitem__("repeats", 0),
            r"profile\.tiny\.repeats: .*greater than 0",
        ),
        (
            lambda r: r["profile"]["tiny"]["resolutions"].pop("sdxl"),
            r"tiny\.resolutions has no entry for models \['sdxl'\]",
        ),
        (
            lambda r: r["profile"]["model_dirs"].__setitem__("sd3", None),
            r"profile\.model_dirs\.sd3",
        ),
        (
            lambda r: r["env"]["edge"]["gpu_types"]["t4"].__setitem__("speed", 0.08),
            r"gpu_types \['t4'\]: kind 'edge' takes per-step times from the calibrated",
        ),
        (
            lambda r: r["env"]["paper"]["gpu_types"]["reference"].__setitem__("speed", None),
            r"kind 'paper' needs memory_gb and speed for gpu_types \['reference'\]",
        ),
        (
            lambda r: r["env"]["edge"]["profile_latency"].__setitem__("anchor", "a100"),
            r"anchor 'a100' has no measured profile; choose one of \['h100', 'h200'\]",
        ),
        (
            lambda r: r["env"]["edge"]["profile_latency"].__setitem__("step_mode", "graph"),
            r"profile_latency\.step_mode: .*'cuda_graph' or 'eager'",
        ),
    ],
)
def test_profile_and_calibrated_latency_rules(raw, change, pattern):
    broken = copy.deepcopy(raw)
    change(broken)
    with pytest.raises(ParamsError, match=pattern):
        validate_params(broken)


def test_edge_gpu_types_must_be_in_the_catalogue(raw):
    from eat.sim import Simulator

    raw["env"]["edge"]["gpu_types"]["b200"] = {"memory_gb": 192.0, "speed": None}
    preset = validate_params(raw).env.edge
    with pytest.raises(ValueError, match=r"'b200' is not in the GPU catalogue"):
        Simulator(preset)

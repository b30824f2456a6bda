"""``params.yaml``'s ``testbed`` section is validated strictly (key paths in errors)."""

from __future__ import annotations

import copy

import pytest
import yaml

from eat.params import ParamsError, validate_params
from tests.conftest import REPO


@pytest.fixture()
def raw() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repository_testbed_section_is_valid(raw):
    testbed = validate_params(raw).testbed
    assert testbed.workers >= max(testbed.gang_sizes)
    assert set(testbed.tiny.models) <= {"sd15", "sdxl"}


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda t: t.__setitem__("workerz", 2), r"testbed\.workerz: unknown key; allowed keys"),
        (lambda t: t.__setitem__("device", "tpu"), r"testbed\.device: .*'auto'.*'cpu'.*'cuda'"),
        (lambda t: t.__setitem__("workers", 0), r"testbed\.workers: .*greater than 0"),
        (lambda t: t.__setitem__("noise_scheduler", "pndm"), r"testbed\.noise_scheduler: .*'ddim'"),
        (lambda t: t.__setitem__("gang_sizes", [1, 8]), r"gang_sizes \[8\] exceed the \d+ workers"),
        (lambda t: t.update(min_steps=9, max_steps=4), r"max_steps \(4\) < min_steps \(9\)"),
        (lambda t: t.__setitem__("schedulers", ["fifo", "sjf"]), r"testbed\.schedulers\.1: "),
        (
            lambda t: t.__setitem__("margin_rows", -1),
            r"testbed\.margin_rows: .*greater than or equal to 0",
        ),
        (
            lambda t: t["tiny"]["models"]["sd15"].__setitem__("resolutions", [120]),
            r"tiny\.models: resolutions must be multiples of 16",
        ),
        (
            lambda t: t["tiny"]["models"].__setitem__("flux", {"share": 1.0, "resolutions": [64]}),
            r"testbed\.tiny\.models\.flux",
        ),
        (
            lambda t: t["workload"].update(process="trace", trace_path=None),
            r"process 'trace' needs trace_path",
        ),
        (lambda t: t["workload"].__setitem__("prompts", []), r"testbed\.workload\.prompts"),
        (
            lambda t: t["load_test"].__setitem__("requests", 5000),
            r"testbed\.load_test\.requests: .*less than or equal to 1000",
        ),
        (
            lambda t: t["tiny"]["models"].pop("sd15"),
            r"load_test\.model 'sd15' is not served at size tiny",
        ),
        (
            lambda t: t["model_dirs"].__setitem__("sdxl_turbo", None),
            r"testbed\.model_dirs\.sdxl_turbo",
        ),
        (
            lambda t: t["service"].__setitem__("max_queued_jobs", 0),
            r"testbed\.service\.max_queued_jobs: .*greater than 0",
        ),
        (
            lambda t: t["service"].__setitem__("admission", "always"),
            r"testbed\.service\.admission: .*'queue_bound'.*'predicted_deadline'",
        ),
        (
            lambda t: t["service"].__setitem__("max_body_bytes", 10),
            r"testbed\.service\.max_body_bytes: .*greater than or equal to 1024",
        ),
        (
            lambda t: t["service"].__setitem__("api_keys_env", "1-KEYS"),
            r"testbed\.service\.api_keys_env: .*pattern",
        ),
        (
            lambda t: t["service"].__setitem__("api_keys_file", "keys.txt"),
            r"testbed\.service: .*api_keys_file must be an absolute path outside the repository",
        ),
        (  # keys never live in params.yaml
            lambda t: t["service"].__setitem__("api_keys", ["secret"]),
            r"testbed\.service\.api_keys: unknown key; allowed keys",
        ),
    ],
)
def test_bad_testbed_values_name_the_key(raw, change, pattern):
    broken = copy.deepcopy(raw)
    change(broken["testbed"])
    with pytest.raises(ParamsError, match=pattern):
        validate_params(broken)


def test_learned_testbed_schedulers_must_be_trained(raw):
    raw["evaluate"]["optimum"] = None
    raw["evaluate"]["schedulers"] = ["random", "clairvoyant", "fifo"]  # only the testbed asks
    broken = copy.deepcopy(raw)
    broken["testbed"]["schedulers"] = ["eat"]
    broken["train"].update(agents=["sac"], agreement=[])
    with pytest.raises(ParamsError, match=r"testbed\.schedulers has \['eat'\], which train"):
        validate_params(broken)
    broken = copy.deepcopy(raw)
    broken["testbed"].update(schedulers=["eat"], learned_preset="paper")
    broken["train"]["presets"] = ["edge"]
    broken["env"]["presets"] = ["edge"]
    with pytest.raises(ParamsError, match=r"testbed\.learned_preset 'paper' is not in train"):
        validate_params(broken)

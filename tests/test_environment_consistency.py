"""pyproject.toml and environment.yml must describe the same environment.

The checks are plain functions over the parsed files, so the negative tests below can feed
them deliberately broken copies and prove that each check really fires.
"""

from __future__ import annotations

import copy
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
ENVIRONMENT = ROOT / "environment.yml"

REQUIRED_PINS = {"torch": "2.14.1", "torchvision": "0.29.1"}
# Conda-side packages that pyproject.toml does not (and cannot) list as dependencies.
CONDA_ONLY = {"python", "pip"}

_CONDA_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:(==|=)\s*([^\s=]+))?\s*$")


def load_pyproject(path: Path = PYPROJECT) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def load_environment(path: Path = ENVIRONMENT) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def exact_pin(req: Requirement) -> str | None:
    """The version of a single `==X` specifier (no wildcard), else None."""
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version:
        return specs[0].version
    return None


def _split_env_deps(env: dict[str, Any]) -> tuple[list[str], list[str]]:
    conda: list[str] = []
    pip: list[str] = []
    for dep in env.get("dependencies") or []:
        if isinstance(dep, dict):
            pip.extend(str(x) for x in dep.get("pip") or [])
        else:
            conda.append(str(dep))
    return conda, pip


def _pyproject_pins(pyproject: dict[str, Any]) -> dict[str, str | None]:
    project = pyproject.get("project", {})
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return {canonicalize_name(r.name): exact_pin(r) for r in map(Requirement, reqs)}


def _installs_dev_extra(pip_line: str) -> bool:
    tokens = [t for t in shlex.split(pip_line) if t not in ("-e", "--editable")]
    for tok in tokens:
        m = re.fullmatch(r"\.(?:/)?\[([^\]]*)\]", tok)
        if m and "dev" in {e.strip() for e in m.group(1).split(",")}:
            return True
    return False


def consistency_problems(pyproject: dict[str, Any], env: dict[str, Any]) -> list[str]:
    """Every way in which the two parsed files disagree (empty list = consistent)."""
    problems: list[str] = []
    project = pyproject.get("project", {})

    # 1. every runtime dependency pinned with ==, plus the mandatory torch pins
    runtime: dict[str, str | None] = {}
    for raw in project.get("dependencies", []):
        try:
            req = Requirement(raw)
        except InvalidRequirement as exc:
            problems.append(f"pyproject: unparsable dependency {raw!r}: {exc}")
            continue
        pin = exact_pin(req)
        runtime[canonicalize_name(req.name)] = pin
        if pin is None:
            problems.append(f"pyproject: runtime dependency {raw!r} is not pinned with ==")
    for name, version in REQUIRED_PINS.items():
        if runtime.get(name) != version:
            problems.append(
                f"pyproject: {name} must be pinned =={version}, found {runtime.get(name)!r}"
            )
    if "dev" not in project.get("optional-dependencies", {}):
        problems.append("pyproject: no `dev` extra in [project.optional-dependencies]")

    all_pins = _pyproject_pins(pyproject)
    requires_python = SpecifierSet(project.get("requires-python", ""))
    conda, pip = _split_env_deps(env)

    # 2. python version in environment.yml admitted by requires-python
    python_specs = []
    for spec in conda:
        m = _CONDA_SPEC.match(spec)
        if not m:
            problems.append(f"environment.yml: cannot parse conda spec {spec!r}")
            continue
        name, _, version = m.groups()
        name = canonicalize_name(name)
        if name == "python":
            python_specs.append(version)
            if version is None:
                problems.append("environment.yml: python is not pinned to a version")
                continue
            parts = version.split(".")
            # `python=3.11` means any 3.11.x: check both ends of that range.
            candidates = [version] if len(parts) >= 3 else [f"{version}.0", f"{version}.99"]
            for cand in candidates:
                if not requires_python.contains(Version(cand)):
                    problems.append(
                        f"environment.yml: python {version} ({cand}) not admitted by "
                        f"requires-python {str(requires_python)!r}"
                    )
        elif name in CONDA_ONLY:
            continue
        elif version is not None:
            # 3a. conda-side pins must match pyproject
            if name not in all_pins:
                problems.append(f"environment.yml: {name}={version} is not in pyproject.toml")
            elif all_pins[name] != version:
                problems.append(
                    f"environment.yml: {name}={version} but pyproject pins {all_pins[name]!r}"
                )
    if not python_specs:
        problems.append("environment.yml: no python in dependencies")

    # 3b. pip-side pins must match pyproject; 4. pip section installs .[dev]
    if not any(_installs_dev_extra(line) for line in pip):
        problems.append(f"environment.yml: pip section does not install `.[dev]`: {pip!r}")
    for line in pip:
        if line.lstrip().startswith("-") or line.lstrip().startswith("."):
            continue  # an option / local path such as `-e .[dev]`
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            problems.append(f"environment.yml: unparsable pip requirement {line!r}: {exc}")
            continue
        name = canonicalize_name(req.name)
        pin = exact_pin(req)
        if pin is None:
            continue
        if name not in all_pins:
            problems.append(f"environment.yml: pip pin {line!r} is not in pyproject.toml")
        elif all_pins[name] != pin:
            problems.append(
                f"environment.yml: pip pin {line!r} but pyproject pins {all_pins[name]!r}"
            )
    return problems


# --------------------------------------------------------------------------- the real files


def test_repository_files_are_consistent() -> None:
    assert consistency_problems(load_pyproject(), load_environment()) == []


def test_environment_basics() -> None:
    env = load_environment()
    assert env["name"] == "eat"
    assert "conda-forge" in env["channels"]


def test_console_script_and_package_data() -> None:
    pyproject = load_pyproject()
    assert pyproject["project"]["scripts"]["eat"] == "eat.cli:main"
    data = pyproject["tool"]["setuptools"]["package-data"]["eat"]
    assert set(data) >= {"data/*.csv", "data/*.md", "data/*.json"}


# --------------------------------------------------------------------------- the checks can fail


@pytest.fixture
def good() -> tuple[dict[str, Any], dict[str, Any]]:
    return load_pyproject(), load_environment()


def _mutate_env_python(env: dict[str, Any], new: str) -> None:
    deps = env["dependencies"]
    for i, dep in enumerate(deps):
        if isinstance(dep, str) and dep.startswith("python"):
            deps[i] = new


def _pip_section(env: dict[str, Any]) -> list[str]:
    for dep in env["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            return dep["pip"]
    raise AssertionError("no pip section")


def test_flags_python_outside_requires_python(good) -> None:
    pyproject, env = copy.deepcopy(good)
    _mutate_env_python(env, "python=3.12")
    assert any("not admitted" in p for p in consistency_problems(pyproject, env))


def test_flags_unpinned_runtime_dependency(good) -> None:
    pyproject, env = copy.deepcopy(good)
    deps = pyproject["project"]["dependencies"]
    deps[:] = ["numpy>=2" if d.startswith("numpy") else d for d in deps]
    assert any("not pinned with ==" in p for p in consistency_problems(pyproject, env))


def test_flags_wrong_torch_pin(good) -> None:
    pyproject, env = copy.deepcopy(good)
    deps = pyproject["project"]["dependencies"]
    deps[:] = ["torch==2.13.0" if d.startswith("torch==") else d for d in deps]
    assert any("torch must be pinned" in p for p in consistency_problems(pyproject, env))


def test_flags_missing_dev_install(good) -> None:
    pyproject, env = copy.deepcopy(good)
    pip = _pip_section(env)
    pip[:] = ["-e ."]
    assert any("does not install `.[dev]`" in p for p in consistency_problems(pyproject, env))


@pytest.mark.parametrize("extra_dep", ["numpy=2.0.0", "numpy==2.0.0"])
def test_flags_conda_pin_mismatch(good, extra_dep: str) -> None:
    pyproject, env = copy.deepcopy(good)
    env["dependencies"].insert(0, extra_dep)
    assert any("pyproject pins" in p for p in consistency_problems(pyproject, env))


def test_flags_pip_pin_mismatch(good) -> None:
    pyproject, env = copy.deepcopy(good)
    _pip_section(env).append("torchvision==0.1.0")
    assert any("pip pin" in p for p in consistency_problems(pyproject, env))


def test_matching_extra_pins_are_accepted(good) -> None:
    pyproject, env = copy.deepcopy(good)
    env["dependencies"].insert(0, "numpy=2.4.6")
    _pip_section(env).append("torch==2.14.1")
    assert consistency_problems(pyproject, env) == []

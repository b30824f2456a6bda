"""dvc.yaml's deps cannot drift from the code: every eat module a stage's notebook imports,
directly or through other modules (function-level imports included: they run too), and
every pipeline file it reads must be covered by that stage's deps; its outs must be the
paths of eat/stages/paths.py. A stale stage would otherwise look up to date to
``dvc repro``."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
import yaml

from eat.params import load_params
from eat.stages.paths import NOTEBOOKS, STAGES, Paths
from tests.conftest import REPO

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

#: Pipeline files a module opens at run time, beyond its imports (the code reads them
#: through params or paths; each entry names where). Keys are module files.
READS: dict[str, list[str]] = {
    # ProfileLatency reads the profile stage's decision (profile_latency.stage_decision)
    "eat/latency/profiled.py": ["<stage_decision>"],
    # load_scheduler (evaluation of trained agents, the testbed) reads models/
    "eat/evaluation/trained.py": ["models"],
    "eat/testbed/bed.py": ["models"],
}


def module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def eat_imports(tree: ast.AST, package: str) -> set[str]:
    """Every ``eat`` module an AST imports anywhere (``from x import y`` counts ``x`` and
    ``x.y``, which may be a module)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(parts + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "eat" or name.startswith("eat.")}


def closure(modules: set[str]) -> set[str]:
    """The files of ``modules`` and of everything they import, transitively (a package's
    ``__init__`` is imported with any of its modules)."""
    files: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None:
            continue
        relative = str(path.relative_to(REPO))
        if relative in files:
            continue
        files.add(relative)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        todo += eat_imports(ast.parse(path.read_text()), package)
    return files


def notebook_imports(notebook: Path) -> set[str]:
    book = nbformat.read(notebook, as_version=4)
    code = "\n".join(cell.source for cell in book.cells if cell.cell_type == "code")
    return eat_imports(ast.parse(code), "")


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def stage_deps(stage: str) -> list[str]:
    return [dep for dep in DVC[stage]["deps"]]


@pytest.mark.parametrize("stage", STAGES)
def test_every_imported_module_and_read_file_is_a_dep(stage):
    params = load_params(REPO / "params.yaml")
    notebook = NOTEBOOKS[stage]
    deps = stage_deps(stage)
    assert notebook in deps, f"stage {stage}: its notebook {notebook} is not in deps"
    files = closure(notebook_imports(REPO / notebook))
    assert f"eat/stages/{stage}.py" in files, f"stage {stage}: the notebook does not run it"
    missing = sorted(path for path in files if not covered(path, deps))
    assert not missing, f"stage {stage}: dvc.yaml deps miss the modules it imports: {missing}"
    decision = params.env.edge.profile_latency.stage_decision
    for module, reads in READS.items():
        if module not in files:
            continue
        for read in reads:
            target = decision if read == "<stage_decision>" else read
            if stage == "profile" and target == decision:
                continue  # the profile stage writes the decision it would read
            if stage == "train" and target == "models":
                continue  # the train stage writes models/
            if stage == "testbed" and target == decision:
                continue  # the testbed's preset has stage_decision null (eat.testbed.preset)
            assert target is not None
            assert covered(target, deps), (
                f"stage {stage}: {module} reads {target}, which dvc.yaml deps do not list"
            )
    if "eat/data/__init__.py" in files:  # data_path() opens the shipped CSVs
        for shipped in sorted((REPO / "eat" / "data").glob("*.csv")):
            name = str(shipped.relative_to(REPO))
            assert covered(name, deps), f"stage {stage}: reads {name}, not a dep"


@pytest.mark.parametrize("stage", STAGES)
def test_outs_are_the_paths_the_code_writes(stage):
    paths = Paths()
    stage_paths = paths.stage(stage)
    declared: dict[str, bool] = {}
    for entry in DVC[stage].get("outs", []) + DVC[stage].get("metrics", []):
        if isinstance(entry, dict):
            ((path, options),) = entry.items()
            declared[path] = bool(options.get("cache", True))
        else:
            declared[entry] = True
    expected = {
        str(stage_paths.results): False,
        str(stage_paths.artifacts): True,
        str(stage_paths.notebook): True,
        str(stage_paths.metrics): False,
    }
    if stage == "profile":
        expected[str(paths.latency_source)] = False
    if stage == "train":
        expected[str(paths.models)] = True
    if stage == "evaluate":
        expected[str(paths.slo_metrics)] = False
        expected[str(paths.generalisation_metrics)] = False
        expected[str(paths.optimum_metrics)] = False
        expected[str(paths.scale_metrics)] = False
    assert declared == expected, f"stage {stage}: dvc.yaml outs {declared} != {expected}"
    assert f"{NOTEBOOKS[stage]} {stage_paths.notebook}" in " ".join(DVC[stage]["cmd"].split())


def test_the_check_finds_a_missing_dep():
    """The closure sees through imports: dropping a module the evaluate stage imports
    only indirectly (the latency model, through the simulator) is caught."""
    files = closure(notebook_imports(REPO / NOTEBOOKS["evaluate"]))
    deps = [dep for dep in stage_deps("evaluate") if dep != "eat/latency"]
    missing = [path for path in files if not covered(path, deps)]
    assert "eat/latency/profiled.py" in missing

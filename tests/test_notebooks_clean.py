"""Committed notebooks must be clean papermill templates.

Each `notebooks/*.ipynb` must be valid nbformat v4, carry no outputs or execution counts in
its code cells, and have exactly one cell tagged `parameters` (papermill's convention).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def notebook_problems(path: Path) -> list[str]:
    """Every reason why `path` is not a clean papermill template (empty list = clean)."""
    try:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    except Exception as exc:  # unreadable JSON, not a notebook at all, ...
        return [f"cannot read notebook: {exc}"]

    problems: list[str] = []
    if nb.get("nbformat") != 4:
        problems.append(f"nbformat is {nb.get('nbformat')!r}, expected 4")
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        problems.append(f"invalid nbformat: {exc.message}")

    n_parameters = 0
    for i, cell in enumerate(nb.get("cells", [])):
        tags = cell.get("metadata", {}).get("tags", []) or []
        if "parameters" in tags:
            n_parameters += 1
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count={cell['execution_count']}")
    if n_parameters != 1:
        problems.append(f"{n_parameters} cells tagged 'parameters', expected exactly 1")
    return problems


_PARAMS = [pytest.param(p, id=p.name) for p in NOTEBOOKS] or [
    pytest.param(None, marks=pytest.mark.skip(reason="no notebooks/*.ipynb in the repo yet"))
]


@pytest.mark.parametrize("path", _PARAMS)
def test_notebook_is_clean(path: Path) -> None:
    problems = notebook_problems(path)
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(problems)


# --------------------------------------------------------------------------- the check can fail


def _template(tmp_path: Path, name: str = "nb.ipynb", n_parameters: int = 1) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# title"))
    for _ in range(n_parameters):
        nb.cells.append(nbformat.v4.new_code_cell("seed = 0", metadata={"tags": ["parameters"]}))
    nb.cells.append(nbformat.v4.new_code_cell("print(seed)"))
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_clean_notebook_passes(tmp_path: Path) -> None:
    assert notebook_problems(_template(tmp_path)) == []


def test_flags_outputs_and_execution_count(tmp_path: Path) -> None:
    path = _template(tmp_path)
    nb = nbformat.read(path, as_version=4)
    cell = nb.cells[-1]
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="0\n")]
    nbformat.write(nb, path)

    problems = notebook_problems(path)
    assert any("output" in p for p in problems)
    assert any("execution_count" in p for p in problems)


@pytest.mark.parametrize("n_parameters", [0, 2])
def test_flags_wrong_number_of_parameters_cells(tmp_path: Path, n_parameters: int) -> None:
    problems = notebook_problems(_template(tmp_path, n_parameters=n_parameters))
    assert any("tagged 'parameters'" in p for p in problems)


def test_flags_invalid_notebook(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ipynb"
    bad.write_text('{"cells": [{"cell_type": "code"}], "nbformat": 4, "nbformat_minor": 5}')
    assert notebook_problems(bad)
    garbage = tmp_path / "garbage.ipynb"
    garbage.write_text("not json")
    assert notebook_problems(garbage)

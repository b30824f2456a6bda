"""The documentation: generated pages are fresh, every key is documented.

- ``docs/parameters.md`` is the output of ``eat params --markdown`` and every key of
  ``params.yaml`` has a docstring (:mod:`eat.reference`).
"""

from __future__ import annotations

from pathlib import Path

from eat.reference import REGENERATE as REGENERATE_PARAMETERS
from eat.reference import entries, parameter_reference, undocumented

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------
# docs/parameters.md
# ---------------------------------------------------------------------------


def test_every_params_key_is_documented():
    assert undocumented() == [], "give these fields (and classes) a docstring in eat/params.py"


def test_parameters_page_is_fresh():
    page = REPO / "docs" / "parameters.md"
    assert page.is_file(), f"docs/parameters.md is missing; generate it: {REGENERATE_PARAMETERS}"
    assert page.read_text() == parameter_reference(markdown=True), (
        f"docs/parameters.md is stale; regenerate it: {REGENERATE_PARAMETERS}"
    )


def test_reference_shows_type_allowed_values_value_and_doc():
    text = parameter_reference(markdown=True)
    # a Literal's choices are its allowed values; the value is params.yaml's
    assert "| `profile.device` | str | one of `auto`, `cuda`, `cpu` | auto |" in text
    # bounds of the field and of the items inside it, grouped
    assert "| `seeds.test` | list[int] | at least 1 item(s); item: >= 0, < 4294967296 |" in text
    # a key under <name> shows the value of every name
    assert "| `env.paper.gpu_types.<name>.memory_gb` | float \\| null | > 0 | {reference: 80.0} |" in text
    # a key whose parent is null is not set
    assert "| `env.edge.paper_latency.per_step_s` | {int: float} | value: > 0 | - |" in text
    # every section opens with its class docstring
    assert "## `evaluate`\n\nThe `evaluate` stage:" in text


def test_reference_lists_every_key_of_params_yaml():
    import yaml

    values = yaml.safe_load((REPO / "params.yaml").read_text())
    sections = {row.key: row.model is not None for row in entries(values=values)}

    def walk(node: object, prefix: str) -> None:
        for name, child in node.items():
            key = f"{prefix}{name}"
            if key not in sections:  # a name the user chooses: the reference says <name>
                named = f"{prefix}<name>."
                assert any(k.startswith(named) for k in sections), f"{key} is not in the reference"
                walk(child, named)
            elif sections[key] and isinstance(child, dict):
                walk(child, f"{key}.")

    walk(values, "")

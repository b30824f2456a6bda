"""The parameter reference, generated from the params schema (:mod:`eat.params`).

Every key of ``params.yaml`` with its type, allowed range, the value the repository's
``params.yaml`` gives it, and its documentation (the field docstrings, which pydantic
keeps as descriptions). ``eat params`` prints it; ``docs/parameters.md`` is this text
(``eat params --markdown``), and a test fails when that file is stale.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from eat.params import Params, repo_params_path


@dataclass(frozen=True)
class Entry:
    """One key of the reference."""

    key: str
    """Dotted path; ``<name>`` stands for a mapping key the user chooses."""
    type: str
    range: str
    value: str
    """What the repository's params.yaml sets (``-`` under a ``<name>`` key)."""
    doc: str


def _type_name(annotation: Any) -> str:
    """A short, readable name of a field type."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(repr(value) for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in get_args(annotation))
    if origin is dict:
        key, value = get_args(annotation)
        return f"{{{_type_name(key)}: {_type_name(value)}}}"
    if origin is list:
        return f"list[{_type_name(get_args(annotation)[0])}]"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(metadata: list[Any]) -> list[str]:
    found = []
    for item in metadata:
        if isinstance(item, Gt):
            found.append(f"> {item.gt}")
        elif isinstance(item, Ge):
            found.append(f">= {item.ge}")
        elif isinstance(item, Lt):
            found.append(f"< {item.lt}")
        elif isinstance(item, Le):
            found.append(f"<= {item.le}")
        elif isinstance(item, MinLen):
            found.append(f"at least {item.min_length} item(s)")
        elif isinstance(item, MaxLen):
            found.append(f"at most {item.max_length} item(s)")
        elif isinstance(item, FieldInfo):
            found += _constraints(item.metadata)
    return found


def _range(info: FieldInfo) -> str:
    """The constraints of a field, its own and those of the types inside it."""
    found = _constraints(info.metadata)

    def walk(annotation: Any) -> None:
        if get_origin(annotation) is Annotated:
            found.extend(_constraints(list(get_args(annotation)[1:])))
        for argument in get_args(annotation):
            walk(argument)

    walk(info.annotation)
    return ", ".join(dict.fromkeys(found)) or "-"


def _models_in(annotation: Any) -> list[tuple[str, type[BaseModel]]]:
    """The models a field holds: ``("", M)`` for ``M``, ``("<name>", M)`` for a mapping
    of them, ``("[]", M)`` for a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    origin = get_origin(annotation)
    if origin is dict:
        return [("<name>", model) for _, model in _models_in(get_args(annotation)[1])]
    if origin is list:
        return [("[]", model) for _, model in _models_in(get_args(annotation)[0])]
    found = []
    for argument in get_args(annotation):
        found += _models_in(argument)
    return found


def _lookup(values: Any, part: str) -> Any:
    if isinstance(values, dict) and part in values:
        return values[part]
    return None


def _format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


def entries(model: type[BaseModel] = Params, values: Any = None, prefix: str = "") -> Iterator[Entry]:
    """Every field of ``model`` and of the models inside it, depth first."""
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        value = _lookup(values, name)
        nested = _models_in(info.annotation)
        yield Entry(
            key=key,
            type=_type_name(info.annotation),
            range=_range(info),
            value=_format_value(value) if not nested else "",
            doc=" ".join((info.description or "").split()),
        )
        for suffix, inner in nested:
            if suffix == "<name>":
                items = value.items() if isinstance(value, dict) else []
                if model is Params or inner.__name__ == "PresetConfig":
                    # named sections (env.paper, env.edge): every one in full
                    for child, child_values in items:
                        yield from entries(inner, child_values, f"{key}.{child}.")
                else:
                    yield from entries(inner, None, f"{key}.<name>.")
            elif suffix == "[]":
                first = value[0] if isinstance(value, list) and value else None
                yield from entries(inner, first, f"{key}[].")
            else:
                yield from entries(inner, value, f"{key}.")


def parameter_reference(
    *, markdown: bool = False, params_path: Path | None = None
) -> str:
    """The whole reference as text (or the Markdown of ``docs/parameters.md``)."""
    path = params_path or repo_params_path()
    values = yaml.safe_load(path.read_text())
    rows = list(entries(Params, values))
    if not markdown:
        lines = []
        for row in rows:
            lines.append(f"{row.key}  ({row.type}; range {row.range}; value {row.value or '-'})")
            if row.doc:
                lines.append(f"    {row.doc}")
        return "\n".join(lines) + "\n"
    lines = [
        "# Parameter reference",
        "",
        "<!-- Generated by `eat params --markdown` from the schema in eat/params.py and the",
        "values in params.yaml; tests/test_docs.py fails when it is stale. -->",
        "",
        "Every key of `params.yaml`: its type, allowed range, the value the repository's",
        "`params.yaml` gives it, and what it means. `params.yaml` is validated on load",
        "(`eat check-params`): an unknown key, a wrong type or an out-of-range value stops",
        "the run with the dotted key path and what is allowed. `<name>` is a key you choose",
        "(a GPU type, a model, an ablation variant); `[]` an item of a list.",
        "",
    ]
    section = None
    for row in rows:
        top = row.key.split(".")[0]
        if top != section:
            section = top
            doc = " ".join((Params.model_fields[top].annotation.__doc__ or "").split())
            lines += ["", f"## `{top}`", "", doc, "", "| key | type | range | value | meaning |"]
            lines.append("|---|---|---|---|---|")
            continue
        cells = [f"`{row.key}`", row.type, row.range, row.value or "", row.doc]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def undocumented(model: type[BaseModel] = Params) -> list[str]:
    """Keys whose field has no docstring (a test requires none)."""
    return [row.key for row in entries(model, yaml.safe_load(repo_params_path().read_text())) if not row.doc]

"""The parameter reference, generated from the params schema (:mod:`eat.params`).

Every key of ``params.yaml`` with its type, allowed values (the constraints of its
field, and the choices of a ``Literal``), the value the repository's ``params.yaml``
gives it, and its documentation (the field docstrings, which pydantic keeps as
descriptions; a section's class docstring is its introduction). ``eat params`` prints
it; ``docs/parameters.md`` is this text (``eat params --markdown``), and
``tests/test_docs.py`` fails when that file is stale or a key has no documentation.
"""

from __future__ import annotations

import re
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

REGENERATE = ".venv/bin/python -m eat params --markdown > docs/parameters.md"
"""The command that writes ``docs/parameters.md``."""


@dataclass(frozen=True)
class Entry:
    """One key of the reference."""

    key: str
    """Dotted path; ``<name>`` stands for a mapping key the user chooses, ``[]`` for an
    item of a list."""
    type: str
    """The value's type: ``str``, ``int``, ``float``, ``bool``, ``null``, ``list[T]``,
    ``{K: V}`` (a mapping), ``mapping`` (a nested section), joined by ``|``."""
    allowed: str
    """What the schema accepts beyond the type: bounds, sizes, the choices of a
    ``Literal`` (``-``: anything of the type)."""
    value: str
    """What the repository's params.yaml sets, as YAML flow text: for a key under
    ``<name>`` or ``[]``, the value of every name or item; ``-`` where the key is not
    set (its parent is null); empty for a nested section."""
    doc: str
    """The field's docstring, on one line."""
    model: type[BaseModel] | None = None
    """The nested model the key holds (None for a plain value)."""


class _Missing:
    """The value of a key that params.yaml does not set."""

    def __repr__(self) -> str:
        return "-"


MISSING = _Missing()


@dataclass(frozen=True)
class _Each:
    """The values of one key under every ``<name>`` (a dict) or ``[]`` item (a list)."""

    values: dict[Any, Any] | list[Any]

    def child(self, name: str) -> _Each:
        if isinstance(self.values, dict):
            return _Each({label: _lookup(value, name) for label, value in self.values.items()})
        return _Each([_lookup(value, name) for value in self.values])

    def plain(self) -> Any:
        """The values as YAML-ready data (``-`` for unset ones)."""
        if isinstance(self.values, dict):
            return {label: _plain(value) for label, value in self.values.items()}
        return [_plain(value) for value in self.values]


def _plain(value: Any) -> Any:
    return "-" if value is MISSING else value


def _lookup(values: Any, name: str) -> Any:
    if isinstance(values, _Each):
        return values.child(name)
    if isinstance(values, dict):
        return values.get(name, MISSING)
    return MISSING


# ---------------------------------------------------------------------------
# Types and constraints
# ---------------------------------------------------------------------------


def _bounds(metadata: list[Any]) -> list[str]:
    """The constraints carried by field or ``Annotated`` metadata."""
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
            found += _bounds(item.metadata)
    return found


def _describe(annotation: Any) -> tuple[str, list[str]]:
    """``(type, constraints)`` of an annotation; the constraints of what it contains
    are prefixed with ``key:``, ``value:`` or ``item:`` (``value item:`` for the items
    of a mapping's list values)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        name, found = _describe(inner)
        return name, _bounds(metadata) + found
    if origin is Literal:
        choices = get_args(annotation)
        kinds = dict.fromkeys(type(choice).__name__ for choice in choices)
        return " | ".join(kinds), ["one of " + ", ".join(f"`{choice}`" for choice in choices)]
    if origin in (Union, types.UnionType):
        names, found = [], []
        for argument in get_args(annotation):
            name, constraints = _describe(argument)
            names.append(name)
            found += constraints
        return " | ".join(dict.fromkeys(names)), list(dict.fromkeys(found))
    if origin is dict:
        key, value = get_args(annotation)
        key_name, key_found = _describe(key)
        value_name, value_found = _describe(value)
        found = [_inside("key", c) for c in key_found] + [_inside("value", c) for c in value_found]
        return f"{{{key_name}: {value_name}}}", found
    if origin is list:
        (item,) = get_args(annotation)
        item_name, item_found = _describe(item)
        return f"list[{item_name}]", [_inside("item", c) for c in item_found]
    if annotation is type(None):
        return "null", []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping", []
    return getattr(annotation, "__name__", str(annotation)), []


def _inside(where: str, constraint: str) -> str:
    """``constraint`` of a part (``key``, ``value``, ``item``) of a container."""
    head, colon, rest = constraint.partition(": ")
    if colon and head.split()[-1] in ("key", "value", "item"):
        return f"{where} {head}: {rest}"
    return f"{where}: {constraint}"


def _join_constraints(constraints: list[str]) -> str:
    """One text: the field's own constraints first, then those of each part, e.g.
    ``at least 1 item(s); item: >= 0, < 4294967296`` (``-`` when there are none)."""
    groups: dict[str, list[str]] = {}
    for constraint in dict.fromkeys(constraints):
        head, colon, rest = constraint.partition(": ")
        if colon and head.split()[-1] in ("key", "value", "item"):
            groups.setdefault(head, []).append(rest)
        else:
            groups.setdefault("", []).append(constraint)
    parts = [(f"{head}: " if head else "") + ", ".join(texts) for head, texts in groups.items()]
    return "; ".join(parts) or "-"


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


def _format_value(value: Any) -> str:
    if isinstance(value, _Each):
        value = value.plain()
    if value is MISSING:
        return "-"
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return str(value)


# ---------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------


def entries(
    model: type[BaseModel] = Params, values: Any = None, prefix: str = ""
) -> Iterator[Entry]:
    """Every field of ``model`` and of the models inside it, depth first, with the
    values of ``values`` (a parsed params.yaml mapping, or None)."""
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        value = _lookup(values, name)
        nested = _models_in(info.annotation)
        type_name, constraints = _describe(info.annotation)
        allowed = _bounds(info.metadata) + constraints
        shown = _format_value(value)
        if nested and shown not in ("null", "-") and not _is_null_each(value):
            shown = ""  # a nested section: its keys carry the values
        yield Entry(
            key=key,
            type=type_name,
            allowed=_join_constraints(allowed),
            value=shown,
            doc=" ".join((info.description or "").split()),
            model=nested[0][1] if nested else None,
        )
        for suffix, inner in nested:
            if suffix == "<name>":
                children = value if isinstance(value, dict) else {}
                yield from entries(inner, _Each(dict(children)), f"{key}.<name>.")
            elif suffix == "[]":
                items = value if isinstance(value, list) else []
                yield from entries(inner, _Each(list(items)), f"{key}[].")
            else:
                yield from entries(inner, value, f"{key}.")


def _is_null_each(value: Any) -> bool:
    return isinstance(value, _Each) and all(
        item is None or item is MISSING
        for item in (value.values.values() if isinstance(value.values, dict) else value.values)
    )


_ROLE = re.compile(r":(?:mod|class|func|data|meth|attr):`~?([^`]+)`")


def _markdown(text: str) -> str:
    """A docstring as Markdown: Sphinx roles and RST literals become code spans."""
    return _ROLE.sub(r"`\1`", text).replace("``", "`")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def parameter_reference(*, markdown: bool = False, params_path: Path | None = None) -> str:
    """The whole reference as text (or the Markdown of ``docs/parameters.md``)."""
    path = params_path or repo_params_path()
    values = yaml.safe_load(path.read_text())
    rows = list(entries(Params, values))
    if not markdown:
        lines = []
        for row in rows:
            lines.append(
                f"{row.key}  ({row.type}; allowed {row.allowed}; value {row.value or '-'})"
            )
            if row.doc:
                lines.append(f"    {row.doc}")
        return "\n".join(lines) + "\n"
    sections = list(Params.model_fields)
    lines = [
        "# Parameter reference",
        "",
        "<!-- Generated by `eat params --markdown` from the schema in eat/params.py and the",
        f"values in params.yaml; regenerate with `{REGENERATE}`.",
        "tests/test_docs.py fails when this file is stale. -->",
        "",
        "Every key of `params.yaml`: its type, the values the schema allows, the value the",
        "repository's `params.yaml` gives it, and what it means. `params.yaml` is validated",
        "on load (`eat check-params`): an unknown key, a wrong type or a value outside the",
        "allowed ones stops the run with the dotted key path and what is allowed.",
        "`<name>` is a key you choose (a GPU type, a model, an ablation variant), `[]` an",
        "item of a list; their value column shows the value of every name or item. `-` in",
        "the value column: not set (its parent is null).",
        "",
        "Sections: " + ", ".join(f"[`{name}`](#{name})" for name in sections) + ".",
    ]
    for row in rows:
        if row.key in sections:
            intro = _markdown(" ".join(((row.model.__doc__ if row.model else "") or "").split()))
            lines += ["", f"## `{row.key}`", "", intro, ""]
            lines += ["| key | type | allowed | value | meaning |", "|---|---|---|---|---|"]
            continue
        cells = [f"`{row.key}`", row.type, row.allowed, row.value, _markdown(row.doc)]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def undocumented(model: type[BaseModel] = Params) -> list[str]:
    """Keys whose field has no docstring, and nested models (sections) whose class has
    none (``key (class Name)``); a test requires none."""
    values = yaml.safe_load(repo_params_path().read_text())
    missing = []
    for row in entries(model, values):
        if not row.doc:
            missing.append(row.key)
        if row.model is not None and not (row.model.__doc__ or "").strip():
            missing.append(f"{row.key} (class {row.model.__name__})")
    return missing

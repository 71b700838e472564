"""The config reference: every key of the tree (every registered algorithm's and aggregator's
keys included) with its type, default, unit and description, read from the pydantic fields
themselves, so the reference cannot drift from the code. ``fedweave config show`` prints it
next to a resolved config's values; ``fedweave config docs`` writes it as Markdown
(``docs/config.md``)."""

from __future__ import annotations

import types
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fedweave.config import AGGREGATOR_CONFIGS, ALGORITHM_CONFIGS, Config

PLUGGABLE = ("algorithm", "aggregator")


@dataclass
class Key:
    """One leaf of the config tree."""

    path: str
    type: str
    default: Any
    unit: str
    description: str
    informational: bool


def type_name(ann: Any) -> str:
    """A readable type: ``int | None``, ``iid | dirichlet``, ``list[float]``, ``path``."""
    origin = get_origin(ann)
    if origin is Annotated:  # a constrained type (list[Annotated[int, Field(ge=1)]]): its base
        return type_name(get_args(ann)[0])
    if origin is Literal:
        return " | ".join(str(a) for a in get_args(ann))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(ann))
    if origin in (list, tuple, dict):
        args = ", ".join(type_name(a) for a in get_args(ann) if a is not Ellipsis)
        return f"{origin.__name__}[{args}]"
    if ann is type(None):
        return "null"
    if isinstance(ann, type) and issubclass(ann, Path):
        return "path"
    if isinstance(ann, type) and issubclass(ann, Enum):
        return " | ".join(str(m.value) for m in ann)
    return getattr(ann, "__name__", str(ann))


def _extra(field: FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def default_of(field: FieldInfo) -> Any:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def section_of(field: FieldInfo) -> type[BaseModel] | None:
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def keys(cls: type[BaseModel], prefix: str = "") -> list[Key]:
    """The leaves of ``cls`` (nested sections expanded; pluggable sections not)."""
    out = []
    for name, field in cls.model_fields.items():
        sub = section_of(field)
        if sub is not None and not (cls is Config and name in PLUGGABLE):
            out += keys(sub, f"{prefix}{name}.")
            continue
        if cls is Config and name in PLUGGABLE:
            continue
        extra = _extra(field)
        default = "<algorithm.name>-<data.dataset>" if cls is Config and name == "name" \
            else default_of(field)
        out.append(Key(prefix + name, type_name(field.annotation), default,
                       str(extra.get("unit", "")), field.description or "",
                       bool(extra.get("informational"))))
    return out


def sections(cls: type[BaseModel] = Config, prefix: str = ""
             ) -> list[tuple[str, type[BaseModel]]]:
    """(dotted name, class) of every fixed section, in tree order."""
    out = [(prefix.rstrip(".") or "(top level)", cls)]
    for name, field in cls.model_fields.items():
        sub = section_of(field)
        if sub is not None and not (cls is Config and name in PLUGGABLE):
            out += sections(sub, f"{prefix}{name}.")
    return out


def own_keys(cls: type[BaseModel], prefix: str = "") -> list[Key]:
    """The leaves directly in ``cls`` (no nested sections)."""
    return [k for k in keys(cls, prefix) if "." not in k.path[len(prefix):]]


def pluggable(section: str) -> dict[str, type[BaseModel]]:
    """The registered config classes of ``algorithm`` or ``aggregator``, by name."""
    registry = ALGORITHM_CONFIGS if section == "algorithm" else AGGREGATOR_CONFIGS
    return {str(name): cls for name, cls in sorted(registry.classes.items(),
                                                    key=lambda kv: str(kv[0]))}


def resolved_keys(config: Config) -> list[tuple[Key, Any]]:
    """Every key of ``config`` (its own algorithm's and aggregator's keys in place of the
    pluggable sections) with its value."""
    out: list[tuple[Key, Any]] = []

    def value_at(path: str) -> Any:
        node: Any = config
        for part in path.split("."):
            node = getattr(node, part)
        return list(node) if isinstance(node, tuple) else node

    for key in keys(Config):
        out.append((key, value_at(key.path)))
    for section in PLUGGABLE:
        cls = type(getattr(config, section))
        for key in keys(cls, f"{section}."):
            out.append((key, value_at(key.path)))
    order = {name: i for i, name in enumerate(Config.model_fields)}
    out.sort(key=lambda kv: order.get(kv[0].path.split(".")[0], 0) if "." in kv[0].path
             else -1)
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value).replace("|", "\\|")
    return f"`{text}`"


def _table(rows: list[Key]) -> list[str]:
    lines = ["| key | type | default | unit | description |", "|---|---|---|---|---|"]
    for k in rows:
        note = " (informational: changes no number)" if k.informational else ""
        typ = k.type.replace("|", "\\|")
        lines.append(f"| `{k.path}` | {typ} | {_cell(k.default)} | {k.unit or '–'} | "
                     f"{k.description}{note} |")
    return lines


def _doc(cls: type[BaseModel]) -> str:
    doc = (cls.__doc__ or "").strip()
    if not doc or doc.startswith(("Base of every", "Usage docs")):
        return ""
    return " ".join(doc.split())


def markdown() -> str:
    """The whole reference as Markdown (``docs/config.md``)."""
    lines = ["# Configuration reference", "",
             "Generated by `fedweave config docs > docs/config.md` from the config classes "
             "(a test keeps it current). Every key can be set in a YAML/TOML file or with "
             "`--set dotted.key=value`; `fedweave config show [CONFIG] [--set ...]` prints a "
             "resolved config with these columns. Unknown keys and wrong types are errors "
             "naming the key. Units: s = virtual (simulated) seconds unless the key says "
             "wall clock.", ""]
    for name, cls in sections():
        rows = own_keys(cls, "" if name == "(top level)" else f"{name}.")
        if not rows:
            continue
        lines += [f"## {name}", ""]
        if _doc(cls):
            lines += [_doc(cls), ""]
        lines += [*_table(rows), ""]
    for section in PLUGGABLE:
        lines += [f"## {section}", "",
                  f"Chosen by `{section}.name`; each choice has its own keys (keys of "
                  "another choice are refused).", ""]
        for choice, cls in pluggable(section).items():
            rows = [k for k in keys(cls, f"{section}.") if k.path != f"{section}.name"]
            kind = getattr(cls, "kind", None)
            title = f"### `{section}.name: {choice}`" if choice != "None" else \
                f"### `{section}.name: null` (the algorithm's own rule)"
            lines += [title + (f" ({kind})" if section == "algorithm" else ""), ""]
            if _doc(cls):
                lines += [_doc(cls), ""]
            lines += [*_table(rows), ""] if rows else ["No keys of its own.", ""]
    return "\n".join(lines).rstrip() + "\n"

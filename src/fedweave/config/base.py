"""The base of every config section, the registry of pluggable sections, and the rule that
decides whether a user set a key (``changed``)."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated,
    infinite and NaN numbers are refused (``1e400`` parses as inf)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Pluggable:
    """A registry of config classes for a section chosen by its ``name`` key."""

    def __init__(self, section: str, default: str | None) -> None:
        self.section, self.default = section, default
        self.classes: dict[str, type[Section]] = {}

    def register(self, name: str):  # type: ignore[no-untyped-def]
        """Class decorator: ``<section>.name: <name>`` selects this config class."""

        def add(cls: type[Section]) -> type[Section]:
            self.classes[name] = cls
            return cls

        return add

    def resolve(self, value: Any) -> Section:
        if isinstance(value, Section):
            return value
        if not isinstance(value, dict):
            raise ValueError("must be a mapping with a 'name' key")
        value = {"name": self.default, **value}
        name = value["name"]
        if name is None and None in self.classes:
            return self.classes[None].model_validate(value)  # type: ignore[index]
        if name not in self.classes:
            if not self.classes:
                raise ValueError(
                    f"no {self.section} is registered: load the built-ins first "
                    "(fedweave.plugins.load_builtins(); the CLI and fedweave.run do)")
            choices = ", ".join(sorted(str(k) for k in self.classes if k is not None))
            raise ValueError(f"unknown {self.section} {name!r}; choose one of: {choices}")
        return self.classes[name].model_validate(value)


def changed(section: BaseModel) -> list[str]:
    """Keys of ``section`` whose value differs from the field default (so a dumped config,
    which spells out every default, is not mistaken for one that sets them)."""
    out = []
    for name, field in type(section).model_fields.items():
        default = field.get_default(call_default_factory=True)
        if getattr(section, name) != default:
            out.append(name)
    return out


def given_without(section: BaseModel, switch: str) -> list[str]:
    """Keys of ``section`` the user set although its ``switch`` key (``privacy.level``,
    ``attack.name``) is null: those that differ from their default, and, when the switch was
    not written at all, those written even with their default value (``privacy.clip=1.0``
    alone); a dumped section, which spells out every key and the null switch, counts only
    the changed ones."""
    keys = [k for k in changed(section) if k != switch]
    if switch not in section.model_fields_set:
        keys += [k for k in type(section).model_fields
                 if k in section.model_fields_set and k not in keys and k != switch]
    return keys


class RootView(Protocol):
    """The whole config as a section's cross-section ``check`` sees it. ``config.root.Config``
    satisfies it; a protocol, so that no section module imports the root that imports them."""

    seed: int
    rounds: int
    data: Any
    model: Any
    train: Any
    algorithm: Any
    aggregator: Any
    topology: Any
    clock: Any
    attack: Any
    privacy: Any
    engine: Any
    launcher: Any
    output: Any
    notify: Any
    distill: Any
    influence: Any

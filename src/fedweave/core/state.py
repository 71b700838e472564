"""Typed algorithm state ↔ the flat ``{key: tensor}`` dict a safetensors file holds.

An algorithm's state is a nested mapping of tensors (and plain numbers), e.g.
``{"server": {"x": x, "opt": {"exp_avg": m}}, "buffers": {"0.running_mean": μ}}``. ``flatten``
joins the path with ``/`` (never part of a module, buffer or optimizer-state name; dots are),
``unflatten`` inverts it exactly, numbers become 0-d tensors. Checkpoints store the flat form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

SEP = "/"
State = dict[str, Any]  # nested: str -> tensor | number | State


def flatten(state: Mapping[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested state → ``{"a/b/c": tensor}`` (numbers and bools as 0-d tensors)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if SEP in key:
            raise ValueError(f"state key {key!r} contains {SEP!r}")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + SEP))
        elif isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, bool | int | float):
            out[name] = torch.tensor(value)
        else:
            raise TypeError(f"state entry {name!r} has type {type(value).__name__}")
    return out


def unflatten(flat: Mapping[str, torch.Tensor]) -> State:
    """Inverse of ``flatten``."""
    out: State = {}
    for name, value in flat.items():
        node = out
        *path, leaf = name.split(SEP)
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def section(state: Mapping[str, Any], key: str) -> State:
    """``state[key]`` as a mapping (empty when absent: e.g. no optimizer state yet)."""
    value = state.get(key, {})
    return dict(value) if isinstance(value, Mapping) else {}

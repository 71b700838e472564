"""Keys of older configs, migrated on load with one warning each.

The ``engine`` section once mixed two things: how local training is computed
(``engine.backend``) and how processes start (``engine.name: local|distributed``, with
``engine.timeout_s`` and ``engine.exchange``). They are now ``engine.name`` and the
``launcher`` section. The old spellings (in a file, a run directory's config.yaml or
``--set``) are rewritten before validation, so a config written for an older fedweave runs
with the same numbers; a key given under both spellings is refused.
"""

from __future__ import annotations

import logging
from typing import Any

from fedweave.errors import UserError

log = logging.getLogger("fedweave")

LAUNCHERS = {"local": "single", "distributed": "distributed"}
_warned: set[str] = set()


def _warn(old: str, new: str, warn: bool) -> None:
    if warn and old not in _warned:
        _warned.add(old)
        log.warning("config: %s is now %s (migrated; rename it in the file)", old, new)


def migrate_legacy_keys(data: dict[str, Any], warn: bool = True) -> dict[str, Any]:
    """Rewrite the old engine keys of a raw config mapping in place and return it."""
    engine = data.get("engine")
    if not isinstance(engine, dict):
        return data
    launcher = data.get("launcher")
    moves: list[tuple[str, str, Any]] = []
    if isinstance(engine.get("name"), str) and engine["name"] in LAUNCHERS:
        moves.append(("name", "name", LAUNCHERS[engine.pop("name")]))
    for key in ("timeout_s", "exchange"):
        if key in engine:
            moves.append((key, key, engine.pop(key)))
    if moves:
        if launcher is None:
            launcher = data["launcher"] = {}
        if not isinstance(launcher, dict):
            raise UserError("config error: launcher: expected a section (a mapping of keys)")
        for old, new, value in moves:
            if new in launcher and launcher[new] != value:
                raise UserError(f"config error: engine.{old} and launcher.{new} are both set; "
                                f"keep launcher.{new} only")
            launcher[new] = value
            label = f"engine.name={'local' if value == 'single' else value}" if old == "name" \
                else f"engine.{old}"
            _warn(label, f"launcher.{new}" + ("=" + value if old == "name" else ""), warn)
    if "backend" in engine:
        value = engine.pop("backend")
        if "name" in engine and engine["name"] != value:
            raise UserError("config error: engine.backend and engine.name are both set; "
                            "keep engine.name only (loop, vectorized, fused or auto)")
        engine["name"] = value
        _warn("engine.backend", "engine.name", warn)
    return data

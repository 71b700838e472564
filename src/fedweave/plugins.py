"""Where the registries get filled: the built-ins, the user's plugin modules, entry points.

A plugin is any importable module (or ``.py`` file) that registers things when imported:
``@register_model``, ``@register_dataset``, ``@register_algorithm``, ``@register_aggregator``,
``register_partitioner``, ``register_callback``... It is named by ``fedweave run --import
MODULE`` (repeatable), recorded in the run's config key ``plugins: [MODULE, ...]``, or comes
from an installed package's entry point in the group ``fedweave.plugins``.

Trust rule: a plugin is code, so it runs only when the person at the keyboard names it. A
config's ``plugins:`` list (a run directory's config.yaml on ``--resume``, ``export``,
``influence``, ``prune``; any config given to ``run``, ``sweep``, ``config show``, ``data
show``) is never imported by itself: each listed plugin must also be named with ``--import``,
or the user passes ``fedweave --trust-plugins COMMAND ...``, which prints what it imports.
Otherwise ``load_config`` refuses in one line naming the plugins and how to allow them.
Names given with ``--import`` are trusted for the rest of the process (stages of one command
reload the configs they wrote). A module named by a dotted name is looked up on ``sys.path``,
then in the current folder only for that one module: the folder never joins ``sys.path``, so a
planted ``yaml.py`` or ``matplotlib.py`` beside it is never imported.

The program's entry points (the CLI, ``fedweave.run``, ``fedweave.load_config``) call
``load_config`` here, which imports the plugins and the built-in modules the config names (its
algorithm, which registers the algorithm's config class; the aggregation rules) before
resolving ``algorithm.name``: the config module itself imports no algorithm, and a run imports
no algorithm it does not use (every registry maps its built-in names to their modules and
imports one on lookup, ``fedweave.registry``). ``load_builtins`` imports every built-in, for
listings that need them all (the config reference).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from fedweave.config import Config, load_raw, validate_config
from fedweave.config.no_effect import warn_no_effect
from fedweave.distributed import is_writer
from fedweave.errors import UserError
from fedweave.trust import trusts_listed_plugins

ENTRY_POINT_GROUP = "fedweave.plugins"
_LOADED: set[str] = set()
_TRUSTED: set[str] = set()   # plugin names the user named in this process
_ANNOUNCED: set[str] = set()




def _untrusted(listed: Iterable[str], imports: Iterable[str]) -> list[str]:
    named = {*_TRUSTED, *imports}
    named |= {str(Path(n).resolve()) for n in named if n.endswith(".py")}
    return [p for p in listed if p not in named
            and not (p.endswith(".py") and str(Path(p).resolve()) in named)]


def check_trusted(listed: list[str], imports: Iterable[str], source: str | Path | None) -> None:
    """Refuse (one line) a config's ``plugins`` that the user did not name, unless
    ``--trust-plugins``; with it, say what will be imported."""
    imports = list(imports)
    untrusted = _untrusted(listed, imports)
    if not untrusted:
        return
    where = f"{source}" if source is not None else "the config"
    if not trusts_listed_plugins():
        flags = " ".join(f"--import {p}" for p in untrusted)
        raise UserError(f"{where} lists plugins {', '.join(untrusted)}: a plugin is code, and "
                        f"fedweave imports one only when you name it; add {flags} (or run "
                        "fedweave --trust-plugins COMMAND ... to import every plugin a config "
                        "lists)")
    fresh = [p for p in untrusted if p not in _ANNOUNCED]
    if fresh and is_writer():
        print(f"--trust-plugins: importing {', '.join(fresh)} (listed in {where})",
              file=sys.stderr, flush=True)
    _ANNOUNCED.update(fresh)


def load_builtins() -> None:
    """Register every built-in algorithm, aggregator, model, dataset and callback, then the
    installed ``fedweave.plugins`` entry points (once per process)."""
    if "builtins" in _LOADED:
        return
    import fedweave.aggregators  # noqa: F401  (the aggregation rules and their configs)
    from fedweave.algorithms.base import ALGORITHMS
    from fedweave.callbacks import BUILTIN_CALLBACKS
    from fedweave.data.sources.base import BUILTIN_PREFIXES, DATASETS
    from fedweave.models.base import MODELS

    for registry in (ALGORITHMS, MODELS, DATASETS):
        registry.load_all()
    for module in (*BUILTIN_PREFIXES.values(), *BUILTIN_CALLBACKS):
        importlib.import_module(module)
    _LOADED.add("builtins")
    load_entry_points()


def load_entry_points() -> None:
    """Import the installed ``fedweave.plugins`` entry points (once per process)."""
    if "entry points" in _LOADED:
        return
    _LOADED.add("entry points")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken third-party plugin must say which one
            raise UserError(f"plugin entry point {ep.name} ({ep.value}) failed to import: "
                            f"{type(exc).__name__}: {exc}") from None


def _import_from_cwd(name: str) -> None:
    """Import the dotted ``name`` whose top-level module lies in the current folder, without
    putting the folder on ``sys.path`` (its other files stay unimportable)."""
    top = name.split(".", 1)[0]
    if top not in sys.modules:
        spec = importlib.machinery.PathFinder.find_spec(top, [str(Path.cwd())])
        if spec is None or spec.loader is None:
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)
        module = importlib.util.module_from_spec(spec)
        sys.modules[top] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(top, None)
            raise
    importlib.import_module(name)


def import_plugin(name: str) -> None:
    """Import a plugin module by dotted name (searched on ``sys.path``, then in the current
    folder for this module only) or by the path of a ``.py`` file."""
    _TRUSTED.add(name)
    if name in _LOADED:
        return
    path = Path(name)
    try:
        if name.endswith(".py"):
            if not path.is_file():
                raise UserError(f"--import {name}: no such file")
            spec = importlib.util.spec_from_file_location(f"fedweave_plugin_{path.stem}", path)
            if spec is None or spec.loader is None:
                raise UserError(f"--import {name}: cannot load this file as a module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        elif importlib.util.find_spec(name.split(".", 1)[0]) is not None:
            importlib.import_module(name)
        else:
            _import_from_cwd(name)
    except UserError:
        raise
    except ModuleNotFoundError as exc:
        raise UserError(f"--import {name}: module not found ({exc.name}); put it on "
                        "PYTHONPATH or give the path of its .py file") from None
    except SystemExit as exc:  # a module that ends the program when imported is no plugin
        raise UserError(f"--import {name}: importing it called sys.exit({exc.code!r}), so "
                        "nothing would run; a plugin module only defines and registers") \
            from None
    except Exception as exc:
        raise UserError(f"--import {name}: importing it failed: {type(exc).__name__}: "
                        f"{exc}".splitlines()[0]) from None
    _LOADED.add(name)


def import_plugins(names: Iterable[str]) -> None:
    """Every built-in, the entry points and the plugin modules ``names``."""
    load_builtins()
    for name in names:
        import_plugin(name)


def _load_choice(section: str, name: Any) -> None:
    """Register the config class of ``<section>.name: name`` (an override that switches the
    algorithm drops the old one's keys: ``config.load.apply_overrides``)."""
    import fedweave.aggregators  # noqa: F401  (the aggregator config classes)
    from fedweave.algorithms.base import ALGORITHMS
    from fedweave.config import ALGORITHM_CONFIGS

    if section == "algorithm":
        name = ALGORITHM_CONFIGS.default if name is None else name
        if not isinstance(name, str) or not ALGORITHMS.load(name):
            load_builtins()


def load_named(raw: dict[str, Any]) -> None:
    """Import the built-in modules that the unvalidated config ``raw`` names: its algorithm
    (whose module registers the algorithm's config class) and the aggregation rules (they
    register theirs). A name no registry knows loads every built-in, so validation lists every
    choice."""
    import fedweave.aggregators  # noqa: F401  (the aggregator config classes)
    from fedweave.algorithms.base import ALGORITHMS
    from fedweave.config import ALGORITHM_CONFIGS

    section = raw.get("algorithm")
    name = section.get("name", ALGORITHM_CONFIGS.default) if isinstance(section, dict) \
        else ALGORITHM_CONFIGS.default
    if not isinstance(name, str) or not ALGORITHMS.load(name):
        load_builtins()


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                imports: Iterable[str] = ()) -> Config:
    """Load a config like ``fedweave.config.load_config``, after importing the entry points,
    ``imports``, the file's own ``plugins`` list (``imports`` are added to it, so the resolved
    config records every plugin the run needs) and the built-in modules the config names. A
    listed plugin that the user did not name is refused (the trust rule in the module
    docstring)."""
    raw = load_raw(path, overrides, _load_choice)
    listed = raw.get("plugins") or []
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise UserError("config error: plugins: must be a list of module names")
    imports = list(imports)
    check_trusted(listed, imports, path)
    names = list(dict.fromkeys([*listed, *imports]))
    load_entry_points()
    for name in names:
        import_plugin(name)
    load_named(raw)
    if names:
        raw["plugins"] = names
    try:
        config = validate_config(raw)
    except UserError:
        if "builtins" in _LOADED:
            raise
        load_builtins()  # the error's hints name every built-in (keys of other algorithms)
        config = validate_config(raw)
    warn_no_effect(config)
    return config

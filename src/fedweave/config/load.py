"""Reading a config: YAML/TOML files (duplicate keys refused), ``--set`` overrides,
validation with one line per problem, and dumping the resolved tree."""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fedweave.config.algorithm import AGGREGATOR_CONFIGS, ALGORITHM_CONFIGS
from fedweave.config.legacy import migrate_legacy_keys
from fedweave.config.root import Config
from fedweave.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


#: levels of nested mappings and lists a config may have (the tree itself has 4: sections,
#: sub-sections, lists of lists such as topology.edges)
MAX_DEPTH = 16


def check_depth(value: Any, where: str) -> None:
    """Refuse a value nested deeper than ``MAX_DEPTH`` (iteratively: a nesting that would
    overflow Python's stack in the parser or the validator is one line)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep; a config "
                            "has sections, keys and lists of at most a few levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple):
            stack.extend((v, depth + 1) for v in node)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_text(path: Path, what: str, expected: str) -> str:
    """The UTF-8 text of a file a config key names (``what``: "config", "topology.file",
    ...); a missing, unreadable, binary (NUL bytes) or non-UTF-8 file is a one-line
    ``UserError`` saying what was ``expected``."""
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path}: not a text file (byte {exc.start} is not UTF-8; "
                        f"expected {expected})") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    if "\x00" in text:
        raise UserError(f"{what} {path}: not a text file (it contains NUL bytes; expected "
                        f"{expected})")
    return text


def read_raw(path: Path) -> dict[str, Any]:
    """The mapping in a YAML (or ``.toml``) config file; unreadable files, syntax errors (with
    file:line) and duplicate keys are one-line ``UserError``s."""
    text = read_text(path, "config", "UTF-8 YAML or TOML")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = exc.problem or exc.context or "syntax error"
        raise UserError(f"cannot parse {where}: {problem}") from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot parse {path}: {exc}".splitlines()[0]) from None
    except RecursionError:
        raise UserError(f"cannot parse {path}: nested more than {MAX_DEPTH} levels deep; a "
                        "config has sections, keys and lists of at most a few levels") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of config sections")
    check_depth(data, str(path))
    return data


def _parse_value(text: str) -> Any:
    """Parse an override value as YAML (so ``0.1``, ``true``, ``[1,2]``, ``null`` work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise UserError(f"--set value nested more than {MAX_DEPTH} levels deep: "
                        f"{text[:40]}...") from None


def _merge(into: dict[str, Any], value: dict[str, Any]) -> None:
    for k, v in value.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


log = logging.getLogger("fedweave")
_WARNED: set[str] = set()
#: pluggable sections chosen by their ``name`` key
PLUGGABLE = {"algorithm": ALGORITHM_CONFIGS, "aggregator": AGGREGATOR_CONFIGS}


def _name_of(section: str, node: Any) -> Any:
    registry = PLUGGABLE[section]
    return node.get("name", registry.default) if isinstance(node, dict) else registry.default


#: ``load(section, name)`` imports what registers a choice's config class before it is looked
#: up (``fedweave.plugins`` sets it: built-in algorithms register on first use)
Loader = Callable[[str, Any], None]


def _drop_foreign_keys(section: str, node: dict[str, Any], old: Any, keep: set[str],
                       load: Loader | None) -> None:
    """``<section>.name`` changed from ``old``: drop the keys of the old choice that the new
    one does not have (``algorithm.k`` of clustered when switching to fedavg), except those
    in ``keep`` (given in the same override), with one warning line naming them. Keys that
    neither has stay, so a misspelt key is still refused."""
    registry = PLUGGABLE[section]
    if load is not None:
        for name in (old, node.get("name")):
            load(section, name)
    classes: dict[Any, type[BaseModel]] = dict(registry.classes)
    new_cls, old_cls = classes.get(node.get("name")), classes.get(old)
    if new_cls is None or old_cls is None:
        return
    dropped = [k for k in list(node) if k not in keep and k in old_cls.model_fields
               and k not in new_cls.model_fields]
    for k in dropped:
        del node[k]
    kept = [k for k in node if k != "name" and k in old_cls.model_fields
            and k in new_cls.model_fields]
    if dropped:
        msg = (f"config: {section}.name={node['name']} replaces {old}: dropped "
               f"{', '.join(f'{section}.{k}' for k in dropped)} (keys of {old} only)")
        if kept:
            msg += (f"; kept {', '.join(f'{section}.{k}={node[k]}' for k in kept)} ("
                    f"--set '{section}!={{name: {node['name']}}}' starts from its defaults)")
        if msg not in _WARNED:
            _WARNED.add(msg)
            log.warning(msg)


def apply_overrides(data: dict[str, Any], overrides: list[str], load: Loader | None = None
                    ) -> dict[str, Any]:
    """Apply ``dotted.key=value`` strings to a nested dict (in place) and return it.

    * A mapping value is merged into the section (``--set 'data={nodes: 4}'`` keeps the
      file's other data keys); ``key!=value`` replaces it whole (``--set
      'algorithm!={name: fedavg}'`` drops every key the file gave the algorithm).
    * Changing a pluggable section's choice (``algorithm.name``, ``aggregator.name``, also
      inside a mapping) drops the keys of the old choice that the new one does not have, with
      a warning naming them; keys both have (``clients_per_round``) are kept. So a clustered
      config runs as FedAvg with ``--set algorithm.name=fedavg``, and sweeps over
      ``algorithm.name`` work.
    """
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected dotted.key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        replace = key.endswith("!")
        key = key.removesuffix("!").strip()
        parts = key.split(".")
        if not all(parts):
            raise UserError(f"--set {item!r}: empty key")
        if len(parts) > MAX_DEPTH:
            raise UserError(f"--set {key[:40]}...: a key of {len(parts)} parts; config keys "
                            f"have at most a few (at most {MAX_DEPTH})")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {key}: {part!r} is not a section")
            node = child
        value = _parse_value(raw)
        check_depth(value, f"--set {key}")
        section = parts[0] if parts[0] in PLUGGABLE and len(parts) <= 2 else ""
        old = _name_of(section, data.get(section)) if section else None
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict) and not replace:
            _merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
        if section and not replace and isinstance(data.get(section), dict) \
                and _name_of(section, data[section]) != old:
            given = set(value) if len(parts) == 1 and isinstance(value, dict) else {parts[-1]}
            _drop_foreign_keys(section, data[section], old, given, load)
    return data


def _section_class(loc: tuple[Any, ...], data: dict[str, Any] | None) -> type[BaseModel] | None:
    """The config class at ``loc`` (a pluggable section's class from the raw ``data``)."""
    cls: type[BaseModel] = Config
    node: Any = data or {}
    for part in loc:
        field = cls.model_fields.get(str(part))
        if field is None:
            return None
        node = node.get(part, {}) if isinstance(node, dict) else {}
        if part in ("algorithm", "aggregator") and cls is Config:
            registry = ALGORITHM_CONFIGS if part == "algorithm" else AGGREGATOR_CONFIGS
            name = node.get("name", registry.default) if isinstance(node, dict) \
                else registry.default
            found = registry.classes.get(name)  # type: ignore[arg-type]
            if found is None:
                return None
            cls = found
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            cls = field.annotation
        else:
            return None
    return cls


def did_you_mean(loc: tuple[Any, ...], data: dict[str, Any] | None = None) -> str:
    """A hint for the unknown key at ``loc``: the closest key of its section (``round`` →
    ``rounds``), or the algorithms that have it (``algorithm.k`` under fedavg)."""
    key = str(loc[-1])
    cls = _section_class(loc[:-1], data)
    if cls is None:
        return ""
    close = difflib.get_close_matches(key, list(cls.model_fields), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {'.'.join([*map(str, loc[:-1]), close[0]])}?)"
    if tuple(loc[:-1]) == ("algorithm",):
        owners = sorted(str(name) for name, c in ALGORITHM_CONFIGS.classes.items()
                        if key in c.model_fields)
        if owners:
            return f" (a key of algorithm.name: {', '.join(owners)})"
    return ""


def format_validation_error(exc: ValidationError, data: dict[str, Any] | None = None) -> str:
    """One line per problem: ``config error: data.alpha: Input should be greater than 0``;
    unknown keys say which key was probably meant (``data`` is the raw mapping validated)."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + did_you_mean(tuple(err["loc"]), data)
        lines.append(f"{loc}: {msg}")
    return "config error: " + "; ".join(lines)


def validate_config(data: dict[str, Any]) -> Config:
    """Validate a nested dict into a ``Config`` (older keys migrated first,
    ``fedweave.config.legacy``); problems raise ``UserError`` naming the key."""
    migrate_legacy_keys(data)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, data)) from None


def load_raw(path: str | Path | None = None, overrides: list[str] | None = None,
             load: Loader | None = None) -> dict[str, Any]:
    """The unvalidated mapping of a config file (or ``{}``) with ``overrides`` applied."""
    data = read_raw(Path(path)) if path is not None else {}
    return apply_overrides(data, list(overrides or []), load)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML/TOML file (or the defaults when ``path`` is None) and apply overrides.
    The algorithm/aggregator registries must be filled first: use ``fedweave.load_config``
    (``fedweave.plugins.load_config``), which also imports the config's ``plugins``."""
    return validate_config(load_raw(path, overrides))


def config_to_dict(config: Config) -> dict[str, Any]:
    """A plain, YAML-safe dict of the fully resolved config."""
    return config.model_dump(mode="json")


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)

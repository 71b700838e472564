"""Reading the record files of a run, sweep or pipeline directory (``summary.json``,
``prune.json``, ...): a missing, binary, truncated or garbled file is one ``UserError``
naming the file and what to do, never a ``JSONDecodeError`` traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedweave.errors import UserError


def read_json(path: Path, fix: str = "restore it or start a new run") -> dict[str, Any]:
    """The JSON object in ``path``; a file that is not one is a ``UserError`` naming it."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: missing; {fix}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}; {fix}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: damaged (not UTF-8 text); {fix}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if not isinstance(exc, RecursionError) \
            else "nested too deep"
        raise UserError(f"{path}: damaged (not JSON: {reason}); {fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: damaged (a JSON {type(data).__name__}, not an object); "
                        f"{fix}")
    return data


def field(data: dict[str, Any], key: str, kind: type, path: Path,
          fix: str = "restore it or start a new run") -> Any:
    """``data[key]`` converted to ``kind`` (``int``, ``float``, ``str``, ``dict``); a missing
    or wrong value is a ``UserError`` naming ``path`` and the key."""
    try:
        value = data[key]
        if kind is dict:
            if not isinstance(value, dict):
                raise TypeError(key)
            return value
        if isinstance(value, (dict, list)):
            raise TypeError(key)
        return kind(value)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise UserError(f"{path}: damaged ({key!r} is missing or not a {kind.__name__}); "
                        f"{fix}") from None

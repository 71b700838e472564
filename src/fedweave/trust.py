"""Whether this process imports the plugins a config lists by itself (``fedweave
--trust-plugins``, or the Python API's ``trust_listed_plugins``). Kept apart from
``fedweave.plugins`` so that the code starting child processes (``fedweave.distributed.spawn``)
can pass the choice on without importing the plugin machinery."""

from __future__ import annotations

_TRUST_ALL: list[bool] = [False]


def trust_listed_plugins(enabled: bool = True) -> None:
    """Import the plugins any config lists (``fedweave --trust-plugins``; the Python API's
    equivalent). Each one is announced on stderr before it is imported."""
    _TRUST_ALL[0] = enabled


def trusts_listed_plugins() -> bool:
    return _TRUST_ALL[0]

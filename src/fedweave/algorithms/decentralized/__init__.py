"""Decentralized (peer-to-peer) algorithms: importing this package registers every algorithm
module in it (a new algorithm is one new file here)."""

from importlib import import_module
from pkgutil import iter_modules

__all__ = sorted(m.name for m in iter_modules(__path__))
for _name in __all__:
    import_module(f"{__name__}.{_name}")

"""``python -m fedweave`` and the ``fedweave`` console script."""

import os
import sys

# ``python -m fedweave`` puts the working directory first on sys.path: drop it before anything
# else is imported, so a yaml.py or matplotlib.py lying there never runs (plugins in the
# folder are still found by --import, one module at a time: fedweave.plugins).
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]


def entry() -> None:
    """Start again with glibc keeping freed memory (``fedweave.allocator``), then the command
    line."""
    from fedweave.allocator import reuse_freed_memory

    reuse_freed_memory()
    from fedweave.cli import main

    main()


if __name__ == "__main__":
    entry()

"""``python -m fedweave`` and the ``fedweave`` console script."""

import os
import sys

# ``python -m fedweave`` puts the working directory first on sys.path: drop it before anything
# else is imported, so a yaml.py or matplotlib.py lying there never runs (plugins in the
# folder are still found by --import, one module at a time: fedweave.plugins).
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]


def entry() -> None:
    """The command line in a process started with glibc keeping freed memory and ended without
    module teardown (``fedweave.process``)."""
    from fedweave.process import exit_now, reuse_freed_memory

    reuse_freed_memory()
    from fedweave.cli import main

    try:
        main()
    except SystemExit as exc:
        exit_now(exc.code)
    exit_now(0)


if __name__ == "__main__":
    entry()

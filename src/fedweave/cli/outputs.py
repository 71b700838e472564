"""Output paths a command writes, checked before any work: a file where a folder belongs, a
folder where a file belongs, a place nobody may write, an image format the plotter cannot
write — each is one line naming the option and the fix, not an ``OSError`` after the work."""

from __future__ import annotations

import os
from pathlib import Path

from fedweave.errors import UserError

#: file systems that hold no user output
_SYSTEM = ("/proc", "/sys", "/dev")


def _existing_ancestor(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path("/")


def output_folder(path: Path, option: str) -> Path:
    """``path`` as a folder a command may create and write into (nothing is created here)."""
    path = Path(path).expanduser()
    found = _existing_ancestor(path)
    if not found.is_dir():
        where = "is a file" if found == path else f"lies under the file {found}"
        raise UserError(f"{option} {path}: {where}, not a folder; choose another {option}")
    if str(path.resolve()).startswith(_SYSTEM):
        raise UserError(f"{option} {path}: not a place for output; choose another {option}")
    if not os.access(found, os.W_OK | os.X_OK):
        what = "not writable" if found == path else f"{found} is not writable"
        raise UserError(f"{option} {path}: {what}; choose another {option}")
    return path


def output_file(path: Path, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` as a file a command may write (its folder checked by ``output_folder``);
    ``suffixes``: the formats it can be written in (``.png``, ...), none = any."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path}: the file is not writable; choose another {option}")
    if suffixes and path.suffix.lower() not in suffixes:
        kind = path.suffix or "a file without a suffix"
        raise UserError(f"{option} {path}: cannot write {kind}; use one of "
                        f"{', '.join(suffixes)}")
    found = _existing_ancestor(path.parent)
    if not found.is_dir():
        raise UserError(f"{option} {path}: lies under the file {found}, not a folder; choose "
                        f"another {option}")
    output_folder(path.parent, option)
    return path


def image_suffixes() -> tuple[str, ...]:
    """The file formats matplotlib's default canvas writes (``.png``, ``.pdf``, ``.svg``,
    ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted(f".{ext}" for ext in FigureCanvasBase.get_supported_filetypes()))

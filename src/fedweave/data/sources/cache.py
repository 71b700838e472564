"""Decoded-array caches for the formats that are slow to decode (gzipped IDX, LEAF json, image
folders): plain ``.npy`` files (never a pickle), keyed by the source files.

An entry is a folder ``<name>-<where>-<key>/`` holding one ``<array>.npy`` per array and a
``manifest.json`` (written last) with the key and each array's dtype, shape and sha256 (of its
bytes in C order). ``where`` is a
hash of the source folder, ``key`` a hash of the reader's format version, its parameters and
every source file's path, size and mtime, so a changed, added or removed source file gives a
new key and the entry is rebuilt (older entries of the same source folder are deleted).

Entries are built in a temporary folder and renamed into place (never half-written), under an
exclusive ``fcntl.flock`` on ``<name>-<where>.lock``, so two processes building the same cache
build it once; readers hold the lock shared. An entry that does not match its manifest
(truncated, padded or garbled ``.npy`` header, bad manifest, array bytes that do not match
their checksum, e.g. labels zeroed in place) is rebuilt. Caches go next to the source files
(``<folder>/fedweave-cache/``) when that folder is inside the data root, writable and not a
system dataset folder, else to ``$XDG_CACHE_HOME/fedweave/decoded`` (default
``~/.cache/fedweave/decoded``); when neither can be written, nothing is cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: caches are built without a lock
    fcntl = None  # type: ignore[assignment]

CACHE_FORMAT = 2  # bump when a reader's output changes, so old entries are not used
CACHE_FOLDER = "fedweave-cache"
SYSTEM_DATA_DIRS = (Path("/usr/share/datasets"),)  # package-managed: never written to

Arrays = dict[str, np.ndarray]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fedweave/decoded``, default ``~/.cache/fedweave/decoded``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "fedweave" / "decoded"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError):
        return False
    return True


def cache_dirs(near: Path, root: Path) -> list[Path]:
    """Where a cache of files in folder ``near`` may go, in order of preference."""
    dirs = []
    if (_inside(near, root) and not any(_inside(near, d) for d in SYSTEM_DATA_DIRS)
            and os.access(near, os.W_OK)):
        dirs.append(near / CACHE_FOLDER)
    dirs.append(user_cache_dir())
    return dirs


def source_key(name: str, sources: Sequence[Path], params: Mapping[str, Any]) -> str:
    """Hash of the format version, ``name``, ``params`` and each source's path, size, mtime."""
    stamps = []
    for path in sources:
        st = path.stat()
        stamps.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps([CACHE_FORMAT, name, dict(params), stamps], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@contextlib.contextmanager
def _locked(lock: IO[bytes]) -> Iterator[Callable[[], None]]:
    """Hold ``lock`` shared; the yielded function upgrades it to exclusive."""

    def exclusive() -> None:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)

    if fcntl is not None:
        fcntl.flock(lock, fcntl.LOCK_SH)
    try:
        yield exclusive
    finally:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _load(entry: Path, key: str, names: Sequence[str]) -> Arrays | None:
    """The arrays ``names`` of ``entry`` (in-memory, writable copies), or None if it is absent
    or does not match its manifest."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        if (manifest["format"] != CACHE_FORMAT or manifest["key"] != key
                or sorted(manifest["arrays"]) != sorted(names)):
            return None
        out: Arrays = {}
        for name, meta in manifest["arrays"].items():
            path = entry / f"{name}.npy"
            shape = tuple(meta["shape"])
            if 0 in shape:  # an empty file cannot be memory-mapped
                arr = np.load(path, allow_pickle=False)
            else:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
                if path.stat().st_size != arr.offset + arr.nbytes:  # bytes added or lost
                    return None
            if arr.shape != shape or arr.dtype.str != meta["dtype"]:
                return None
            copy = np.array(arr)  # out of the map: writable, independent of the file
            if _digest(copy) != meta["sha256"]:  # same size, other bytes
                return None
            out[name] = copy
        return out
    except Exception:  # absent, truncated or garbled (numpy's header parser can even raise
        return None  # tokenize.TokenError): rebuild


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).data).hexdigest()


def _store(folder: Path, entry: Path, key: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as ``entry`` atomically: a temporary folder renamed into place."""
    tmp = folder / f".{entry.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        meta = {}
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
            meta[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape),
                          "sha256": _digest(arr)}
        (tmp / "manifest.json").write_text(json.dumps(
            {"format": CACHE_FORMAT, "key": key, "arrays": meta}))
        if entry.exists():  # a damaged entry with this key: move it away, then replace it
            trash = folder / f".{entry.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(entry, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale(folder: Path, prefix: str, keep: Path) -> None:
    for old in folder.glob(f"{prefix}-*"):
        if old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def decoded_cache(name: str, sources: Sequence[Path], build: Callable[[], Mapping[str, np.ndarray]],
                  *, names: Sequence[str], near: Path, root: Path,
                  params: Mapping[str, Any] | None = None) -> Arrays:
    """``build()``'s arrays (called ``names``: plain identifiers) for the files ``sources``
    (in folder ``near`` under data root ``root``), from the cache when an entry with their
    current key exists, else built and stored (see the module docstring). The result is
    bit-identical either way; errors of ``build`` propagate, cache errors never do."""
    if not all(n.isidentifier() for n in names):
        raise ValueError(f"cache array names must be identifiers: {list(names)}")
    key = source_key(name, sources, params or {})
    where = hashlib.sha256(str(near.resolve()).encode()).hexdigest()[:12]
    prefix = f"{name}-{where}"
    for folder in cache_dirs(near, root):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock = open(folder / f"{prefix}.lock", "ab")  # noqa: SIM115 - held below
        except OSError:
            continue
        entry = folder / f"{prefix}-{key}"
        with lock, _locked(lock) as exclusive:
            found = _load(entry, key, names)
            if found is not None:
                return found
            exclusive()  # another process may have built it meanwhile: look again
            found = _load(entry, key, names)
            if found is not None:
                return found
            arrays = _built(build, names)
            try:
                _store(folder, entry, key, arrays)
                _remove_stale(folder, prefix, entry)
            except OSError:
                pass  # disk full or read-only after all: the data is still good
            return arrays
    return _built(build, names)


def _built(build: Callable[[], Mapping[str, np.ndarray]], names: Sequence[str]) -> Arrays:
    arrays = {k: np.asarray(v) for k, v in build().items()}
    if sorted(arrays) != sorted(names):
        raise ValueError(f"build() returned arrays {sorted(arrays)}, expected {sorted(names)}")
    return arrays

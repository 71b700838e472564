"""CIFAR-10 / CIFAR-100 python pickle batches, read with a restricted unpickler.

The official batches were written by Python 2 ``cPickle`` (protocol 2): a dict with str keys
(bytes under ``encoding="bytes"``), ``b'data'`` a numpy uint8 array rebuilt through
``numpy.core.multiarray._reconstruct`` / ``numpy.ndarray`` / ``numpy.dtype``, and lists of ints
and strings. :class:`SafeUnpickler` admits exactly those globals (plus the few a Python 3
``pickle.dump`` of the same data needs), so a crafted file cannot run code: any other global,
e.g. ``os.system``, is refused before it is looked up.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedweave.config import DataConfig
from fedweave.data.sources.base import (
    Dataset,
    Stats,
    image_dataset,
    missing,
    reason,
    redownload,
    register_dataset,
    unreadable,
)

try:  # numpy >= 2 moved the internals to numpy._core; old pickles still name numpy.core
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes (latin-1 only)."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1", errors)


def _sized(kind: type[bytes] | type[bytearray]) -> Callable[..., bytes | bytearray]:
    """``bytes`` / ``bytearray`` as a pickle may call them (``bytes()``, ``bytearray(text,
    'latin-1')``), but not ``bytes(n)``: a few bytes of pickle must not zero-fill gigabytes."""

    def make(*args: Any) -> bytes | bytearray:
        if args and isinstance(args[0], int):
            raise pickle.UnpicklingError(f"{kind.__name__}({args[0]}) from a size")
        return kind(*args)

    return make


_PLAIN: dict[str, Any] = {
    "dict": dict, "list": list, "tuple": tuple, "bytes": _sized(bytes),
    "bytearray": _sized(bytearray),
    "str": str, "int": int, "float": float, "complex": complex, "bool": bool, "set": set,
    "frozenset": frozenset,
}
_ALLOWED: dict[tuple[str, str], Any] = {
    **{("builtins", k): v for k, v in _PLAIN.items()},
    **{("__builtin__", k): v for k, v in _PLAIN.items()},  # Python 2 names
    ("__builtin__", "unicode"): str, ("__builtin__", "long"): int,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _multiarray._reconstruct
       for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _multiarray.scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _numeric._frombuffer  # type: ignore[attr-defined]
       for core in ("core", "_core")},
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside :data:`_ALLOWED` (``args[0]``: ``module.name``)."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickles only plain data: builtin containers and scalars and numpy arrays/dtypes.
    ``find_class`` answers from a fixed table (it never imports), so no other callable can be
    reached; persistent ids are refused by the base class."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def safe_unpickle(path: Path, fix: str) -> Any:
    """The object in pickle file ``path`` (Python 2 strings kept as bytes, as the CIFAR files
    need), or :class:`UserError` naming the file and ``fix`` when it is unreadable, truncated,
    garbled or names anything but plain data."""
    try:
        raw = path.read_bytes()  # in memory: a bogus length cannot make the reader allocate it
    except OSError as e:
        raise unreadable(path, f"unreadable ({reason(e)})", fix) from e
    try:
        return SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except RefusedGlobal as e:
        raise unreadable(path, f"refusing to unpickle {e.args[0]!r} (only plain arrays are "
                               "allowed)", fix) from None
    except Exception as e:  # a garbled pickle can fail in any opcode with any error type
        raise unreadable(path, f"not a readable pickle ({reason(e)})", fix) from None


def _field(batch: object, key: bytes, path: Path, fix: str) -> object:
    if not isinstance(batch, dict):
        raise unreadable(path, f"expected a dict of arrays, found {type(batch).__name__}", fix)
    if key not in batch:
        keys = ", ".join(repr(k) for k in list(batch)[:8])
        raise unreadable(path, f"no {key!r} entry (it has {keys})", fix)
    return batch[key]


def _integers(value: object, what: str, path: Path, fix: str, low: int, high: int
              ) -> np.ndarray:
    """``value`` (a list or array of ints) as an integer array, checked to lie in low..high
    (not copied when it already is one)."""
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged or odd nested values
        raise unreadable(path, f"{what} is not an array ({reason(e)})", fix) from None
    fits = arr.dtype.kind in "uib" and (
        (arr.dtype == np.uint8 and (low, high) == (0, 255))
        or not arr.size or (int(arr.min()) >= low and int(arr.max()) <= high))
    if not fits:
        raise unreadable(path, f"{what} must be integers in {low}..{high} (found "
                               f"{arr.dtype} of shape {arr.shape})", fix)
    return arr


def read_cifar_batch(path: Path, label_key: bytes, num_classes: int, fix: str
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file: a pickled dict with ``b'data'`` (uint8-valued [N, 3072] rows,
    channel-major 32×32 RGB) and ``label_key`` (N ints in 0..num_classes-1) →
    (uint8 [N, 3, 32, 32], int64 [N]). Anything else is a :class:`UserError`."""
    batch = safe_unpickle(path, fix)
    data = _integers(_field(batch, b"data", path, fix), "b'data'", path, fix, 0, 255)
    if data.size % 3072 or (data.ndim != 2 and data.size):
        raise unreadable(path, f"b'data' has shape {data.shape}, expected [N, 3072]", fix)
    images = data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)
    labels = _integers(_field(batch, label_key, path, fix), repr(label_key), path, fix, 0,
                       num_classes - 1).astype(np.int64).reshape(-1)
    if len(labels) != len(images):
        raise unreadable(path, f"{len(labels)} labels for {len(images)} images", fix)
    return images, labels


def _read_batches(paths: Sequence[Path], label_key: bytes, num_classes: int, fix: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_cifar_batch(p, label_key, num_classes, fix) for p in paths]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def _read_names(meta: Path, key: bytes, count: int, fix: str) -> list[str] | None:
    """Class names from the ``meta`` pickle (``key``: a list of bytes/str), if it is there."""
    if not meta.is_file():
        return None
    names = _field(safe_unpickle(meta, fix), key, meta, fix)
    if (not isinstance(names, list | tuple) or len(names) != count
            or not all(isinstance(n, bytes | str) for n in names)):
        raise unreadable(meta, f"{key!r} must be a list of {count} names", fix)
    try:
        return [n.decode() if isinstance(n, bytes) else n for n in names]
    except UnicodeDecodeError as e:
        raise unreadable(meta, f"class names are not text ({reason(e)})", fix) from None


def _load_cifar(name: str, base: Path, train: Sequence[str], test: str, label_key: bytes,
                meta: str, names_key: bytes, num_classes: int, stats: Stats) -> Dataset:
    """The batches ``train`` + ``test`` in ``base`` (names from ``meta`` when present)."""
    paths = [base / f for f in (*train, test)]
    if not all(p.is_file() for p in paths):
        raise missing(name, [base])
    fix = redownload(name)
    tx, ty = _read_batches(paths[:-1], label_key, num_classes, fix)
    vx, vy = _read_batches(paths[-1:], label_key, num_classes, fix)
    return image_dataset(name, tx, ty, vx, vy, num_classes=num_classes, stats=stats,
                         classes=_read_names(base / meta, names_key, num_classes, fix))


def _locate(folder: str, marker: str) -> Callable[[Path], list[tuple[Path, list[Path]]]]:
    return lambda root: [(root / folder, [root / folder / marker])]


@register_dataset("cifar10", _locate("cifar-10-batches-py", "data_batch_1"))
def load_cifar10(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """CIFAR-10 python pickles ``root/cifar-10-batches-py/data_batch_1..5`` and ``test_batch``
    (dicts with ``b'data'`` uint8 [N, 3072] CHW rows and ``b'labels'``; names from
    ``batches.meta``) → uint8 [N, 3, 32, 32]."""
    return _load_cifar("cifar10", root / "cifar-10-batches-py",
                       [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels",
                       "batches.meta", b"label_names", 10,
                       ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)))


@register_dataset("cifar100", _locate("cifar-100-python", "train"))
def load_cifar100(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """CIFAR-100 python pickles ``root/cifar-100-python/{train,test}`` (``b'data'``,
    ``b'fine_labels'``; names from ``meta``) → uint8 [N, 3, 32, 32], 100 fine classes."""
    return _load_cifar("cifar100", root / "cifar-100-python", ["train"], "test",
                       b"fine_labels", "meta", b"fine_label_names", 100,
                       ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)))


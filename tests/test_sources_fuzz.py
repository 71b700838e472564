"""Property-based fuzzing of the dataset readers (Hypothesis): truncated, garbled or
restructured variants of valid tiny files either load or raise ``UserError`` - never another
exception type, never a hang (small inputs, a per-example deadline).

Settings are deterministic (``derandomize=True``, no example database) so the suite is
reproducible; ``FEDWEAVE_FUZZ_EXAMPLES=<n>`` runs ``n`` random examples per reader instead."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from test_sources_security import py2_pickle

from fedweave.data.sources.arrays import read_npz
from fedweave.data.sources.cache import decoded_cache
from fedweave.data.sources.cifar import read_cifar_batch
from fedweave.data.sources.idx import read_idx
from fedweave.data.sources.images import decode_image
from fedweave.data.sources.leaf import read_leaf_file
from fedweave.data.sources.svhn import read_svhn_mat
from fedweave.errors import UserError

_RANDOM = os.environ.get("FEDWEAVE_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_RANDOM) if _RANDOM else 40,
    derandomize=not _RANDOM,
    database=None,
    deadline=timedelta(seconds=3),  # generous on a loaded 2-core machine; a hang still fails
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fedweave-fuzz-") as tmp:
        yield Path(tmp)


def loads_or_user_error(read: Callable[[], Any]) -> Any:
    """Call ``read``; a UserError is fine (returns None), any other exception fails."""
    try:
        return read()
    except UserError as e:
        assert "\n" not in str(e)
        return None


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, with bytes flipped / overwritten / inserted / deleted (biased to
    the first 64 bytes, where the headers are)."""
    n = len(data)
    where = st.one_of(st.integers(0, min(n, 64) - 1), st.integers(0, n - 1))
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, n - 1))]
    if kind == "flip":
        out = bytearray(data)
        for pos in draw(st.lists(where, min_size=1, max_size=8)):
            out[pos] ^= draw(st.integers(1, 255))
        return bytes(out)
    start = draw(where)
    if kind == "overwrite":
        chunk = draw(st.binary(min_size=1, max_size=16))
        return data[:start] + chunk + data[start + len(chunk):]
    if kind == "insert":
        return data[:start] + draw(st.binary(min_size=1, max_size=16)) + data[start:]
    return data[:start] + data[start + draw(st.integers(1, 32)):]


# ---------------------------------------------------------------------------- IDX


def _idx(array: np.ndarray) -> bytes:
    return (bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.tobytes())


IDX_IMAGES = _idx(np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8))
IDX_LABELS = _idx(np.arange(3, dtype=np.uint8))


@FUZZ
@given(raw=st.one_of(mutated(IDX_IMAGES), mutated(IDX_LABELS)), compress=st.booleans())
def test_fuzz_idx(raw: bytes, compress: bool) -> None:
    with scratch() as tmp:
        path = tmp / ("f-idx3-ubyte.gz" if compress else "f-idx3-ubyte")
        path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
        out = loads_or_user_error(lambda: read_idx(path))
        if out is not None:
            assert isinstance(out, np.ndarray) and out.flags.writeable


@FUZZ
@given(packed=mutated(gzip.compress(IDX_IMAGES, mtime=0)))
def test_fuzz_idx_gzip_stream(packed: bytes) -> None:
    with scratch() as tmp:
        path = tmp / "f-idx3-ubyte.gz"
        path.write_bytes(packed)
        loads_or_user_error(lambda: read_idx(path))


# ------------------------------------------------------------------------- CIFAR


def _cifar(n: int) -> dict[bytes, object]:
    data = np.random.default_rng(n).integers(0, 256, (n, 3072), dtype=np.uint8)
    return {b"batch_label": b"batch", b"labels": list(range(n)), b"data": data,
            b"filenames": [b"a.png"] * n}


CIFAR_PY2 = py2_pickle(_cifar(2))
CIFAR_PY3 = pickle.dumps(_cifar(2), protocol=4)
CIFAR_P5 = pickle.dumps(_cifar(1), protocol=5)


def _read_cifar(path: Path) -> object:
    images, labels = read_cifar_batch(path, b"labels", 10, "fix")
    assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
    assert labels.dtype == np.int64 and len(labels) == len(images)
    return images


@FUZZ
@given(raw=st.one_of(mutated(CIFAR_PY2), mutated(CIFAR_PY3), mutated(CIFAR_P5)))
def test_fuzz_cifar_pickle(raw: bytes) -> None:
    with scratch() as tmp:
        path = tmp / "data_batch_1"
        path.write_bytes(raw)
        loads_or_user_error(lambda: _read_cifar(path))


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.binary(max_size=8)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.binary(max_size=6) | st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
arrays = hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))


@FUZZ
@given(data=plain | arrays, labels=plain | arrays, protocol=st.integers(0, 5))
def test_fuzz_cifar_structure(data: object, labels: object, protocol: int) -> None:
    """Well-formed pickles of the wrong content: odd types, shapes and dtypes."""
    with scratch() as tmp:
        path = tmp / "data_batch_1"
        path.write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=protocol))
        loads_or_user_error(lambda: _read_cifar(path))


# -------------------------------------------------------------------------- SVHN


def _mat(compress: bool) -> bytes:
    buf = io.BytesIO()
    x = np.random.default_rng(1).integers(0, 256, (32, 32, 3, 2), dtype=np.uint8)
    scipy.io.savemat(buf, {"X": x, "y": np.array([[10], [3]], np.uint8)},
                     do_compression=compress)
    return buf.getvalue()


MAT_PLAIN, MAT_ZIP = _mat(False), _mat(True)


@FUZZ
@given(raw=st.one_of(mutated(MAT_PLAIN), mutated(MAT_ZIP)))
def test_fuzz_svhn_mat(raw: bytes) -> None:
    with scratch() as tmp:
        path = tmp / "train_32x32.mat"
        path.write_bytes(raw)
        out = loads_or_user_error(lambda: read_svhn_mat(path))
        if out is not None:
            assert out[0].dtype == np.uint8 and out[0].shape[1:] == (3, 32, 32)


# -------------------------------------------------------------------------- LEAF


def _leaf() -> dict[str, Any]:
    rng = np.random.default_rng(2)
    return {"users": ["u1", "u2"], "num_samples": [1, 2], "user_data": {
        "u1": {"x": rng.random((1, 784)).round(2).tolist(), "y": [3]},
        "u2": {"x": rng.random((2, 784)).round(2).tolist(), "y": [61, 0]}}}


LEAF = json.dumps(_leaf()).encode()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=10,
)
SPOTS = ["blob", "users", "user_data", "u1", "x", "y", "row", "pixel", "label"]


@FUZZ
@given(raw=mutated(LEAF))
def test_fuzz_leaf_bytes(raw: bytes) -> None:
    with scratch() as tmp:
        path = tmp / "all_data_0.json"
        path.write_bytes(raw)
        loads_or_user_error(lambda: read_leaf_file(path))


@FUZZ
@given(spot=st.sampled_from(SPOTS), value=json_values)
def test_fuzz_leaf_structure(spot: str, value: object) -> None:
    blob: Any = _leaf()
    u1 = blob["user_data"]["u1"]
    if spot == "blob":
        blob = value
    elif spot in ("users", "user_data"):
        blob[spot] = value
    elif spot == "u1":
        blob["user_data"]["u1"] = value
    elif spot in ("x", "y"):
        u1[spot] = value
    elif spot == "row":
        u1["x"][0] = value
    elif spot == "pixel":
        u1["x"][0][5] = value
    else:
        u1["y"][0] = value
    with scratch() as tmp:
        path = tmp / "all_data_0.json"
        path.write_text(json.dumps(blob))
        out = loads_or_user_error(lambda: read_leaf_file(path))
        for _, x, y in out or []:
            assert x.dtype == np.uint8 and x.shape[1:] == (1, 28, 28) and len(y) == len(x)


# ------------------------------------------------------------------------ images


def _image(fmt: str) -> bytes:
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


IMAGES = {fmt: _image(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP")}


@FUZZ
@given(st.sampled_from(sorted(IMAGES)).flatmap(lambda f: mutated(IMAGES[f])),
       st.sampled_from([None, 8]))
def test_fuzz_images(raw: bytes, size: int | None) -> None:
    with scratch() as tmp:
        path = tmp / "image.png"
        path.write_bytes(raw)
        out = loads_or_user_error(lambda: decode_image(path, size, "fix"))
        if out is not None:
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[0] == 3


# --------------------------------------------------------------------------- npz


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x_train=np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
             y_train=np.array([0, 1]), x_test=np.zeros((1, 3, 4), np.uint8),
             y_test=np.array([1]))
    return buf.getvalue()


NPZ = _npz()


@FUZZ
@given(raw=mutated(NPZ))
def test_fuzz_npz_bytes(raw: bytes) -> None:
    with scratch() as tmp:
        path = tmp / "data.npz"
        path.write_bytes(raw)
        loads_or_user_error(lambda: read_npz(path))


@FUZZ
@given(x_train=arrays, y_train=arrays, x_test=arrays, y_test=arrays)
def test_fuzz_npz_arrays(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                         y_test: np.ndarray) -> None:
    with scratch() as tmp:
        path = tmp / "data.npz"
        np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        out = loads_or_user_error(lambda: read_npz(path))
        if out is not None:
            assert len(out[1]) == len(out[0]) and out[1].dtype == np.int64


# ------------------------------------------------------------------------- caches

CACHED = {"a": np.arange(300, dtype=np.int64).reshape(3, 100), "b": np.ones(5, np.uint8)}


@FUZZ
@given(which=st.sampled_from(["a.npy", "b.npy", "manifest.json"]), data=st.data())
def test_fuzz_cache_entry(which: str, data: st.DataObject) -> None:
    """A damaged cache entry (header bytes, truncation, manifest) is rebuilt: the result is
    always the true arrays. (Flips inside the array data of an .npy are not detected.)"""
    with scratch() as tmp:
        (tmp / "src").write_bytes(b"x")
        decoded_cache("demo", [tmp / "src"], lambda: CACHED, names=("a", "b"), near=tmp,
                      root=tmp)
        [entry] = [p for p in (tmp / "fedweave-cache").iterdir() if p.is_dir()]
        target = entry / which
        raw = target.read_bytes()
        header = raw if which == "manifest.json" else raw[:128]  # the .npy header block
        damaged = data.draw(mutated(header)) + raw[len(header):]
        if which != "manifest.json" and data.draw(st.booleans()):
            damaged = raw[: data.draw(st.integers(0, len(raw) - 1))]
        target.write_bytes(damaged)
        out = decoded_cache("demo", [tmp / "src"], lambda: CACHED, names=("a", "b"), near=tmp,
                      root=tmp)
        assert set(out) == set(CACHED)
        for k, v in CACHED.items():
            assert out[k].dtype == v.dtype and np.array_equal(out[k], v)


def test_fuzz_settings_are_modest() -> None:
    """Kept fast: the suite's examples per reader and the deadline."""
    if _RANDOM:
        pytest.skip("random fuzzing run")
    assert FUZZ.max_examples <= 50 and FUZZ.deadline is not None

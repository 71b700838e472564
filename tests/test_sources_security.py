"""Dataset files that are damaged or hostile: nothing read from disk runs code, and every bad
file gives one ``UserError`` line naming it and the fix (CLI: exit 2, no traceback)."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from test_sources import save_image, write_cifar, write_leaf, write_mnist_dir

import fedweave
from fedweave.config import DataConfig
from fedweave.data.download import extract
from fedweave.data.sources import load_dataset
from fedweave.data.sources.cifar import read_cifar_batch, safe_unpickle
from fedweave.errors import UserError

SRC = str(Path(fedweave.__file__).resolve().parents[1])  # the package under test, for the CLI


def load(name: str, root: Path) -> None:
    load_dataset(DataConfig(dataset=name, root=root), 0)


def one_line_error(name: str, root: Path, *needles: str) -> str:
    """Load ``name`` from ``root``, expecting one UserError line that names every needle."""
    with pytest.raises(UserError) as info:
        load(name, root)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


# ------------------------------------------------------------------------- CIFAR pickles


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """Writes what Python 2 cPickle wrote for the official CIFAR batches (protocol 2): str as
    SHORT_BINSTRING / BINSTRING (bytes under ``encoding='bytes'``) and ``numpy.core`` names."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin-1"))

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = str(getattr(obj, "__module__", ""))
        module = module.replace("numpy._core.", "numpy.core.")
        qual = name or obj.__qualname__  # type: ignore[attr-defined]
        self.write(pickle.GLOBAL + f"{module}\n{qual}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str
    dispatch[type] = save_global
    dispatch[type(np.dtype)] = save_global  # numpy._DTypeMeta: the class np.dtype itself
    dispatch[type(len)] = save_global


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_blob(n: int, seed: int) -> dict[bytes, object]:
    data = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    return {b"batch_label": b"training batch 1 of 5", b"labels": [i % 10 for i in range(n)],
            b"data": data, b"filenames": [b"f%d.png" % i for i in range(n)]}


def test_python2_cifar_pickle_loads(tmp_path: Path) -> None:
    """The official files' exact shape (Python 2 cPickle, protocol 2, numpy.core globals)."""
    raw = py2_pickle(cifar_blob(4, 0))
    assert raw.startswith(b"\x80\x02}") and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert b"U\x04data" in raw  # a Python 2 str key
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw)
    images, labels = read_cifar_batch(path, b"labels", 10, "fix")
    expected = np.asarray(cifar_blob(4, 0)[b"data"]).reshape(-1, 3, 32, 32)
    assert np.array_equal(images, expected) and labels.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_cifar_pickle_every_protocol(tmp_path: Path, protocol: int) -> None:
    blob = cifar_blob(3, 1)
    blob[b"labels"] = np.array([1, 2, 3], dtype=np.int64)  # numpy ints pickle as scalars
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(blob, protocol=protocol))
    images, labels = read_cifar_batch(path, b"labels", 10, "fix")
    assert np.array_equal(images.reshape(3, -1), blob[b"data"]) and labels.tolist() == [1, 2, 3]


def write_cifar10(root: Path) -> Path:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for i in range(1, 6):
        write_cifar(base / f"data_batch_{i}", 2, b"labels", i)
    write_cifar(base / "test_batch", 2, b"labels", 9)
    return base


class Payload:
    """Unpickling this calls ``os.system`` (or ``fn``), which would create ``marker``."""

    def __init__(self, marker: Path, fn: object = os.system) -> None:
        self.marker, self.fn = marker, fn

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return self.fn, (f"touch {self.marker}",)


def test_cifar_payload_does_not_run(tmp_path: Path) -> None:
    base = write_cifar10(tmp_path)
    marker = tmp_path / "PWNED"
    with open(base / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Payload(marker), b"labels": [0]}, f, protocol=2)
    message = one_line_error("cifar10", tmp_path, str(base / "data_batch_1"),
                             "refusing to unpickle 'posix.system'", "only plain arrays",
                             "re-download with fedweave data download cifar10")
    assert message.startswith(str(base / "data_batch_1") + ": ")
    assert not marker.exists()


@pytest.mark.parametrize("fn", [eval, exec, getattr, subprocess.Popen, np.load,
                                pickle.loads, os.system])
def test_cifar_meta_payloads_refused(tmp_path: Path, fn: object) -> None:
    base = write_cifar10(tmp_path)
    marker = tmp_path / "PWNED"
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [Payload(marker, fn)]}, f)
    one_line_error("cifar10", tmp_path, str(base / "batches.meta"), "refusing to unpickle")
    assert not marker.exists()


def test_cifar_codecs_only_latin1(tmp_path: Path) -> None:
    path = tmp_path / "b"
    # protocol 2 writes bytes as _codecs.encode(text, 'latin1'): allowed
    path.write_bytes(pickle.dumps({b"k": b"\xff\x00"}, protocol=2))
    assert safe_unpickle(path, "fix") == {b"k": b"\xff\x00"}
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13"
                     b"\x86R.")
    with pytest.raises(UserError, match="not a readable pickle"):
        safe_unpickle(path, "fix")


@pytest.mark.parametrize("damage", ["truncated", "garbled", "empty", "not-a-dict", "no-data",
                                    "bad-shape", "labels-out-of-range", "label-count",
                                    "float-data", "object-data"])
def test_cifar_damaged_batch(tmp_path: Path, damage: str) -> None:
    base = write_cifar10(tmp_path)
    path = base / "data_batch_3"
    good = path.read_bytes()
    blob = cifar_blob(2, 0)
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "garbled":
        path.write_bytes(good[:40] + bytes(range(256)) + good[300:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        if damage == "not-a-dict":
            obj: object = [1, 2, 3]
        elif damage == "no-data":
            obj = {b"labels": [0, 1]}
        elif damage == "bad-shape":
            obj = {**blob, b"data": np.zeros((2, 100), dtype=np.uint8)}
        elif damage == "labels-out-of-range":
            obj = {**blob, b"labels": [0, 10]}
        elif damage == "label-count":
            obj = {**blob, b"labels": [0]}
        elif damage == "float-data":
            obj = {**blob, b"data": np.full((2, 3072), 0.5)}
        else:
            obj = {**blob, b"data": np.array([[1, "x"]], dtype=object)}
        path.write_bytes(pickle.dumps(obj))
    one_line_error("cifar10", tmp_path, str(path), "re-download with fedweave data download")


def fedweave_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "FEDWEAVE_TEST_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fedweave", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("command", ["data-show", "run"])
def test_cli_cifar_payload_exits_2_without_running_it(tmp_path: Path, command: str) -> None:
    base = write_cifar10(tmp_path / "data")
    marker = tmp_path / "PWNED"
    with open(base / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Payload(marker), b"labels": [0]}, f)
    sets = ["--set", "data.dataset=cifar10", "--set", f"data.root={tmp_path / 'data'}"]
    args = (["data", "show", *sets, "--out", str(tmp_path / "p.png")] if command == "data-show"
            else ["run", *sets, "--out", str(tmp_path / "runs")])
    proc = fedweave_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "refusing to unpickle 'posix.system'" in proc.stderr
    assert str(base / "data_batch_1") in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_truncated_idx_exits_2(tmp_path: Path) -> None:
    folder = tmp_path / "MNIST" / "raw"
    write_mnist_dir(folder, True)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    proc = fedweave_cli("data", "show", "--set", "data.dataset=mnist", "--set",
                        f"data.root={tmp_path}", "--out", str(tmp_path / "p.png"), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(path) in proc.stderr and "fedweave data download mnist" in proc.stderr


# -------------------------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    return (bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.tobytes())


@pytest.mark.parametrize("damage,needle", [
    ("truncated-body", "truncated: expected 9408 values"),
    ("truncated-header", "truncated IDX header"),
    ("wrong-magic", "bad magic"),
    ("zero-dims", "bad magic"),
    ("huge-shape", "more than any real dataset"),
    ("images-2d", "expected uint8 images [N, H, W]"),
    ("int32-images", "expected uint8 images"),
    ("labels-2d", "expected uint8 labels [N]"),
    ("label-count", "11 labels for 12 images"),
    ("label-range", "label 77 outside 0..9"),
    ("gz-truncated", "unreadable"),
    ("gz-garbled", ""),  # inflates to a bogus header or fails in zlib: either way one line
    ("gz-not-gzip", "unreadable"),
    ("test-size", "images of size"),
])
def test_idx_damaged(tmp_path: Path, damage: str, needle: str) -> None:
    folder = tmp_path / "MNIST" / "raw"
    write_mnist_dir(folder, False)
    images, labels = folder / "train-images-idx3-ubyte", folder / "train-labels-idx1-ubyte"
    target = images
    good = images.read_bytes()
    if damage == "truncated-body":
        images.write_bytes(good[:-100])
    elif damage == "truncated-header":
        images.write_bytes(good[:9])
    elif damage == "wrong-magic":
        images.write_bytes(b"\x1f\x8b" + good[2:])
    elif damage == "zero-dims":
        images.write_bytes(b"\x00\x00\x08\x00" + good[4:])
    elif damage == "huge-shape":
        images.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 28))
    elif damage == "images-2d":
        images.write_bytes(idx_bytes(np.zeros((12, 784), np.uint8)))
    elif damage == "int32-images":
        images.write_bytes(idx_bytes(np.zeros((12, 28, 28), ">i4"), 0x0C))
    elif damage == "labels-2d":
        target = labels
        labels.write_bytes(idx_bytes(np.zeros((12, 1), np.uint8)))
    elif damage == "label-count":
        target = labels
        labels.write_bytes(idx_bytes(np.zeros(11, np.uint8)))
    elif damage == "label-range":
        target = labels
        labels.write_bytes(idx_bytes(np.full(12, 77, np.uint8)))
    elif damage == "test-size":
        target = folder / "t10k-images-idx3-ubyte"
        target.write_bytes(idx_bytes(np.zeros((5, 14, 14), np.uint8)))
    else:
        images.unlink()
        target = folder / "train-images-idx3-ubyte.gz"
        packed = gzip.compress(good)
        if damage == "gz-truncated":
            packed = packed[: len(packed) // 2]
        elif damage == "gz-garbled":
            packed = packed[:20] + bytes(b ^ 0x5A for b in packed[20:60]) + packed[60:]
        else:
            packed = b"\x1f\x8b\x08" + b"\xff" * 40
        target.write_bytes(packed)
    one_line_error("mnist", tmp_path, str(target), needle,
                   "re-download with fedweave data download mnist")


def test_idx_gz_crc_checked(tmp_path: Path) -> None:
    """A gzip whose data is intact but whose CRC is wrong is caught at the end of the stream."""
    folder = tmp_path / "MNIST" / "raw"
    write_mnist_dir(folder, True)
    path = folder / "train-labels-idx1-ubyte.gz"
    packed = bytearray(path.read_bytes())
    packed[-8] ^= 0xFF  # the CRC32 of the trailer
    path.write_bytes(bytes(packed))
    one_line_error("mnist", tmp_path, str(path), "CRC")


# -------------------------------------------------------------------------------- SVHN


def write_svhn(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train_32x32.mat", 4), ("test_32x32.mat", 2)):
        x = np.random.default_rng(n).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        scipy.io.savemat(folder / name, {"X": x, "y": np.arange(1, n + 1, dtype=np.uint8)[:, None]})


@pytest.mark.parametrize("damage,needle", [
    ("garbled", "not a readable .mat file"),
    ("truncated", "not a readable .mat file"),
    ("empty", "not a readable .mat file"),
    ("v73", "MATLAB v7.3"),
    ("cell-X", "'X' must be a numeric array"),
    ("struct-X", "'X' must be a numeric array"),
    ("no-y", "'y' must be a numeric array"),
    ("X-shape", "'X' has shape"),
    ("y-count", "'y' must hold 4 integer labels"),
    ("y-range", "'y' must hold 4 integer labels"),
    ("X-range", "'X' values must lie in 0..255"),
])
def test_svhn_damaged(tmp_path: Path, damage: str, needle: str) -> None:
    write_svhn(tmp_path / "svhn")
    path = tmp_path / "svhn" / "train_32x32.mat"
    good = path.read_bytes()
    x = np.zeros((32, 32, 3, 4), np.uint8)
    y = np.ones((4, 1), np.uint8)
    if damage == "garbled":
        path.write_bytes(good[:128] + bytes(range(256)) * 4 + good[1152:])
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "v73":  # header version 0x0200 is how scipy tells an HDF5-based file
        path.write_bytes(good[:124] + b"\x00\x02" + good[126:])
    else:
        arrays: dict[str, object] = {"X": x, "y": y}
        if damage == "cell-X":
            cell = np.empty((1, 2), dtype=object)
            cell[0, 0], cell[0, 1] = x, "text"
            arrays["X"] = cell
        elif damage == "struct-X":
            arrays["X"] = {"a": x}
        elif damage == "no-y":
            del arrays["y"]
        elif damage == "X-shape":
            arrays["X"] = np.zeros((32, 32, 4), np.uint8)
        elif damage == "y-count":
            arrays["y"] = np.ones((3, 1), np.uint8)
        elif damage == "y-range":
            arrays["y"] = np.full((4, 1), 11.0)
        else:
            arrays["X"] = np.full((32, 32, 3, 4), 300.0)
        scipy.io.savemat(path, arrays)
    one_line_error("svhn", tmp_path, str(path), needle,
                   "re-download with fedweave data download svhn")


# --------------------------------------------------------------------------- LEAF json


@pytest.mark.parametrize("damage,needle", [
    ("truncated", "not a readable LEAF json file"),
    ("not-json", "not a readable LEAF json file"),
    ("deep", "not a readable LEAF json file"),
    ("no-users", '"users" (a list)'),
    ("user-missing", "has no \"x\" and \"y\""),
    ("short-row", "x must be rows of 784 finite numbers"),
    ("text-pixels", "x and y must be numbers"),
    ("ragged", "x and y must be numbers"),
    ("y-range", "y must hold 3 labels in 0..61"),
    ("y-count", "y must hold 3 labels"),
])
def test_leaf_damaged(tmp_path: Path, damage: str, needle: str) -> None:
    base = tmp_path / "femnist"
    write_leaf(base / "train", {"f0001_01": 3}, 0)
    write_leaf(base / "test", {"f0001_01": 1}, 1)
    path = base / "train" / "all_data_0.json"
    text = path.read_text()
    blob = json.loads(text)
    data = blob["user_data"]["f0001_01"]
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "not-json":
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif damage == "deep":
        path.write_text("[" * 100000 + "]" * 100000)
    else:
        if damage == "no-users":
            del blob["users"]
        elif damage == "user-missing":
            blob["users"].append("f9999_99")
        elif damage == "short-row":
            data["x"][1] = data["x"][1][:100]
            data["x"] = [row[:100] for row in data["x"]]
        elif damage == "text-pixels":
            data["x"][0][0] = "white"
        elif damage == "ragged":
            data["x"][1] = data["x"][1][:100]
        elif damage == "y-range":
            data["y"][2] = 62
        else:
            data["y"] = data["y"][:2]
        path.write_text(json.dumps(blob))
    one_line_error("femnist", tmp_path, str(path), needle, "regenerate it with LEAF")


# ------------------------------------------------------------------------------ images


def png_header(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming ``width``×``height`` RGB (+ an empty IDAT and IEND)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def write_image_folder(base: Path) -> None:
    for split in ("train", "test"):
        for cls, color in (("cat", (200, 0, 0)), ("dog", (0, 200, 0))):
            save_image(base / split / cls / "a.jpg", color, (40, 30))


@pytest.mark.parametrize("damage,needle", [
    ("garbled-jpeg", "not a readable JPEG/PNG/BMP/GIF/WEBP image"),
    ("truncated-jpeg", "not a readable"),
    ("truncated-png", "not a readable"),
    ("text", "not a readable"),
    ("eps", "not a readable"),  # PIL would hand EPS to Ghostscript: never opened
    ("tiff", "not a readable"),
    ("bomb", "9000×9000 pixels, more than the 67108864 allowed"),
    ("huge-bomb", "DecompressionBombError"),  # PIL's own limit, met while opening
])
def test_image_damaged(tmp_path: Path, damage: str, needle: str) -> None:
    write_image_folder(tmp_path)
    good = tmp_path / "train" / "cat" / "a.jpg"
    path = tmp_path / "train" / "dog" / "bad.png"
    if damage == "garbled-jpeg":
        path = path.with_suffix(".jpg")
        raw = good.read_bytes()
        path.write_bytes(raw[:200] + bytes(range(256)) + raw[456:])
    elif damage == "truncated-jpeg":
        path = path.with_suffix(".jpg")
        arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path)
        path.write_bytes(path.read_bytes()[:-400])
    elif damage == "truncated-png":
        arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path)
        path.write_bytes(path.read_bytes()[:-300])
    elif damage == "text":
        path.write_text("not an image")
    elif damage == "eps":
        path = path.with_suffix(".jpg")
        path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
                         b"(/tmp/x) (w) file closefile showpage\n")
    elif damage == "tiff":
        Image.new("RGB", (8, 8)).save(path, format="TIFF")
    else:
        side = 9000 if damage == "bomb" else 20000
        path.write_bytes(png_header(side, side))
    one_line_error("imagefolder", tmp_path, str(path), needle, "replace or remove that file")


def write_tiny(base: Path) -> None:
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("n01\nn02\n")
    for w in ("n01", "n02"):
        save_image(base / "train" / w / "images" / f"{w}_0.JPEG", (10, 20, 30))
    save_image(base / "val" / "images" / "val_0.JPEG", (0, 0, 250))
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\t0\t0\t63\t63\n")


@pytest.mark.parametrize("damage,needle", [
    ("unknown-class", "names class 'n99', which is not in wnids.txt"),
    ("climbs-out", "not a file name in val/images"),
    ("missing-image", "names 'val_7.JPEG', which is not in"),
    ("garbled-image", "not a readable"),
    ("binary-wnids", "not a readable text file"),
])
def test_tiny_imagenet_damaged(tmp_path: Path, damage: str, needle: str) -> None:
    base = tmp_path / "tiny-imagenet-200"
    write_tiny(base)
    notes = base / "val" / "val_annotations.txt"
    target = notes
    if damage == "unknown-class":
        notes.write_text("val_0.JPEG\tn99\t0\t0\t63\t63\n")
    elif damage == "climbs-out":
        notes.write_text("../../wnids.txt\tn01\t0\t0\t63\t63\n")
    elif damage == "missing-image":
        notes.write_text("val_7.JPEG\tn01\t0\t0\t63\t63\n")
    elif damage == "garbled-image":
        target = base / "train" / "n02" / "images" / "n02_0.JPEG"
        target.write_bytes(b"\xff\xd8\xff" + bytes(range(256)))
    else:
        target = base / "wnids.txt"
        target.write_bytes(b"\xff\xfe\xfa\x00n01")
    one_line_error("tiny-imagenet", tmp_path, str(target), needle)


# --------------------------------------------------------------------------------- npz


@pytest.mark.parametrize("damage,needle", [
    ("garbled", "not a readable .npz archive"),
    ("truncated", "not a readable .npz archive"),
    ("missing-keys", "lacks arrays ['x_test', 'y_test']"),
    ("npy", "a single .npy array"),
    ("object-array", "not a readable .npz archive"),
    ("text-x", "x_train must be a numeric array"),
    ("label-count", "y_train has 5 labels for 6 samples"),
    ("float-labels", "y_train must hold integer class labels"),
    ("negative-labels", "y_test has negative labels"),
    ("empty-test", "y_test has 0 labels for 0 samples"),
    ("test-shape", "does not match x_train"),
])
def test_npz_damaged(tmp_path: Path, damage: str, needle: str) -> None:
    path = tmp_path / "data.npz"
    arrays: dict[str, np.ndarray] = {
        "x_train": np.zeros((6, 8, 8, 3), np.uint8), "y_train": np.arange(6) % 3,
        "x_test": np.zeros((2, 8, 8, 3), np.uint8), "y_test": np.array([0, 1])}
    marker = tmp_path / "PWNED"
    if damage in ("garbled", "truncated"):
        np.savez(path, **arrays)
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2] if damage == "truncated"
                         else raw[:30] + bytes(range(256)) + raw[286:])
    elif damage == "npy":
        with open(path, "wb") as f:
            np.save(f, arrays["x_train"])
    elif damage == "object-array":
        payload = np.empty(1, dtype=object)
        payload[0] = Payload(marker)
        np.savez(path, **{**arrays, "x_train": payload})
    else:
        if damage == "missing-keys":
            del arrays["x_test"], arrays["y_test"]
        elif damage == "text-x":
            arrays["x_train"] = np.array(["a"] * 6)
        elif damage == "label-count":
            arrays["y_train"] = np.arange(5)
        elif damage == "float-labels":
            arrays["y_train"] = np.full(6, 0.5)
        elif damage == "negative-labels":
            arrays["y_test"] = np.array([0, -1])
        elif damage == "empty-test":
            arrays["x_test"], arrays["y_test"] = arrays["x_test"][:0], arrays["y_test"][:0]
        else:
            arrays["x_test"] = np.zeros((2, 9, 9, 3), np.uint8)
        np.savez(path, **arrays)
    one_line_error("npz", tmp_path, str(path), needle, "np.savez(")
    assert not marker.exists()


# ----------------------------------------------------------------------------- archives


def test_damaged_archive_is_a_user_error(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(gzip.compress(b"x" * 1000)[:-20])
    with pytest.raises(UserError, match="damaged archive"):
        extract(archive, tmp_path / "out")


def test_cifar_pickle_cannot_allocate_from_a_size(tmp_path: Path) -> None:
    """``bytes(n)`` / ``bytearray(n)`` would zero-fill n bytes from a 30-byte pickle."""
    path = tmp_path / "b"
    for kind in (b"bytes", b"bytearray"):
        path.write_bytes(b"\x80\x02c__builtin__\n" + kind + b"\nJ\x00\x00\x00\x40\x85R.")
        with pytest.raises(UserError, match="from a size"):
            safe_unpickle(path, "fix")
    path.write_bytes(pickle.dumps({b"e": b"", b"a": bytearray(b"xy")}, protocol=2))
    assert safe_unpickle(path, "fix") == {b"e": b"", b"a": bytearray(b"xy")}

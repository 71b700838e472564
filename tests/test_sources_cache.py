"""Decoded-array caches: keyed by the source files, atomic, locked, never a pickle, and a
damaged cache is rebuilt instead of failing."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_sources import save_image, write_idx, write_leaf, write_mnist_dir

from fedweave.config import DataConfig
from fedweave.data.sources import cache, idx, load_dataset, read_idx
from fedweave.data.sources.base import Dataset

CACHE_PY = Path(cache.__file__)


def load(name: str, root: Path) -> Dataset:
    return load_dataset(DataConfig(dataset=name, root=root), 0)


def entries(folder: Path, name: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"{name}-*") if p.is_dir())


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again instead of read from the cache")

    monkeypatch.setattr(idx, "read_idx", fail)


def test_idx_cache_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "MNIST" / "raw"
    write_mnist_dir(folder, True)
    first = load("mnist", tmp_path)
    [entry] = entries(folder / "fedweave-cache", "mnist")
    assert sorted(p.name for p in entry.iterdir()) == [
        "manifest.json", "test_images.npy", "test_labels.npy", "train_images.npy",
        "train_labels.npy"]
    for npy in entry.glob("*.npy"):
        np.load(npy, allow_pickle=False)  # plain arrays, no pickle inside
    decoded = read_idx(folder / "train-images-idx3-ubyte.gz")
    forbid_decoding(monkeypatch)
    again = load("mnist", tmp_path)
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.test_y, first.test_y)
    assert np.array_equal(again.train_x[:, 0].numpy(), decoded)
    assert again.train_x.numpy().flags.writeable  # a copy, not a read-only map
    again.train_x[0, 0, 0, 0] = 1  # writing it leaves the cache alone
    assert torch.equal(load("mnist", tmp_path).train_x, first.train_x)


def test_changed_source_rebuilds(tmp_path: Path) -> None:
    folder = tmp_path / "MNIST" / "raw"
    write_mnist_dir(folder, False)
    assert load("mnist", tmp_path).train_y.tolist() == [i % 10 for i in range(12)]
    labels = folder / "train-labels-idx1-ubyte"
    write_idx(labels, np.full(12, 3), False)  # same size, new content
    stat = labels.stat()
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load("mnist", tmp_path).train_y.tolist() == [3] * 12
    assert len(entries(folder / "fedweave-cache", "mnist")) == 1  # the stale one is gone


@pytest.mark.parametrize("damage", ["truncated-npy", "garbled-npy", "bad-manifest",
                                    "manifest-drops-array", "padded-npy", "wrong-shape",
                                    "pickled-npy", "empty-entry"])
def test_damaged_cache_is_rebuilt(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "MNIST" / "raw"
    write_mnist_dir(folder, True)
    first = load("mnist", tmp_path)
    [entry] = entries(folder / "fedweave-cache", "mnist")
    images = entry / "train_images.npy"
    marker = tmp_path / "PWNED"
    if damage == "truncated-npy":
        images.write_bytes(images.read_bytes()[:500])
    elif damage == "garbled-npy":
        images.write_bytes(b"\x93NUMPY\x01\x00garbage" + images.read_bytes()[20:])
    elif damage == "bad-manifest":
        (entry / "manifest.json").write_text("{not json")
    elif damage == "manifest-drops-array":
        manifest = json.loads((entry / "manifest.json").read_text())
        del manifest["arrays"]["train_images"]
        (entry / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "padded-npy":
        images.write_bytes(images.read_bytes() + b"\0")
    elif damage == "wrong-shape":
        np.save(images, np.zeros((3, 28, 28), np.uint8))
    elif damage == "pickled-npy":  # a poisoned cache: an object array whose pickle runs code
        payload = np.empty(1, dtype=object)
        payload[0] = Marker(marker)
        np.save(images, payload, allow_pickle=True)
    else:
        for p in entry.iterdir():
            p.unlink()
    again = load("mnist", tmp_path)
    assert torch.equal(again.train_x, first.train_x)
    assert not marker.exists()
    [rebuilt] = entries(folder / "fedweave-cache", "mnist")
    assert np.array_equal(np.load(rebuilt / "train_images.npy"), first.train_x[:, 0].numpy())


class Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.path}",)


def test_read_only_source_caches_under_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """Files outside the data root (Debian's /usr/share/datasets/fashion-mnist) are cached in
    $XDG_CACHE_HOME/fedweave/decoded; nothing is written next to them."""
    system = tmp_path / "system" / "fashion-mnist"
    write_mnist_dir(system, True)
    monkeypatch.setattr(idx, "FASHION_SYSTEM_DIR", system)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    first = load("fashion-mnist", tmp_path / "empty-root")
    assert not (system / "fedweave-cache").exists()
    decoded = tmp_path / "xdg" / "fedweave" / "decoded"
    assert len(entries(decoded, "fashion-mnist")) == 1
    forbid_decoding(monkeypatch)
    assert torch.equal(load("fashion-mnist", tmp_path / "other-root").train_x, first.train_x)


def test_system_folder_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even as data.root and writable (root user), a system dataset folder gets no cache."""
    system = tmp_path / "usr-share-datasets"
    write_mnist_dir(system / "fashion-mnist", True)
    monkeypatch.setattr(cache, "SYSTEM_DATA_DIRS", (system,))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load("fashion-mnist", system)
    assert not (system / "fashion-mnist" / "fedweave-cache").exists()
    assert len(entries(tmp_path / "xdg" / "fedweave" / "decoded", "fashion-mnist")) == 1


def test_nowhere_to_cache_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "system"
    write_mnist_dir(system, True)
    monkeypatch.setattr(idx, "FASHION_SYSTEM_DIR", system)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir under a file fails
    ds = load("fashion-mnist", tmp_path / "nowhere")
    assert ds.train_x.shape == (12, 1, 28, 28)


def test_femnist_cache_follows_json(tmp_path: Path) -> None:
    base = tmp_path / "femnist"
    write_leaf(base / "train", {"f0001_01": 3}, 0)
    write_leaf(base / "test", {"f0001_01": 1}, 1)
    first = load("femnist", tmp_path)
    assert first.train_y.tolist() == [0, 1, 2]
    path = base / "train" / "all_data_0.json"
    blob = json.loads(path.read_text())
    blob["user_data"]["f0001_01"]["y"] = [5, 5, 5]
    path.write_text(json.dumps(blob))
    assert load("femnist", tmp_path).train_y.tolist() == [5, 5, 5]
    write_leaf(base / "train", {"f0002_02": 2}, 7)  # a new file joins the key
    ds = load("femnist", tmp_path)
    assert ds.train_x.shape[0] == 5 and ds.train_groups is not None
    assert ds.train_groups.tolist() == [0, 0, 0, 1, 1]
    [entry] = entries(base / "fedweave-cache", "femnist")
    (entry / "tx.npy").write_bytes(b"")  # damaged: rebuilt
    assert torch.equal(load("femnist", tmp_path).train_x, ds.train_x)
    assert not list(base.glob("*.pt"))


def test_tiny_imagenet_cache_follows_images(tmp_path: Path) -> None:
    base = tmp_path / "tiny-imagenet-200"
    base.mkdir()
    (base / "wnids.txt").write_text("n01\n")
    image = base / "train" / "n01" / "images" / "n01_0.JPEG"
    save_image(image, (200, 0, 0))
    save_image(base / "val" / "images" / "val_0.JPEG", (0, 0, 200))
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\t0\t0\t63\t63\n")
    assert int(load("tiny-imagenet", tmp_path).train_x[0, 0, 5, 5]) > 190
    save_image(image, (0, 200, 0), (64, 48))
    ds = load("tiny-imagenet", tmp_path)
    assert int(ds.train_x[0, 0, 5, 5]) < 10 and int(ds.train_x[0, 1, 5, 5]) > 190
    assert len(entries(base / "fedweave-cache", "tiny-imagenet")) == 1


WORKER = textwrap.dedent("""
    import importlib.util, sys, time
    from pathlib import Path
    import numpy as np
    spec = importlib.util.spec_from_file_location("fw_cache", sys.argv[1])
    cache = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cache)
    folder, log = Path(sys.argv[2]), Path(sys.argv[3])

    def build():
        with open(log, "a") as f:
            f.write("start\\n")
        time.sleep(0.5)
        arrays = {"a": np.arange(100_000, dtype=np.int64), "b": np.ones((50, 7), np.uint8)}
        with open(log, "a") as f:
            f.write("end\\n")
        return arrays

    out = cache.decoded_cache("demo", [folder / "src.bin"], build, names=("a", "b"), near=folder,
                              root=folder)
    print(int(out["a"].sum()), int(out["b"].sum()))
""")


def test_two_processes_build_once(tmp_path: Path) -> None:
    """Started together, two processes build the same cache once (the second waits on the
    lock and reads the first one's entry), and both get the same arrays."""
    (tmp_path / "src.bin").write_bytes(b"x")
    log = tmp_path / "log"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(CACHE_PY), str(tmp_path),
                               str(log)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == f"{sum(range(100_000))} 350"
    assert log.read_text().split() == ["start", "end"]
    [entry] = entries(tmp_path / "fedweave-cache", "demo")
    assert json.loads((entry / "manifest.json").read_text())["arrays"]["b"]["shape"] == [50, 7]
    assert not list((tmp_path / "fedweave-cache").glob(".*"))  # no temporary left behind


def test_cache_module_stays_plain() -> None:
    """The worker above loads cache.py alone, so it imports nothing of the package (nor torch),
    and it never unpickles: every np.load passes allow_pickle=False."""
    text = CACHE_PY.read_text()
    assert "import torch" not in text and "from fedweave" not in text
    assert "import pickle" not in text and "torch.load" not in text
    loads = [line for line in text.splitlines() if "np.load(" in line]
    assert loads and all("allow_pickle=False" in line for line in loads)


def test_old_torch_cache_is_ignored(tmp_path: Path) -> None:
    """A ``fedweave-cache.pt`` of an earlier version (a torch pickle) is never loaded."""
    base = tmp_path / "femnist"
    write_leaf(base / "train", {"f0001_01": 2}, 0)
    write_leaf(base / "test", {"f0001_01": 1}, 1)
    marker = tmp_path / "PWNED"
    with open(base / "fedweave-cache.pt", "wb") as f:
        pickle.dump(Marker(marker), f)
    assert load("femnist", tmp_path).train_x.shape == (2, 1, 28, 28)
    assert not marker.exists()

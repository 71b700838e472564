"""Dataset readers: tiny files in each exact on-disk format, loaded through ``load_dataset``."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from fedweave.config import DataConfig, SyntheticConfig
from fedweave.data.sources import (
    DATASETS,
    FASHION_SYSTEM_DIR,
    Dataset,
    dataset_status,
    default_root,
    load_dataset,
    read_idx,
    register_dataset,
    to_float,
)
from fedweave.errors import DatasetMissingError, UserError


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """IDX: magic 0 0 0x08 ndim, big-endian uint32 sizes, then uint8 data."""
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def idx_images(n: int, seed: int) -> np.ndarray:
    images = np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[:, 0, 1] = 200  # a known pixel: row 0, column 1
    images[:, 1, 0] = 7
    return images


def write_mnist_dir(folder: Path, compress: bool, prefix: str = "") -> None:
    for split, n in (("train", 12), ("t10k" if not prefix else "test", 5)):
        kind = split if not prefix else f"{prefix}-{split}"
        write_idx(folder / f"{kind}-images-idx3-ubyte", idx_images(n, n), compress)
        write_idx(folder / f"{kind}-labels-idx1-ubyte", np.arange(n) % 10, compress)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx(tmp_path: Path, compress: bool) -> None:
    write_mnist_dir(tmp_path / "MNIST" / "raw", compress)
    ds = load_dataset(DataConfig(dataset="mnist", root=tmp_path), 0)
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (5, 1, 28, 28)
    assert ds.train_y.dtype == torch.int64 and ds.train_y.tolist() == [i % 10 for i in range(12)]
    assert ds.train_x[0, 0, 0, 1] == 200 and ds.train_x[0, 0, 1, 0] == 7
    assert ds.num_classes == 10 and ds.mean == (0.1307,) and ds.std == (0.3081,)
    assert dataset_status("mnist", tmp_path) == (True, tmp_path / "MNIST" / "raw")


def test_idx_bad_magic(tmp_path: Path) -> None:
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(UserError, match="magic"):
        read_idx(bad)


def test_fashion_mnist_torchvision_layout(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path / "FashionMNIST" / "raw", True)
    ds = load_dataset(DataConfig(dataset="fashion-mnist", root=tmp_path), 0)
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.classes is not None
    assert ds.classes[9] == "Ankle boot"


def test_real_fashion_mnist() -> None:
    if not (FASHION_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist is not installed")
    ds = load_dataset(DataConfig(dataset="fashion-mnist", root=Path("/nonexistent")), 0)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert ds.train_y.bincount().tolist() == [6000] * 10
    assert abs(ds.train_x[:2000].float().mean().item() / 255 - 0.286) < 0.02


def test_emnist_orientation(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path / "EMNIST" / "raw", False, prefix="emnist-balanced")
    ds = load_dataset(DataConfig(dataset="emnist", root=tmp_path), 0)
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.num_classes == 47
    # stored transposed: file pixel (row 0, col 1) is image pixel (row 1, col 0)
    assert ds.train_x[0, 0, 1, 0] == 200 and ds.train_x[0, 0, 0, 1] == 7


def write_leaf(folder: Path, users: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = {u: {"x": rng.random((n, 784)).round(3).tolist(), "y": [i % 62 for i in range(n)]}
            for u, n in users.items()}
    for u in users:
        data[u]["x"][0][1] = 1.0
    blob = {"users": list(users), "num_samples": list(users.values()), "user_data": data}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"all_data_{seed}.json").write_text(json.dumps(blob))


def test_femnist_leaf(tmp_path: Path) -> None:
    base = tmp_path / "femnist"
    write_leaf(base / "train", {"f0001_01": 3, "f0002_02": 4}, 0)
    write_leaf(base / "train", {"f0003_03": 2}, 1)
    write_leaf(base / "test", {"f0001_01": 1, "f0003_03": 2}, 2)
    ds = load_dataset(DataConfig(dataset="femnist", root=tmp_path), 0)
    assert ds.train_x.shape == (9, 1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (3, 1, 28, 28) and ds.num_classes == 62
    assert ds.train_groups is not None
    assert ds.train_groups.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert ds.train_x[0, 0, 0, 1] == 255
    assert len(list((base / "fedweave-cache").glob("femnist-*/manifest.json"))) == 1
    again = load_dataset(DataConfig(dataset="femnist", root=tmp_path), 0)  # from the cache
    assert torch.equal(again.train_x, ds.train_x)
    assert ds.test_groups is not None and ds.test_groups.tolist() == [0, 2, 2]
    # users dropped by LEAF's -k take their test rows with them (f0003_03 has 2 < 3 samples)
    kept = load_dataset(DataConfig(dataset="femnist", root=tmp_path, user_min_samples=3), 0)
    assert kept.train_groups is not None and kept.test_groups is not None
    assert sorted(set(kept.train_groups.tolist())) == [0, 1] and kept.test_groups.tolist() == [0]
    assert len(kept.test_y) == 1


def write_cifar(path: Path, n: int, label_key: bytes, seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    data[:, 1024 + 5] = 123  # channel 1 (green), row 0, column 5
    blob = {b"batch_label": b"x", label_key: [i % 10 for i in range(n)], b"data": data}
    with open(path, "wb") as f:
        pickle.dump(blob, f)


def test_cifar10(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for i in range(1, 6):
        write_cifar(base / f"data_batch_{i}", 3, b"labels", i)
    write_cifar(base / "test_batch", 4, b"labels", 9)
    names = [n.encode() for n in ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                  "frog", "horse", "ship", "truck"]]
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    ds = load_dataset(DataConfig(dataset="cifar10", root=tmp_path), 0)
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert bool((ds.train_x[:, 1, 0, 5] == 123).all())
    assert ds.classes is not None and ds.classes[1] == "automobile" and ds.num_classes == 10
    assert ds.mean == (0.4914, 0.4822, 0.4465)


def test_cifar100(tmp_path: Path) -> None:
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    write_cifar(base / "train", 6, b"fine_labels", 0)
    write_cifar(base / "test", 2, b"fine_labels", 1)
    ds = load_dataset(DataConfig(dataset="cifar100", root=tmp_path), 0)
    assert ds.train_x.shape == (6, 3, 32, 32) and ds.num_classes == 100 and ds.classes is None


@pytest.mark.parametrize("subdir", ["svhn", ""])
def test_svhn_mat(tmp_path: Path, subdir: str) -> None:
    folder = tmp_path / subdir
    folder.mkdir(exist_ok=True)
    for name, n in (("train_32x32.mat", 5), ("test_32x32.mat", 3)):
        x = np.random.default_rng(n).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        x[2, 7, 0, :] = 99  # row 2, column 7, red
        y = np.array([[10], [1], [2], [3], [4]][:n], dtype=np.uint8)
        scipy.io.savemat(folder / name, {"X": x, "y": y})
    ds = load_dataset(DataConfig(dataset="svhn", root=tmp_path), 0)
    assert ds.train_x.shape == (5, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.train_y.tolist() == [0, 1, 2, 3, 4] and ds.test_y.tolist() == [0, 1, 2]
    assert bool((ds.train_x[:, 0, 2, 7] == 99).all())


def save_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (64, 64)
               ) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    img.save(path)


def test_tiny_imagenet(tmp_path: Path) -> None:
    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01"]
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tcat\n")
    for k, w in enumerate(wnids):
        for j in range(2):
            save_image(base / "train" / w / "images" / f"{w}_{j}.JPEG", (255 * k, 0, 0))
    lines = []
    for j, w in enumerate(["n01", "n02", "n01"]):
        save_image(base / "val" / "images" / f"val_{j}.JPEG", (0, 0, 250))
        lines.append(f"val_{j}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    ds = load_dataset(DataConfig(dataset="tiny-imagenet", root=tmp_path), 0)
    assert ds.train_x.shape == (4, 3, 64, 64) and ds.test_x.shape == (3, 3, 64, 64)
    assert ds.train_y.tolist() == [0, 0, 1, 1] and ds.test_y.tolist() == [0, 1, 0]
    assert ds.classes == ["goldfish, Carassius auratus", "cat"] and ds.num_classes == 2
    assert int(ds.test_x[0, 2, 10, 10]) > 240 and int(ds.test_x[0, 0, 10, 10]) < 10
    assert len(list((base / "fedweave-cache").glob("tiny-imagenet-*/manifest.json"))) == 1


@pytest.mark.parametrize("name", ["imagefolder", "cats-vs-dogs"])
def test_image_folder(tmp_path: Path, name: str) -> None:
    base = tmp_path if name == "imagefolder" else tmp_path / "cats-vs-dogs"
    for split, n in (("train", 3), ("test", 1)):
        for cls, color in (("cat", (200, 0, 0)), ("dog", (0, 200, 0))):
            for j in range(n):
                save_image(base / split / cls / f"{j}.jpg", color, (80, 50))
    save_image(base / "train" / "dog" / "x.png", (0, 200, 0), (64, 64))
    (base / "train" / "dog" / "notes.txt").write_text("not an image")
    ds = load_dataset(DataConfig(dataset=name, root=tmp_path), 0)
    assert ds.train_x.shape == (7, 3, 64, 64) and ds.test_x.shape == (2, 3, 64, 64)
    assert ds.classes == ["cat", "dog"] and ds.train_y.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert int(ds.train_x[0, 0, 32, 32]) > 180 and int(ds.train_x[-1, 1, 32, 32]) > 180
    assert ds.mean is not None and len(ds.mean) == 3


@pytest.mark.parametrize("layout", ["nhwc", "nchw", "nhw"])
def test_npz_images(tmp_path: Path, layout: str) -> None:
    x = np.zeros((6, 8, 8, 3), dtype=np.uint8)
    x[:, 1, 2, 0] = 77  # row 1, column 2, channel 0
    arrays = {"nhwc": x, "nchw": x.transpose(0, 3, 1, 2), "nhw": x[..., 0]}
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=arrays[layout], y_train=np.arange(6) % 3,
             x_test=arrays[layout][:2], y_test=np.array([0, 1]))
    ds = load_dataset(DataConfig(dataset="npz", root=path), 0)
    channels = 1 if layout == "nhw" else 3
    assert ds.train_x.shape == (6, channels, 8, 8) and ds.train_x.dtype == torch.uint8
    assert bool((ds.train_x[:, 0, 1, 2] == 77).all()) and ds.num_classes == 3


def test_npz_features_in_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x_train=rng.random((10, 5)), y_train=np.arange(10) % 4,
             x_test=rng.random((3, 5)), y_test=np.array([0, 1, 2]))
    ds = load_dataset(DataConfig(dataset="npz", root=tmp_path), 0)
    assert ds.train_x.shape == (10, 5) and ds.train_x.dtype == torch.float32
    assert ds.mean is None and ds.num_classes == 4


def test_digits() -> None:
    a = load_dataset(DataConfig(), 0)
    b = load_dataset(DataConfig(), 123)
    assert a.name == "digits" and len(a.train_y) + len(a.test_y) == 1797
    assert a.train_x.shape[1:] == (1, 8, 8) and a.train_x.dtype == torch.uint8
    assert int(a.train_x.max()) == 255 and a.num_classes == 10
    assert len(a.test_y) == 359 and set(a.test_y.bincount().tolist()) <= {35, 36, 37}
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)


def test_synthetic() -> None:
    cfg = DataConfig(dataset="synthetic", nodes=7, synthetic=SyntheticConfig(dim=20, classes=5))
    a, b = load_dataset(cfg, 1), load_dataset(cfg, 1)
    c = load_dataset(cfg, 2)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_x.shape[0] != c.train_x.shape[0] or not torch.equal(a.train_x, c.train_x)
    assert a.train_x.dtype == torch.float32 and a.train_x.shape[1] == 20
    assert a.train_groups is not None and a.train_groups.unique().tolist() == list(range(7))
    assert a.num_classes == 5 and a.mean is None and int(a.train_y.max()) < 5
    sizes = a.train_groups.bincount()
    assert int(sizes.min()) >= 40 and int(sizes.max()) <= 2000


def test_synthetic_iid_shares_one_model() -> None:
    """IID: one W, b and one feature distribution, so per-device label histograms agree."""
    syn = SyntheticConfig(iid=True, samples_mean=6.0, samples_sigma=0.0, min_samples=1)
    ds = load_dataset(DataConfig(dataset="synthetic", nodes=4, synthetic=syn), 0)
    assert ds.train_groups is not None
    hist = torch.stack([ds.train_y[ds.train_groups == k].bincount(minlength=10) for k in range(4)])
    freq = hist.float() / hist.sum(1, keepdim=True)
    assert float((freq - freq.mean(0)).abs().max()) < 0.15
    non_iid = load_dataset(DataConfig(dataset="synthetic", nodes=4, synthetic=syn.model_copy(
        update={"iid": False})), 0)
    assert not torch.equal(non_iid.train_x, ds.train_x)


def test_subsets() -> None:
    cfg = DataConfig(train_samples=100, test_samples=50)
    a, b = load_dataset(cfg, 3), load_dataset(cfg, 3)
    assert a.train_x.shape[0] == 100 and a.test_y.shape[0] == 50
    assert torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.train_y, load_dataset(cfg, 4).train_y)
    syn = load_dataset(DataConfig(dataset="synthetic", train_samples=30), 0)
    assert syn.train_groups is not None and syn.train_groups.shape == (30,)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "svhn", "tiny-imagenet",
                                  "emnist", "femnist", "cats-vs-dogs", "imagefolder", "npz"])
def test_missing_names_path(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetMissingError) as info:
        load_dataset(DataConfig(dataset=name, root=tmp_path), 0)
    message = str(info.value)
    assert str(tmp_path) in message and "\n" not in message
    present, where = dataset_status(name, tmp_path)
    assert not present and str(where).startswith(str(tmp_path))


def test_missing_fashion_mentions_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fedweave.data.sources.idx.FASHION_SYSTEM_DIR", tmp_path / "none")
    with pytest.raises(DatasetMissingError, match="apt-get install dataset-fashion-mnist"):
        load_dataset(DataConfig(dataset="fashion-mnist", root=tmp_path), 0)


def test_default_root_and_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDWEAVE_DATA", str(tmp_path))
    assert default_root() == tmp_path
    assert dataset_status("digits", None) == (True, tmp_path)
    monkeypatch.delenv("FEDWEAVE_DATA")
    assert default_root() == Path.home() / ".cache" / "fedweave"
    with pytest.raises(UserError, match="unknown dataset"):
        dataset_status("nope", tmp_path)


def test_register_dataset(tmp_path: Path) -> None:
    @register_dataset("test-tiny")
    def tiny(cfg: DataConfig, root: Path, seed: int) -> Dataset:
        x = torch.full((4, 2), float(seed))
        y = torch.tensor([0, 1, 0, 1])
        return Dataset("test-tiny", x, y, x, y, 2, None, None)

    assert "test-tiny" in DATASETS
    ds = load_dataset(DataConfig(dataset="test-tiny", root=tmp_path), 5)
    assert ds.train_x[0, 0] == 5.0


def test_to_float() -> None:
    x = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)  # [1, 2, 1, 2]
    out = to_float(x, (0.5, 0.2), (0.5, 0.1))
    expected = torch.tensor([[[[-1.0, 1.0]], [[0.0, 2.0]]]])
    assert out.dtype == torch.float32 and torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(to_float(x, None, None), x.float() / 255)
    feats = torch.randn(3, 4, dtype=torch.float64)
    assert to_float(feats, None, None).dtype == torch.float32


class FakeImage:
    """Stands in for ``datasets.Image`` (a feature type)."""


class FakeLabel:
    def __init__(self, names: list[str]) -> None:
        self.names = names


class FakeSplit:
    def __init__(self, columns: dict[str, list[object]], features: dict[str, object]) -> None:
        self.columns, self.features = columns, features

    def __getitem__(self, key: str) -> list[object]:
        return self.columns[key]


def test_hf_images_with_fake_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    features = {"img": FakeImage(), "label": FakeLabel(["a", "b", "c"])}

    def split(n: int) -> FakeSplit:
        pics = [Image.new("RGB", (6, 4), (i * 10, 50, 60)) for i in range(n)]
        return FakeSplit({"img": pics, "label": [i % 3 for i in range(n)]}, features)

    def fake_load(name: str, cache_dir: str) -> dict[str, FakeSplit]:
        assert name == "org/tiny" and cache_dir == str(tmp_path / "hf")
        return {"train": split(5), "test": split(2)}

    fake = type(sys)("datasets")
    fake.Image = FakeImage  # type: ignore[attr-defined]
    fake.load_dataset = fake_load  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    ds = load_dataset(DataConfig(dataset="hf:org/tiny", root=tmp_path), 0)
    assert ds.train_x.shape == (5, 3, 4, 6) and ds.train_x.dtype == torch.uint8
    assert ds.train_x[2, 0, 0, 0] == 20 and ds.train_x[2, 1, 3, 5] == 50
    assert ds.classes == ["a", "b", "c"] and ds.num_classes == 3 and ds.test_y.tolist() == [0, 1]


def test_hf_without_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UserError, match="pip install"):
        load_dataset(DataConfig(dataset="hf:mnist", root=tmp_path), 0)

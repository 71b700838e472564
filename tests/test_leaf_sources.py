"""LEAF Shakespeare and CelebA: tiny files in the exact json format LEAF's preprocessing writes,
read through ``load_dataset``; LEAF's user sampling; the natural partition over LEAF users."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedweave.config import DataConfig
from fedweave.data.federated import build_federated_data
from fedweave.data.sources import load_dataset
from fedweave.data.sources.leaf_suite import ALL_LETTERS
from fedweave.errors import DatasetMissingError, UserError

PLAY = ("To be, or not to be: that is the question:\nWhether 'tis nobler in the mind to suffer "
        "The slings and arrows of outrageous fortune, Or to take arms against a sea of troubles")


def shakespeare_user(n: int, offset: int, context: int = 80) -> dict[str, list[str]]:
    """n (80-character window, next character) pairs of the text, as LEAF's
    preprocessing makes them from one role's lines."""
    text = PLAY * 3
    xs = [text[offset + i: offset + i + context] for i in range(n)]
    ys = [text[offset + i + context] for i in range(n)]
    return {"x": xs, "y": ys}


def write_json(folder: Path, name: str, user_data: dict[str, dict[str, list]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    blob = {"users": list(user_data), "num_samples": [len(d["y"]) for d in user_data.values()],
            "user_data": user_data}
    (folder / name).write_text(json.dumps(blob))


def write_shakespeare(root: Path, sizes: dict[str, int], test: dict[str, int],
                      context: int = 80) -> None:
    """LEAF's shakespeare/{train,test} json: role → samples (context length ``context``)."""
    base = root / "shakespeare"
    users = list(sizes)
    write_json(base / "train", "all_data_niid_0_keep_0_train_9.json",
               {u: shakespeare_user(n, 7 * k, context) for k, (u, n) in enumerate(sizes.items())})
    write_json(base / "test", "all_data_niid_0_keep_0_test_9.json",
               {u: shakespeare_user(n, 3 + 7 * users.index(u), context)
                for u, n in test.items()})


def test_vocabulary_is_leafs() -> None:
    assert len(ALL_LETTERS) == 80 and len(set(ALL_LETTERS)) == 80
    assert ALL_LETTERS[:3] == "\n !" and ALL_LETTERS[-1] == "}"


def test_shakespeare_reads_roles_as_users(tmp_path: Path) -> None:
    write_shakespeare(tmp_path, {"THE_TRAGEDY_OF_HAMLET_HAMLET": 5, "KING_LEAR_EDGAR": 3},
                      {"KING_LEAR_EDGAR": 2})
    ds = load_dataset(DataConfig(dataset="shakespeare", root=tmp_path), 0)
    assert ds.train_x.shape == (8, 80) and ds.train_x.dtype == torch.int8
    assert ds.num_classes == 80 and ds.test_x.shape == (2, 80)
    assert ds.train_groups is not None and ds.train_groups.tolist() == [0] * 5 + [1] * 3
    assert ds.test_groups is not None and ds.test_groups.tolist() == [1, 1]
    decoded = "".join(ALL_LETTERS[i] for i in ds.train_x[0].tolist())
    assert decoded == (PLAY * 3)[:80]
    assert ALL_LETTERS[int(ds.train_y[0])] == (PLAY * 3)[80]
    # row 1 of the second user starts 7 characters into the text
    assert ALL_LETTERS[int(ds.train_x[6, 0])] == (PLAY * 3)[8]


def test_shakespeare_natural_partition_keeps_users(tmp_path: Path) -> None:
    write_shakespeare(tmp_path, {"A": 6, "B": 4, "C": 5}, {"A": 1})
    cfg = DataConfig(dataset="shakespeare", root=tmp_path, nodes=3, partition="natural",
                     val_fraction=0.0)
    fed = build_federated_data(cfg, 0)
    assert sorted(len(i) for i in fed.train_idx) == [4, 5, 6]
    for idx in fed.train_idx:  # every client is one role
        groups = load_dataset(cfg, 0).train_groups
        assert groups is not None and len(set(groups[idx].tolist())) == 1
    xb, yb = fed.gather(fed.train_idx[0][:2])
    assert xb.shape == (2, 80) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert torch.equal(xb, fed.x[fed.train_idx[0][:2]].float())  # ids, not normalised
    iid = build_federated_data(cfg.model_copy(update={"partition": "iid", "nodes": 2}), 0)
    assert sorted(len(i) for i in iid.train_idx) == [7, 8]


def test_user_sampling_follows_leaf(tmp_path: Path) -> None:
    write_shakespeare(tmp_path, {"A": 6, "B": 2, "C": 5, "D": 1}, {"A": 1, "B": 1, "D": 2})
    full = load_dataset(DataConfig(dataset="shakespeare", root=tmp_path), 0)
    kept = load_dataset(DataConfig(dataset="shakespeare", root=tmp_path,
                                   user_min_samples=2), 0)
    assert kept.train_groups is not None and kept.test_groups is not None
    assert sorted(set(kept.train_groups.tolist())) == [0, 1, 2] and len(kept.train_y) == 13
    assert kept.test_groups.tolist() == [0, 1]  # D's test rows left with D
    assert len(full.train_y) == 14
    half = load_dataset(DataConfig(dataset="shakespeare", root=tmp_path, user_fraction=0.5), 3)
    assert half.train_groups is not None
    users = set(half.train_groups.tolist())
    counts = {0: 6, 1: 2, 2: 5, 3: 1}
    total = sum(counts[u] for u in users)
    assert total >= 7 and total - min(counts[u] for u in users) < 7  # stops once ≥ half
    again = load_dataset(DataConfig(dataset="shakespeare", root=tmp_path, user_fraction=0.5), 3)
    assert again.train_groups is not None and torch.equal(again.train_groups, half.train_groups)
    with pytest.raises(UserError, match="user_min_samples=50 leaves no user"):
        load_dataset(DataConfig(dataset="shakespeare", root=tmp_path, user_min_samples=50), 0)
    with pytest.raises(UserError, match="has none"):
        load_dataset(DataConfig(dataset="digits", user_fraction=0.5), 0)


@pytest.mark.parametrize(("user", "message"), [
    ({"x": ["abc", "abcd"], "y": ["d", "e"]}, "one non-zero length"),
    ({"x": ["ab\u00e9"], "y": ["d"]}, "not in LEAF's 80-character vocabulary"),
    ({"x": ["ab~"], "y": ["d"]}, "'~' is not in LEAF's"),
    ({"x": ["abc"], "y": ["de"]}, "single characters"),
    ({"x": ["abc", "abc"], "y": ["d"]}, "2 x rows but 1 y values"),
    ({"x": [1, 2], "y": ["d", "e"]}, "must be strings"),
])
def test_shakespeare_refuses_bad_rows(tmp_path: Path, user: dict, message: str) -> None:
    write_json(tmp_path / "shakespeare" / "train", "a.json", {"u": user})
    write_json(tmp_path / "shakespeare" / "test", "a.json", {})
    with pytest.raises(UserError, match=message):
        load_dataset(DataConfig(dataset="shakespeare", root=tmp_path), 0)


def test_missing_leaf_folders_say_how(tmp_path: Path) -> None:
    for name in ("shakespeare", "celeba"):
        with pytest.raises(DatasetMissingError, match=f"{name}/train.*preprocess.sh"):
            load_dataset(DataConfig(dataset=name, root=tmp_path), 0)
    (tmp_path / "shakespeare" / "train").mkdir(parents=True)
    (tmp_path / "shakespeare" / "train" / "a.json").write_text("{not json")
    (tmp_path / "shakespeare" / "test").mkdir()
    with pytest.raises(UserError, match=r"a\.json: not a readable LEAF json"):
        load_dataset(DataConfig(dataset="shakespeare", root=tmp_path), 0)


def write_celeba(root: Path) -> None:
    images = root / "celeba" / "raw" / "img_align_celeba"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(5):
        pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
        pixels[:, :, 0] = 40 * k  # red channel marks the file
        Image.fromarray(pixels).save(images / f"{k + 1:06d}.jpg", quality=95)
    write_json(root / "celeba" / "train", "all_data_niid_05_keep_5_train_9.json",
               {"17": {"x": ["000001.jpg", "000002.jpg"], "y": [1, 0]},
                "4": {"x": ["000003.jpg", "000004.jpg"], "y": [0, 0]}})
    write_json(root / "celeba" / "test", "all_data_niid_05_keep_5_test_9.json",
               {"4": {"x": ["000005.jpg"], "y": [1]}})


def test_celeba_reads_images_by_name(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    ds = load_dataset(DataConfig(dataset="celeba", root=tmp_path), 0)
    assert ds.train_x.shape == (4, 3, 84, 84) and ds.train_x.dtype == torch.uint8
    assert ds.train_y.tolist() == [1, 0, 0, 0] and ds.test_y.tolist() == [1]
    assert ds.num_classes == 2 and ds.mean is not None and len(ds.mean) == 3
    assert ds.train_groups is not None and ds.train_groups.tolist() == [0, 0, 1, 1]
    assert ds.test_groups is not None and ds.test_groups.tolist() == [1]
    reds = ds.train_x[:, 0].float().mean(dim=(1, 2)).tolist()
    assert [round(r / 40) for r in reds] == [0, 1, 2, 3]  # images in json order, not resorted
    assert abs(ds.test_x[0, 0].float().mean().item() - 160) < 3


@pytest.mark.parametrize("name", ["../000001.jpg", "/etc/passwd", "", "sub/000001.jpg"])
def test_celeba_refuses_paths_outside_the_image_folder(tmp_path: Path, name: str) -> None:
    write_celeba(tmp_path)
    write_json(tmp_path / "celeba" / "train", "all_data_niid_05_keep_5_train_9.json",
               {"1": {"x": [name], "y": [1]}})
    with pytest.raises(UserError, match="plain image file names"):
        load_dataset(DataConfig(dataset="celeba", root=tmp_path), 0)


def test_celeba_missing_image_or_bad_label(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    write_json(tmp_path / "celeba" / "train", "all_data_niid_05_keep_5_train_9.json",
               {"1": {"x": ["999999.jpg"], "y": [1]}})
    with pytest.raises(UserError, match=r"999999\.jpg: image file named in the LEAF json"):
        load_dataset(DataConfig(dataset="celeba", root=tmp_path), 0)
    write_json(tmp_path / "celeba" / "train", "all_data_niid_05_keep_5_train_9.json",
               {"1": {"x": ["000001.jpg"], "y": [2]}})
    with pytest.raises(UserError, match="labels 0 or 1"):
        load_dataset(DataConfig(dataset="celeba", root=tmp_path), 0)

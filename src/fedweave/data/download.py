"""Checksummed, resumable, atomic downloads (urllib only) and safe archive extraction into
torchvision's on-disk layout."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fedweave.errors import UserError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One file of a dataset: fetched from ``url`` to ``root/<path>``, checked with ``md5``;
    ``extract``: unpack the archive into ``root/<extract_to>`` and delete it."""

    url: str
    path: str
    md5: str
    extract: bool = False
    extract_to: str = "."


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_SVHN = "http://ufldl.stanford.edu/housenumbers/"

SOURCES: dict[str, list[Resource]] = {
    "mnist": [
        Resource(_MNIST + "train-images-idx3-ubyte.gz", "MNIST/raw/train-images-idx3-ubyte.gz",
                 "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        Resource(_MNIST + "train-labels-idx1-ubyte.gz", "MNIST/raw/train-labels-idx1-ubyte.gz",
                 "d53e105ee54ea40749a09fcbcd1e9432"),
        Resource(_MNIST + "t10k-images-idx3-ubyte.gz", "MNIST/raw/t10k-images-idx3-ubyte.gz",
                 "9fb629c4189551a2d022fa330f9573f3"),
        Resource(_MNIST + "t10k-labels-idx1-ubyte.gz", "MNIST/raw/t10k-labels-idx1-ubyte.gz",
                 "ec29112dd5afa0611ce80d1b7f02629c"),
    ],
    "fashion-mnist": [
        Resource(_FASHION + "train-images-idx3-ubyte.gz",
                 "FashionMNIST/raw/train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        Resource(_FASHION + "train-labels-idx1-ubyte.gz",
                 "FashionMNIST/raw/train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        Resource(_FASHION + "t10k-images-idx3-ubyte.gz",
                 "FashionMNIST/raw/t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        Resource(_FASHION + "t10k-labels-idx1-ubyte.gz",
                 "FashionMNIST/raw/t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ],
    "cifar10": [
        Resource("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                 "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", extract=True),
    ],
    "cifar100": [
        Resource("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", extract=True),
    ],
    "svhn": [
        Resource(_SVHN + "train_32x32.mat", "svhn/train_32x32.mat",
                 "e26dedcc434d2e4c54c9b2d4a06d8373"),
        Resource(_SVHN + "test_32x32.mat", "svhn/test_32x32.mat",
                 "eb5a983be6a315427106f1b164d9cef3"),
    ],
    "tiny-imagenet": [
        Resource("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "tiny-imagenet-200.zip",
                 "90528d7ca1a48142e341f4ef8d21d0de", extract=True),
    ],
    "emnist": [
        Resource("https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip", "EMNIST/gzip.zip",
                 "58c8d27c78d21e728a6bc7b3cc06412e", extract=True, extract_to="EMNIST"),
    ],
}
DOWNLOADABLE = frozenset(SOURCES)

# Where each dataset lands under root (what ``download_dataset`` returns).
_TARGETS = {
    "mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw", "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python", "svhn": "svhn", "tiny-imagenet": "tiny-imagenet-200",
    "emnist": "EMNIST/gzip",
}


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _checksum_errors(path: Path, sha256: str | None, md5: str | None) -> list[str]:
    errors = []
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None:
            actual = _digest(path, algorithm)
            if actual.lower() != expected.lower():
                errors.append(f"{algorithm} expected {expected}, got {actual}")
    return errors


def download(url: str, dest: Path, sha256: str | None = None, md5: str | None = None,
             timeout: float = 60) -> Path:
    """Fetch ``url`` to ``dest``: bytes go to ``dest.part`` (resumed with an HTTP Range request
    when it exists), which is renamed to ``dest`` only once the checksums match. A mismatch
    deletes the ``.part`` and raises ``UserError``; so do network errors (the ``.part`` is kept
    for resuming). An existing ``dest`` that passes the checksums is not fetched again."""
    dest = Path(dest)
    if dest.is_file() and not _checksum_errors(dest, sha256, md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "fedweave"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            mode = "ab" if offset and response.status == 206 else "wb"
            with open(part, mode) as f:
                shutil.copyfileobj(response, f, CHUNK)
    except urllib.error.HTTPError as e:
        if not (e.code == 416 and offset):  # 416 on a resume: the .part is already complete
            raise UserError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"downloading {url} failed: {reason} (rerun to resume)") from e
    errors = _checksum_errors(part, sha256, md5)
    if errors:
        part.unlink(missing_ok=True)
        raise UserError(f"checksum mismatch for {dest.name} from {url}: {'; '.join(errors)}")
    os.replace(part, dest)
    return dest


def _safe_target(dest: Path, name: str) -> Path:
    """``dest/name``, refusing absolute names and names that climb out of ``dest``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise UserError(f"refusing to extract {name!r}: it points outside {dest}")
    return dest.joinpath(*pure.parts)


def extract(archive: Path, dest: Path) -> None:
    """Unpack a .tar(.gz) or .zip into ``dest``: only regular files and folders, no absolute or
    ``..`` paths, no links (path traversal safe). A damaged archive is a ``UserError``."""
    try:
        _extract(archive, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise UserError(f"{archive}: damaged archive ({type(e).__name__}: {e}); delete it and "
                        "download again") from e


def _extract(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = _safe_target(dest, info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
        return
    with tarfile.open(archive) as tf:
        members = []
        for member in tf.getmembers():
            _safe_target(dest, member.name)
            if not (member.isfile() or member.isdir()):
                raise UserError(f"refusing to extract {member.name!r} from {archive}: "
                                "not a regular file")
            members.append(member)
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: a second guard
            tf.extractall(dest, members=members, filter="data")
        else:  # older Pythons reject the argument; the members were checked above
            tf.extractall(dest, members=members)


def download_dataset(name: str, root: Path) -> Path:
    """Download dataset ``name`` into ``root`` in torchvision's layout (official URLs, md5
    checked; archives extracted and removed) and return its folder."""
    if name not in SOURCES:
        raise UserError(
            f"dataset {name!r} cannot be downloaded automatically; downloadable: "
            f"{', '.join(sorted(SOURCES))} (digits and synthetic are built in)")
    root = Path(root).expanduser()
    for res in SOURCES[name]:
        dest = root / res.path
        print(f"fedweave: fetching {res.url} -> {dest}", file=sys.stderr)
        download(res.url, dest, md5=res.md5)
        if res.extract:
            extract(dest, root / res.extract_to)
            dest.unlink()
    return root / _TARGETS[name]

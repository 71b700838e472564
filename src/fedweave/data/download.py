"""Checksummed, resumable, atomic downloads (urllib only) and safe archive extraction into
torchvision's on-disk layout, and LEAF's raw sources (FEMNIST, Shakespeare, CelebA) into the
folders LEAF's own ``preprocess.sh`` reads (Caldas et al. 2018, github.com/TalwalkarLab/leaf)."""

from __future__ import annotations

import hashlib
import html.parser
import os
import re
import shlex
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fedweave.errors import UserError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One file of a dataset: fetched from ``url`` (else from each of ``mirrors`` in turn) to
    ``root/<path>``, checked with ``md5`` (and ``sha256`` when given); ``extract``: unpack the
    archive into ``root/<extract_to>`` and delete it; ``rename``: ``(old, new)`` paths under
    ``root`` moved after extraction; ``google_drive``: ``url`` is a Google Drive download link
    (its confirmation page is answered, :func:`drive_url`)."""

    url: str
    path: str
    md5: str
    extract: bool = False
    extract_to: str = "."
    sha256: str | None = None
    mirrors: tuple[str, ...] = ()
    rename: tuple[tuple[str, str], ...] = ()
    google_drive: bool = False


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_SVHN = "http://ufldl.stanford.edu/housenumbers/"
_NIST = "https://s3.amazonaws.com/nist-srd/SD19/"
_DRIVE = "https://drive.google.com/uc?export=download&id="

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
    # LEAF's raw sources: <root>/<name>/raw/ holds what LEAF's data/<name>/data/raw_data/
    # (femnist, shakespeare) or data/celeba/data/raw/ holds after LEAF's get_data.sh.
    # FEMNIST: NIST Special Database 19, unzipped to raw/by_class/ and raw/by_write/.
    "femnist": [
        Resource(_NIST + "by_class.zip", "femnist/raw/by_class.zip",
                 "79572b1694a8506f2b722c7be54130c4", extract=True, extract_to="femnist/raw"),
        Resource(_NIST + "by_write.zip", "femnist/raw/by_write.zip",
                 "a29f21babf83db0bb28a2f77b2b456cb", extract=True, extract_to="femnist/raw",
                 sha256="39958e28827eb0d7d54f7e4c31c6cc36689b38aa218a4fc1e810c5413e7a35b8"),
    ],
    # Shakespeare: Project Gutenberg's complete works as LEAF's original get_data.sh fetched it
    # (http://www.gutenberg.org/files/100/old/1994-01-100.zip, since moved one folder down);
    # 100.txt becomes raw/raw_data.txt as there. LEAF's current script fetches the live
    # 100-0.txt, which changes with Gutenberg's edits and so cannot be checksummed.
    "shakespeare": [
        Resource("https://www.gutenberg.org/files/100/old/old/1994-01-100.zip",
                 "shakespeare/raw/1994-01-100.zip", "b8d60664a90939fa7b5d9f4dd064a1d5",
                 extract=True, extract_to="shakespeare/raw",
                 mirrors=("http://www.gutenberg.org/files/100/old/1994-01-100.zip",),
                 rename=(("shakespeare/raw/100.txt", "shakespeare/raw/raw_data.txt"),)),
    ],
    # CelebA (Liu et al. 2015): the aligned images, attributes and identities from the
    # authors' Google Drive (torchvision's ids and md5s), laid out as LEAF's data/raw/.
    "celeba": [
        Resource(_DRIVE + "0B7EVK8r0v71pZjFTYXZWM3FlRnM", "celeba/raw/img_align_celeba.zip",
                 "00d2c5bc6d35e252742224ab0c1e8fcb", extract=True, extract_to="celeba/raw",
                 google_drive=True),
        Resource(_DRIVE + "0B7EVK8r0v71pblRyaVFSWGxPY0U", "celeba/raw/list_attr_celeba.txt",
                 "75e246fa4810816ffd6ee81facbd244c", google_drive=True),
        Resource(_DRIVE + "1_ee_0u7vcNLOfNLegJRHmolfH5ICW-XS", "celeba/raw/identity_CelebA.txt",
                 "32bd1bd63d3c78cd57e08160ec5ed1e2", google_drive=True),
    ],
}
#: Data sets whose download is LEAF's raw sources: LEAF's preprocess.sh turns them into the
#: json fedweave reads, so ``data.download`` does not fetch them (``fedweave data download``
#: does, and says what to run next).
LEAF_RAW = frozenset({"femnist", "shakespeare", "celeba"})
#: Data sets ``data.download: true`` fetches and then loads.
DOWNLOADABLE = frozenset(SOURCES) - LEAF_RAW

_LEAF_SIZE = {"femnist": "several GB (NIST SD19 by_class.zip and by_write.zip, plus as much "
                         "again unpacked)",
              "shakespeare": "a few MB", "celeba": "over 1 GB (202,599 JPEG images)"}
#: LEAF's preprocessing command per data set (its README's options, every user kept:
#: fedweave samples users itself with data.user_fraction and data.user_min_samples).
LEAF_PREPROCESS = {
    "femnist": "./preprocess.sh -s niid --sf 1.0 -k 0 -t sample",
    "shakespeare": "./preprocess.sh -s niid --sf 1.0 -k 0 -t sample -tf 0.8",
    "celeba": "./preprocess.sh -s niid --sf 1.0 -k 5 -t sample",
}
# The folder LEAF's scripts read the raw files from, relative to its data/<name>/.
_LEAF_RAW_DIR = {"femnist": "data/raw_data", "shakespeare": "data/raw_data",
                 "celeba": "data/raw"}

# Where each dataset lands under root (what ``download_dataset`` returns).
_TARGETS = {
    "mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw", "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python", "svhn": "svhn", "tiny-imagenet": "tiny-imagenet-200",
    "emnist": "EMNIST/gzip", "femnist": "femnist/raw", "shakespeare": "shakespeare/raw",
    "celeba": "celeba/raw",
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
             timeout: float = 60, headers: dict[str, str] | None = None) -> Path:
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
    request = urllib.request.Request(url, headers={"User-Agent": "fedweave", **(headers or {})})
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


class _DownloadForm(html.parser.HTMLParser):
    """The first ``<form>``'s action and its hidden inputs (Google Drive's confirmation)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and not self._done and self.action is None:
            self.action, self._in_form = a.get("action", ""), True
        elif tag == "input" and self._in_form and a.get("type") == "hidden" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form, self._done = False, True


def drive_url(url: str, timeout: float = 60) -> tuple[str, dict[str, str]]:
    """The URL (and extra request headers) that serve a Google Drive file's bytes. Drive answers
    a file too large to virus-scan with an HTML page instead: the download goes on at that
    page's form (its action with its hidden inputs as the query), or, on older pages, with the
    ``download_warning`` cookie's value as ``confirm`` (the cookie sent back). A page with
    neither (e.g. Drive's quota notice) is a :class:`UserError`; a non-HTML answer is the file
    itself and ``url`` is returned as is (:func:`download` then fetches it, resumably)."""
    request = urllib.request.Request(url, headers={"User-Agent": "fedweave"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if "text/html" not in response.headers.get("Content-Type", ""):
                return url, {}
            page = response.read(1 << 20).decode("utf-8", "replace")
            cookies = response.headers.get_all("Set-Cookie") or []
    except urllib.error.HTTPError as e:
        raise UserError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"downloading {url} failed: {getattr(e, 'reason', e)}") from e
    for cookie in cookies:
        match = re.match(r"\s*(download_warning[^=]*)=([^;]+)", cookie)
        if match:
            sep = "&" if "?" in url else "?"
            return (f"{url}{sep}confirm={urllib.parse.quote(match.group(2))}",
                    {"Cookie": f"{match.group(1)}={match.group(2)}"})
    form = _DownloadForm()
    form.feed(page)
    if form.action:
        action = urllib.parse.urljoin(url, form.action)
        sep = "&" if "?" in action else "?"
        return f"{action}{sep}{urllib.parse.urlencode(form.fields)}", {}
    raise UserError(f"Google Drive answered {url} with a page instead of the file (its daily "
                    "download quota may be used up): retry later, or open the link in a "
                    "browser and save the file where this command says")


def fetch(res: Resource, dest: Path, timeout: float = 60) -> Path:
    """:func:`download` of one :class:`Resource`: its ``url``, then each mirror in turn on
    failure (a checksum mismatch included); Google Drive links through :func:`drive_url`. A
    ``dest`` that already passes the checksums is kept without any request."""
    if dest.is_file() and not _checksum_errors(dest, res.sha256, res.md5):
        return dest
    errors, urls = [], (res.url, *res.mirrors)
    for i, url in enumerate(urls):
        try:
            real, headers = drive_url(url, timeout) if res.google_drive else (url, {})
            return download(real, dest, sha256=res.sha256, md5=res.md5, timeout=timeout,
                            headers=headers)
        except UserError as e:
            errors.append(str(e))
            if i + 1 < len(urls):
                print(f"fedweave: {e}; trying {urls[i + 1]}", file=sys.stderr)
    raise UserError("; ".join(errors))


def leaf_next_step(name: str, root: Path) -> str:
    """The one line saying what to run after ``fedweave data download <LEAF set>``: link the
    raw folder where LEAF's scripts read it, run LEAF's preprocess.sh, copy its data/train and
    data/test to ``root/<name>/`` (where fedweave reads them)."""
    root = Path(root).expanduser().resolve()
    raw, here = root / _TARGETS[name], f"<leaf>/data/{name}"
    images = f" (fedweave reads the images from {raw}/img_align_celeba/, where they are)" \
        if name == "celeba" else ""
    return (f"next, in a clone <leaf> of github.com/TalwalkarLab/leaf: mkdir -p {here}/data && "
            f"ln -s {shlex.quote(str(raw))} {here}/{_LEAF_RAW_DIR[name]} && cd {here} && "
            f"{LEAF_PREPROCESS[name]} && cp -r data/train data/test "
            f"{shlex.quote(str(root / name))}/{images}")


def download_dataset(name: str, root: Path) -> Path:
    """Download dataset ``name`` into ``root`` in torchvision's layout (official URLs, md5
    checked; archives extracted and removed) and return its folder. LEAF's data sets
    (:data:`LEAF_RAW`) land as LEAF's raw sources in ``root/<name>/raw/``
    (:func:`leaf_next_step` says how to preprocess them)."""
    if name not in SOURCES:
        raise UserError(
            f"dataset {name!r} cannot be downloaded automatically; downloadable: "
            f"{', '.join(sorted(SOURCES))} (digits and synthetic are built in)")
    root = Path(root).expanduser()
    if name in LEAF_RAW:
        print(f"fedweave: {name}: LEAF's raw sources, {_LEAF_SIZE[name]}, into "
              f"{root / _TARGETS[name]}", file=sys.stderr)
    for res in SOURCES[name]:
        dest = root / res.path
        print(f"fedweave: fetching {res.url} -> {dest}", file=sys.stderr)
        fetch(res, dest)
        if res.extract:
            extract(dest, root / res.extract_to)
            dest.unlink()
        for old, new in res.rename:
            if not (root / old).is_file():
                raise UserError(f"{res.url} did not hold {Path(old).name}; delete "
                                f"{root / res.extract_to} and download again")
            os.replace(root / old, root / new)
    return root / _TARGETS[name]

"""Downloads against a local HTTP server with Range support (no network)."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fedweave.config import DataConfig
from fedweave.data import download as dl
from fedweave.data.sources import dataset_status, load_dataset
from fedweave.errors import UserError


class RangeHandler(BaseHTTPRequestHandler):
    """Serves files from ``server.directory``, honouring ``Range: bytes=N-`` with a 206."""

    def do_GET(self) -> None:
        directory: Path = self.server.directory  # type: ignore[attr-defined]
        self.server.ranges.append(self.headers.get("Range"))  # type: ignore[attr-defined]
        path = directory / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            start = int(header[len("bytes="):].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, format: str, *args: object) -> None:  # silence the test output
        pass


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str | None]]]:
    """(base URL, served folder, Range headers received)."""
    served = tmp_path / "served"
    served.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.directory = served  # type: ignore[attr-defined]
    httpd.ranges = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served, httpd.ranges  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


def make_tar_gz(path: Path, files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_download_with_sha256(server: tuple[str, Path, list[str | None]], tmp_path: Path
                              ) -> None:
    url, served, _ = server
    data = make_tar_gz(served / "a.tar.gz", {"x/hello.txt": b"hello" * 1000})
    dest = tmp_path / "out" / "a.tar.gz"
    got = dl.download(f"{url}/a.tar.gz", dest, sha256=hashlib.sha256(data).hexdigest(),
                      md5=hashlib.md5(data).hexdigest())
    assert got == dest and dest.read_bytes() == data
    assert not dest.with_name("a.tar.gz.part").exists()
    dl.extract(dest, tmp_path / "ex")
    assert (tmp_path / "ex" / "x" / "hello.txt").read_bytes() == b"hello" * 1000


def test_checksum_mismatch_leaves_nothing(server: tuple[str, Path, list[str | None]],
                                          tmp_path: Path) -> None:
    url, served, _ = server
    make_tar_gz(served / "a.tar.gz", {"f": b"corrupted"})
    dest = tmp_path / "a.tar.gz"
    wrong = "0" * 64
    with pytest.raises(UserError, match=r"a\.tar\.gz") as info:
        dl.download(f"{url}/a.tar.gz", dest, sha256=wrong)
    assert wrong in str(info.value)
    assert hashlib.sha256((served / "a.tar.gz").read_bytes()).hexdigest() in str(info.value)
    assert not dest.exists() and not dest.with_name("a.tar.gz.part").exists()


def test_resume_from_part(server: tuple[str, Path, list[str | None]], tmp_path: Path) -> None:
    url, served, ranges = server
    data = bytes(range(256)) * 400
    (served / "big.bin").write_bytes(data)
    dest = tmp_path / "big.bin"
    half = len(data) // 2
    dest.with_name("big.bin.part").write_bytes(data[:half])
    dl.download(f"{url}/big.bin", dest, sha256=hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data and ranges == [f"bytes={half}-"]
    assert not dest.with_name("big.bin.part").exists()
    dl.download(f"{url}/big.bin", dest, sha256=hashlib.sha256(data).hexdigest())
    assert len(ranges) == 1  # already there and verified: not fetched again


def test_complete_part_is_accepted(server: tuple[str, Path, list[str | None]], tmp_path: Path
                                   ) -> None:
    url, served, _ = server
    data = b"abc" * 100
    (served / "f.bin").write_bytes(data)
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(data)  # the server answers 416
    dl.download(f"{url}/f.bin", dest, md5=hashlib.md5(data).hexdigest())
    assert dest.read_bytes() == data


def test_network_errors_are_user_errors(server: tuple[str, Path, list[str | None]],
                                        tmp_path: Path) -> None:
    url, _, _ = server
    with pytest.raises(UserError, match="404"):
        dl.download(f"{url}/missing.bin", tmp_path / "m.bin")
    with pytest.raises(UserError, match="failed"):
        dl.download("http://127.0.0.1:9/x", tmp_path / "x", timeout=2)


def test_extract_refuses_traversal(tmp_path: Path) -> None:
    make_tar_gz(tmp_path / "evil.tar.gz", {"../evil.txt": b"x"})
    with pytest.raises(UserError, match="outside"):
        dl.extract(tmp_path / "evil.tar.gz", tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("ok/../../evil.txt", b"x")
    with pytest.raises(UserError, match="outside"):
        dl.extract(tmp_path / "evil.zip", tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_extract_zip(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("gzip/emnist-x.gz", b"payload")
    dl.extract(tmp_path / "a.zip", tmp_path / "EMNIST")
    assert (tmp_path / "EMNIST" / "gzip" / "emnist-x.gz").read_bytes() == b"payload"


def cifar_tar(path: Path) -> bytes:
    def batch(n: int) -> bytes:
        data = np.full((n, 3072), 9, dtype=np.uint8)
        return pickle.dumps({b"data": data, b"labels": list(range(n))})

    files = {f"cifar-10-batches-py/data_batch_{i}": batch(2) for i in range(1, 6)}
    files["cifar-10-batches-py/test_batch"] = batch(3)
    return make_tar_gz(path, files)


def test_download_dataset_then_load(server: tuple[str, Path, list[str | None]],
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``data.download: true`` fetches the (locally served) archive, extracts it, loads it."""
    url, served, _ = server
    data = cifar_tar(served / "cifar-10-python.tar.gz")
    resource = dl.Resource(f"{url}/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                           hashlib.md5(data).hexdigest(), extract=True)
    monkeypatch.setitem(dl.SOURCES, "cifar10", [resource])
    root = tmp_path / "data"
    assert not dataset_status("cifar10", root)[0]
    ds = load_dataset(DataConfig(dataset="cifar10", root=root, download=True), 0)
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.test_y.tolist() == [0, 1, 2]
    assert dataset_status("cifar10", root) == (True, root / "cifar-10-batches-py")
    assert not (root / "cifar-10-python.tar.gz").exists()


def test_official_sources_and_unknown(tmp_path: Path) -> None:
    assert {"mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "tiny-imagenet",
            "emnist"} <= dl.DOWNLOADABLE
    assert all(len(r.md5) == 32 for rs in dl.SOURCES.values() for r in rs)
    with pytest.raises(UserError, match="cannot be downloaded"):
        dl.download_dataset("imagefolder", tmp_path)
    assert set(dl.SOURCES) >= dl.LEAF_RAW and not dl.LEAF_RAW & dl.DOWNLOADABLE


# --- LEAF's raw sources ----------------------------------------------------------------------


def make_zip(path: Path, files: dict[str, bytes]) -> str:
    """Write a zip of ``files``; its md5."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_leaf_sources_are_the_published_ones() -> None:
    femnist = {Path(r.url).name: r for r in dl.SOURCES["femnist"]}
    assert femnist["by_class.zip"].md5 == "79572b1694a8506f2b722c7be54130c4"
    assert femnist["by_write.zip"].sha256 == \
        "39958e28827eb0d7d54f7e4c31c6cc36689b38aa218a4fc1e810c5413e7a35b8"
    assert all(r.extract and r.extract_to == "femnist/raw" for r in femnist.values())
    (shakespeare,) = dl.SOURCES["shakespeare"]
    assert shakespeare.md5 == "b8d60664a90939fa7b5d9f4dd064a1d5"
    assert shakespeare.mirrors == ("http://www.gutenberg.org/files/100/old/1994-01-100.zip",)
    celeba = {r.path: r for r in dl.SOURCES["celeba"]}
    assert set(celeba) == {"celeba/raw/img_align_celeba.zip", "celeba/raw/list_attr_celeba.txt",
                           "celeba/raw/identity_CelebA.txt"}
    assert all(r.google_drive and "drive.google.com" in r.url for r in celeba.values())


def test_femnist_raw_lands_where_leaf_reads_it(server: tuple[str, Path, list[str | None]],
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """by_class/ and by_write/ end up in femnist/raw/ (LEAF's data/femnist/data/raw_data/),
    the archives removed; a wrong checksum is refused with nothing left behind."""
    url, served, _ = server
    by_class = make_zip(served / "by_class.zip", {"by_class/4a/hsf_0/hsf_0_00000.png": b"c"})
    by_write = make_zip(served / "by_write.zip",
                        {"by_write/hsf_0/f0000_14/c0000_14/c0000_14_00000.png": b"w"})
    sha = hashlib.sha256((served / "by_write.zip").read_bytes()).hexdigest()
    good = [dl.Resource(f"{url}/by_class.zip", "femnist/raw/by_class.zip", by_class,
                        extract=True, extract_to="femnist/raw"),
            dl.Resource(f"{url}/by_write.zip", "femnist/raw/by_write.zip", by_write,
                        extract=True, extract_to="femnist/raw", sha256=sha)]
    monkeypatch.setitem(dl.SOURCES, "femnist",
                        [good[0], replace(good[1], sha256="0" * 64)])
    with pytest.raises(UserError, match=r"checksum mismatch for by_write\.zip"):
        dl.download_dataset("femnist", tmp_path)
    assert not list((tmp_path / "femnist" / "raw").glob("by_write*"))
    monkeypatch.setitem(dl.SOURCES, "femnist", good)
    raw = dl.download_dataset("femnist", tmp_path)
    assert raw == tmp_path / "femnist" / "raw"
    assert (raw / "by_class/4a/hsf_0/hsf_0_00000.png").read_bytes() == b"c"
    assert (raw / "by_write/hsf_0/f0000_14/c0000_14/c0000_14_00000.png").read_bytes() == b"w"
    assert sorted(p.name for p in raw.iterdir()) == ["by_class", "by_write"]


def test_shakespeare_falls_back_to_mirror_and_renames(
        server: tuple[str, Path, list[str | None]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, served, _ = server
    md5 = make_zip(served / "1994-01-100.zip", {"100.txt": b"THE SONNETS"})
    (served / "moved").mkdir()
    (served / "moved" / "1994-01-100.zip").write_bytes(b"<html>not the archive</html>")
    real = dl.SOURCES["shakespeare"][0]
    local = replace(real, url=f"{url}/moved/1994-01-100.zip", md5=md5,
                    mirrors=(f"{url}/1994-01-100.zip",))
    monkeypatch.setitem(dl.SOURCES, "shakespeare", [local])
    raw = dl.download_dataset("shakespeare", tmp_path)
    assert [p.name for p in raw.iterdir()] == ["raw_data.txt"]
    assert (raw / "raw_data.txt").read_bytes() == b"THE SONNETS"
    monkeypatch.setitem(dl.SOURCES, "shakespeare",
                        [replace(local, mirrors=())])
    with pytest.raises(UserError, match=f"checksum mismatch.*{url}/moved"):
        dl.download_dataset("shakespeare", tmp_path / "other")


class DriveHandler(BaseHTTPRequestHandler):
    """Google Drive's behaviour for large files: ``/uc?id=form-X`` answers an HTML page whose
    form leads to ``/download?id=X&confirm=t``; ``/uc?id=cookie-X`` sets a ``download_warning``
    cookie whose value must come back as ``confirm`` (with the cookie); ``/uc?id=small-X``
    serves the file at once; ``/uc?id=quota-X`` answers a page without a form."""

    def do_GET(self) -> None:
        files: dict[str, bytes] = self.server.files  # type: ignore[attr-defined]
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        kind, _, name = query.get("id", "").partition("-")
        if parsed.path == "/download" and query.get("confirm") == "t" and query.get("uuid"):
            return self.send_file(files[query["id"]])
        if parsed.path != "/uc" or name not in files:
            return self.send_error(404)
        if kind == "small":
            return self.send_file(files[name])
        if kind == "cookie" and query.get("confirm") == "abc" \
                and self.headers.get("Cookie") == "download_warning_1=abc":
            return self.send_file(files[name])
        page = b"<html><p>Google Drive can't scan this file for viruses.</p>"
        if kind == "form":
            page += (b'<form id="download-form" action="/download" method="get">'
                     b'<input type="submit" value="Download anyway"/>'
                     b'<input type="hidden" name="id" value="' + name.encode() + b'">'
                     b'<input type="hidden" name="confirm" value="t">'
                     b'<input type="hidden" name="uuid" value="u-1"></form>')
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        if kind == "cookie":
            self.send_header("Set-Cookie", "download_warning_1=abc; Path=/")
        self.send_header("Content-Length", str(len(page + b"</html>")))
        self.end_headers()
        self.wfile.write(page + b"</html>")

    def send_file(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def drive() -> Iterator[tuple[str, dict[str, bytes]]]:
    """(base URL, files served by name)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), DriveHandler)
    httpd.files = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.files  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


def test_google_drive_confirmation(drive: tuple[str, dict[str, bytes]], tmp_path: Path) -> None:
    url, files = drive
    files["a"] = b"attributes"
    assert dl.drive_url(f"{url}/uc?export=download&id=small-a") == \
        (f"{url}/uc?export=download&id=small-a", {})
    assert dl.drive_url(f"{url}/uc?export=download&id=form-a") == \
        (f"{url}/download?id=a&confirm=t&uuid=u-1", {})
    assert dl.drive_url(f"{url}/uc?export=download&id=cookie-a")[1] == \
        {"Cookie": "download_warning_1=abc"}
    with pytest.raises(UserError, match="quota"):
        dl.drive_url(f"{url}/uc?export=download&id=quota-a")
    md5 = hashlib.md5(b"attributes").hexdigest()
    for kind in ("small", "form", "cookie"):
        res = dl.Resource(f"{url}/uc?export=download&id={kind}-a", "x", md5, google_drive=True)
        assert dl.fetch(res, tmp_path / kind / "a.txt").read_bytes() == b"attributes"


def celeba_drive(url: str, files: dict[str, bytes], tmp_path: Path) -> list[dl.Resource]:
    zipped = tmp_path / "img.zip"
    make_zip(zipped, {"img_align_celeba/000001.jpg": b"jpeg"})
    files.update({"img": zipped.read_bytes(), "attr": b"attr", "ident": b"000001.jpg 2880"})
    real = {Path(r.path).stem: r for r in dl.SOURCES["celeba"]}
    kinds = {"img_align_celeba": "form-img", "list_attr_celeba": "small-attr",
             "identity_CelebA": "cookie-ident"}
    return [replace(res, url=f"{url}/uc?export=download&id={kinds[stem]}",
                    md5=hashlib.md5(files[kinds[stem].split("-")[1]]).hexdigest())
            for stem, res in real.items()]


def test_celeba_lands_where_leaf_and_fedweave_read_it(
        drive: tuple[str, dict[str, bytes]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, files = drive
    monkeypatch.setitem(dl.SOURCES, "celeba", celeba_drive(url, files, tmp_path))
    raw = dl.download_dataset("celeba", tmp_path / "data")
    assert raw == tmp_path / "data" / "celeba" / "raw"
    # leaf_suite reads the images from celeba/raw/img_align_celeba/; LEAF's data/raw/ holds
    # them and the two text files
    assert (raw / "img_align_celeba" / "000001.jpg").read_bytes() == b"jpeg"
    assert (raw / "list_attr_celeba.txt").read_bytes() == b"attr"
    assert (raw / "identity_CelebA.txt").read_bytes() == b"000001.jpg 2880"
    assert sorted(p.name for p in raw.iterdir()) == [
        "identity_CelebA.txt", "img_align_celeba", "list_attr_celeba.txt"]


def test_cli_says_what_to_run_next(drive: tuple[str, dict[str, bytes]], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fedweave.cli import app

    url, files = drive
    monkeypatch.setitem(dl.SOURCES, "celeba", celeba_drive(url, files, tmp_path))
    root = tmp_path / "data"
    res = CliRunner().invoke(app, ["data", "download", "celeba", "--root", str(root)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "LEAF's raw sources, over 1 GB" in lines[0]
    (step,) = [line for line in lines if line.startswith("next")]
    real = root.resolve()
    assert f"ln -s {real}/celeba/raw <leaf>/data/celeba/data/raw &&" in step
    assert "cd <leaf>/data/celeba && ./preprocess.sh -s niid --sf 1.0 -k 5 -t sample && " \
        f"cp -r data/train data/test {real}/celeba/" in step
    for name, command in (("femnist", "./preprocess.sh -s niid --sf 1.0 -k 0 -t sample &&"),
                          ("shakespeare", "-s niid --sf 1.0 -k 0 -t sample -tf 0.8 &&")):
        line = dl.leaf_next_step(name, root)
        assert command in line and f"<leaf>/data/{name}/data/raw_data &&" in line
        assert line.endswith(f"cp -r data/train data/test {real}/{name}/")
    spaced = dl.leaf_next_step("femnist", tmp_path / "my data")
    assert f"ln -s '{(tmp_path / 'my data').resolve()}/femnist/raw' <leaf>" in spaced
    files["attr"] = b"tampered"
    (root / "celeba" / "raw" / "list_attr_celeba.txt").unlink()
    res = CliRunner().invoke(app, ["data", "download", "celeba", "--root", str(root)])
    assert res.exit_code == 2 and "checksum mismatch for list_attr_celeba.txt" in res.output
    assert not (root / "celeba" / "raw" / "list_attr_celeba.txt").exists()

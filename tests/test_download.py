"""Downloads against a local HTTP server with Range support (no network)."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import threading
import zipfile
from collections.abc import Iterator
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
        dl.download_dataset("femnist", tmp_path)

"""Dataset loaders: real MNIST / CUCUMBER-9 copies, md5 checks, downloads, image folders."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import http.server
import io
import pickle
import shutil
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bnnctl.data import datasets as ds
from bnnctl.data.download import DownloadError
from bnnctl.errors import BnnctlError, DataError

CUCUMBER_CLASSES = ["2L", "BM", "BL", "M", "S", "L", "2S", "BS", "C"]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    # Never touch the user's cache or an inherited BNNCTL_DATA from a test.
    monkeypatch.delenv(ds.ENV_DATA, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def cucumber_dir(data_dir):
    return data_dir / "cucumber9" / "cucumber-9-python"


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):  # shared data is read-only; copies must be writable
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


# ---------------------------------------------------------------------------- real data


@pytest.mark.parametrize("split, count", [("train", 60000), ("test", 10000)])
def test_mnist(data_dir, split, count):
    d = ds.load_dataset("mnist", split, data_dir=data_dir, download=False)
    assert d.images.shape == (count, 28, 28) and d.images.dtype == np.uint8
    assert d.labels.shape == (count,) and d.labels.dtype == np.int64
    assert d.classes == [str(i) for i in range(10)]
    counts = np.bincount(d.labels, minlength=10)
    assert len(counts) == 10 and counts.min() > count // 20
    assert d.images.max() == 255


def test_mnist_known_first_labels(data_dir):
    # The first t10k labels are 7 2 1 0 4 1 4 9 5 9 (widely quoted; checks the idx1 offset).
    d = ds.load_dataset("mnist", "test", data_dir=data_dir, download=False)
    assert d.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


@pytest.mark.parametrize("split, count", [("train", 2475), ("test", 495)])
def test_cucumber9(data_dir, split, count):
    d = ds.load_dataset("cucumber9", split, data_dir=data_dir, download=False)
    assert d.images.shape == (count, 32, 32, 3) and d.images.dtype == np.uint8
    assert d.labels.dtype == np.int64 and len(d) == count
    assert d.classes == CUCUMBER_CLASSES
    assert set(np.unique(d.labels)) == set(range(9))


def test_cucumber9_planes_are_decoded_in_order(cucumber_dir):
    """Row r of image i's plane c is data[3 i + c, 32 r : 32 r + 32] in the raw batch."""
    raw = ds._unpickle(cucumber_dir / "test_batch")["data"]
    d = ds.load_dataset("cucumber9", "test", data_dir=cucumber_dir, download=False)
    assert np.array_equal(d.images[5, 7, :, 1], raw[3 * 5 + 1, 32 * 7: 32 * 8])


def test_env_var_and_dataset_folder_itself(data_dir, cucumber_dir, monkeypatch):
    monkeypatch.setenv(ds.ENV_DATA, str(data_dir))
    assert len(ds.load_dataset("mnist", "test", download=False)) == 10000
    assert len(ds.load_dataset("cucumber9", "test", download=False)) == 495
    # the dataset folder itself, not its parent
    assert len(ds.load_dataset("cucumber9", "test", data_dir=cucumber_dir, download=False)) == 495
    assert len(ds.load_dataset("mnist", "test", data_dir=data_dir / "mnist", download=False)) == 10000


def test_default_root_is_xdg_cache(tmp_path):
    assert ds.default_data_root() == tmp_path / "xdg-cache" / "bnnctl" / "datasets"


def test_uncompressed_mnist_files(data_dir, tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((data_dir / "mnist" / f"{name}.gz").read_bytes()))
    d = ds.load_dataset("mnist", "test", data_dir=tmp_path, download=False)
    assert d.images.shape == (10000, 28, 28)


def test_unknown_names():
    with pytest.raises(BnnctlError, match="unknown dataset"):
        ds.load_dataset("imagenet", "test", download=False)
    with pytest.raises(BnnctlError, match="unknown split"):
        ds.load_dataset("mnist", "valid", download=False)


def test_not_found_without_download(tmp_path):
    with pytest.raises(BnnctlError, match="--data-dir") as info:
        ds.load_dataset("cucumber9", "test", data_dir=tmp_path, download=False)
    assert "BNNCTL_DATA" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------- corrupt copies


def test_md5_mismatch_names_the_file(cucumber_dir, tmp_path):
    copy = copy_tree(cucumber_dir, tmp_path / "cucumber-9-python")
    raw = bytearray((copy / "test_batch").read_bytes())
    raw[-5000] ^= 0xFF  # a pixel byte: the pickle itself still loads
    (copy / "test_batch").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="md5") as info:
        ds.load_dataset("cucumber9", "test", data_dir=tmp_path, download=False)
    assert "test_batch" in str(info.value)
    # without verification the flipped pixel simply loads
    assert len(ds.load_dataset("cucumber9", "test", data_dir=tmp_path, download=False, verify=False)) == 495


def test_truncated_pickle(cucumber_dir, tmp_path):
    copy = copy_tree(cucumber_dir, tmp_path / "c")
    (copy / "test_batch").write_bytes((copy / "test_batch").read_bytes()[:1000])
    with pytest.raises(DataError, match="test_batch"):
        ds.load_dataset("cucumber9", "test", data_dir=copy, download=False, verify=False)


def test_pickle_with_foreign_globals_is_refused(cucumber_dir, tmp_path):
    copy = copy_tree(cucumber_dir, tmp_path / "c")
    (copy / "test_batch").write_bytes(pickle.dumps({"data": Path("/"), "labels": []}))
    with pytest.raises(DataError, match="refusing"):
        ds.load_dataset("cucumber9", "test", data_dir=copy, download=False, verify=False)


def test_wrong_data_shape(cucumber_dir, tmp_path):
    copy = copy_tree(cucumber_dir, tmp_path / "c")
    bad = {"data": np.zeros((10, 1000), np.uint8), "labels": [0] * 10}
    (copy / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="test_batch"):
        ds.load_dataset("cucumber9", "test", data_dir=copy, download=False, verify=False)


def test_truncated_idx(data_dir, tmp_path):
    copy = copy_tree(data_dir / "mnist", tmp_path / "mnist")
    gz = copy / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:2000])
    with pytest.raises(DataError, match="t10k-labels"):
        ds.load_dataset("mnist", "test", data_dir=tmp_path, download=False, verify=False)
    with pytest.raises(DataError, match="md5"):
        ds.load_dataset("mnist", "test", data_dir=tmp_path, download=False)


# ---------------------------------------------------------------------------- downloads


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_urls(monkeypatch, name: str, urls: list[str], **changes) -> None:
    original = ds.dataset_config
    cfg = dataclasses.replace(original(name), urls=tuple(urls), **changes)
    monkeypatch.setattr(ds, "dataset_config", lambda n: cfg if n == name else original(n))


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server; yields (folder it serves, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("name", ["mnist", "cucumber9", "cifar10"])
def test_offline_download_fails_cleanly(monkeypatch, tmp_path, name):
    with_urls(monkeypatch, name, [f"http://127.0.0.1:{unused_port()}/"])
    target = tmp_path / "fresh"
    with pytest.raises(DownloadError) as info:
        ds.load_dataset(name, "test", data_dir=target / "root", progress=False)
    message = str(info.value)
    assert "cannot download" in message and "127.0.0.1" in message
    assert "--data-dir" in message and "BNNCTL_DATA" in message and "\n" not in message
    assert not target.exists()  # no folders, temp files or partial downloads left behind


def cucumber_tarball(cucumber_dir: Path, path: Path, corrupt: str | None = None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(cucumber_dir.iterdir()):
            data = f.read_bytes()
            if f.name == corrupt:
                data = data[:-10] + bytes(10)
            info = tarfile.TarInfo(f"cucumber-9-python/{f.name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_download_cucumber9_from_archive(cucumber_dir, http_root, tmp_path, monkeypatch):
    www, url = http_root
    cucumber_tarball(cucumber_dir, www / "c.tar.gz")
    with_urls(monkeypatch, "cucumber9", [f"http://127.0.0.1:{unused_port()}/x", url + "c.tar.gz"])
    root = tmp_path / "data"
    d = ds.load_dataset("cucumber9", "test", data_dir=root, progress=False)
    assert d.images.shape == (495, 32, 32, 3)
    target = root / "cucumber9" / "cucumber-9-python"
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in cucumber_dir.iterdir())
    # found again without downloading
    assert len(ds.load_dataset("cucumber9", "train", data_dir=root, download=False)) == 2475


def test_download_with_corrupt_member_leaves_nothing(cucumber_dir, http_root, tmp_path, monkeypatch):
    www, url = http_root
    cucumber_tarball(cucumber_dir, www / "c.tar.gz", corrupt="data_batch_3")
    with_urls(monkeypatch, "cucumber9", [url + "c.tar.gz"])
    with pytest.raises(DataError, match="data_batch_3.*md5|md5.*data_batch_3"):
        ds.load_dataset("cucumber9", "test", data_dir=tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()


def test_download_archive_md5_checked(cucumber_dir, http_root, tmp_path, monkeypatch):
    www, url = http_root
    cucumber_tarball(cucumber_dir, www / "c.tar.gz")
    with_urls(monkeypatch, "cucumber9", [url + "c.tar.gz"], archive_md5="0" * 32)
    with pytest.raises(DownloadError, match="md5"):
        ds.load_dataset("cucumber9", "test", data_dir=tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()


def test_download_mnist_from_mirror(data_dir, http_root, tmp_path, monkeypatch):
    www, url = http_root
    for f in (data_dir / "mnist").iterdir():
        shutil.copy(f, www / f.name)
    with_urls(monkeypatch, "mnist", [url])
    root = tmp_path / "data"
    d = ds.load_dataset("mnist", "test", data_dir=root, progress=False)
    assert d.images.shape == (10000, 28, 28)
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(
        p.name for p in (data_dir / "mnist").iterdir())


# ---------------------------------------------------------------------------- image folders


def make_folder(root: Path, classes: dict[str, int]) -> Path:
    for index, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            colour = (40 * index, 255 - 30 * i, 128)
            Image.new("RGB", (40 + i, 30), colour).save(root / name / f"{i}.png")
    return root


def test_image_folder_cnv(tmp_path):
    root = make_folder(tmp_path / "set", {"dog": 2, "cat": 3})
    (root / "cat" / "notes.txt").write_text("ignored")
    d = ds.load_image_folder(root, "cnv")
    assert d.classes == ["cat", "dog"] and d.name == "set"
    assert d.images.shape == (5, 32, 32, 3) and d.images.dtype == np.uint8
    assert d.labels.tolist() == [0, 0, 0, 1, 1] and d.labels.dtype == np.int64


def test_image_folder_lfc(tmp_path):
    d = ds.load_image_folder(make_folder(tmp_path / "set", {"a": 1, "b": 1}), "lfc")
    assert d.images.shape == (2, 28, 28)


@pytest.mark.parametrize("case, message", [
    ("no_subfolders", "no class sub-folders"),
    ("one_class", "at least 2"),
    ("empty_class", "holds no pictures"),
    ("broken", "broken.png"),
    ("not_a_folder", "not a folder"),
])
def test_image_folder_errors(tmp_path, case, message):
    root = tmp_path / "set"
    if case == "no_subfolders":
        root.mkdir()
        Image.new("RGB", (8, 8)).save(root / "x.png")
    elif case == "one_class":
        make_folder(root, {"a": 2})
    elif case == "empty_class":
        make_folder(root, {"a": 2})
        (root / "b").mkdir()
        (root / "b" / "readme.txt").write_text("x")
    elif case == "broken":
        make_folder(root, {"a": 1, "b": 1})
        (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    with pytest.raises(DataError, match=message):
        ds.load_image_folder(root, "cnv")


# ---------------------------------------------------------------------------- validation split


def test_validation_split():
    train, valid = ds.validation_split(1000, 0.1, seed=3)
    assert len(valid) == 100 and len(train) == 900
    assert np.array_equal(np.sort(np.concatenate([train, valid])), np.arange(1000))
    again = ds.validation_split(1000, 0.1, seed=3)
    assert np.array_equal(again[1], valid)
    assert not np.array_equal(ds.validation_split(1000, 0.1, seed=4)[1], valid)
    assert len(ds.validation_split(10, 0.0, seed=0)[1]) == 0
    assert len(ds.validation_split(10, 0.01, seed=0)[1]) == 1


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_validation_split_bad_fraction(fraction):
    with pytest.raises(BnnctlError):
        ds.validation_split(100, fraction, seed=0)

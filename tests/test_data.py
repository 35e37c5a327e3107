"""MNIST loading: real files from the data folder, md5-checked, in every supported layout."""

from __future__ import annotations

import shutil
import socket

import pytest
import torch
from torchvision.datasets import MNIST

from diffbench import MNISTNotFoundError, load_mnist
from diffbench.data import OFFICIAL_MD5, _load_uint8


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """Each test extracts into its own cache and reads the files anew."""
    monkeypatch.setenv("DIFFBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFBENCH_DATA_DIR", raising=False)
    _load_uint8.cache_clear()
    yield
    _load_uint8.cache_clear()


def test_test_split_from_the_official_files(mnist_dir):
    test = load_mnist("test", mnist_dir)
    assert test.images.shape == (10_000, 1, 28, 28) and test.images.dtype == torch.float32
    assert test.labels.shape == (10_000,) and test.labels.dtype == torch.int64
    assert float(test.images.min()) == -1.0 and float(test.images.max()) == 1.0
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_train_split_matches_the_published_facts(mnist_dir, monkeypatch):
    """Class counts and pixel statistics from the data folder's README (0..255 scale)."""
    monkeypatch.setenv("DIFFBENCH_DATA_DIR", str(mnist_dir))  # the environment variable route
    train = load_mnist("train")
    counts = torch.bincount(train.labels, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    pixels = (train.images.double() + 1) * 127.5
    assert pixels.mean().item() == pytest.approx(33.3184, abs=1e-3)
    assert pixels.std().item() == pytest.approx(78.5675, abs=1e-3)


def test_limit_keeps_the_first_examples(mnist_dir):
    first = load_mnist("test", mnist_dir, limit=5)
    assert first.images.shape == (5, 1, 28, 28)
    assert torch.equal(first.images, load_mnist("test", mnist_dir).images[:5])
    assert len(first.dataset()) == 5


def test_torchvision_layout_with_gz_files(mnist_dir, tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in OFFICIAL_MD5:
        (raw / name).symlink_to(mnist_dir / name)
    assert load_mnist("test", tmp_path / "data", limit=3).labels.tolist() == [7, 2, 1]


def test_torchvision_layout_already_extracted(mnist_dir, tmp_path):
    load_mnist("test", mnist_dir)  # extracts into the cache: a torchvision root
    root = tmp_path / "cache" / "mnist"
    _load_uint8.cache_clear()
    assert load_mnist("test", root, limit=3).labels.tolist() == [7, 2, 1]


def test_empty_folder_names_where_it_looked(tmp_path):
    with pytest.raises(MNISTNotFoundError, match=f"MNIST not found in {tmp_path}: expected"):
        load_mnist("test", tmp_path)


def test_corrupt_file_is_rejected_by_md5(mnist_dir, tmp_path):
    for name in OFFICIAL_MD5:
        shutil.copy(mnist_dir / name, tmp_path / name)
    with open(tmp_path / "t10k-labels-idx1-ubyte.gz", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(MNISTNotFoundError, match="does not have the official md5"):
        load_mnist("test", tmp_path)


def test_offline_without_a_folder_gives_one_clear_error(monkeypatch):
    """No folder given and the download fails (a closed local port stands in for no network)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{port}/"])
    with pytest.raises(MNISTNotFoundError, match="no data directory was given .* downloading it"):
        load_mnist("test")


@pytest.mark.parametrize(
    "kwargs, message",
    [({"split": "val"}, "unknown MNIST split 'val'"), ({"limit": 0}, "limit must be a positive")],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_mnist(**kwargs)

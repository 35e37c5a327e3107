"""MNIST loading: the shipped files by default, a data folder in every supported layout,
md5-checked, and one clear error where the files are missing."""

from __future__ import annotations

import gzip
import shutil
import socket

import pytest
import torch
from torchvision.datasets import MNIST

from diffbench import MNISTNotFoundError, load_mnist
from diffbench.io.data import OFFICIAL_MD5, _load_uint8, mnist_files, read_idx, shipped_dir

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """Each test has its own (empty) cache, no data folder from the environment, and reads the
    files anew."""
    monkeypatch.setenv("DIFFBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DIFFBENCH_DATA_DIR", raising=False)
    _load_uint8.cache_clear()
    yield
    _load_uint8.cache_clear()


def test_test_split_ships_and_is_the_default():
    test = load_mnist("test")
    assert test.images.shape == (10_000, 1, 28, 28) and test.images.dtype == torch.float32
    assert test.labels.shape == (10_000,) and test.labels.dtype == torch.int64
    assert float(test.images.min()) == -1.0 and float(test.images.max()) == 1.0
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # The official test split's class counts (LeCun et al.'s published table).
    counts = torch.bincount(test.labels, minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert set(mnist_files("test").values()) == {OFFICIAL_MD5[name] for name in TEST_FILES}


def test_training_subset_is_the_first_official_digits():
    """The first training labels are MNIST's well-known 5, 0, 4, 1, 9, ...; the class counts of
    the first 10,000 were read off the official file when the subset was cut."""
    train = load_mnist("train", limit=10_000)
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    counts = torch.bincount(train.labels, minlength=10).tolist()
    assert counts == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert all("train-10k" in path for path in mnist_files("train", limit=10_000))


def test_more_than_the_subset_needs_the_full_split(monkeypatch, tmp_path):
    """Asking for 10,001 training digits with no folder goes to the download (refused here)."""
    monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{closed_port()}/"])
    with pytest.raises(MNISTNotFoundError, match="full training split is not shipped"):
        load_mnist("train", limit=10_001)


def test_limit_keeps_the_first_examples(mnist_dir):
    first = load_mnist("test", mnist_dir, limit=5)
    assert first.images.shape == (5, 1, 28, 28)
    assert torch.equal(first.images, load_mnist("test", mnist_dir).images[:5])
    assert len(first.dataset()) == 5


def test_environment_variable_names_the_folder(mnist_dir, tmp_path, monkeypatch):
    for name in TEST_FILES:
        shutil.copy(mnist_dir / name, tmp_path / name)
    monkeypatch.setenv("DIFFBENCH_DATA_DIR", str(tmp_path))
    assert all(path.startswith(str(tmp_path)) for path in mnist_files("test"))
    assert load_mnist("test", limit=3).labels.tolist() == [7, 2, 1]


def test_torchvision_layout_with_gz_files(mnist_dir, tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in TEST_FILES:
        (raw / name).symlink_to(mnist_dir / name)
    assert load_mnist("test", tmp_path / "data", limit=3).labels.tolist() == [7, 2, 1]


def test_torchvision_layout_already_extracted(mnist_dir, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in TEST_FILES:
        extracted = gzip.decompress((mnist_dir / name).read_bytes())
        (raw / name.removesuffix(".gz")).write_bytes(extracted)
    assert load_mnist("test", tmp_path, limit=3).labels.tolist() == [7, 2, 1]


def test_a_full_training_split_in_the_folder_is_preferred_to_the_subset(tmp_path):
    """A folder with its own training files is read, not the shipped subset: here a stand-in
    built from the subset's digits in reverse order."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for kind in ("images-idx3", "labels-idx1"):
        data = gzip.decompress((shipped_dir() / f"train-10k-{kind}-ubyte.gz").read_bytes())
        header = 16 if kind.startswith("images") else 8
        record = 784 if kind.startswith("images") else 1
        body = data[header:]
        reversed_body = b"".join(
            body[i : i + record] for i in range(len(body) - record, -1, -record)
        )
        (raw / f"train-{kind}-ubyte").write_bytes(data[:header] + reversed_body)
    shipped = load_mnist("train", limit=10_000)
    mine = load_mnist("train", tmp_path, limit=3)
    assert torch.equal(mine.labels, shipped.labels.flip(0)[:3])
    assert torch.equal(mine.images, shipped.images.flip(0)[:3])


def test_read_idx_rejects_a_file_that_is_not_idx(tmp_path):
    bogus = tmp_path / "bogus-idx1-ubyte"
    bogus.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")  # declares 5 labels, holds 3
    with pytest.raises(MNISTNotFoundError, match="not an IDX file"):
        read_idx(bogus)


def test_empty_folder_names_where_it_looked(tmp_path):
    with pytest.raises(MNISTNotFoundError, match=f"MNIST not found in {tmp_path}: expected"):
        load_mnist("test", tmp_path)


def test_corrupt_file_is_rejected_by_md5(mnist_dir, tmp_path):
    for name in TEST_FILES:
        shutil.copy(mnist_dir / name, tmp_path / name)
    with open(tmp_path / "t10k-labels-idx1-ubyte.gz", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(MNISTNotFoundError, match="does not have the official md5"):
        load_mnist("test", tmp_path)


def closed_port() -> int:
    """A local TCP port nothing listens on (a stand-in for no network)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "kwargs, message",
    [({"split": "val"}, "unknown MNIST split 'val'"), ({"limit": 0}, "limit must be a positive")],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_mnist(**kwargs)

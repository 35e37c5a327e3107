"""MNIST (LeCun et al. 1998) as [-1, 1] tensors, read from the official IDX files.

Where the files come from, first match wins:

1. ``data_dir`` (the CLI's ``--data-dir``), else the ``DIFFBENCH_DATA_DIR`` environment
   variable: a folder holding the official ``.gz`` files (flat, as the MNIST site ships them)
   or torchvision's layout (``<dir>/MNIST/raw/``, compressed or extracted).
2. Neither given: what ships in ``fixtures/mnist/``: the official test split, and the first
   10,000 official training digits (``train-10k-*``; the same bytes as the full split's first
   10,000 records, see ``fixtures/mnist/README.md``). A folder given in 1. may hold that subset
   too. ``load_mnist("train", limit=n)`` reads it whenever ``n <= 10,000`` and the folder has no
   full training split: the digits are identical.
3. The full training split, when neither holds it: torchvision downloads it into the user cache
   (``DIFFBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/diffbench``, else ``~/.cache/diffbench``).

Every ``.gz`` file is md5-checked before it is read. A folder without the files a split needs,
or an offline machine with nothing cached, gives one :class:`MNISTNotFoundError` saying where
it looked and how to fix it.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import TensorDataset
from torchvision.datasets import MNIST
from torchvision.datasets.utils import check_integrity

from diffbench.core.choices import (
    MAX_SCORED_DIGITS as MAX_SCORED_DIGITS,  # importable from here too
)
from diffbench.core.errors import InputError, MissingFileError
from diffbench.core.resources import mnist_dir

DATA_DIR_ENV = "DIFFBENCH_DATA_DIR"
CACHE_DIR_ENV = "DIFFBENCH_CACHE_DIR"
SPLITS = ("train", "test")


def shipped_dir() -> Path:
    """The MNIST files that ship with diffbench (test split, training subset), or a folder
    that does not exist when none ship with this install (then the test split downloads)."""
    try:
        return mnist_dir()
    except InputError:
        return Path(__file__).resolve().parents[2] / "fixtures" / "mnist"

OFFICIAL_MD5 = dict(MNIST.resources)
"""File name -> md5 of the four official MNIST files."""
SUBSET_MD5 = {
    "train-10k-images-idx3-ubyte.gz": "5eed659afb5e1b375a6445caa2ea25ba",
    "train-10k-labels-idx1-ubyte.gz": "fa5954be76dca5f1824dc4df3b91171c",
}
"""The shipped training subset: the first 10,000 records of the official training files."""
SUBSET_SIZE = 10_000
KNOWN_MD5 = {**OFFICIAL_MD5, **SUBSET_MD5}

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    "train-subset": ("train-10k-images-idx3-ubyte", "train-10k-labels-idx1-ubyte"),
}


class MNISTNotFoundError(MissingFileError):
    """MNIST is neither in the given folder nor downloadable."""


class MNISTTensors(NamedTuple):
    """A split's images and labels, in the order of the official files."""

    images: Tensor  # [N, 1, 28, 28] float32 in [-1, 1]
    labels: Tensor  # [N] int64 in 0..9

    def dataset(self) -> TensorDataset:
        return TensorDataset(self.images, self.labels)


def cache_dir() -> Path:
    """Where downloads go."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diffbench"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The explicit folder, else ``$DIFFBENCH_DATA_DIR``, else None (shipped files, download)."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    return Path(chosen).expanduser() if chosen is not None else None


def load_mnist(
    split: str = "train", data_dir: str | os.PathLike | None = None, limit: int | None = None
) -> MNISTTensors:
    """Images as float32 [N, 1, 28, 28] in [-1, 1] and labels as int64 [N].

    ``limit`` keeps the first ``limit`` examples (in the official order).
    """
    _check_arguments(split, limit)
    pixels, labels = _load_uint8(*_source(split, resolve_data_dir(data_dir), limit))
    pixels, labels = pixels[:limit], labels[:limit]
    images = pixels.unsqueeze(1).to(torch.float32).div_(127.5).sub_(1.0)
    return MNISTTensors(images, labels.clone())


def mnist_files(
    split: str, data_dir: str | os.PathLike | None = None, limit: int | None = None
) -> dict[str, str]:
    """The files ``load_mnist`` reads for these arguments: path -> md5 (for provenance)."""
    _check_arguments(split, limit)
    files = _find(*_source(split, resolve_data_dir(data_dir), limit))
    return {str(path): KNOWN_MD5.get(path.name, "extracted, unchecked") for path in files}


def read_idx(path: Path) -> Tensor:
    """An IDX file (gzip-compressed or not) as a uint8 tensor of its declared shape (LeCun's
    format: magic 0x0000080N for unsigned bytes in N dimensions, then N big-endian sizes)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if zero != 0 or dtype != 0x08 or len(body) != torch.Size(shape).numel():
        raise MNISTNotFoundError(f"{path} is not an IDX file of unsigned bytes: MNIST is corrupt")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(*shape)


def _check_arguments(split: str, limit: int | None) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown MNIST split {split!r}; allowed: {', '.join(SPLITS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive integer or None, got {limit!r}")


def _source(split: str, data_dir: Path | None, limit: int | None) -> tuple[str, Path]:
    """(file set, folder) to read: the given folder or the shipped one, the training subset
    when it holds every digit asked for, else the full training split (downloaded if needed)."""
    folder = data_dir if data_dir is not None else shipped_dir()
    if split == "train" and _present(folder, "train") is None:
        if limit is not None and limit <= SUBSET_SIZE and _present(folder, "train-subset"):
            return "train-subset", folder
        if data_dir is None:
            return "train", _download_root()
    if data_dir is None and _present(folder, split) is None:  # an install without fixtures/
        return split, _download_root()
    return split, folder


@functools.lru_cache(maxsize=6)
def _load_uint8(files: str, folder: Path) -> tuple[Tensor, Tensor]:
    images, labels = (read_idx(path) for path in _find(files, folder))
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise MNISTNotFoundError(f"{folder}: images {tuple(images.shape)} and labels "
                                 f"{tuple(labels.shape)} do not match: MNIST is corrupt")
    return images, labels.long()


def _present(folder: Path, files: str) -> Path | None:
    """The folder (flat, ``MNIST/raw`` or ``raw``) holding both files of a set, if any."""
    for place in (folder, folder / "MNIST" / "raw", folder / "raw"):
        if all((place / f"{n}.gz").is_file() or (place / n).is_file() for n in _FILES[files]):
            return place
    return None


def _find(files: str, folder: Path) -> list[Path]:
    """The two files of a set in ``folder``, each ``.gz`` md5-checked."""
    place = _present(folder, files)
    if place is None:
        wanted = ", ".join(f"{name}.gz" for name in _FILES[files])
        raise MNISTNotFoundError(
            f"MNIST not found in {folder}: expected {wanted} in it (or in its MNIST/raw/ "
            f"folder, torchvision's layout). Fix --data-dir or ${DATA_DIR_ENV}, or unset both "
            f"to use the shipped test split and training subset (the full training split is "
            f"downloaded into {cache_dir()})."
        )
    paths = []
    for name in _FILES[files]:
        path = place / f"{name}.gz"
        if path.is_file():
            if not check_integrity(str(path), KNOWN_MD5[path.name]):
                raise MNISTNotFoundError(
                    f"{path} does not have the official md5 {KNOWN_MD5[path.name]}: the file "
                    f"is corrupt or not MNIST. Replace it with the official file."
                )
        else:
            path = place / name  # extracted by torchvision (its download keeps the .gz too)
        paths.append(path)
    return paths


def _download_root() -> Path:
    root = cache_dir()
    if _present(root, "train") is not None:
        return root
    try:
        MNIST(str(root), train=True, download=True)
    except Exception as error:  # torchvision raises RuntimeError/URLError/OSError offline
        raise MNISTNotFoundError(
            f"MNIST not found: the full training split is not shipped, no data directory was "
            f"given (--data-dir or ${DATA_DIR_ENV}) and downloading it into {root} failed "
            f"({type(error).__name__}: {error}). Point --data-dir or ${DATA_DIR_ENV} at a "
            f"folder holding {', '.join(OFFICIAL_MD5)}, or train on at most {SUBSET_SIZE:,} "
            f"digits (train_images), which ship."
        ) from error
    return root

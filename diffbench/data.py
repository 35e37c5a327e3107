"""MNIST (LeCun et al. 1998) as [-1, 1] tensors, read through torchvision.

Where the files come from, first match wins:

1. ``data_dir`` (the CLI's ``--data-dir``), else the ``DIFFBENCH_DATA_DIR`` environment
   variable: a folder holding the four official ``.gz`` files (flat, as the MNIST site ships
   them) or torchvision's layout (``<dir>/MNIST/raw/``, extracted or not). Every ``.gz`` is
   md5-checked against the official sums; extracted copies go to the user cache.
2. Neither given: torchvision downloads into the user cache (``DIFFBENCH_CACHE_DIR``, else
   ``$XDG_CACHE_HOME/diffbench``, else ``~/.cache/diffbench``).

A folder that holds none of it, or an offline machine with nothing cached, gives one
:class:`MNISTNotFoundError` saying where it looked and how to fix it.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import TensorDataset
from torchvision.datasets import MNIST
from torchvision.datasets.utils import check_integrity

DATA_DIR_ENV = "DIFFBENCH_DATA_DIR"
CACHE_DIR_ENV = "DIFFBENCH_CACHE_DIR"
SPLITS = ("train", "test")
OFFICIAL_MD5 = dict(MNIST.resources)
"""File name -> md5 of the four official MNIST files."""


class MNISTNotFoundError(FileNotFoundError):
    """MNIST is neither in the given folder nor downloadable."""


class MNISTTensors(NamedTuple):
    images: Tensor  # [N, 1, 28, 28] float32 in [-1, 1]
    labels: Tensor  # [N] int64 in 0..9

    def dataset(self) -> TensorDataset:
        return TensorDataset(self.images, self.labels)


def cache_dir() -> Path:
    """Where downloads and extracted copies go."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diffbench"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The explicit folder, else ``$DIFFBENCH_DATA_DIR``, else None (download)."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    return Path(chosen).expanduser() if chosen is not None else None


def load_mnist(
    split: str = "train", data_dir: str | os.PathLike | None = None, limit: int | None = None
) -> MNISTTensors:
    """Images as float32 [N, 1, 28, 28] in [-1, 1] and labels as int64 [N].

    ``limit`` keeps the first ``limit`` examples (in the official order).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; allowed: {', '.join(SPLITS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    pixels, labels = _load_uint8(split, resolve_data_dir(data_dir))
    pixels, labels = pixels[:limit], labels[:limit]
    images = pixels.unsqueeze(1).to(torch.float32).div_(127.5).sub_(1.0)
    return MNISTTensors(images, labels.clone())


def dataset_md5s() -> dict[str, str]:
    """The md5 of every MNIST file diffbench reads (recorded in checkpoint metadata)."""
    return dict(OFFICIAL_MD5)


@functools.lru_cache(maxsize=4)
def _load_uint8(split: str, data_dir: Path | None) -> tuple[Tensor, Tensor]:
    root = _prepare_root(data_dir) if data_dir is not None else _download_root()
    mnist = MNIST(str(root), train=split == "train", download=False)
    return mnist.data, mnist.targets


def _download_root() -> Path:
    root = cache_dir()
    try:
        MNIST(str(root), train=True, download=True)
    except Exception as error:  # torchvision raises RuntimeError/URLError/OSError offline
        raise MNISTNotFoundError(
            f"MNIST not found: no data directory was given (--data-dir or ${DATA_DIR_ENV}) and "
            f"downloading it into {root} failed ({type(error).__name__}: {error}). Point "
            f"--data-dir or ${DATA_DIR_ENV} at a folder holding {', '.join(OFFICIAL_MD5)}."
        ) from error
    return root


def _prepare_root(data_dir: Path) -> Path:
    """A torchvision root with ``MNIST/raw/`` extracted files for ``data_dir``'s contents."""
    if _has_extracted(data_dir / "MNIST" / "raw"):
        return data_dir
    for folder in (data_dir, data_dir / "MNIST" / "raw", data_dir / "raw"):
        if all((folder / name).is_file() for name in OFFICIAL_MD5):
            return _extract_verified(folder)
    raise MNISTNotFoundError(
        f"MNIST not found in {data_dir}: expected the four files {', '.join(OFFICIAL_MD5)} "
        f"in it (or in its MNIST/raw/ folder, torchvision's layout). Fix --data-dir or "
        f"${DATA_DIR_ENV}, or unset both to download into {cache_dir()}."
    )


def _has_extracted(raw: Path) -> bool:
    return all((raw / name.removesuffix(".gz")).is_file() for name in OFFICIAL_MD5)


def _extract_verified(folder: Path) -> Path:
    """md5-check the four ``.gz`` files in ``folder`` and extract them into the cache."""
    for name, md5 in OFFICIAL_MD5.items():
        if not check_integrity(str(folder / name), md5):
            raise MNISTNotFoundError(
                f"{folder / name} does not have the official md5 {md5}: the file is corrupt or "
                f"not MNIST. Replace it with the official file."
            )
    root = cache_dir() / "mnist"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in OFFICIAL_MD5:
        target = raw / name.removesuffix(".gz")
        if target.is_file():
            continue
        # Extract to a temporary file and rename, so concurrent processes (DDP ranks) never
        # read a half-written file.
        with (
            gzip.open(folder / name, "rb") as source,
            tempfile.NamedTemporaryFile(dir=raw, delete=False) as tmp,
        ):
            shutil.copyfileobj(source, tmp)
        os.replace(tmp.name, target)
    return root

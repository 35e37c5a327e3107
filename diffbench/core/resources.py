"""Where the shipped configs, checkpoints and MNIST files are: one root, found once.

The root holds ``configs/`` and ``fixtures/`` (``checkpoints/``, ``mnist/``). In order:

1. ``$DIFFBENCH_ROOT``, when set (a checkout or any folder laid out the same way);
2. the checkout this package was imported from (an editable install, or running from a clone);
3. ``<prefix>/share/diffbench``, where a wheel installs them (``pyproject.toml``'s data files),
   so ``pip install .`` runs ``diffbench compare`` from any folder.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from diffbench.core.errors import InputError

ROOT_ENV = "DIFFBENCH_ROOT"


def _has_resources(folder: Path) -> bool:
    return (folder / "configs" / "compare.yaml").is_file()


def root() -> Path:
    """The folder holding ``configs/`` and ``fixtures/`` (see the module docstring)."""
    if os.environ.get(ROOT_ENV):
        folder = Path(os.environ[ROOT_ENV]).expanduser()
        if not _has_resources(folder):
            raise InputError(f"${ROOT_ENV}={folder} holds no configs/compare.yaml")
        return folder
    checkout = Path(__file__).resolve().parents[2]  # diffbench/core/ -> the checkout
    installed = [Path(sysconfig.get_path("data")) / "share" / "diffbench",
                 Path(sys.prefix) / "share" / "diffbench"]
    for folder in (checkout, *installed):
        if _has_resources(folder):
            return folder
    raise InputError(f"cannot find diffbench's configs and fixtures (looked in {checkout} and "
                     f"{installed[0]}); set ${ROOT_ENV} to a checkout of diffbench")


def configs_dir() -> Path:
    return root() / "configs"


def checkpoints_dir() -> Path:
    """The shipped trained checkpoints (``fixtures/checkpoints``)."""
    return root() / "fixtures" / "checkpoints"


def mnist_dir() -> Path:
    """The shipped MNIST files: the test split and the first 10,000 training digits."""
    return root() / "fixtures" / "mnist"

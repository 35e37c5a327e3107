"""Shared test fixtures: the MNIST folder and hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder with the official MNIST files: $DIFFBENCH_DATA_DIR, else ../shared/data/mnist.

    CI sets DIFFBENCH_DATA_DIR; a test that needs MNIST is skipped (with the reason) only where
    neither exists.
    """
    candidates = [os.environ.get("DIFFBENCH_DATA_DIR"), REPO.parent / "shared" / "data" / "mnist"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "t10k-images-idx3-ubyte.gz").is_file():
            return Path(candidate).resolve()
    pytest.skip("no MNIST folder: set DIFFBENCH_DATA_DIR to the four official .gz files")

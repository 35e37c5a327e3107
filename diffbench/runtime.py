"""Runtime choices every job shares, importable without importing training: the devices, the
seed bounds, and a clock that waits for the device.

Imports nothing from diffbench, so every layer may use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

DEVICES = ("auto", "cpu", "cuda")
"""What ``--device`` and the configs' ``device`` accept."""
MAX_SEED = 2**32 - 1
"""Seeds lie in [0, MAX_SEED]."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is a ValueError."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; allowed: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for but no CUDA device is available; allowed here: cpu, auto"
        )
    return torch.device(name)


def synchronize(device: str | torch.device) -> None:
    """Wait until the device has finished its queued work (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: str | torch.device) -> tuple[float, Any]:
    """(wall seconds, result) of ``fn()``, the device synchronised before the clock starts and
    before it stops."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result

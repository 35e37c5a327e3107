"""The facts of the machine a result came from: versions, CPU and GPU names, the git commit."""

from __future__ import annotations

import contextlib
import platform
import subprocess
from collections.abc import Callable
from typing import Any

import torch


def _safely(fact: Callable[[], Any]) -> Any:
    """``fact()``, or None if it raises."""
    try:
        return fact()
    except Exception:  # noqa: BLE001 - environment facts are best effort and must never raise
        return None


def _cpu_model() -> str | None:
    """The CPU model name from /proc/cpuinfo, else what `platform` knows (no hostname)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or None


def _git(*args: str) -> str | None:
    done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def environment_facts() -> dict[str, Any]:
    """Versions, CPU/GPU names and the git commit of the working directory; never raises."""
    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _safely(_cpu_model),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": _safely(lambda: torch.cuda.get_device_name(0)) if cuda else None,
        "git_commit": _safely(lambda: _git("rev-parse", "HEAD")),
        "git_dirty": bool(_safely(lambda: _git("status", "--porcelain"))),
    }

"""The facts of the machine a result came from: versions, CPU and GPU names, the git commit,
and the installed versions of the packages ``constraints.txt`` pins (the set every published
number was measured with), with whether they match it."""

from __future__ import annotations

import contextlib
import platform
import re
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from diffbench.core import resources

CONSTRAINTS_FILE = "constraints.txt"


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


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_constraints(path: Path) -> dict[str, str]:
    """The ``name==version`` lines of a constraints file, by normalised package name."""
    pinned = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, _, version = line.split("#", 1)[0].partition("==")
        if version.strip():
            pinned[_normalise(name.strip())] = version.split(";", 1)[0].strip()
    return pinned


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _dependencies() -> list[str]:
    """diffbench's own (not its extras') requirements, by name, from its installed metadata."""
    requires = _safely(lambda: metadata.requires("diffbench")) or []
    names = [re.match(r"[A-Za-z0-9._-]+", r) for r in requires if "extra ==" not in r]
    return [_normalise(m.group(0)) for m in names if m]


def _same(installed: str, pinned: str) -> bool:
    """``==`` as pip reads it: a local label (torch's ``+cpu``) does not count."""
    return installed == pinned or installed.split("+", 1)[0] == pinned


def package_facts(constraints: Path | None) -> dict[str, Any]:
    """``packages``: the installed version of each package ``constraints`` pins (None when not
    installed), read from metadata without importing any; ``constraints``: ``"matched"``, the
    list of installed packages that differ (``"torch 2.13.0 (constraints.txt: 2.14.1)"``), or a
    sentence saying the file was not found (then ``packages`` are diffbench's dependencies)."""
    if constraints is None or not constraints.is_file():
        where = constraints or f"no diffbench root (${resources.ROOT_ENV})"
        return {"packages": {name: _installed(name) for name in _dependencies()},
                "constraints": f"not found: {where}"}
    pinned = read_constraints(constraints)
    packages = {name: _installed(name) for name in pinned}
    differing = [f"{name} {packages[name]} ({constraints.name}: {version})"
                 for name, version in pinned.items()
                 if packages[name] is not None and not _same(packages[name], version)]
    return {"packages": packages, "constraints": differing or "matched"}


def constraints_file() -> Path | None:
    """The ``constraints.txt`` of the checkout or installed wheel (diffbench.core.resources)."""
    return _safely(lambda: resources.root() / CONSTRAINTS_FILE)


def environment_facts(constraints: Path | None = None) -> dict[str, Any]:
    """Versions, CPU/GPU names and the git commit of the working directory, and the
    `package_facts` of ``constraints`` (default: the shipped `constraints_file`); never raises."""
    cuda = torch.cuda.is_available()
    packages = _safely(lambda: package_facts(constraints or constraints_file()))
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
        **(packages or {"packages": None, "constraints": None}),
    }

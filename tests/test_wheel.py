"""An installed wheel runs as a user would run it: ``pip install`` of the built wheel into a
fresh virtualenv, then ``diffbench compare`` from an empty folder elsewhere, with the configs,
checkpoints and MNIST files the wheel ships (:mod:`diffbench.core.resources`)."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith("DIFFBENCH_") and k != "PYTHONPATH"}
"""No path leads back to the checkout: with the checkout on sys.path (its folder as the working
directory, or PYTHONPATH) pip would take its build metadata for an installed diffbench."""


def run(*command, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                            timeout=900, cwd=cwd, env=CLEAN_ENV, **kwargs)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]} {result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_the_wheel_runs_compare_from_an_empty_folder(tmp_path):
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", wheels, REPO, cwd=tmp_path)
    (wheel,) = wheels.glob("diffbench-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "-q", wheel, cwd=tmp_path)
    # Then the new environment borrows this one's installed dependencies (torch is 6 GB), not
    # its diffbench: a .pth path entry adds the folder without running its editable-install
    # hook, and comes after the environment's own site-packages.
    purelib = run(venv / "bin" / "python", "-c",
                  "import sysconfig; print(sysconfig.get_path('purelib'))",
                  cwd=tmp_path).stdout.strip()
    Path(purelib, "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(venv / "bin" / "python", "-c",
                "import diffbench, diffbench.core.resources as r; print(diffbench.__file__); "
                "print(r.root())", cwd=elsewhere).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and Path(where[1]) == venv / "share" / "diffbench"
    # One strength, one timed call per row: the shipped default config, quick to run.
    run(venv / "bin" / "diffbench", "compare", "--num-images", "8", "--strength", "0.3",
        "--set", "repeats=1", "--set", "warmup=0", cwd=elsewhere)
    results = json.loads((elsewhere / "results" / "results.json").read_text())
    rows = results["results"] if isinstance(results, dict) else results
    assert len(rows) >= 2
    assert (elsewhere / "results" / "i2i_comparison.png").stat().st_size > 0

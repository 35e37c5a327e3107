"""An installed wheel runs as a user would run it: ``pip install`` of the built wheel into a
fresh virtualenv, then ``diffbench compare`` from an empty folder elsewhere, with the configs,
checkpoints and MNIST files the wheel ships (:mod:`diffbench.core.resources`)."""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import zipfile
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
    check_requirements_and_data(wheel)
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
    facts = json.loads(run(venv / "bin" / "python", "-c", "import json; from diffbench.core."
                           "environment import environment_facts as f; print(json.dumps(f()))",
                           cwd=elsewhere).stdout)
    assert facts["packages"]["torch"] and not str(facts["constraints"]).startswith("not found")
    # One strength, one timed call per row: the shipped default config, quick to run.
    run(venv / "bin" / "diffbench", "compare", "--num-images", "8", "--strength", "0.3",
        "--set", "repeats=1", "--set", "warmup=0", cwd=elsewhere)
    results = json.loads((elsewhere / "results" / "results.json").read_text())
    rows = results["results"] if isinstance(results, dict) else results
    assert len(rows) >= 2
    assert (elsewhere / "results" / "i2i_comparison.png").stat().st_size > 0


def check_requirements_and_data(wheel: Path) -> None:
    """The wheel requires mlflow-skinny, the full mlflow only in its ui and dev extras, and
    ships constraints.txt beside the configs."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [line.split(":", 1)[1].strip()
                    for line in archive.read(meta).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    name = re.compile(r"[A-Za-z0-9._-]+")
    base = [name.match(r).group(0).lower() for r in requires if "extra ==" not in r]
    assert "mlflow-skinny" in base and "mlflow" not in base
    full = {re.search(r"extra == .(\w+)", r).group(1) for r in requires
            if name.match(r).group(0).lower() == "mlflow" and "extra ==" in r}
    assert full == {"ui", "dev"}
    assert any(n.endswith(".data/data/share/diffbench/constraints.txt") for n in names)

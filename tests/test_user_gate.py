"""``diffbench ab`` in a user's own repository: the cases file, and the gate run on a git copy of
the example package (examples/diffbench-example, installed as CI installs it) with a planted
slowdown and a planted fidelity loss in its sampler."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffbench.gate.cases import DIGITS
from diffbench.gate.user_cases import cases_json, load_user_cases
from diffbench.io.config_files import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "diffbench-example"
SAMPLER_FILE = Path("src") / "diffbench_example" / "sampler.py"
CASE = "img2img-pixel-clipped-ddim-10-s0.3-b1"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_cases_file_names_each_system_strength_and_batch(tmp_path):
    cases = load_user_cases(write(tmp_path / "ab.yaml", """
cases:
  - system: {space: pixel, sampler: ddim, steps: 10}
    strengths: [0.3, 0.5]
    batches: [1, 16]
  - system: {name: mine, space: latent, sampler: "diffbench.sampling.solvers:EulerSampler"}
    quick: false
"""))
    assert list(cases) == ["img2img-pixel-ddim-10-s0.3-b1", "img2img-pixel-ddim-10-s0.3-b16",
                           "img2img-pixel-ddim-10-s0.5-b1", "img2img-pixel-ddim-10-s0.5-b16",
                           "img2img-mine-s0.3-b1"]
    mine = cases["img2img-mine-s0.3-b1"]
    assert (mine.kind, mine.quick) == ("img2img", False)
    assert mine.params == {"system": {"name": "mine", "space": "latent",
                                      "sampler": "diffbench.sampling.solvers:EulerSampler"},
                           "strength": 0.3, "batch": 1}
    assert [entry["name"] for entry in json.loads(cases_json(cases))] == list(cases)


@pytest.mark.parametrize("text, message", [
    ("cases: []", r"cases: List should have at least 1 item"),
    ("cases:\n  - {system: {space: pixel, sampler: ddim}, batch: [1]}",
     r"cases.0.batch: Extra inputs are not permitted .*allowed keys: batches, quick, "
     r"strengths, system"),
    (f"cases:\n  - {{system: {{space: pixel, sampler: ddim}}, batches: [{DIGITS + 1}]}}",
     rf"cases.0.batches.0: Input should be less than or equal to {DIGITS}"),
    ("cases:\n  - {system: {space: pixel, sampler: no-such}}", r"cases.0.system.sampler"),
    ("cases:\n  - {system: {space: pixel, sampler: ddim, steps: 10}}\n"
     "  - {system: {space: pixel, sampler: ddim, steps: 10}}",
     r"two cases are named 'img2img-pixel-ddim-10-s0.3-b1'; give the systems different 'name's"),
])
def test_a_bad_cases_file_is_one_error_naming_it(tmp_path, text, message):
    path = write(tmp_path / "ab.yaml", text)
    with pytest.raises(ConfigError, match=rf"ab cases file {path}: .*{message}"):
        load_user_cases(path)


def git_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"]):
        subprocess.run(["git", *args], cwd=target, check=True)
    return target


def ab(folder: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "diffbench", "ab", "--base", "HEAD",
                           "--out", str(out), *args], cwd=folder, capture_output=True,
                          text=True, env=env, timeout=600)


def test_ab_in_a_repository_without_cases_is_one_error(tmp_path):
    write(tmp_path / "README", "a repository with no cases file\n")
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True)
    done = ab(tmp_path, tmp_path / "out")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {tmp_path} is not a checkout of diffbench and has no "
                                  f"diffbench_ab.yaml; allowed: --cases-file FILE")
    assert "Traceback" not in done.stderr


def plant(copy: Path, old: str, new: str) -> None:
    path = copy / SAMPLER_FILE
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.slow
def test_the_gate_fails_planted_regressions_in_a_users_sampler(tmp_path):
    """Unchanged code passes (bit for bit, same work); 8 extra elementwise passes per step fail
    on work counts; x0 shrunk by 10% at every step fails on fidelity."""
    from diffbench.sampling import SAMPLERS

    assert "clipped-ddim" in SAMPLERS, "pip install -e examples/diffbench-example first"
    copy = git_copy(EXAMPLE, tmp_path / "example")
    same = ab(copy, tmp_path / "same", "--cases", CASE)
    assert same.returncode == 0, same.stdout + same.stderr
    assert f"PASS      {CASE}: speed same" in same.stdout
    assert "fidelity identical (bit for bit)" in same.stdout
    result = json.loads((tmp_path / "same" / "ab.json").read_text())
    assert result["user_code"] is True
    assert result["cases_file"] == str((copy / "diffbench_ab.yaml").resolve())

    plant(copy, "        eps = (x_t - t.alpha * x0) / t.sigma\n",
          "        eps = (x_t - t.alpha * x0) / t.sigma\n"
          "        for _ in range(8):\n            eps = (eps * 2.0) / 2.0\n")
    slower = ab(copy, tmp_path / "slower", "--cases", CASE)
    assert slower.returncode == 1, slower.stdout + slower.stderr
    assert f"FAIL      {CASE}: speed slower (work slower" in slower.stdout

    subprocess.run(["git", "checkout", "-q", "."], cwd=copy, check=True)
    plant(copy, "return t.alpha_next * x0 + t.sigma_next * eps, 0.0",
          "return t.alpha_next * (0.9 * x0) + t.sigma_next * eps, 0.0")
    worse = ab(copy, tmp_path / "worse", "--cases", CASE)
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert f"FAIL      {CASE}: speed same" in worse.stdout
    assert "fidelity worse" in worse.stdout

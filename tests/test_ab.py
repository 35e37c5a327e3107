"""``diffbench ab`` for real: two git revisions, worker pairs, ab.json and ab.md;
bad input as one ``error:`` line with exit status 2; a case the base cannot run reported as not
comparable. No timing is asserted (timings belong in benches/)."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def diffbench(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, DIFFBENCH_DATA_DIR=str(REPO / "fixtures" / "mnist"))
    return subprocess.run([sys.executable, "-m", "diffbench", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600, env=env)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def two_commits(tmp_path_factory) -> Path:
    """A repository of this package with two commits: the base, whose ``diffbench.train`` does
    not export ``train_step`` yet (so its training cases cannot be built), and the head, this
    tree's code."""
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "diffbench", repo / "diffbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "configs", repo / "configs")
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    exports = repo / "diffbench" / "train" / "__init__.py"
    head_text = exports.read_text()
    exports.write_text(head_text.replace("    train_step,\n", ""))  # its import of it
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    exports.write_text(head_text)
    git(repo, "commit", "-qam", "head")
    return repo


def test_unknown_revision_is_one_error_line(tmp_path):
    result = diffbench("ab", "--base", "no-such-rev-x", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown revision 'no-such-rev-x'")
    assert "Traceback" not in result.stderr


def test_unknown_case_is_one_error_line(tmp_path):
    result = diffbench("ab", "--base", "HEAD", "--cases", "img2img-pixel-nope",
                       "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown case 'img2img-pixel-nope'; allowed: quick")


def test_dirty_base_checkout_is_one_error_line(two_commits, tmp_path):
    dirty = tmp_path / "dirty"
    git(two_commits, "worktree", "add", "-q", "--detach", str(dirty), "HEAD~1")
    (dirty / "diffbench" / "cases.py").write_text("# edited\n")
    result = diffbench("ab", "--base", str(dirty), "--out", str(tmp_path / "out"),
                       cwd=two_commits)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: base {dirty} has uncommitted changes")


def test_a_real_run_writes_every_pair_of_every_worker_pair(two_commits, tiny_checkpoints,
                                                           tmp_path):
    out = tmp_path / "ab"
    result = diffbench("ab", "--base", "HEAD~1", "--cases", "img2img-pixel-ddim-10-s0.3-b1",
                       "train-pixel-b64", "--budget-s", "12", "--seed", "7", "--processes", "3",
                       "--checkpoints", str(tiny_checkpoints), "--out", str(out),
                       cwd=two_commits)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads((out / "ab.json").read_text())
    assert report["seed"] == 7 and report["threads"] == 1 and report["processes"] == 3
    assert report["base"]["commit"] == git(two_commits, "rev-parse", "HEAD~1")
    assert report["head"]["commit"] == git(two_commits, "rev-parse", "HEAD")
    assert (result.returncode == 1) == any(e["verdict"] == "slower" for e in report["cases"])
    timed, training = report["cases"]
    assert training["case"] == "train-pixel-b64" and training["verdict"] == "not comparable"
    assert "train_step" in training["error"]["base"] and "head" not in training["error"]
    head, base = timed["head_seconds"], timed["base_seconds"]
    assert timed["processes"] == len(head) == len(base) == 3
    assert all(len(h) == len(b) == timed["rounds"] >= 3 for h, b in zip(head, base))
    assert timed["pairs"] == 3 * timed["rounds"]
    # The estimate is the geometric mean of the worker pairs' median ratios.
    per_pair = [statistics.median(math.log(x / y) for x, y in zip(h, b))
                for h, b in zip(head, base)]
    assert timed["process_ratios"] == [pytest.approx(math.exp(r)) for r in per_pair]
    assert timed["ratio"] == pytest.approx(math.exp(statistics.fmean(per_pair)))
    lo, hi = timed["ci99"]
    assert lo <= timed["ratio"] <= hi
    assert timed["verdict"] in ("slower", "faster", "same", "inconclusive")
    markdown = (out / "ab.md").read_text()
    assert "img2img-pixel-ddim-10-s0.3-b1" in markdown and "not comparable" in markdown
    assert "diffbench-ab-" not in git(two_commits, "worktree", "list")  # the base's is gone


def test_too_few_worker_pairs_is_one_error_line(tmp_path):
    result = diffbench("ab", "--base", "HEAD", "--processes", "1", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: --processes must be at least 2")

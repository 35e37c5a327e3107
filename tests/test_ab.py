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
    (dirty / "diffbench" / "gate" / "cases.py").write_text("# edited\n")
    result = diffbench("ab", "--base", str(dirty), "--out", str(tmp_path / "out"),
                       cwd=two_commits)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: base {dirty} has uncommitted changes")


def test_a_real_run_gives_every_case_both_verdicts(two_commits, tiny_checkpoints, tmp_path):
    """A counted case (batch 1), a timed case (batch 16, after the control) and a training step
    the base cannot build: ab.json holds every pair of every worker pair, the work counts of
    both versions, the fidelity of both versions' outputs, and the exit status follows them."""
    out = tmp_path / "ab"
    result = diffbench("ab", "--base", "HEAD~1", "--cases", "img2img-pixel-ddim-10-s0.3-b1",
                       "img2img-pixel-ddim-10-s0.3-b16", "train-pixel-b64", "--budget-s", "5",
                       "--seed", "7", "--pairs", "3", "--checkpoints",
                       str(tiny_checkpoints), "--out", str(out), cwd=two_commits)
    report = json.loads((out / "ab.json").read_text())
    assert report["seed"] == 7 and report["threads"] == 1 and report["processes"] == 3
    assert report["complete"] is True and report["schema"] == 3
    assert report["base"]["commit"] == git(two_commits, "rev-parse", "HEAD~1")
    assert report["head"]["commit"] == git(two_commits, "rev-parse", "HEAD")
    counted, timed, training = report["cases"]
    # The library's sampling code is the same in both commits: equal work, identical outputs.
    for entry in (counted, timed):
        assert entry["work"]["verdict"] == "same"
        assert entry["work"]["head_counts"] == entry["work"]["base_counts"]
        assert entry["work"]["head_counts"]["tensor_ops"] > 0
        assert entry["fidelity"]["verdict"] == "identical", entry["fidelity"]
        assert entry["fidelity"]["bitwise"] is True and entry["fidelity"]["digits"] == 256
    assert counted["time"] is None and counted["verdict"] == "same"  # batch 1: counted only
    assert training["verdict"] == "not comparable"
    assert "train_step" in training["error"]["base"] and "head" not in training["error"]
    assert training["fidelity"]["verdict"] == "not scored"
    assert report["control"]["case"] == "control"
    timing = timed["time"]
    head, base = timing["head_seconds"], timing["base_seconds"]
    assert timing["processes"] == len(head) == len(base) == 3
    assert all(len(h) == len(b) == timing["rounds"] >= 3 for h, b in zip(head, base))
    assert timing["pairs"] == 3 * timing["rounds"]
    # The estimate is the geometric mean of the worker pairs' median ratios.
    per_pair = [statistics.median(math.log(x / y) for x, y in zip(h, b))
                for h, b in zip(head, base)]
    assert timing["process_ratios"] == [pytest.approx(math.exp(r)) for r in per_pair]
    assert timing["ratio"] == pytest.approx(math.exp(statistics.fmean(per_pair)))
    lo, hi = timing["ci99"]
    assert lo <= timing["ratio"] <= hi
    # Exit status: the counts certify unless the timing reads slower in a run whose control,
    # the same code on both sides, read same (else the run's timing is not trusted).
    expected = 1 if timing["verdict"] == "slower" and report["control"]["verdict"] == "same" \
        else 0
    assert result.returncode == expected, result.stderr[-3000:]
    if expected:
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    markdown = (out / "ab.md").read_text()
    assert "img2img-pixel-ddim-10-s0.3-b16" in markdown and "not comparable" in markdown
    assert "diffbench-ab-" not in git(two_commits, "worktree", "list")  # the base's is gone


@pytest.mark.parametrize("budget", ["nan", "inf", "0", "-5"])
def test_a_budget_that_is_not_a_positive_number_is_one_error_line(budget, tmp_path):
    result = diffbench("ab", "--base", "HEAD", "--budget-s", budget, "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: --budget-s must be a positive number of seconds, "
                                    f"got {float(budget)!r}")


def test_a_run_where_no_case_is_comparable_gives_no_verdict(two_commits, tiny_checkpoints,
                                                            tmp_path):
    result = diffbench("ab", "--base", "HEAD~1", "--cases", "train-pixel-b64", "--pairs",
                       "2", "--checkpoints", str(tiny_checkpoints), "--out", str(tmp_path),
                       cwd=two_commits)
    assert result.returncode == 3, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: no case could be compared (the base can run none of them)")


def test_too_few_worker_pairs_is_one_error_line(tmp_path):
    result = diffbench("ab", "--base", "HEAD", "--pairs", "1", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: --pairs must be at least 2")


def test_a_crash_gives_no_verdict_not_a_regression(monkeypatch, tmp_path, capsys):
    """Exit 1 means a regression, so a crash inside the job exits 3 with one ``error:`` line
    and its traceback in a file."""
    from diffbench import cli
    from diffbench.gate import ab

    def crash(*args, **kwargs):
        raise RuntimeError("the head-3 worker died")

    monkeypatch.setattr(ab, "run_ab", crash)
    assert cli.main(["ab", "--base", "HEAD", "--out", str(tmp_path)]) == 3
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"error: no verdict: diffbench ab crashed (RuntimeError: the head-3 worker "
                     f"died); the traceback is in {tmp_path / 'crash.log'}"]
    assert "RuntimeError" in (tmp_path / "crash.log").read_text()

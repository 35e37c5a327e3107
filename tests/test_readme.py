"""The README's snippets run as written: every Python block, every shell block (the quickstart's
two commands are what `.ci/run` runs, verbatim), from the repository root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall((REPO / "README.md").read_text())
            if lang == language]


def commands(code: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in code.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_the_readme_has_its_snippets():
    assert len(blocks("python")) >= 2 and len(blocks("bash")) >= 2


def test_the_quickstart_is_what_ci_runs_verbatim():
    quickstart = blocks("bash")[0]
    ci = (REPO / ".ci" / "run").read_text()
    for command in commands(quickstart):
        assert command in ci, f"README's {command!r} is not in .ci/run"


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_snippet_runs(index):
    code = blocks("python")[index]
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MSE" in result.stdout  # each prints what it measured


@pytest.mark.parametrize("index", range(1, len(blocks("bash"))))
def test_shell_snippet_runs(index, tmp_path):
    venv_bin = str(Path(sys.executable).parent) + "/"
    for command in commands(blocks("bash")[index]):
        result = subprocess.run(command.replace(".venv/bin/", venv_bin), shell=True, cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"

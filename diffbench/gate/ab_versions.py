"""The two versions of ``diffbench ab``: git checkouts of the base and head, and the worker
processes that import each version's ``diffbench`` and speak JSON lines
(:mod:`diffbench.gate.ab_worker`)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffbench.core.errors import InputError


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise InputError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def repository_root(start: Path) -> Path:
    try:
        return Path(git(start, "rev-parse", "--show-toplevel"))
    except InputError:
        raise InputError(f"{start} is not inside a git repository; diffbench ab compares two "
                         f"revisions of one") from None


def resolve_revision(repo: Path, rev: str) -> str:
    """The commit ``rev`` names, or one error naming it."""
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except InputError:
        raise InputError(f"unknown revision {rev!r}: not a commit of {repo} (allowed: a branch, "
                         f"tag or commit, e.g. HEAD~1)") from None


def check_clean(checkout: Path) -> None:
    """A checkout given as a folder must have no uncommitted changes to tracked files, or the
    code measured would not be the commit recorded."""
    changes = git(checkout, "status", "--porcelain", "--untracked-files=no")
    if changes:
        first = changes.splitlines()[0]
        raise InputError(f"base {checkout} has uncommitted changes ({first.strip()} ...); "
                         f"allowed: a commit, or a clean checkout")


@dataclass
class Version:
    label: str  # base or head
    root: Path
    commit: str
    dirty: bool  # the working tree with uncommitted changes


@contextlib.contextmanager
def checkout(repo: Path, rev: str | None, label: str, scratch: Path) -> Iterator[Version]:
    """``rev`` in a temporary worktree (removed afterwards); None: the working tree itself; a
    folder: that checkout, which must be clean."""
    if rev is None:
        dirty = bool(git(repo, "status", "--porcelain", "--untracked-files=no"))
        yield Version(label, repo, git(repo, "rev-parse", "HEAD"), dirty)
        return
    folder = Path(rev)
    if label == "base" and folder.is_dir() and (folder / "diffbench").is_dir():
        check_clean(folder)
        yield Version(label, folder.resolve(), git(folder, "rev-parse", "HEAD"), False)
        return
    commit = resolve_revision(repo, rev)
    tree = scratch / label
    git(repo, "worktree", "add", "--detach", "--quiet", str(tree), commit)
    try:
        yield Version(label, tree, commit, False)
    finally:
        git(repo, "worktree", "remove", "--force", str(tree))


class Worker:
    """One version's worker process, spoken to in JSON lines; it serves every case of the run
    in turn. ``send`` and ``receive`` apart let several workers prepare at once."""

    def __init__(self, version: Version, name: str, args: list[str], env: dict[str, str],
                 log: Path) -> None:
        self.version, self.name = version, name
        self._log = log.open("a")
        self.process = subprocess.Popen(
            [sys.executable, *args, "--root", str(version.root)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=env, bufsize=1)

    def send(self, **request: Any) -> None:
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # it died: receive says so

    def receive(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker ({self.version.root}) died; its log: "
                               f"{self._log.name}")
        return json.loads(line)

    def ask(self, **request: Any) -> dict[str, Any]:
        self.send(**request)
        return self.receive()

    def log_tail(self, lines: int = 3) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        """Ask it to quit, without waiting (stop every worker, then close each)."""
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        if self.process.poll() is None:
            self.process.kill()
        self._log.close()

"""``diffbench ab``: two versions of the code timed side by side, interleaved, in one job.

The base revision is checked out into a temporary git worktree; the head is the working tree
(or ``--head REV``, checked out likewise). Each version runs in ``--processes`` long-lived
workers (:mod:`diffbench.ab_worker`) that import that version's ``diffbench`` and build the
cases of :mod:`diffbench.cases` (the benches' own) with the same checkpoints, the same 64 real
test digits, the same seed and the same thread count. Workers are paired, one head with one
base. For each case every worker makes the same warm-up calls; then rounds follow, each one
pair of calls from every worker pair, the pairs and the order within each drawn from a
``random.Random`` seeded with ``--seed`` (recorded), until the interval over worker pairs
decides (:mod:`diffbench.paired`) or the case's share of ``--budget-s`` is spent. A case that
decides early leaves its time to the cases after it.

Writes ``OUT/ab.json`` (one entry per case: case, verdict, ratio, ci99, pairs, both medians,
each worker pair's ratio and every pair's seconds) and ``OUT/ab.md``. Exit status: 1 when a
case is ``slower``, 2 on bad input, else 0.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffbench import cases as case_module
from diffbench import counts, paired
from diffbench.checkpoints import write_atomic_text
from diffbench.errors import InputError

WARMUP = 2  # untimed calls per case and worker before the first pair
SAMPLE_S = 0.2
"""Each timed sample is as many calls as last about this long (at least one): a single 20 ms
call on a shared 2-core machine spreads by +-20%, a sum of ten much less."""
DEFAULT_BUDGET_S = 200.0
"""Seconds of timed pairs for all cases together; starting the workers and each case's warm-up
come on top (about 3 minutes for the quick set on a 2-core machine: unchanged quick runs took
360-403 s in all)."""
EXIT_SLOWER = 1
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONDONTWRITEBYTECODE": "1"}
"""A fixed mmap threshold makes glibc map every buffer over 64 KiB afresh on each call, so each
call's tensors land on new physical pages. With glibc's default (a threshold that grows to reuse
freed buffers) a process keeps one memory layout for its life, and two processes running the
same code were measured up to 15% apart (VAE encode at batch 16), a bias that alternation cannot
cancel; with the fixed threshold the same runs read within 2% (Curtsinger & Berger, ASPLOS 2013,
"Stabilizer", make the same point about layout)."""
SCHEMA = 2  # 2: several worker pairs per case, no head-against-head control


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

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        if self.process.poll() is None:
            self.process.kill()
        self._log.close()


def select_cases(spec: list[str], known: dict[str, case_module.Case]) -> list[str]:
    """``quick``, ``all`` or case names; an unknown name is one error listing the choices."""
    if spec in (["quick"], []):
        return [name for name, case in known.items() if case.quick]
    if spec == ["all"]:
        return list(known)
    unknown = [name for name in spec if name not in known]
    if unknown:
        raise InputError(f"unknown case {unknown[0]!r}; allowed: quick, all, or case names: "
                         f"{', '.join(known)}")
    return list(dict.fromkeys(spec))


def prepare(name: str, workers: list[Worker]) -> dict[str, str]:
    """Build ``name`` in every worker at once (untimed, on any core) and warm it up; the
    error of each side that cannot build it (it is then not comparable)."""
    for worker in workers:
        worker.send(op="prepare", case=name, warmup=WARMUP)
    failed = {}
    for worker in workers:
        try:
            reply = worker.receive()
        except RuntimeError as error:  # it could not even import its diffbench
            reply = {"ok": False, "error": f"{error}: {worker.log_tail()}"}
        if not reply["ok"]:
            failed.setdefault(worker.name.split("-")[0], reply["error"])
    return failed


def measure_case(name: str, pairs: list[tuple[Worker, Worker]], budget_s: float,
                 rng: random.Random, max_rounds: int = paired.MAX_ROUNDS) -> dict[str, Any]:
    """Warm every worker up on ``name``, then rounds of pairs in random order until a
    verdict; the workers drop the case afterwards."""
    entry: dict[str, Any] = {"case": name}
    workers = [w for pair in pairs for w in pair]
    failed = prepare(name, workers)
    if failed:
        return {**entry, "verdict": "not comparable", "error": failed, "pairs": 0}
    # One more untimed call each, on the timing core, sizes a sample.
    first = [w.ask(op="time", case=name, number=1)["seconds"] for w in workers]
    number = max(1, round(SAMPLE_S / statistics.median(first)))
    head_s: list[list[float]] = [[] for _ in pairs]
    base_s: list[list[float]] = [[] for _ in pairs]
    start, found = time.perf_counter(), None  # the budget is for pairs, not for warm-up
    while found is None:
        for j in rng.sample(range(len(pairs)), len(pairs)):
            head, base = pairs[j]
            for worker in (head, base) if rng.random() < 0.5 else (base, head):
                seconds = worker.ask(op="time", case=name, number=number)["seconds"] / number
                (head_s if worker is head else base_s)[j].append(seconds)
        spent = time.perf_counter() - start
        out_of_budget = spent >= budget_s or len(head_s[0]) >= max_rounds
        found = paired.decide([paired.log_ratios(h, b) for h, b in zip(head_s, base_s)],
                              final=out_of_budget)
    for worker in workers:
        worker.ask(op="drop", case=name)
    return {**entry, "verdict": found, **paired.process_summary(head_s, base_s),
            "calls_per_sample": number, "seconds": time.perf_counter() - start,
            "head_seconds": head_s, "base_seconds": base_s}


def instruction_counts(versions: dict[str, Version], worker_args: list[str],
                       env: dict[str, str]) -> dict[str, Any]:
    """Both versions' instructions for one call of :data:`counts.COUNT_CASE`, counted at once
    (one core each; counts do not depend on the neighbour)."""
    folder = counts.scratch()
    library = counts.toggles_library(folder)
    running = {label: (counts.start_count([*worker_args, "--root", str(v.root)], library,
                                          folder / f"{label}.out", counts.COUNT_CASE, env),
                       folder / f"{label}.out")
               for label, v in versions.items()}
    totals = {label: counts.finish_count(p, out) for label, (p, out) in running.items()}
    ratio = totals["head"] / totals["base"]
    return {"case": counts.COUNT_CASE, "head": totals["head"], "base": totals["base"],
            "ratio": ratio, "limit": 1 + counts.COUNT_LIMIT,
            "verdict": "slower" if ratio > 1 + counts.COUNT_LIMIT else
            "faster" if ratio < 1 - counts.COUNT_LIMIT else "same"}


def run_ab(base: str, head: str | None, case_spec: list[str], budget_s: float, out: Path,
           threads: int = 1, seed: int | None = None, checkpoints: Path | None = None,
           with_counts: bool = False, processes: int = paired.PROCESSES) -> dict[str, Any]:
    """The whole job; returns what it writes to ``out/ab.json``."""
    repo = repository_root(Path.cwd())
    for label, rev in (("base", base), ("head", head)):  # bad revisions fail before any work
        if rev is None:
            continue
        if label == "base" and Path(rev).is_dir() and (Path(rev) / "diffbench").is_dir():
            check_clean(Path(rev))
        else:
            resolve_revision(repo, rev)
    known = case_module.all_cases()
    names = select_cases(case_spec, known)
    if budget_s <= 0:
        raise InputError(f"--budget-s must be positive, got {budget_s!r}")
    if processes < 2:
        raise InputError(f"--processes must be at least 2 (the interval is over worker "
                         f"pairs), got {processes!r}")
    if with_counts and not counts.available():
        raise InputError("--counts needs valgrind and a C compiler (Debian: apt-get install "
                         "valgrind gcc)")
    checkpoints = Path(checkpoints or repo / "fixtures" / "checkpoints").resolve()
    if not (checkpoints / "pixel.safetensors").is_file():
        raise InputError(f"no trained checkpoints in {checkpoints} (--checkpoints DIR)")
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="diffbench-ab-"))
    with checkout(repo, base, "base", scratch) as base_v, \
            checkout(repo, head, "head", scratch) as head_v:
        digits_file = scratch / "digits.pt"
        save_digits(digits_file)
        env = {**os.environ, **WORKER_ENV, "OMP_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads)}
        env.pop("PYTHONPATH", None)
        worker_args = [str(Path(__file__).with_name("ab_worker.py")),
                       "--cases-file", str(Path(case_module.__file__).resolve()),
                       "--checkpoints", str(checkpoints), "--digits", str(digits_file),
                       "--threads", str(threads)]
        pin = ["--cpu", str(max(os.sched_getaffinity(0)))]  # timed calls take turns on one core
        started = time.perf_counter()
        entries: list[dict[str, Any]] = []

        def save(complete: bool) -> dict[str, Any]:
            """ab.json and ab.md as they stand: rewritten after every case, so a killed run
            keeps what it measured (``"complete": false``)."""
            result = {
                "schema": SCHEMA, "complete": complete,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "base": {"rev": base, "commit": base_v.commit, "root": str(base_v.root)},
                "head": {"rev": head or "working tree", "commit": head_v.commit,
                         "dirty": head_v.dirty, "root": str(head_v.root)},
                "seed": seed, "threads": threads, "budget_s": budget_s,
                "processes": processes, "checkpoints": str(checkpoints), "warmup": WARMUP,
                "worker_env": WORKER_ENV,
                "thresholds": {"level": paired.LEVEL, "lower_bound": paired.LOWER_BOUND,
                               "min_effect": paired.MIN_EFFECT, "same_band": paired.SAME_BAND,
                               "min_rounds": paired.MIN_ROUNDS,
                               "max_rounds": paired.MAX_ROUNDS},
                "timing_seconds": time.perf_counter() - started,
                "cases": entries,
            }
            write_atomic_text(out / "ab.json", json.dumps(result, indent=2) + "\n")
            write_atomic_text(out / "ab.md", markdown(result))
            return result

        # All workers start at once (untimed, on any core) and serve every case in turn.
        pairs = [tuple(Worker(v, f"{v.label}-{j}", worker_args + pin, env,
                              out / f"worker-{v.label}-{j}.log") for v in (head_v, base_v))
                 for j in range(processes)]
        try:
            for worker in (w for pair in pairs for w in pair):
                worker.send(op="ping")
            for worker in (w for pair in pairs for w in pair):
                with contextlib.suppress(RuntimeError):  # one that died: its case says so
                    worker.receive()
            started = time.perf_counter()  # timing starts once every worker is up
            for i, name in enumerate(names):
                left = budget_s - sum(e.get("seconds", 0.0) for e in entries)
                entries.append(measure_case(name, pairs, max(left / (len(names) - i), 1.0),
                                            rng))
                save(complete=False)
                print(line_for(entries[-1]), flush=True)
        finally:
            for worker in (w for pair in pairs for w in pair):
                worker.close()
        result = save(complete=not with_counts)
        if with_counts:
            result["counts"] = instruction_counts({"base": base_v, "head": head_v},
                                                  worker_args, env)
            write_atomic_text(out / "ab.json", json.dumps({**result, "complete": True},
                                                          indent=2) + "\n")
            write_atomic_text(out / "ab.md", markdown(result))
    return result


def save_digits(path: Path) -> None:
    """The first :data:`diffbench.cases.DIGITS` real MNIST test digits, for every worker."""
    import torch

    from diffbench.data import load_mnist

    torch.save(load_mnist("test", os.environ.get("DIFFBENCH_DATA_DIR")).images[
        : case_module.DIGITS].clone(), path)


def line_for(entry: dict[str, Any]) -> str:
    """One terminal line: verdict, case, ratio and its interval, worker pairs and pairs."""
    if entry["verdict"] == "not comparable":
        return f"{'not comparable':<14} {entry['case']}: {entry['error']}"
    lo, hi = entry["ci99"]
    return (f"{entry['verdict']:<14} {entry['case']}: ratio {entry['ratio']:.3f} "
            f"[{lo:.3f}, {hi:.3f}] (99%), {entry['processes']} worker pairs x "
            f"{entry['rounds']} pairs, head {entry['head_median_s'] * 1e3:.1f} ms, base "
            f"{entry['base_median_s'] * 1e3:.1f} ms")


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# diffbench ab: head {result['head']['commit'][:10]}"
        f"{' + uncommitted changes' if result['head']['dirty'] else ''} against base "
        f"{result['base']['commit'][:10]}",
        "",
        f"Seed {result['seed']}, {result['threads']} thread(s), {result['processes']} worker "
        f"pairs, timing {result['timing_seconds']:.0f} s. Ratio = head / base seconds per call "
        f"(the mean over worker pairs of each pair's median log-ratio), 99% Student-t interval "
        f"over worker pairs.",
        "",
        "| case | verdict | ratio | 99% interval | worker pairs x pairs | head ms | base ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in result["cases"]:
        if e["verdict"] == "not comparable":
            lines.append(f"| {e['case']} | not comparable | | | 0 | | |")
            continue
        lo, hi = e["ci99"]
        lines.append(f"| {e['case']} | {e['verdict']} | {e['ratio']:.3f} | [{lo:.3f}, {hi:.3f}] "
                     f"| {e['processes']} x {e['rounds']} | {e['head_median_s'] * 1e3:.2f} | "
                     f"{e['base_median_s'] * 1e3:.2f} |")
    if result.get("counts"):
        c = result["counts"]
        lines += ["", f"Instructions of one call of {c['case']} (callgrind): head {c['head']:,}, "
                      f"base {c['base']:,}, ratio {c['ratio']:.5f}: {c['verdict']}."]
    return "\n".join(lines) + "\n"


def exit_status(result: dict[str, Any]) -> int:
    entries = result["cases"] + ([result["counts"]] if result.get("counts") else [])
    return EXIT_SLOWER if any(e["verdict"] == "slower" for e in entries) else 0

"""``diffbench ab``: two versions of the code compared in one job, speed and fidelity.

The base revision is checked out into a temporary git worktree; the head is the working tree
(or ``--head REV``). Each version runs in worker processes (:mod:`diffbench.ab_worker`) that
import that version's ``diffbench`` and build the cases of :mod:`diffbench.cases` (the
benches' own) with the same checkpoints, digits, seeds and thread count. Every case gets two
verdicts (``docs/regression_gate.md``):

* **speed**, from two signals: every case's work counts (:mod:`diffbench.work_count`:
  bytecode instructions, tensor operators and bytes, which do not drift and certify), and, for
  the cases whose wall time a shared machine can decide (batch 16, the VAE), interleaved timing
  over ``--processes`` worker pairs (:mod:`diffbench.paired`), after a version-independent
  control workload. The counts' ``slower`` is a regression, and so is the timing's in a run
  whose control read ``same`` (else the run's timing is reported, not trusted);
* **fidelity**, for every case with image outputs: both versions' outputs for the same
  :data:`diffbench.ab_fidelity.DIGITS` digits and seeds, compared pair by pair
  (:mod:`diffbench.ab_fidelity`).

A case passes when its speed is ``same`` or ``faster`` and its fidelity ``identical``,
``same`` or ``better``. Writes ``OUT/ab.json`` (rewritten after every step, so a killed run keeps
what it measured) and ``OUT/ab.md``; the exit statuses are in :mod:`diffbench.ab_report`.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from diffbench import ab_fidelity, ab_report, paired, work_count
from diffbench import cases as case_module
from diffbench.ab_versions import (
    Version,
    Worker,
    check_clean,
    checkout,
    repository_root,
    resolve_revision,
)
from diffbench.errors import InputError
from diffbench.files import write_atomic_text

WARMUP = 2  # untimed calls per case and worker before the first pair
SAMPLE_S = 0.2
"""Each timed sample is as many calls as last about this long (at least one), sized from
one call on the timing core after the warm-up (the warm-ups run in every worker at once): a
single 20 ms call on a shared 2-core machine spreads by +-20%, a sum of ten less."""
DEFAULT_BUDGET_S = 30.0
"""Seconds of timed pairs beyond every case's first ``paired.MIN_ROUNDS`` rounds (which are
never cut): what a case still undecided may spend on its extension."""
CONTROL = "control"
WORKER_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}
"""glibc's default allocator. A fixed ``MALLOC_MMAP_THRESHOLD_`` (each call's buffers on fresh
pages, against a process keeping one memory layout for its life: Curtsinger & Berger, ASPLOS
2013) made the calls 1.35-1.65x slower here and each call's spread within a process wider
(8-15% against 7-10%), but without it a process's layout biases its times for its life: the
control's worker pairs read 0.5-1.6x each other in one idle run and it never read ``same`` in
the calibration, where in two idle runs with the threshold it read within [0.95, 1.05]
(docs/regression_gate.md). So this timing only reports; the threshold for the timing workers
alone is the next step."""
SCHEMA = 3  # 3: speed by work counts or timing, fidelity base against head, a control


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


def timed(case: case_module.Case) -> bool:
    """Whether ``case`` is timed as well as counted: not a batch-1 image-to-image call (whose
    worker pairs spread by +-8-12% in wall time) nor a training step (about a second a call, so
    few rounds fit)."""
    return not (case.kind == "train" or (case.kind == "img2img" and case.params["batch"] == 1))


def check_inputs(budget_s: float, processes: int, threads: int) -> None:
    if not (isinstance(budget_s, (int, float)) and math.isfinite(budget_s) and budget_s > 0):
        raise InputError(f"--budget-s must be a positive number of seconds, got {budget_s!r}")
    if processes < 2:
        raise InputError(f"--processes must be at least 2 (the interval is over worker "
                         f"pairs), got {processes!r}")
    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads!r}")


def prepare(name: str, workers: list[Worker]) -> dict[str, str]:
    """Build ``name`` in every worker at once (untimed, on any core) and warm it up: each
    side's error when it cannot build it (the warm-ups' times, contended, are not used)."""
    for worker in workers:
        worker.send(op="prepare", case=name, warmup=WARMUP)
    failed: dict[str, str] = {}
    for worker in workers:
        try:
            reply = worker.receive()
        except RuntimeError as error:  # it could not even import its diffbench
            reply = {"ok": False, "error": f"{error}: {worker.log_tail()}"}
        if not reply["ok"]:
            failed.setdefault(worker.name.split("-")[0], reply["error"])
    return failed


def time_case(name: str, pairs: list[tuple[Worker, Worker]], extension_s: float,
              rng: random.Random) -> dict[str, Any]:
    """Rounds of interleaved pairs in random order: ``paired.MIN_ROUNDS`` whatever the
    budget, then more while undecided, until ``paired.MAX_ROUNDS`` or ``extension_s`` is spent
    on the extra rounds."""
    entry: dict[str, Any] = {"case": name}
    workers = [w for pair in pairs for w in pair]
    failed = prepare(name, workers)
    if failed:
        return {**entry, "verdict": "not comparable", "error": failed, "pairs": 0}
    # The warm-ups ran in every worker at once, on shared cores: one call on the timing core
    # sizes the sample instead.
    probe = pairs[0][0].ask(op="time", case=name, number=1)["seconds"]
    number = max(1, round(SAMPLE_S / probe))
    head_s: list[list[float]] = [[] for _ in pairs]
    base_s: list[list[float]] = [[] for _ in pairs]
    start, found, extension_start = time.perf_counter(), None, None
    while found is None:
        for j in rng.sample(range(len(pairs)), len(pairs)):
            head, base = pairs[j]
            for worker in (head, base) if rng.random() < 0.5 else (base, head):
                seconds = worker.ask(op="time", case=name, number=number)["seconds"] / number
                (head_s if worker is head else base_s)[j].append(seconds)
        rounds = len(head_s[0])
        if rounds == paired.MIN_ROUNDS:
            extension_start = time.perf_counter()
        spent = time.perf_counter() - (extension_start or time.perf_counter())
        final = rounds >= paired.MAX_ROUNDS or (rounds >= paired.MIN_ROUNDS
                                                and spent >= extension_s)
        found = paired.decide([paired.log_ratios(h, b) for h, b in zip(head_s, base_s)],
                              final=final)
    for worker in workers:
        worker.ask(op="drop", case=name)
    return {**entry, "verdict": found, **paired.process_summary(head_s, base_s),
            "calls_per_sample": number, "seconds": time.perf_counter() - start,
            "head_seconds": head_s, "base_seconds": base_s}


def count_entries(names: list[str], pair: tuple[Worker, Worker]) -> list[dict[str, Any]]:
    """The counted cases' speed entries: each case's work counts in both versions' first
    worker, at once (counts do not depend on the neighbour)."""
    entries = []
    for name in names:
        entry: dict[str, Any] = {"case": name}
        failed = prepare(name, list(pair))
        if failed:
            entries.append({**entry, "verdict": "not comparable", "error": failed})
            continue
        found = {w.version.label: w.ask(op="count", case=name)["counts"] for w in pair}
        for worker in pair:
            worker.ask(op="drop", case=name)
        verdict, ratios = work_count.verdict(found["head"], found["base"])
        entries.append({**entry, "verdict": verdict, "ratios": ratios,
                        "head_counts": found["head"], "base_counts": found["base"],
                        "limit": 1 + work_count.LIMIT})
    return entries


def fidelity_entries(names: list[str], known: dict[str, case_module.Case],
                     pair: tuple[Worker, Worker], scratch: Path, checkpoints: Path,
                     digits, labels) -> dict[str, dict[str, Any]]:
    """Case name -> its fidelity entry: both versions' outputs for the same ``digits`` and
    seeds (the scoring pair makes them, at once), scored here with the head's classifier.
    The VAE's cases share one entry: both score the same round trip."""
    import torch

    from diffbench.metrics import Judge

    torch.save(digits, scratch / "fidelity-digits.pt")
    found: dict[str, dict[str, Any]] = {}
    judge = None
    for name in names:
        if known[name].kind not in ("img2img", "vae"):
            found[name] = {"verdict": "not scored", "reason": "no image outputs"}
            continue
        same_outputs = next((other for other in found
                             if known[other].kind == known[name].kind == "vae"), None)
        if same_outputs is not None:
            found[name] = found[same_outputs]
            continue
        replies = {}
        for worker in pair:
            worker.send(op="outputs", case=name, digits=str(scratch / "fidelity-digits.pt"),
                        out=str(scratch / f"{worker.version.label}-{name}.pt"), chunk=64)
        for worker in pair:
            replies[worker.version.label] = worker.receive()
        failed = {label: r["error"] for label, r in replies.items() if not r["ok"]}
        if failed:
            found[name] = {"verdict": "not comparable", "error": failed}
            continue
        head, base = (torch.load(scratch / f"{label}-{name}.pt", weights_only=True)
                      for label in ("head", "base"))
        judge = judge or Judge.from_checkpoints(checkpoints)
        found[name] = ab_fidelity.compare(head, base, digits, labels, judge.correct)
    return found


def fidelity_digits(n: int):
    """The first ``n`` real MNIST test digits and their labels."""
    from diffbench.data import load_mnist

    test = load_mnist("test", os.environ.get("DIFFBENCH_DATA_DIR"))
    return test.images[:n].clone(), test.labels[:n].clone()


def check_revisions(repo: Path, base: str, head: str | None) -> None:
    """Bad revisions fail before any work."""
    for label, rev in (("base", base), ("head", head)):
        if rev is None:
            continue
        if label == "base" and Path(rev).is_dir() and (Path(rev) / "diffbench").is_dir():
            check_clean(Path(rev))
        else:
            resolve_revision(repo, rev)


def run_ab(base: str, head: str | None, case_spec: list[str], budget_s: float, out: Path,
           threads: int = 1, seed: int | None = None, checkpoints: Path | None = None,
           processes: int = paired.PROCESSES) -> dict[str, Any]:
    """The whole job; returns what it writes to ``out/ab.json``."""
    check_inputs(budget_s, processes, threads)
    repo = repository_root(Path.cwd())
    check_revisions(repo, base, head)
    known = case_module.all_cases()
    names = select_cases(case_spec, known)
    checkpoints = Path(checkpoints or repo / "fixtures" / "checkpoints").resolve()
    missing = [name for name in ("pixel.safetensors", "classifier.safetensors")
               if not (checkpoints / name).is_file()]
    if missing:
        raise InputError(f"no {missing[0]} in {checkpoints}: allowed, a folder of trained "
                         f"checkpoints with the pixel network and the classifier (--checkpoints)")
    seed = random.SystemRandom().randrange(2**32) if seed is None else seed
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="diffbench-ab-"))
    settings = {"seed": seed, "threads": threads, "budget_s": budget_s,
                "processes": processes, "checkpoints": str(checkpoints), "warmup": WARMUP,
                "worker_env": WORKER_ENV, "thresholds": ab_report.thresholds()}
    with checkout(repo, base, "base", scratch) as base_v, \
            checkout(repo, head, "head", scratch) as head_v:
        job = Job(base_v, head_v, base, head, settings, out, scratch, checkpoints)
        return job.run(names, known, random.Random(seed))


class Job:
    """One run of the gate over checked-out versions: counts, fidelity, then timing, each
    step's results saved as it ends."""

    def __init__(self, base_v: Version, head_v: Version, base: str, head: str | None,
                 settings: dict[str, Any], out: Path, scratch: Path, checkpoints: Path):
        self.versions = {"head": head_v, "base": base_v}
        self.revs = {"base": base, "head": head or "working tree"}
        self.settings, self.out, self.scratch = settings, out, scratch
        self.checkpoints = checkpoints
        self.work: list[dict[str, Any]] = []
        self.time: list[dict[str, Any]] = []
        self.fidelity: dict[str, dict[str, Any]] = {}
        self.control: dict[str, Any] | None = None
        self.started = time.perf_counter()
        self.phases: dict[str, float] = {}  # seconds since the start at which each step ended

    def phase(self, name: str) -> None:
        self.phases[name] = round(time.perf_counter() - self.started, 1)

    def worker_args(self, digits_file: Path) -> list[str]:
        threads = self.settings["threads"]
        return [str(Path(__file__).with_name("ab_worker.py")),
                "--cases-file", str(Path(case_module.__file__).resolve()),
                "--checkpoints", str(self.checkpoints), "--digits", str(digits_file),
                "--threads", str(threads)]

    def save(self, names: list[str], complete: bool) -> dict[str, Any]:
        result = {
            "schema": SCHEMA, "complete": complete,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "base": {"rev": self.revs["base"], "commit": self.versions["base"].commit,
                     "root": str(self.versions["base"].root)},
            "head": {"rev": self.revs["head"], "commit": self.versions["head"].commit,
                     "dirty": self.versions["head"].dirty,
                     "root": str(self.versions["head"].root)},
            **self.settings, "seconds": time.perf_counter() - self.started,
            "phases": self.phases,
            "control": self.control,
            "cases": ab_report.join(names, self.work, self.time, self.fidelity, self.control),
        }
        write_atomic_text(self.out / "ab.json", json.dumps(result, indent=2) + "\n")
        write_atomic_text(self.out / "ab.md", ab_report.markdown(result))
        return result

    def run(self, names: list[str], known: dict[str, case_module.Case],
            rng: random.Random) -> dict[str, Any]:
        import torch

        digits_file = self.scratch / "digits.pt"
        digits, labels = fidelity_digits(max(case_module.DIGITS, ab_fidelity.DIGITS))
        torch.save(digits[: case_module.DIGITS].clone(), digits_file)
        threads = str(self.settings["threads"])
        env = {**os.environ, **WORKER_ENV, "OMP_NUM_THREADS": threads,
               "MKL_NUM_THREADS": threads}
        env.pop("PYTHONPATH", None)
        args = self.worker_args(digits_file)
        by_time = [n for n in names if timed(known[n])]
        pin = ["--cpu", str(max(os.sched_getaffinity(0)))]  # timed calls take turns on one core
        # The scoring pair makes the outputs and counts the work while the timing pairs start
        # (and their heaps never hold the 256-digit outputs).
        scorers = tuple(Worker(v, f"{v.label}-scoring", args, env,
                               self.out / f"worker-{v.label}-scoring.log")
                        for v in self.versions.values())
        pairs = [tuple(Worker(v, f"{v.label}-{j}", args + pin, env,
                              self.out / f"worker-{v.label}-{j}.log")
                       for v in self.versions.values())
                 for j in range(self.settings["processes"])]
        everyone = [*scorers, *(w for pair in pairs for w in pair)]
        try:
            for worker in everyone:
                worker.send(op="ping")
            for worker in scorers:
                worker.receive()
            self.fidelity = fidelity_entries(names, known, scorers, self.scratch,
                                             self.checkpoints,
                                             digits[: ab_fidelity.DIGITS],
                                             labels[: ab_fidelity.DIGITS])
            self.phase("fidelity")
            self.save(names, complete=False)
            self.work = count_entries(names, scorers)
            self.phase("counts")
            self.save(names, complete=False)
            for worker in scorers:
                worker.stop()
            for worker in (w for pair in pairs for w in pair):
                worker.receive()
            self.phase("workers started")
            self.time_all(names, by_time, pairs, rng)
            self.phase("timing")
        finally:
            for worker in everyone:
                worker.stop()
            for worker in everyone:
                worker.close()
        return self.save(names, complete=True)

    def time_all(self, names: list[str], by_time: list[str], pairs: list, rng) -> None:
        """The control first (it tells whether this run's timing can be trusted), then
        the timed cases, slowest first; each case's extension gets an equal share of the
        budget still left."""
        if not by_time:
            return
        budget = self.settings["budget_s"]
        self.control = time_case(CONTROL, pairs, budget / (len(by_time) + 1), rng)
        self.save(names, complete=False)
        for i, name in enumerate(sorted(by_time, key=ab_report.cost_rank)):
            left = budget - sum(e.get("extension_s", 0.0) for e in self.time)
            entry = time_case(name, pairs, max(left, 0.0) / (len(by_time) - i), rng)
            rounds = entry.get("rounds", 0)
            entry["extension_s"] = entry.get("seconds", 0.0) * max(
                0, rounds - paired.MIN_ROUNDS) / max(rounds, 1)
            self.time.append(entry)
            self.save(names, complete=False)
            print(f"{name}: {ab_report.time_text(entry)}", flush=True)

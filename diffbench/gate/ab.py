"""``diffbench ab``: two versions of the code compared in one job, speed and fidelity.

The base revision is checked out into a temporary git worktree; the head is the working tree
(or ``--head REV``). Each version runs in worker processes (:mod:`diffbench.gate.ab_worker`) that
import that version's ``diffbench`` and build the cases of :mod:`diffbench.gate.cases` (the
benches' own) with the same checkpoints, digits, seeds and thread count. In a user's repository
the versions are the user's code, run with the installed diffbench, and the cases are the
repository's own (:mod:`diffbench.gate.user_cases`). Every case gets two
verdicts (``docs/regression_gate.md``):

* **speed**, from two signals: every case's work counts (:mod:`diffbench.gate.work_count`:
  bytecode instructions, tensor operators and bytes, which do not drift and certify), and, for
  the cases whose wall time a shared machine can decide (batch 16, the VAE), interleaved timing
  over ``--pairs`` worker pairs (:mod:`diffbench.measure.paired`), after a version-independent
  control workload. The counts' ``slower`` is a regression, and so is the timing's in a run
  whose control read ``same`` (else the run's timing is reported, not trusted);
* **fidelity**, for every case with image outputs: both versions' outputs for the same
  :data:`diffbench.gate.ab_fidelity.DIGITS` digits and seeds, compared pair by pair
  (:mod:`diffbench.gate.ab_fidelity`).

A case passes when its speed is ``same`` or ``faster`` and its fidelity ``identical``,
``same`` or ``better``. Writes ``OUT/ab.json`` (rewritten after every step, so a killed run keeps
what it measured) and ``OUT/ab.md``; the exit statuses are in :mod:`diffbench.gate.ab_report`.
"""

from __future__ import annotations

import math
import random
import tempfile
from pathlib import Path
from typing import Any

from diffbench.core.errors import InputError
from diffbench.core.resources import checkpoints_dir
from diffbench.gate import ab_report
from diffbench.gate import cases as case_module
from diffbench.gate.ab_job import WORKER_ENV, Job
from diffbench.gate.ab_measure import WARMUP
from diffbench.gate.ab_versions import check_clean, checkout, repository_root, resolve_revision
from diffbench.gate.user_cases import CASES_FILE, cases_file_in, cases_json, load_user_cases
from diffbench.measure import paired

DEFAULT_BUDGET_S = 30.0
"""Seconds of timed pairs beyond every case's first ``paired.MIN_ROUNDS`` rounds (which are
never cut): what a case still undecided may spend on its extension."""


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


def check_inputs(budget_s: float, processes: int, threads: int) -> None:
    if not (isinstance(budget_s, (int, float)) and math.isfinite(budget_s) and budget_s > 0):
        raise InputError(f"--budget-s must be a positive number of seconds, got {budget_s!r}")
    if processes < 2:
        raise InputError(f"--pairs must be at least 2 (the interval is over worker "
                         f"pairs), got {processes!r}")
    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads!r}")


def check_revisions(repo: Path, base: str, head: str | None) -> None:
    """Bad revisions fail before any work."""
    for label, rev in (("base", base), ("head", head)):
        if rev is None:
            continue
        if label == "base" and Path(rev).is_dir() and (Path(rev) / "diffbench").is_dir():
            check_clean(Path(rev))
        else:
            resolve_revision(repo, rev)


def own_checkout(repo: Path) -> bool:
    """Whether ``repo`` is a checkout of diffbench itself (its versions are diffbench's), not a
    user's repository run with the installed diffbench."""
    return (repo / "diffbench" / "gate" / "cases.py").is_file()


def repository_cases(repo: Path, cases_file: Path | None) -> tuple[dict, Path | None]:
    """The cases ``diffbench ab`` gates in ``repo`` and the file they come from: ``cases_file``,
    else the repository's ``diffbench_ab.yaml``, else (in diffbench's own checkout) the built-in
    cases."""
    cases_file = cases_file_in(repo, cases_file)
    if cases_file is not None:
        return load_user_cases(cases_file), Path(cases_file).resolve()
    if not own_checkout(repo):
        raise InputError(f"{repo} is not a checkout of diffbench and has no {CASES_FILE}; "
                         f"allowed: --cases-file FILE naming this repository's cases "
                         f"(docs/regression_gate.md)")
    return case_module.all_cases(), None


def run_ab(base: str, head: str | None, case_spec: list[str], budget_s: float, out: Path,
           threads: int = 1, seed: int | None = None, checkpoints: Path | None = None,
           processes: int = paired.PROCESSES, cases_file: Path | None = None) -> dict[str, Any]:
    """The whole job; returns what it writes to ``out/ab.json``."""
    check_inputs(budget_s, processes, threads)
    repo = repository_root(Path.cwd())
    check_revisions(repo, base, head)
    known, cases_file = repository_cases(repo, cases_file)
    names = select_cases(case_spec, known)
    shipped = repo / "fixtures" / "checkpoints"
    checkpoints = Path(checkpoints or (shipped if own_checkout(repo) else checkpoints_dir()))
    checkpoints = checkpoints.resolve()
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
                "worker_env": WORKER_ENV, "thresholds": ab_report.thresholds(),
                "cases_file": str(cases_file) if cases_file else None,
                "user_code": not own_checkout(repo)}
    with checkout(repo, base, "base", scratch) as base_v, \
            checkout(repo, head, "head", scratch) as head_v:
        job = Job(base_v, head_v, base, head, settings, out, scratch, checkpoints)
        if cases_file is not None:
            (scratch / "cases.json").write_text(cases_json(known))
        return job.run(names, known, random.Random(seed))

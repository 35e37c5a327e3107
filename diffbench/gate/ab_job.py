"""One run of ``diffbench ab`` over checked-out versions: the workers started, fidelity, work
counts, then timing, each step's results saved to ``ab.json`` and ``ab.md`` as it ends."""

from __future__ import annotations

import datetime
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from diffbench.core.files import write_atomic_text
from diffbench.gate import ab_fidelity, ab_report
from diffbench.gate import cases as case_module
from diffbench.gate.ab_measure import (
    CONTROL,
    count_entries,
    fidelity_digits,
    fidelity_entries,
    time_case,
    timed,
)
from diffbench.gate.ab_versions import Version, Worker
from diffbench.measure import paired

LOG = logging.getLogger(__name__)

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
        own_cases = (["--cases-json", str(self.scratch / "cases.json")]
                     if self.settings.get("cases_file") else [])
        return [str(Path(__file__).with_name("ab_worker.py")),
                "--cases-file", str(Path(case_module.__file__).resolve()),
                "--checkpoints", str(self.checkpoints), "--digits", str(digits_file),
                "--threads", str(threads), *own_cases,
                *(["--user-code"] if self.settings.get("user_code") else [])]

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
                 for j in range(self.settings["processes"] if by_time else 0)]
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
            LOG.info("%s: %s", name, ab_report.time_text(entry))

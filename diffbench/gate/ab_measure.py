"""The gate's measurements of one case over the worker processes: interleaved timing over
worker pairs, work counts, and both versions' outputs scored for fidelity."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from diffbench.gate import ab_fidelity, work_count
from diffbench.gate import cases as case_module
from diffbench.gate.ab_versions import Worker
from diffbench.measure import paired

WARMUP = 2  # untimed calls per case and worker before the first pair
SAMPLE_S = 0.2
"""Each timed sample is as many calls as last about this long (at least one), sized from
one call on the timing core after the warm-up (the warm-ups run in every worker at once): a
single 20 ms call on a shared 2-core machine spreads by +-20%, a sum of ten less."""
CONTROL = "control"


def timed(case: case_module.Case) -> bool:
    """Whether ``case`` is timed as well as counted: not a batch-1 image-to-image call (whose
    worker pairs spread by +-8-12% in wall time) nor a training step (about a second a call, so
    few rounds fit)."""
    return not (case.kind == "train" or (case.kind == "img2img" and case.params["batch"] == 1))


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

    from diffbench.measure.metrics import Judge

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
    from diffbench.io.data import load_mnist

    test = load_mnist("test", os.environ.get("DIFFBENCH_DATA_DIR"))
    return test.images[:n].clone(), test.labels[:n].clone()

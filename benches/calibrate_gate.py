"""Calibrate ``diffbench ab`` on this machine: false failures, runs without a verdict and
detection, from real runs and by resampling every recorded pair. The numbers behind
``docs/regression_gate.md``.

Usage::

    python benches/calibrate_gate.py run --base REV --planted REV --out DIR
    python benches/calibrate_gate.py analyse DIR

``run`` makes, interleaved over time: runs of unchanged code (``--base`` against ``--base``,
the quick cases, CI's exact job; every third with a busy neighbour, a one-thread matmul loop),
and runs of ``--planted`` against ``--base`` with a planted slowdown (the sampler step spins for
3, 5 or 10% of its own duration: ``DIFFBENCH_PLANT_STEP``) or a planted fidelity loss (each
sampler step drops 5% of its update: ``DIFFBENCH_PLANT_DROP``; every network's weights
perturbed by Gaussian noise of 5% of their mean magnitude: ``DIFFBENCH_PLANT_NOISE``), on the
cases each plant touches. ``--planted`` is a throwaway branch, never merged: the base with
``benches/calibration_plants.patch`` applied (``git worktree add -b plant/gate DIR BASE`` then
``git -C DIR am`` the patch). A folder already holding a run's ``calibration.json`` is kept, so
a stopped calibration resumes.

``analyse`` counts the real runs' verdicts and exit statuses, then estimates the per-case and
per-run rates of the timing by resampling at both levels of the experiment (Kalibera & Jones,
ISMM 2013): from one unchanged run it draws, for the control and each timed case, as many worker
pairs as it had (with replacement, from its own), then each pair's log-ratios with replacement,
as many as the procedure's last look needs, each **centred on no effect** (the case's own
estimate subtracted: the null) or centred and **shifted by ln(1 + f)** (detection), and replays
the procedure's looks (:func:`diffbench.measure.paired.sequential`). Work counts and fidelity are
deterministic: their rates are the real runs'.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from diffbench.gate import ab_report
from diffbench.measure import paired

STEP_LEVELS = (0.03, 0.05, 0.10)
SPEED_CASES = ["img2img-pixel-ddim-50-s0.3-b1", "img2img-pixel-ddim-10-s0.3-b16"]
FIDELITY_PLANTS = {"drop": ("DIFFBENCH_PLANT_DROP", 0.05), "noise": ("DIFFBENCH_PLANT_NOISE", 0.05)}
FIDELITY_CASES = ["img2img-pixel-ddim-10-s0.3-b16", "img2img-pixel-ddpm-50-s0.3-b1"]
NEIGHBOUR = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\n"
             "while True:\n    a @ a\n")


def plan(unchanged: int, per_plant: int) -> list[dict]:
    """Unchanged runs spread among the planted ones; every third unchanged run with a busy
    neighbour."""
    planted = [{"kind": "planted", "where": "step", "level": level}
               for _ in range(per_plant) for level in STEP_LEVELS]
    planted += [{"kind": "planted", "where": where, "level": level}
                for _ in range(per_plant) for where, (_, level) in FIDELITY_PLANTS.items()]
    runs, per = [], math.ceil(len(planted) / max(unchanged, 1))
    for i in range(unchanged):
        runs.append({"kind": "unchanged", "neighbour": i % 3 == 2})
        runs += planted[i * per:(i + 1) * per]
    return runs + planted[unchanged * per:]


def command_for(spec: dict, args: argparse.Namespace, folder: Path) -> tuple[list[str], dict]:
    env = dict(os.environ)
    command = [sys.executable, "-m", "diffbench", "ab", "--base", args.base, "--out",
               str(folder)]
    if spec["kind"] == "unchanged":
        return command + ["--head", args.base, "--cases", "quick"], env
    if spec["where"] == "step":
        env["DIFFBENCH_PLANT_STEP"] = str(spec["level"])
        cases = SPEED_CASES
    else:
        env[FIDELITY_PLANTS[spec["where"]][0]] = str(spec["level"])
        cases = FIDELITY_CASES
    return command + ["--head", args.planted, "--cases", *cases], env


def run(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    runs = plan(args.unchanged, args.per_plant)
    if args.only:
        runs = [r for r in runs if r.get("where", r["kind"]) in args.only.split(",")]
    for i, spec in enumerate(runs, start=args.first_index):
        name = spec["kind"] if spec["kind"] == "unchanged" else f"{spec['where']}-{spec['level']}"
        folder = args.out / f"{i:02d}-{name}"
        if (folder / "calibration.json").exists():
            continue  # a resumed calibration keeps what it measured
        command, env = command_for(spec, args, folder)
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) \
            if spec.get("neighbour") else None
        started = time.time()
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if neighbour is not None:
            neighbour.kill()
        folder.mkdir(parents=True, exist_ok=True)
        record = {**spec, "started": started, "wall_s": time.time() - started,
                  "exit": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
        (folder / "calibration.json").write_text(json.dumps(record, indent=2))
        print(f"{folder.name} exit {result.returncode} in {record['wall_s']:.0f} s", flush=True)


def load_runs(folder: Path) -> list[tuple[dict, dict]]:
    found = []
    for path in sorted(folder.glob("*/calibration.json")):
        ab = path.with_name("ab.json")
        if ab.exists():
            found.append((json.loads(path.read_text()), json.loads(ab.read_text())))
    return found


def centred_pairs(entry: dict) -> list[list[float]]:
    """Each worker pair's log-ratios with the entry's own estimate taken away: no effect."""
    pairs = [paired.log_ratios(h, b) for h, b in zip(entry["head_seconds"],
                                                    entry["base_seconds"])]
    centre = statistics.fmean(statistics.median(r) for r in pairs)
    return [[x - centre for x in r] for r in pairs]


def replay(pairs: list[list[float]], shift: float, rng: random.Random) -> str:
    """The procedure's verdict on one resampled case: as many worker pairs as it had, drawn
    from its own, each with ``paired.MAX_ROUNDS`` log-ratios drawn from its own, shifted."""
    drawn = [rng.choice(pairs) for _ in pairs]
    draw = [[rng.choice(r) + math.log1p(shift) for _ in range(paired.MAX_ROUNDS)]
            for r in drawn]
    return paired.sequential(draw, paired.MAX_ROUNDS)[0]


def status_now(ab: dict) -> int:
    """The run's exit status under this tree's rule, from what it measured."""
    cases = ab["cases"]
    joined = ab_report.join([e["case"] for e in cases],
                            [e["work"] for e in cases if e.get("work")],
                            [e["time"] for e in cases if e.get("time")],
                            {e["case"]: e["fidelity"] for e in cases}, ab.get("control"))
    return ab_report.exit_status({**ab, "cases": joined})[0]


def real_runs(runs: list[tuple[dict, dict]]) -> None:
    print("Real runs (exit statuses as the runs gave them; 'now': under this tree's rule):")
    by_kind: dict[str, Counter] = defaultdict(Counter)
    cases: dict[str, Counter] = defaultdict(Counter)
    walls: dict[str, list[float]] = defaultdict(list)
    for spec, ab in runs:
        kind = spec["kind"] if spec["kind"] == "unchanged" else \
            f"{spec['where']} +{spec['level']:.0%}"
        kind += ", busy neighbour" if spec.get("neighbour") else ""
        by_kind[kind][f"exit {spec['exit']} (now {status_now(ab)})"] += 1
        walls[kind].append(spec["wall_s"])
        for e in ab["cases"]:
            time_verdict = (e.get("time") or {}).get("verdict", "-")
            cases[kind][f"work {(e.get('work') or {}).get('verdict', '-')} / time "
                        f"{time_verdict} / fidelity {e['fidelity']['verdict']}"] += 1
        if ab.get("control"):
            cases[kind][f"control {ab['control']['verdict']}"] += 1
    for kind in sorted(by_kind):
        print(f"  {kind}: runs {dict(by_kind[kind])}, {min(walls[kind]):.0f}-"
              f"{max(walls[kind]):.0f} s")
        for verdicts, n in sorted(cases[kind].items()):
            print(f"      {n:3d} x {verdicts}")


def resampled(runs: list[tuple[dict, dict]], draws: int, rng: random.Random) -> None:
    unchanged = [ab for spec, ab in runs if spec["kind"] == "unchanged" and ab.get("control")]
    if not unchanged:
        return
    print(f"\nResampled from {len(unchanged)} unchanged runs, {draws} draws each:")
    for shift in (0.0, *STEP_LEVELS):
        per_case: dict[str, Counter] = defaultdict(Counter)
        runs_failed = runs_invalid = 0
        for _ in range(draws):
            ab = rng.choice(unchanged)
            control = replay(centred_pairs(ab["control"]), 0.0, rng)
            verdicts = {e["case"]: replay(centred_pairs(e["time"]), shift, rng)
                        for e in ab["cases"] if e.get("time") and "head_seconds" in e["time"]}
            for name, found in verdicts.items():
                per_case[name][found] += 1
            per_case["control"][control] += 1
            trusted = control == "same"
            runs_failed += trusted and "slower" in verdicts.values()
            runs_invalid += not trusted
        print(f"  true change {shift:+.0%} in every timed case: run fails {runs_failed / draws:.2%}"
              f", timing untrusted (control not same) {runs_invalid / draws:.2%}")
        for name in sorted(per_case):
            n = sum(per_case[name].values())
            print(f"      {name}: " + ", ".join(f"{k} {v / n:.1%}"
                                                 for k, v in sorted(per_case[name].items())))


def busy_windows(path: Path | None) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of other work on the machine, from lines ``start T ...`` and
    ``end T`` (what a wrapper around that work logged)."""
    windows, start = [], None
    for line in path.read_text().splitlines() if path and path.exists() else []:
        word, _, rest = line.partition(" ")
        if word == "start":
            start = float(rest.split()[0])
        elif word == "end" and start is not None:
            windows.append((start, float(rest.split()[0])))
            start = None
    return windows


def analyse(args: argparse.Namespace) -> None:
    runs = load_runs(args.folder)
    for spec, _ in runs:  # a run beside other logged work had a busy neighbour too
        end = spec["started"] + spec["wall_s"]
        if any(a < end and spec["started"] < b for a, b in busy_windows(args.neighbours)):
            spec["neighbour"] = True
    real_runs(runs)
    resampled(runs, args.resamples, random.Random(args.seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    go = commands.add_parser("run")
    go.add_argument("--base", required=True)
    go.add_argument("--planted", required=True)
    go.add_argument("--out", type=Path, required=True)
    go.add_argument("--unchanged", type=int, default=10)
    go.add_argument("--per-plant", type=int, default=3)
    go.add_argument("--only", help="only these kinds of run, e.g. drop,noise or unchanged")
    go.add_argument("--first-index", type=int, default=0,
                    help="number of the first run's folder (to add runs to a calibration)")
    look = commands.add_parser("analyse")
    look.add_argument("folder", type=Path)
    look.add_argument("--resamples", type=int, default=2000)
    look.add_argument("--seed", type=int, default=0)
    look.add_argument("--neighbours", type=Path,
                      help="a log of other work's windows ('start EPOCH ...' / 'end EPOCH')")
    args = parser.parse_args()
    (run if args.command == "run" else analyse)(args)


if __name__ == "__main__":
    main()

"""Calibrate ``diffbench ab`` on this machine: false alarms and detection, from real runs and by
resampling their pairs. The numbers behind ``docs/regression_gate.md``.

Usage::

    python benches/calibrate_gate.py run --base REV --planted REV --out DIR
    python benches/calibrate_gate.py analyse DIR

``run`` interleaves, over time: runs of unchanged code against itself (``--base`` against
``--base``, the quick cases at CI's budget; some with a busy process beside them), and runs of
``--planted`` against ``--base`` with a planted slowdown of 5, 10 and 25% in the UNet forward or
in a sampler step. ``--planted`` is a throwaway branch, never merged, whose UNet forward and
sampler loop spin for ``DIFFBENCH_PLANT_UNET`` / ``DIFFBENCH_PLANT_STEP`` times their own
duration (the snippet is in ``docs/regression_gate.md``).

``analyse`` counts verdicts per kind of run, then estimates both rates by resampling at both
levels of the experiment (Kalibera & Jones, ISMM 2013): for one measured case of the unchanged
runs, it draws as many worker pairs as the case had, with replacement, from that case's own
worker pairs (so the run's load stays the run's), then each drawn pair's log-ratios with
replacement, as many as the case's rounds; it replays the gate's stopping rule
(:func:`diffbench.paired.sequential`) on them and, for detection, adds ``ln(1 + f)`` to each
drawn log-ratio. So each resampled case keeps the process-to-process spread, the call noise and
the round count of a real run (for detection a lower bound: a case that stopped early as
``same`` had fewer rounds than a slowed one would get).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from diffbench import paired

LEVELS = (0.05, 0.10, 0.25)
UNET_CASES = ["img2img-pixel-ddim-10-s0.3-b16", "img2img-latent-ddim-50-s0.3-b16"]
STEP_CASES = ["img2img-pixel-ddim-10-s0.3-b16", "img2img-pixel-dpmsolver++-10-s0.3-b16"]
"""The planted runs' cases: two quick cases each plant touches (the batch-1 cases spread too
widely between processes to decide a 10% change in a case's share: docs/regression_gate.md)."""
CI_BUDGET_S = 200.0  # diffbench ab's default budget: what .ci/run gives the quick set
CASE_BUDGET_S = 25.0  # a quick case's share of it
NEIGHBOUR = ("import torch\ntorch.set_num_threads({threads})\na = torch.randn(512, 512)\n"
             "while True:\n    a @ a\n")


def plan(false_alarm_runs: int, runs_per_level: int, where: tuple[str, ...] = ("unet", "step"),
         levels: tuple[float, ...] = LEVELS) -> list[dict]:
    """Unchanged runs spread among the planted ones; every third unchanged run, and the last,
    with a busy neighbour (one torch thread; two for the last)."""
    planted = [{"kind": "planted", "where": place, "level": level}
               for _ in range(runs_per_level) for level in levels for place in where]
    if false_alarm_runs == 0:
        return planted
    runs, per = [], math.ceil(len(planted) / false_alarm_runs)
    for i in range(false_alarm_runs):
        neighbour = 2 if i == false_alarm_runs - 1 else 1 if i % 3 == 2 else 0
        runs.append({"kind": "unchanged", "neighbour": neighbour})
        runs += planted[i * per:(i + 1) * per]
    return runs


def run(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    levels = tuple(float(level) for level in args.levels.split(","))
    runs = plan(args.false_alarm_runs, args.runs_per_level, tuple(args.where.split(",")), levels)
    for i, spec in enumerate(runs, start=args.first_index):
        folder = args.out / f"{i:02d}-{spec['kind']}"
        if (folder / "ab.json").exists():
            continue  # a resumed calibration keeps what it measured
        env = dict(os.environ)
        command = [sys.executable, "-m", "diffbench", "ab", "--base", args.base, "--out",
                   str(folder)]
        if spec["kind"] == "unchanged":
            command += ["--head", args.base, "--cases", "quick", "--budget-s", str(CI_BUDGET_S)]
        else:
            variable = "DIFFBENCH_PLANT_UNET" if spec["where"] == "unet" else "DIFFBENCH_PLANT_STEP"
            env[variable] = str(spec["level"])
            cases = UNET_CASES if spec["where"] == "unet" else STEP_CASES
            command += ["--head", args.planted, "--cases", *cases,
                        "--budget-s", str(CASE_BUDGET_S * len(cases))]
        neighbour = None
        if spec.get("neighbour"):
            code = NEIGHBOUR.format(threads=spec["neighbour"])
            neighbour = subprocess.Popen([sys.executable, "-c", code])
        started = time.time()
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if neighbour is not None:
            neighbour.kill()
        folder.mkdir(parents=True, exist_ok=True)
        record = {**spec, "started": started, "wall_s": time.time() - started,
                  "exit": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
        (folder / "calibration.json").write_text(json.dumps(record, indent=2))
        print(f"{folder.name} {spec} exit {result.returncode} in {record['wall_s']:.0f} s",
              flush=True)
        print(result.stdout, flush=True)


def load_runs(folder: Path) -> list[tuple[dict, dict]]:
    found = []
    for path in sorted(folder.glob("*/calibration.json")):
        ab = path.with_name("ab.json")
        if ab.exists():
            found.append((json.loads(path.read_text()), json.loads(ab.read_text())))
    return found


def busy_windows(path: Path | None) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of other work on the machine, from lines ``start T ...`` and
    ``end T`` (what a wrapper around that work logged)."""
    if path is None or not path.exists():
        return []
    windows, start = [], None
    for line in path.read_text().splitlines():
        word, _, rest = line.partition(" ")
        if word == "start":
            start = float(rest.split()[0])
        elif word == "end" and start is not None:
            windows.append((start, float(rest.split()[0])))
            start = None
    return windows


def analyse(args: argparse.Namespace) -> None:
    runs = load_runs(args.folder)
    windows = busy_windows(args.neighbours)
    for spec, _ in runs:  # a run beside other logged work had a busy neighbour too
        end = spec["started"] + spec["wall_s"]
        if any(a < end and spec["started"] < b for a, b in windows):
            spec["neighbour"] = spec.get("neighbour") or "other work"
    verdicts: dict[str, Counter] = defaultdict(Counter)
    null_cases: list[dict] = []  # the unchanged runs' measured cases
    walls = []
    for spec, ab in runs:
        for entry in ab["cases"]:
            if entry["verdict"] == "not comparable":
                continue
            if spec["kind"] == "unchanged":
                key = "unchanged"
                null_cases.append(entry)
            else:
                key = f"planted {spec['where']} +{spec['level']:.0%}"
            if spec.get("neighbour"):
                key += ", busy neighbour"
            verdicts[key][entry["verdict"]] += 1
            verdicts[key.split(",")[0] + " (all)"][entry["verdict"]] += 1
        if spec["kind"] == "unchanged":
            walls.append(spec["wall_s"])
            verdicts["unchanged runs"]["exit " + str(spec["exit"])] += 1
        else:
            caught = any(e["verdict"] == "slower" for e in ab["cases"])
            verdicts[f"planted runs {spec['where']} +{spec['level']:.0%}"][
                "caught" if caught else "missed"] += 1
    print("Real runs (case-level verdicts; planted runs: caught when any case is slower):")
    for key in sorted(verdicts):
        print(f"  {key}: {dict(verdicts[key])}")
    if walls:
        print(f"  unchanged quick runs took {min(walls):.0f}-{max(walls):.0f} s")
    rng = random.Random(args.seed)
    print(f"\nResampling {args.resamples} cases at both levels from {len(null_cases)} measured "
          f"unchanged cases ({sum(c['processes'] for c in null_cases)} worker pairs):")
    by_case: dict[str, list[dict]] = defaultdict(list)
    for case in null_cases:
        by_case[case["case"]].append(case)
    for shift in (0.0, *LEVELS):
        tally: Counter = Counter()
        per_case: dict[str, Counter] = defaultdict(Counter)
        for _ in range(args.resamples):
            case = rng.choice(null_cases)
            found = replay(case, shift, rng)
            tally[found] += 1
        for name, cases in by_case.items():  # each case alone, as often as the whole
            for _ in range(args.resamples // 4):
                per_case[name][replay(rng.choice(cases), shift, rng)] += 1
        shares = {k: f"{v / args.resamples:.1%}" for k, v in sorted(tally.items())}
        print(f"  true slowdown {shift:.0%}: {shares}")
        for name in sorted(per_case):
            n = sum(per_case[name].values())
            print(f"    {name}: slower {per_case[name]['slower'] / n:.1%}, "
                  f"faster {per_case[name]['faster'] / n:.1%}, "
                  f"same {per_case[name]['same'] / n:.1%}")


def replay(case: dict, shift: float, rng: random.Random) -> str:
    """The gate's verdict on one resampled case: as many worker pairs as ``case`` had, drawn
    from its own, each with ``case``'s rounds of log-ratios drawn from its own, shifted by
    ``ln(1 + shift)``."""
    rounds = case["rounds"]
    pairs = [paired.log_ratios(h, b) for h, b in zip(case["head_seconds"], case["base_seconds"])]
    drawn = [rng.choice(pairs) for _ in range(case["processes"])]
    draw = [[rng.choice(ratios) + math.log1p(shift) for _ in range(rounds)] for ratios in drawn]
    return paired.sequential(draw, rounds)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    go = commands.add_parser("run")
    go.add_argument("--base", required=True)
    go.add_argument("--planted", required=True)
    go.add_argument("--out", type=Path, required=True)
    go.add_argument("--false-alarm-runs", type=int, default=10)
    go.add_argument("--runs-per-level", type=int, default=5)
    go.add_argument("--where", default="unet,step", help="where to plant: unet, step or both")
    go.add_argument("--levels", default=",".join(f"{level:g}" for level in LEVELS),
                    help="planted slowdowns, e.g. 0.05,0.1,0.25")
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

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

``analyse`` counts verdicts per kind of run, then estimates both rates by resampling: it draws
sequences of pairs with replacement from the pooled pairs of the unchanged runs, replays the
gate's stopping rule (:func:`diffbench.paired.sequential`) on them, and, for detection, adds
``ln(1 + f)`` to each drawn log-ratio. Each resampled case keeps its own noise and the number of
pairs its budget bought in the real run.
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
UNET_CASES = ["img2img-pixel-ddim-50-s0.3-b1", "img2img-latent-ddim-50-s0.3-b16"]
STEP_CASES = ["img2img-pixel-ddim-50-s0.3-b1", "img2img-pixel-dpmsolver++-10-s0.3-b16"]
CI_BUDGET_S = 240.0  # .ci/run's budget for the quick set and the control
CASE_BUDGET_S = 25.0  # about a case's share of it
NEIGHBOUR = ("import torch\ntorch.set_num_threads({threads})\na = torch.randn(512, 512)\n"
             "while True:\n    a @ a\n")


def plan(false_alarm_runs: int, runs_per_level: int) -> list[dict]:
    """Unchanged runs spread among the planted ones; every third unchanged run, and the last,
    with a busy neighbour (one torch thread; two for the last)."""
    planted = [{"kind": "planted", "where": where, "level": level}
               for _ in range(runs_per_level) for level in LEVELS for where in ("unet", "step")]
    runs, per = [], math.ceil(len(planted) / false_alarm_runs)
    for i in range(false_alarm_runs):
        neighbour = 2 if i == false_alarm_runs - 1 else 1 if i % 3 == 2 else 0
        runs.append({"kind": "unchanged", "neighbour": neighbour})
        runs += planted[i * per:(i + 1) * per]
    return runs


def run(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    for i, spec in enumerate(plan(args.false_alarm_runs, args.runs_per_level)):
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
            command += ["--head", args.planted, "--no-control", "--cases", *cases,
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
    null_pairs: list[list[float]] = []
    walls = []
    for spec, ab in runs:
        entries = ab["cases"] + ([ab["control"]] if ab.get("control") else [])
        for entry in entries:
            if entry["verdict"] == "not comparable":
                continue
            ratios = paired.log_ratios(entry["head_seconds"], entry["base_seconds"])
            if spec["kind"] == "unchanged":
                key = "unchanged (control)" if entry.get("control") else "unchanged"
                null_pairs.append(ratios)
            else:
                key = f"planted {spec['where']} +{spec['level']:.0%}"
            if spec.get("neighbour"):
                key += ", busy neighbour"
            verdicts[key][entry["verdict"]] += 1
            verdicts[key.split(",")[0] + " (all)"][entry["verdict"]] += 1
        if spec["kind"] == "unchanged":
            walls.append(spec["wall_s"])
            verdicts["unchanged runs"]["invalid" if not ab["valid"] else "valid"] += 1
            verdicts["unchanged runs"]["exit " + str(spec["exit"])] += 1
    print("Real runs (case-level verdicts):")
    for key in sorted(verdicts):
        print(f"  {key}: {dict(verdicts[key])}")
    if walls:
        print(f"  unchanged quick runs took {min(walls):.0f}-{max(walls):.0f} s")
    rng = random.Random(args.seed)
    pooled = [r for seq in null_pairs for r in seq]
    print(f"\nResampling {args.resamples} sequences from {len(pooled)} pooled null pairs "
          f"({len(null_pairs)} cases), each with its case's own noise and pair count:")
    for shift in (0.0, *LEVELS):
        tally: Counter = Counter()
        for _ in range(args.resamples):
            source = rng.choice(null_pairs)  # one case's own noise, resampled
            draw = [rng.choice(source) + math.log1p(shift) for _ in range(len(source))]
            tally[paired.sequential(draw, len(source))[0]] += 1
        shares = {k: f"{v / args.resamples:.1%}" for k, v in sorted(tally.items())}
        print(f"  true slowdown {shift:.0%}: {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    go = commands.add_parser("run")
    go.add_argument("--base", required=True)
    go.add_argument("--planted", required=True)
    go.add_argument("--out", type=Path, required=True)
    go.add_argument("--false-alarm-runs", type=int, default=10)
    go.add_argument("--runs-per-level", type=int, default=5)
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

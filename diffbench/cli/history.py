"""``diffbench history``: each benchmark's median over commits, with change points."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "each benchmark's median over commits, with change points, as a PNG"


def add_arguments(history: argparse.ArgumentParser) -> None:
    history.add_argument("--storage", type=Path, default=Path(".benchmarks"),
                         help="pytest-benchmark's storage folder (default .benchmarks)")
    history.add_argument("--out", type=Path, default=Path("results/history.png"))
    history.add_argument("--match", help="only cases whose name contains this")


def run(args: argparse.Namespace) -> None:
    from diffbench.gate.history import draw_history, load_history

    series = load_history(args.storage, args.match)
    draw_history(series, args.out)
    print(f"wrote {args.out}")

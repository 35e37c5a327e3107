"""``diffbench history``: each benchmark's median over commits, with change points."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffbench.cli.common import add_json, emit

HELP = "each benchmark's median over commits, with change points, as a PNG"


def add_arguments(history: argparse.ArgumentParser) -> None:
    history.add_argument("--storage", type=Path, default=Path(".benchmarks"), metavar="DIR",
                         help="pytest-benchmark's storage folder")
    history.add_argument("--out", type=Path, default=Path("results/history.png"), metavar="FILE",
                         help="the PNG")
    history.add_argument("--match", help="only cases whose name contains this (default: all)")
    add_json(history)


def run(args: argparse.Namespace) -> None:
    from diffbench.gate.history import change_points, draw_history, load_history

    series = load_history(args.storage, args.match)
    draw_history(series, args.out)
    cases = {name: {"commits": entry.labels, "medians_s": entry.medians,
                    "change_points": change_points(entry.medians)}
             for name, entry in series.items()}
    emit(args, {"out": str(args.out), "cases": cases}, [f"wrote {args.out}"])

"""``diffbench report``: a run's reports rebuilt from its results.jsonl."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("rebuild results.json, results.md, the grid and plots from a run's results.jsonl "
        "(finished, partial or killed)")


def add_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument("out", type=Path, metavar="DIR", help="a compare output folder")
    report.add_argument("--reference", metavar="NAME",
                        help="pair every row against this system instead of the run's "
                             "reference (its pixel name; LDM- + it in latents)")
    report.add_argument("--to", type=Path, metavar="DIR",
                        help="write the reports here instead of into DIR")


def run(args: argparse.Namespace) -> None:
    from diffbench.compare import write_reports
    from diffbench.results.rowstore import RowStore

    results, files = write_reports(RowStore.read(args.out), args.reference, args.to)
    print(f"{len(results)} rows; wrote {', '.join(str(f) for f in files)}")

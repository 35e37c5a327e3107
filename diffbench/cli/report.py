"""``diffbench report``: a run's reports rebuilt from its results.jsonl."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffbench.cli.common import add_json, emit

HELP = ("rebuild results.json, results.md, the grid and plots from a run's results.jsonl "
        "(finished, partial or killed)")


def add_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument("run_dir", type=Path, metavar="DIR", help="a compare output folder")
    report.add_argument("--reference", metavar="NAME",
                        help="pair every row against this system (its pixel name; LDM- + it in "
                             "latents; default: the run's reference)")
    report.add_argument("--out", type=Path, metavar="DIR",
                        help="write the reports here (default: into DIR)")
    report.add_argument("--to", dest="out", type=Path, help=argparse.SUPPRESS)  # its old name
    add_json(report)


def run(args: argparse.Namespace) -> None:
    from diffbench.compare import write_reports
    from diffbench.results.rowstore import RowStore

    results, files = write_reports(RowStore.read(args.run_dir), args.reference, args.out)
    emit(args, {"rows": len(results), "files": [str(f) for f in files], "results": results},
         [f"{len(results)} rows; wrote {', '.join(str(f) for f in files)}"])

"""``diffbench ab``: base against head, speed and fidelity, in one job (the regression gate)."""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from pathlib import Path

from diffbench.cli.common import (
    add_checkpoints,
    add_json,
    add_seed,
    emit,
    positive_int,
    print_error,
)
from diffbench.core.errors import InputError

HELP = ("base against head, speed and fidelity, in one job: the regression gate "
        "(exit 0 certified, 1 regression, 2 bad input, 3 no verdict)")


def add_arguments(ab: argparse.ArgumentParser) -> None:
    ab.add_argument("--base", required=True, metavar="REV",
                    help="the revision to compare against (a commit, branch or tag; or a clean "
                         "checkout folder)")
    ab.add_argument("--head", metavar="REV",
                    help="the revision under test (default: the working tree)")
    ab.add_argument("--cases", nargs="+", default=["quick"], metavar="CASE",
                    help="quick, all, or case names (diffbench list cases)")
    ab.add_argument("--cases-file", type=Path, default=None, metavar="YAML",
                    help="the repository's own cases: systems by name or "
                         "'package.module:Name', strengths, batches (default: the repository's "
                         "diffbench_ab.yaml if it has one, else diffbench's built-in cases)")
    ab.add_argument("--budget-s", type=float, default=None, metavar="S",
                    help="seconds of timed pairs beyond each case's first rounds, for all "
                         "cases together (default 60)")
    ab.add_argument("--out", type=Path, default=Path("results/ab"), metavar="DIR",
                    help="output folder: ab.json, ab.md")
    ab.add_argument("--threads", type=positive_int, metavar="N", default=1,
                    help="torch threads of each worker")
    add_seed(ab, help="the pair order's seed (default: drawn, recorded)")
    add_checkpoints(ab, "the ones both versions load")
    ab.add_argument("--pairs", type=positive_int, default=None, metavar="P",
                    help="worker pairs, a base and a head worker each (default 8): the "
                         "interval is over them")
    ab.add_argument("--processes", dest="pairs", type=positive_int, metavar="N",
                    help=argparse.SUPPRESS)  # its old name
    add_json(ab)


def run(args: argparse.Namespace) -> int:
    from diffbench.gate import ab_report
    from diffbench.gate.ab import DEFAULT_BUDGET_S, run_ab
    from diffbench.measure.paired import PROCESSES

    budget = DEFAULT_BUDGET_S if args.budget_s is None else args.budget_s
    # SIGTERM (CI's timeout, kill) unwinds like SIGINT: the base's worktree is removed and the
    # workers are told to quit.
    previous = signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    try:
        result = run_ab(args.base, args.head, args.cases, budget, args.out,
                        threads=args.threads, seed=args.seed, checkpoints=args.checkpoints,
                        processes=args.pairs or PROCESSES, cases_file=args.cases_file)
    except InputError:
        raise
    except Exception as error:  # a crash gives no verdict: exit 3, not 1 (a regression)
        log = args.out / "crash.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        print_error(f"no verdict: diffbench ab crashed ({type(error).__name__}: {error}); the "
                    f"traceback is in {log}")
        return ab_report.EXIT_NO_VERDICT
    finally:
        signal.signal(signal.SIGTERM, previous)
    status, message = ab_report.exit_status(result)
    lines = [ab_report.case_line(entry) for entry in result["cases"]]
    emit(args, {"status": status, "message": message, "out": str(args.out),
                "files": ["ab.json", "ab.md"],
                "cases": [{"case": entry["case"], "outcome": ab_report.case_outcome(entry),
                           "line": line} for entry, line in zip(result["cases"], lines)]},
         [*lines, f"wrote {args.out}/ab.json, ab.md"])
    if status:
        print_error(message)
    return status

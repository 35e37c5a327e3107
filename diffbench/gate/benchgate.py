"""A timing report against a saved run, with a verdict: a benchmark run's JSON (pytest-benchmark's
``--benchmark-json``) against a reference run's, exit status 1 only on a slowdown beyond the
noise measured for that case. A report, not the regression gate (that is ``diffbench ab``).

A case regresses when both hold:

* ``new median > ref median + k * max(ref IQR, new IQR)``: slower by more than ``k``
  interquartile ranges of whichever run was noisier (the IQR being each run's own measure of
  its round-to-round noise; ``k`` = 2 by default), and
* ``new median > ref median * (1 + floor)``: and by a margin that matters (``floor`` = 10% by
  default), so a case timed with near-zero spread does not fail on a 1% drift.

Cases only in the new run are listed as new, cases only in the reference are ignored (a subset
such as ``-m quick`` may run). A run that shares no case with the reference fails (renamed
cases, an empty run, a quick run against a reference without its cases), and so does a median
that is not a finite number.

Absolute times against a run saved earlier drift with the machine (20-45% between runs on a
shared 2-core machine), so its verdict is a report across machines and over time (CI prints it
and goes on); the regression gate that CI enforces is ``diffbench ab`` (base and head side by
side, interleaved). Usage::

    python -m diffbench.gate.benchgate NEW.json [--reference REF.json] [--k 2] [--floor 0.10]

Without ``--reference``: ``$DIFFBENCH_BENCH_REFERENCE``, else the newest JSON saved under
``.benchmarks/`` (``--benchmark-autosave``), else ``benches/reference/cpu.json``. Exit status 1
on a regression, 2 on bad input (an unreadable file, a reference time that is not a finite
positive number, a ``--k`` or ``--floor`` that is not a finite non-negative number), 3 when
nothing was compared (no verdict).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from diffbench.core.errors import InputError

K = 2.0
FLOOR = 0.10
DEFAULT_REFERENCE = Path("benches") / "reference" / "cpu.json"


@dataclass(frozen=True)
class Timing:
    median: float
    iqr: float
    rounds: int


EXIT_NOTHING_COMPARED = 3


def load_run(path: str | Path) -> dict[str, Timing]:
    """Benchmark full name -> its median, IQR and rounds, from a pytest-benchmark JSON."""
    try:
        data = json.loads(Path(path).read_text())
        return {b["fullname"]: Timing(float(b["stats"]["median"]), float(b["stats"]["iqr"]),
                                      int(b["stats"]["rounds"]))
                for b in data["benchmarks"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path} is not a readable pytest-benchmark JSON ({error!r}); allowed: "
                         f"the file --benchmark-json or --benchmark-autosave writes") from None


def check_reference(path: str | Path, ref: dict[str, Timing]) -> dict[str, Timing]:
    """A reference whose median or IQR is not a finite number would let any time pass (NaN
    compares false with every limit): one error naming the case."""
    for name, timing in ref.items():
        if not (math.isfinite(timing.median) and timing.median > 0
                and math.isfinite(timing.iqr) and timing.iqr >= 0):
            raise InputError(f"reference {path}: {name} has median {timing.median} s and IQR "
                             f"{timing.iqr} s; allowed: a finite positive median and a finite "
                             f"non-negative IQR")
    return ref


def _non_negative(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: allowed, a finite number >= 0")
    return value


def limit(ref: Timing, new: Timing, k: float = K, floor: float = FLOOR) -> float:
    """The slowest median ``new`` may have without counting as a regression."""
    return max(ref.median + k * max(ref.iqr, new.iqr), ref.median * (1 + floor))


def compare(
    new: dict[str, Timing], ref: dict[str, Timing], k: float = K, floor: float = FLOOR
) -> tuple[list[str], list[str]]:
    """(regressions, other lines): one line per case of the new run."""
    regressions, lines = [], []
    for name, timing in new.items():
        if not math.isfinite(timing.median) or timing.median <= 0:
            regressions.append(f"NOT A TIME {name}: median {timing.median} s")
            continue
        if name not in ref:
            lines.append(f"new       {name}: median {timing.median:.4g} s (no reference)")
            continue
        bound = limit(ref[name], timing, k, floor)
        line = (f"{name}: median {timing.median:.4g} s against {ref[name].median:.4g} s "
                f"(IQR {timing.iqr:.2g} / {ref[name].iqr:.2g}; limit {bound:.4g} s)")
        if timing.median > bound:
            regressions.append("SLOWER    " + line)
        else:
            lines.append("ok        " + line)
    return regressions, lines


def default_reference(storage: str | Path = ".benchmarks") -> Path:
    """``$DIFFBENCH_BENCH_REFERENCE``, else the newest saved run, else the committed one."""
    if os.environ.get("DIFFBENCH_BENCH_REFERENCE"):
        return Path(os.environ["DIFFBENCH_BENCH_REFERENCE"])
    saved = sorted(Path(storage).glob("**/*.json"), key=lambda p: p.stat().st_mtime)
    return saved[-1] if saved else DEFAULT_REFERENCE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffbench.gate.benchgate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("new", type=Path, help="the new run's pytest-benchmark JSON")
    parser.add_argument("--reference", type=Path, help="the reference run's JSON")
    parser.add_argument("--k", type=_non_negative, default=K,
                        help="IQRs of noise allowed (default 2)")
    parser.add_argument("--floor", type=_non_negative, default=FLOOR,
                        help="relative slowdown always allowed (default 0.10)")
    args = parser.parse_args(argv)
    reference = args.reference or default_reference()
    try:
        regressions, lines = compare(load_run(args.new),
                                     check_reference(reference, load_run(reference)), args.k,
                                     args.floor)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"reference: {reference}")
    print("\n".join(lines + regressions))
    if not any(line.startswith(("ok", "SLOWER")) for line in lines + regressions):
        print(f"no case of {args.new} is in the reference {reference}: nothing was compared "
              f"(renamed cases, an empty run, or a subset the reference lacks)", file=sys.stderr)
        return EXIT_NOTHING_COMPARED
    if regressions:
        print(f"{len(regressions)} case(s) slower beyond their noise", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

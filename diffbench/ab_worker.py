"""A ``diffbench ab`` worker: one long-lived process that imports one version's ``diffbench``.

Run as a script (never imported by the package): ``python ab_worker.py --root ROOT
--cases-file CASES --checkpoints DIR --digits FILE --threads N``. ``ROOT`` is the version's
checkout, put first on ``sys.path`` so that ``import diffbench`` is that version's; ``CASES`` is
the head's :mod:`diffbench.cases`, loaded by path, so both versions build the same cases.

It answers one JSON line on its stdout for each JSON line on its stdin (anything the library
prints goes to stderr):

* ``{"op": "prepare", "case": NAME, "warmup": W}``: build the case, make ``W`` untimed calls;
  ``{"ok": true, "seconds": s}`` (the last one's seconds), or ``{"ok": false, "error": ...}``
  when this version cannot run it;
* ``{"op": "time", "case": NAME, "number": K}``: ``K`` calls, each after its untimed setup,
  ``{"seconds": s}`` (the sum of ``time.perf_counter`` around each call alone);
* ``{"op": "ping"}`` (answered once the worker is started), ``{"op": "drop", "case": NAME}``,
  ``{"op": "quit"}``.

With ``--count CASE`` it instead makes one untimed call, then counts the instructions of one
more call under callgrind (started by ``valgrind --tool=callgrind --instr-atstart=no``) and
exits: :mod:`diffbench.counts` runs it so.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path


def load_cases(path: str):
    spec = importlib.util.spec_from_file_location("diffbench_ab_cases", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def serve(args, cases, digits) -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the library's prints must not reach the protocol
    import torch

    known = cases.all_cases()
    calls = {}
    every_cpu = os.sched_getaffinity(0)
    for line in sys.stdin:
        request = json.loads(line)
        op, name = request["op"], request.get("case")
        if op == "quit":
            break
        if args.cpu is not None:  # untimed work may use any core; timed calls share one
            os.sched_setaffinity(0, {args.cpu} if op == "time" else every_cpu)
        if op == "prepare":
            try:
                call = cases.build(known[name], Path(args.checkpoints), digits)
                for _ in range(request.get("warmup", 1)):
                    kwargs = call.setup()
                    start = time.perf_counter()
                    call.run(**kwargs)
                    seconds = time.perf_counter() - start
                calls[name] = call
                reply = {"ok": True, "seconds": seconds}
            except Exception as error:  # this version cannot run the case: not comparable
                reply = {"ok": False, "error": f"{type(error).__name__}: {error}",
                         "traceback": traceback.format_exc(limit=3)}
        elif op == "time":
            call, seconds = calls[name], 0.0
            for _ in range(request.get("number", 1)):
                kwargs = call.setup()
                start = time.perf_counter()
                call.run(**kwargs)
                seconds += time.perf_counter() - start
            reply = {"seconds": seconds}
        elif op == "ping":  # started: torch, the digits and the cases are loaded
            reply = {"ok": True}
        elif op == "drop":
            calls.pop(name, None)
            reply = {"ok": True}
        else:
            reply = {"ok": False, "error": f"unknown op {op!r}"}
        out.write(json.dumps(reply) + "\n")
    del torch


def count(args, cases, digits) -> None:
    """One untimed call, then one counted between callgrind's start and stop requests."""
    toggle = ctypes.CDLL(args.callgrind_lib)
    call = cases.build(cases.all_cases()[args.count], Path(args.checkpoints), digits)
    call.run(**call.setup())
    kwargs = call.setup()
    toggle.diffbench_count_start()
    call.run(**kwargs)
    toggle.diffbench_count_stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--cases-file", required=True)
    parser.add_argument("--checkpoints", required=True)
    parser.add_argument("--digits", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu", type=int, help="make timed calls on this CPU only")
    parser.add_argument("--count", help="count the instructions of one call of this case")
    parser.add_argument("--callgrind-lib", help="the compiled start/stop requests (--count)")
    args = parser.parse_args()
    root = str(Path(args.root).resolve())
    sys.path[0] = root  # this version's diffbench, not the one beside this script
    os.chdir(root)
    import torch

    torch.set_num_threads(args.threads)
    import diffbench

    if not Path(diffbench.__file__).resolve().is_relative_to(root):
        sys.exit(f"error: imported {diffbench.__file__}, not the version under {root}")
    cases = load_cases(args.cases_file)
    digits = torch.load(args.digits, weights_only=True)
    (count if args.count else serve)(args, cases, digits)


if __name__ == "__main__":
    main()

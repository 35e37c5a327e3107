"""A ``diffbench ab`` worker: one long-lived process that imports one version's ``diffbench``.

Run as a script (never imported by the package): ``python ab_worker.py --root ROOT
--cases-file CASES --checkpoints DIR --digits FILE --threads N``. ``ROOT`` is the version's
checkout, put first on ``sys.path`` so that ``import diffbench`` is that version's; ``CASES`` is
the head's :mod:`diffbench.gate.cases`, loaded by path, so both versions build the same cases.
With ``--user-code``, ``ROOT`` is a checkout of a user's repository instead (``ROOT/src`` and
``ROOT`` first on ``sys.path``, so their package is that version's) and diffbench is the
installed one; ``--cases-json`` names the cases (the head's, read from the repository's cases
file).

It answers one JSON line on its stdout for each JSON line on its stdin (anything the library
prints goes to stderr):

* ``{"op": "prepare", "case": NAME, "warmup": W}``: build the case, make ``W`` untimed calls;
  ``{"ok": true, "seconds": s}`` (the last one's seconds), or ``{"ok": false, "error": ...}``
  when this version cannot run it;
* ``{"op": "time", "case": NAME, "number": K}``: ``K`` calls, each after its untimed setup,
  ``{"seconds": s}`` (the sum of ``time.perf_counter`` around each call alone);
* ``{"op": "outputs", "case": NAME, "digits": FILE, "out": FILE, "chunk": C}``: the case's
  outputs for every digit in ``FILE`` (``torch.save``d images), ``C`` at a time, chunk ``i``
  with its generator seeded ``i``, saved to ``out`` (``{"ok": true}``; ``{"ok": true,
  "outputs": false}`` for a case without image outputs): what the fidelity verdict scores;
* ``{"op": "ping"}`` (answered once the worker is started), ``{"op": "drop", "case": NAME}``,
  ``{"op": "quit"}``.

The case ``control`` is :func:`control`, a workload that imports nothing of ``diffbench``:
the same code in every worker, so its ratio tells whether the two versions' workers were
treated alike.

``{"op": "count", "case": NAME}`` (after ``prepare``) answers ``{"counts": {...}}``, the work
counts of one call (:mod:`diffbench.gate.work_count`, loaded by path beside this file so that both
versions are counted by the same code).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path


def load_module(name: str, path: str):
    """The head's file at ``path`` as module ``name``, whichever ``diffbench`` is imported."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


CONTROL = "control"


def control(torch):
    """The version-independent control: a fixed convolution and matrix product of about the
    size of the suite's UNet layers, on seeded data (about 10 ms on one core)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(16, 32, 28, 28, generator=generator)
    kernel = torch.randn(32, 32, 3, 3, generator=generator) / 17
    matrix = torch.randn(256, 256, generator=generator) / 16

    def run():
        with torch.inference_mode():
            x = torch.nn.functional.conv2d(images, kernel, padding=1).relu()
            return (x.flatten(2)[:, :, :256] @ matrix).sum()

    return run


def build_call(cases, known, name, args, digits, torch):
    """(run, setup) of case ``name``: the control's or the cases file's."""
    if name == CONTROL:
        return control(torch), dict
    call = cases.build(known[name], Path(args.checkpoints), digits)
    return call.run, call.setup


def save_outputs(cases, known, request, args, torch) -> dict:
    """The case's outputs for a file of digits, chunk by chunk, each chunk seeded by its index."""
    make = cases.build_outputs(known[request["case"]], Path(args.checkpoints))
    if make is None:
        return {"ok": True, "outputs": False}
    images = torch.load(request["digits"], weights_only=True)
    chunks = images.split(request.get("chunk", 64))
    outputs = torch.cat([make(chunk, i).detach().float().cpu() for i, chunk in enumerate(chunks)])
    torch.save(outputs, request["out"])
    return {"ok": True, "outputs": True}


def serve(args, cases, work_count, digits) -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the library's prints must not reach the protocol
    import torch

    if args.cases_json:  # the head's cases from the repository's cases file
        entries = json.loads(Path(args.cases_json).read_text())
        known = {entry["name"]: cases.Case(**entry) for entry in entries}
    else:
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
                run, setup = build_call(cases, known, name, args, digits, torch)
                for _ in range(request.get("warmup", 1)):
                    kwargs = setup()
                    start = time.perf_counter()
                    run(**kwargs)
                    seconds = time.perf_counter() - start
                calls[name] = (run, setup)
                reply = {"ok": True, "seconds": seconds}
            except Exception as error:  # this version cannot run the case: not comparable
                reply = {"ok": False, "error": f"{type(error).__name__}: {error}",
                         "traceback": traceback.format_exc(limit=3)}
        elif op == "time":
            (run, setup), seconds = calls[name], 0.0
            for _ in range(request.get("number", 1)):
                kwargs = setup()
                start = time.perf_counter()
                run(**kwargs)
                seconds += time.perf_counter() - start
            reply = {"seconds": seconds}
        elif op == "count":
            reply = {"counts": work_count.count(*calls[name])}
        elif op == "outputs":
            try:
                reply = save_outputs(cases, known, request, args, torch)
            except Exception as error:  # this version cannot run the case
                reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        elif op == "ping":  # started: torch, the digits and the cases are loaded
            reply = {"ok": True}
        elif op == "drop":
            calls.pop(name, None)
            reply = {"ok": True}
        else:
            reply = {"ok": False, "error": f"unknown op {op!r}"}
        out.write(json.dumps(reply) + "\n")
    del torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--cases-file", required=True)
    parser.add_argument("--checkpoints", required=True)
    parser.add_argument("--digits", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu", type=int, help="make timed calls on this CPU only")
    parser.add_argument("--cases-json", help="the cases to serve (default: every built-in one)")
    parser.add_argument("--user-code", action="store_true",
                        help="ROOT is a checkout of the user's code (ROOT/src too, if it exists), "
                             "run with the installed diffbench")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    # This version's code first, not the one beside this script (nor an editable install).
    first = [root / "src", root] if args.user_code else [root]
    sys.path[0:1] = [str(folder) for folder in first if folder.is_dir()]
    os.chdir(root)
    import torch

    torch.set_num_threads(args.threads)
    import diffbench

    if not args.user_code and not Path(diffbench.__file__).resolve().is_relative_to(root):
        sys.exit(f"error: imported {diffbench.__file__}, not the version under {root}")
    cases = load_module("diffbench_ab_cases", args.cases_file)
    work_count = load_module("diffbench_ab_work_count",
                             str(Path(__file__).with_name("work_count.py")))
    digits = torch.load(args.digits, weights_only=True)
    serve(args, cases, work_count, digits)


if __name__ == "__main__":
    main()

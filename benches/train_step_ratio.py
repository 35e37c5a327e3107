"""The cost of one training step of one objective against another, measured side by side:
``python benches/train_step_ratio.py train-pixel-flow-b64 train-pixel-b64 [--pairs N]``.

Both cases (:mod:`diffbench.gate.cases`) are built in this process on one thread; their steps
alternate in pairs, in an order drawn from a seeded ``random.Random``, after two warm-up steps
each, so drift falls on both alike. Prints the ratio of medians as ``diffbench ab`` does (the
exp of the median log-ratio, with its 99% sign-test interval: :mod:`diffbench.measure.paired`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from diffbench.gate import cases
from diffbench.io.data import load_mnist
from diffbench.measure import paired

WARMUP = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("head", help="the case whose cost is the numerator")
    parser.add_argument("base", help="the case it is divided by")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--checkpoints", default="fixtures/checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    known = cases.all_cases()
    for name in (args.head, args.base):
        if name not in known or known[name].kind != "train":
            print(f"error: unknown training case {name!r}; allowed: "
                  f"{', '.join(n for n, c in known.items() if c.kind == 'train')}",
                  file=sys.stderr)
            return 2
    digits = load_mnist("test").images[:cases.DIGITS]
    calls = {name: cases.build(known[name], Path(args.checkpoints), digits)
             for name in (args.head, args.base)}
    seconds: dict[str, list[float]] = {name: [] for name in calls}

    def step(name: str) -> float:
        call = calls[name]
        inputs = call.setup()
        start = time.perf_counter()
        call.run(**inputs)
        return time.perf_counter() - start

    for _ in range(WARMUP):
        for name in calls:
            step(name)
    order = random.Random(args.seed)
    for _ in range(args.pairs):
        names = list(calls)
        order.shuffle(names)
        for name in names:
            seconds[name].append(step(name))
    result = {"head": args.head, "base": args.base, "seed": args.seed, "threads": 1,
              **paired.summary(seconds[args.head], seconds[args.base]), "seconds": seconds}
    print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

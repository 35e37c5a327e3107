"""Generation from pure noise, system against system, for docs/flow.md and docs/one_step.md:
``python benches/generation.py --space pixel --compare flow --out results/gen_pixel.json``
(rectified flow against eps at equal NFE) or ``--compare one-step`` (the one-step networks at
1, 2 and 4 network evaluations against DDIM-50 and RF-Euler-50).

Each system samples ``--samples`` digits from seeded noise and is scored by
:func:`diffbench.evaluate.generation` (the classifier's confident share and class balance, 95%
Wilson intervals; the Frechet distance and KID of the samples' classifier features to 5,000
held-out real test digits, with their intervals), the same function ``diffbench evaluate`` uses.
The difference of each system's confident share from its reference's gets a 95% interval for two
independent proportions (Wald), since the samples are not paired.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from diffbench.evaluate import generation
from diffbench.measure.metrics import Judge
from diffbench.measure.scoring import load_digits
from diffbench.systems.translate import Translator

ONE_STEP = [(sampler, steps, sampler) for sampler in ("consistency", "meanflow")
            for steps in (1, 2, 4)]
COMPARISONS = {
    # (reference, others): each other system's confident share minus its reference's
    "flow": [(("ddim", 10, "eps"), [("flow-euler", 10, "flow")]),
             (("ddim", 50, "eps"), [("flow-euler", 50, "flow")])],
    "one-step": [(("ddim", 50, "eps"), [("flow-euler", 50, "flow"), *ONE_STEP])],
}


def difference(a: dict, b: dict) -> dict:
    """b's confident share minus a's, with its 95% Wald interval (independent samples)."""
    p, q = a["confident_share"], b["confident_share"]
    se = math.sqrt(p * (1 - p) / a["num_samples"] + q * (1 - q) / b["num_samples"])
    return {"of": b["name"], "minus": a["name"], "confident_share_difference": q - p,
            "ci95": [q - p - 1.96 * se, q - p + 1.96 * se]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", choices=("pixel", "latent"), required=True)
    parser.add_argument("--compare", choices=tuple(COMPARISONS), default="flow")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoints", default="fixtures/checkpoints")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    judge = Judge.from_checkpoints(args.checkpoints)
    reference = load_digits(judge, 0, args.data_dir).reference  # the held-out real digits
    rows, differences = [], []
    for base, others in COMPARISONS[args.compare]:
        scored = []
        for sampler, steps, prediction in [base, *others]:
            translator = Translator.from_checkpoints(args.checkpoints, args.space, sampler, steps,
                                                     prediction=prediction)
            scored.append(generation(translator, judge, args.samples, args.seed, reference))
            print(json.dumps(scored[-1]), flush=True)
        rows += scored
        differences += [difference(scored[0], other) for other in scored[1:]]
    report = {"space": args.space, "compare": args.compare, "samples": args.samples,
              "seed": args.seed, "threads": torch.get_num_threads(), "generation": rows,
              "differences": differences}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(differences, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

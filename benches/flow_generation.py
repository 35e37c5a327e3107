"""Generation from pure noise, rectified flow against eps at equal NFE, for docs/flow.md:
``python benches/flow_generation.py --space pixel --out results/flow_generation_pixel.json``.

Each system samples ``--samples`` digits from seeded noise and is scored by
:func:`diffbench.evaluate.generation` (the classifier's confident share and class balance, 95%
Wilson intervals), the same function ``diffbench evaluate`` uses; the difference of each flow
system's confident share from the eps system's at the same NFE gets a 95% interval for two
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
from diffbench.systems.translate import Translator

PAIRS = ((("ddim", 10, "eps"), ("flow-euler", 10, "flow")),
         (("ddim", 50, "eps"), ("flow-euler", 50, "flow")))


def difference(a: dict, b: dict) -> dict:
    """b's confident share minus a's, with its 95% Wald interval (independent samples)."""
    p, q = a["confident_share"], b["confident_share"]
    se = math.sqrt(p * (1 - p) / a["num_samples"] + q * (1 - q) / b["num_samples"])
    return {"of": b["name"], "minus": a["name"], "confident_share_difference": q - p,
            "ci95": [q - p - 1.96 * se, q - p + 1.96 * se]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", choices=("pixel", "latent"), required=True)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoints", default="fixtures/checkpoints")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    judge = Judge.from_checkpoints(args.checkpoints)
    rows, differences = [], []
    for pair in PAIRS:
        scored = []
        for sampler, steps, prediction in pair:
            translator = Translator.from_checkpoints(args.checkpoints, args.space, sampler, steps,
                                                     prediction=prediction)
            scored.append(generation(translator, judge, args.samples, args.seed))
            print(json.dumps(scored[-1]), flush=True)
        rows += scored
        differences.append(difference(*scored))
    report = {"space": args.space, "samples": args.samples, "seed": args.seed,
              "threads": torch.get_num_threads(), "generation": rows,
              "differences": differences}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(differences, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

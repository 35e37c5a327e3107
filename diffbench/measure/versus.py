"""A results row against its reference, paired on the same digits.

Every system of a comparison translates the same source digits, so "is A more faithful than
B?" is a paired question: the per-digit differences, resampled over digits with one set of
bootstrap indices for both (Efron 1979), have far less spread than two separate intervals, and
two overlapping intervals do not mean "no difference".

For each row with a reference (``DDIM-50`` by default, ``LDM-DDIM-50`` in latent space, in
the same view and at the same strength or SNR level) a row gains:

* ``mse_vs_reference``: ``mean(mse) / mean(mse_ref) - 1`` (-0.12: 12% lower MSE), with its
  paired 95% percentile-bootstrap interval ``mse_vs_reference_ci95``;
* ``preservation_vs_reference``: the difference of the preserved shares (0.02: 2 points more),
  with ``preservation_vs_reference_ci95``;
* ``frechet_vs_reference``: the difference of the bias-corrected Frechet distances (positive: less
  like real digits than the reference), both measured on the same half-samples
  (:func:`diffbench.measure.feature_distance.frechet_difference`), when the rows carry their
  projected
  features and share at least :data:`~diffbench.measure.feature_distance.MIN_FRECHET_DIGITS` digits;
* ``vs_reference_resolved``: per figure, whether its interval excludes 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffbench.measure.feature_distance import (
    MIN_FRECHET_DIGITS,
    FrechetReference,
    frechet_difference,
)
from diffbench.measure.stats import bootstrap_indices, percentile_interval

LATENT_PREFIX = "LDM-"


def paired_intervals(
    values: dict[str, Tensor], reference: dict[str, Tensor], generator: torch.Generator
) -> dict[str, Any]:
    """The relative MSE difference and the preservation difference of per-digit ``values``
    against ``reference`` (``{"mse": [N], "correct": [N] bool}`` each, digit i of one the same
    source digit as digit i of the other), each with its paired 95% bootstrap interval."""
    mse, mse_ref = values["mse"].double().cpu(), reference["mse"].double().cpu()
    kept, kept_ref = values["correct"].double().cpu(), reference["correct"].double().cpu()
    if mse.shape != mse_ref.shape:
        raise ValueError(f"paired rows need the same digits, got {len(mse)} and {len(mse_ref)}")
    index = bootstrap_indices(len(mse), generator).cpu()
    relative = mse[index].mean(1) / mse_ref[index].mean(1) - 1
    points = (kept - kept_ref)[index].mean(1)
    result = {
        "mse_vs_reference": float(mse.mean() / mse_ref.mean() - 1),
        "mse_vs_reference_ci95": percentile_interval(relative),
        "preservation_vs_reference": float((kept - kept_ref).mean()),
        "preservation_vs_reference_ci95": percentile_interval(points),
    }
    return {**result, "vs_reference_resolved": resolved(result)}


def resolved(figures: dict[str, Any]) -> dict[str, bool]:
    """Per paired figure of ``figures``: whether its 95% interval excludes 0."""
    return {key.removesuffix("_vs_reference_ci95"): not (value[0] <= 0 <= value[1])
            for key, value in figures.items() if key.endswith("_vs_reference_ci95")}


def reference_name(row: dict[str, Any], reference: str) -> str:
    """The reference of ``row``'s space: ``reference`` in pixels, ``LDM-`` + it in latents."""
    return f"{LATENT_PREFIX}{reference}" if row["space"] == "latent" else reference


def level(row: dict[str, Any]) -> float:
    """The noise level a row is compared at: its strength, or for an equal-SNR row the strength
    whose VP start it matches."""
    return row.get("match_snr_of_strength", row["strength"])


def attach_paired(
    rows: list[dict[str, Any]], per_digit: list[dict[str, Tensor]], reference: str, seed: int,
    frechet: FrechetReference | None = None,
) -> None:
    """Add the paired figures against its reference to every row that has one (same view,
    space and level; ``per_digit[i]`` belongs to ``rows[i]``), in place, on the digits both
    scored (``vs_reference_images``: a row of fewer digits is paired on those); the bootstrap
    draws from a generator seeded ``seed`` per row. The Frechet difference needs ``frechet``,
    the run's reference on its principal components, and ``features`` in both rows' digits."""
    found = {(r["view"], r["space"], level(r)): i for i, r in enumerate(rows)
             if r["name"] == reference_name(r, reference)}
    for i, row in enumerate(rows):
        j = found.get((row["view"], row["space"], level(row)))
        if j is None or j == i:
            continue
        # Rows score the first n test digits: two rows share the first min(n, m) of them.
        n = min(len(per_digit[i]["mse"]), len(per_digit[j]["mse"]))
        mine = {key: per_digit[i][key][:n] for key in ("mse", "correct")}
        theirs = {key: per_digit[j][key][:n] for key in ("mse", "correct")}
        generator = torch.Generator().manual_seed(seed + i)
        figures = paired_intervals(mine, theirs, generator)
        if (frechet is not None and n >= MIN_FRECHET_DIGITS
                and "features" in per_digit[i] and "features" in per_digit[j]):
            figures["frechet_vs_reference"], figures["frechet_vs_reference_ci95"] = (
                frechet_difference(per_digit[i]["features"][:n], per_digit[j]["features"][:n],
                                   frechet, generator))
        figures["vs_reference_resolved"] = resolved(figures)
        row.update(vs_reference=rows[j]["name"], vs_reference_images=n, **figures)

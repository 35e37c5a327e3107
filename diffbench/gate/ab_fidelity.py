"""The fidelity verdict of a base-against-head comparison: the same digits, the same generator
seeds, scored per digit in both versions and compared pair by pair.

Both versions' outputs for one case are compared first as tensors: equal bit for bit, or within
``FLOAT_TOLERANCE`` everywhere (a change of float summation order), is ``identical`` at once.
Otherwise each digit gives a pair of MSEs against its clean source and a pair of 0/1 "the
suite's classifier reads the source's label" (preservation), and the paired figures decide:

* the MSE ratio ``mean(mse_head) / mean(mse_base)``, with a 99% interval by the delta method
  on the paired differences ``mse_head - R * mse_base`` (a ratio of paired means: Cochran,
  "Sampling Techniques", 1977, section 6.4);
* the preservation difference ``mean(correct_head - correct_base)`` with a 99% paired-t
  interval.

``worse`` when the MSE ratio's lower bound is above ``1 + MSE_WORSE`` or preservation's upper
bound is below ``-PRESERVATION_WORSE``; ``better`` the mirror image (and neither figure worse);
``same`` when the MSE ratio's interval lies within ``1 ± MSE_SAME`` and preservation's lower bound
is above ``-PRESERVATION_SAME``; else ``inconclusive``. A non-finite head output is ``worse``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from scipy.stats import t as student_t

LEVEL = 0.99
FLOAT_TOLERANCE = 1e-5  # max |head - base| (images in [-1, 1]) still called identical
MSE_WORSE = 0.01  # worse: the MSE ratio's 99% interval lies wholly above +1%
PRESERVATION_WORSE = 0.005  # or preservation's lies wholly below -0.5 points
MSE_SAME = 0.02  # same: the MSE ratio's interval within -2% .. +2% ...
PRESERVATION_SAME = 0.015  # ... and preservation's lower bound above -1.5 points
DIGITS = 256
"""Digits scored per case: enough that a 2% change of the MSE is decided (planted, the per-digit
MSE ratios of a changed sampler spread by a few percent, so the interval is about +-1%)."""
VERDICTS = ("identical", "same", "better", "worse", "inconclusive", "not scored")


def paired_mean_interval(values: torch.Tensor, level: float = LEVEL) -> tuple[float, float, float]:
    """(lower, mean, upper): Student's t interval for the mean of paired differences."""
    n = values.numel()
    mean = float(values.mean())
    half = float(student_t.ppf((1 + level) / 2, n - 1)) * float(values.std()) / math.sqrt(n)
    return mean - half, mean, mean + half


def ratio_interval(head: torch.Tensor, base: torch.Tensor, level: float = LEVEL
                   ) -> tuple[float, float, float]:
    """(lower, ratio, upper) of ``mean(head) / mean(base)`` over paired values (delta method)."""
    ratio = float(head.mean() / base.mean())
    lo, _, hi = paired_mean_interval(head - ratio * base, level)
    scale = float(base.mean())
    return ratio + lo / scale, ratio, ratio + hi / scale


def verdict(mse: tuple[float, float, float], preservation: tuple[float, float, float]) -> str:
    """The verdict from the MSE ratio's and the preservation difference's intervals."""
    mse_lo, _, mse_hi = mse
    pres_lo, _, pres_hi = preservation
    if mse_lo > 1 + MSE_WORSE or pres_hi < -PRESERVATION_WORSE:
        return "worse"
    if (mse_hi < 1 - MSE_WORSE and pres_lo > -PRESERVATION_SAME) or (
            pres_lo > PRESERVATION_WORSE and mse_hi < 1 + MSE_SAME):
        return "better"
    if mse_lo > 1 - MSE_SAME and mse_hi < 1 + MSE_SAME and pres_lo > -PRESERVATION_SAME:
        return "same"
    return "inconclusive"


def compare(head: torch.Tensor, base: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor,
            correct) -> dict[str, Any]:
    """The fidelity entry of one case: ``head`` and ``base`` are both versions' outputs for the
    ``clean`` digits ([N, 1, 28, 28]); ``correct(images, labels)`` the classifier's per-digit
    reading (:meth:`diffbench.measure.metrics.Judge.correct`)."""
    entry: dict[str, Any] = {"digits": int(clean.shape[0])}
    if head.shape != base.shape:
        return {**entry, "verdict": "worse",
                "reason": f"head outputs {tuple(head.shape)}, base {tuple(base.shape)}"}
    if not torch.isfinite(head).all():
        bad = (~torch.isfinite(head)).flatten(1).any(1).nonzero().flatten().tolist()
        return {**entry, "verdict": "worse",
                "reason": f"head outputs are not finite for digits {bad[:8]}"}
    if not torch.isfinite(base).all():
        return {**entry, "verdict": "better", "reason": "base outputs are not finite"}
    max_abs = float((head - base).abs().max())
    entry["max_abs_difference"] = max_abs
    if max_abs <= FLOAT_TOLERANCE:
        return {**entry, "verdict": "identical", "bitwise": max_abs == 0.0}
    mse_head = ((head - clean) ** 2).flatten(1).mean(1).double()
    mse_base = ((base - clean) ** 2).flatten(1).mean(1).double()
    kept = (correct(head, labels).double() - correct(base, labels).double())
    mse = ratio_interval(mse_head, mse_base)
    preservation = paired_mean_interval(kept)
    return {**entry, "verdict": verdict(mse, preservation), "bitwise": False,
            "mse_ratio": mse[1], "mse_ratio_ci99": [mse[0], mse[2]],
            "mse_head": float(mse_head.mean()), "mse_base": float(mse_base.mean()),
            "preservation_difference": preservation[1],
            "preservation_difference_ci99": [preservation[0], preservation[2]]}


def passes(found: str) -> bool:
    return found in ("identical", "same", "better", "not scored")

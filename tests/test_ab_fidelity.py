"""The fidelity verdict of ``diffbench ab``: identical outputs at once, the paired intervals'
coverage by simulation, each verdict at its thresholds, non-finite outputs as ``worse``."""

from __future__ import annotations

import math

import pytest
import torch

from diffbench.gate import ab_fidelity


def reads_all(images, labels):
    """A stand-in reading for tensors that are not digits: every image read correctly."""
    return torch.ones(images.shape[0], dtype=torch.bool)


def digits(n=256, seed=0):
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 1, 28, 28, generator=generator) * 2 - 1
    return clean, torch.zeros(n, dtype=torch.long), generator


def test_the_same_outputs_are_identical_bit_for_bit_or_within_float_tolerance():
    clean, labels, generator = digits()
    outputs = clean + 0.1 * torch.randn(clean.shape, generator=generator)
    found = ab_fidelity.compare(outputs, outputs.clone(), clean, labels, reads_all)
    assert found["verdict"] == "identical" and found["bitwise"] is True
    nudged = outputs + ab_fidelity.FLOAT_TOLERANCE / 2
    found = ab_fidelity.compare(nudged, outputs, clean, labels, reads_all)
    assert found["verdict"] == "identical" and found["bitwise"] is False


def test_a_two_percent_worse_mse_is_decided_worse_on_the_default_digits():
    """Outputs whose error to the clean digit grows by 1% per digit (so the MSE by about 2%),
    with per-digit spread of a few percent: decided ``worse``."""
    clean, labels, generator = digits(ab_fidelity.DIGITS)
    error = 0.2 * torch.randn(clean.shape, generator=generator)
    base = clean + error
    wobble = 1 + 0.03 * torch.randn(clean.shape[0], 1, 1, 1, generator=generator)
    head = clean + error * 1.01 * wobble
    found = ab_fidelity.compare(head, base, clean, labels, reads_all)
    assert found["verdict"] == "worse", found
    assert found["mse_ratio_ci99"][0] > 1 + ab_fidelity.MSE_WORSE


def test_a_tiny_change_is_same_and_a_lost_digit_is_worse():
    clean, labels, generator = digits(ab_fidelity.DIGITS)
    base = clean + 0.2 * torch.randn(clean.shape, generator=generator)
    head = base + 1e-3 * torch.randn(clean.shape, generator=generator)
    assert ab_fidelity.compare(head, base, clean, labels, reads_all)["verdict"] == "same"

    def loses_the_first_tenth(images, labels):
        correct = torch.ones(images.shape[0], dtype=torch.bool)
        if images is head:
            correct[: images.shape[0] // 10] = False
        return correct

    found = ab_fidelity.compare(head, base, clean, labels, loses_the_first_tenth)
    assert found["verdict"] == "worse"
    assert found["preservation_difference"] == pytest.approx(-25 / 256)


@pytest.mark.parametrize("mse, preservation, expected", [
    ((1.015, 1.03, 1.05), (-0.01, 0.0, 0.01), "worse"),  # MSE's lower bound above +1%
    ((0.99, 1.0, 1.01), (-0.03, -0.02, -0.006), "worse"),  # preservation's upper bound below -0.5
    ((0.95, 0.97, 0.985), (-0.01, 0.0, 0.01), "better"),
    ((0.99, 1.0, 1.01), (0.006, 0.01, 0.02), "better"),
    ((0.985, 1.0, 1.015), (-0.014, 0.0, 0.014), "same"),
    ((0.975, 1.0, 1.015), (-0.01, 0.0, 0.01), "inconclusive"),  # reaches -2.5%: not same
    ((0.99, 1.0, 1.01), (-0.02, 0.0, 0.02), "inconclusive"),  # preservation may have lost 2
])
def test_verdict_at_its_thresholds(mse, preservation, expected):
    assert ab_fidelity.verdict(mse, preservation) == expected


def test_ratio_interval_covers_the_true_ratio():
    """Paired per-digit MSEs (log-normal, correlated within a pair) with a true ratio of 1.02:
    the 99% interval misses in about 1% of repeats."""
    generator = torch.Generator().manual_seed(3)
    trials, misses = 1000, 0
    for _ in range(trials):
        base = torch.exp(torch.randn(256, generator=generator, dtype=torch.float64) * 0.5)
        head = base * 1.02 * torch.exp(0.05 * torch.randn(256, generator=generator,
                                                          dtype=torch.float64))
        true = 1.02 * math.exp(0.05**2 / 2)  # E[exp(0.05 Z)] is the log-normal mean
        lo, _, hi = ab_fidelity.ratio_interval(head, base)
        misses += not lo <= true <= hi
    assert misses / trials < 0.01 + 3 * math.sqrt(0.01 * 0.99 / trials)


def test_non_finite_head_outputs_are_worse_and_name_the_digits():
    clean, labels, generator = digits(8)
    base = clean.clone()
    head = clean.clone()
    head[3, 0, 0, 0] = float("nan")
    found = ab_fidelity.compare(head, base, clean, labels, reads_all)
    assert found["verdict"] == "worse" and "[3]" in found["reason"]
    found = ab_fidelity.compare(clean[:4], base, clean, labels, reads_all)
    assert found["verdict"] == "worse" and "(4, 1, 28, 28)" in found["reason"]

"""Intervals and KID, each checked against an answer known in closed form."""

from __future__ import annotations

import pytest
import torch

from diffbench.core.errors import InputError
from diffbench.measure.feature_distance import KidReference, kid_estimate, polynomial_mmd2
from diffbench.measure.stats import (
    bootstrap_interval,
    bootstrap_mean_interval,
    percentiles,
    wilson_interval,
)


def test_wilson_interval_matches_the_closed_form():
    """8 of 10 at 95% (z = 1.959964): centre (0.8 + z^2/20) / (1 + z^2/10), Wilson 1927."""
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0, abs=1e-12)
    assert wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    with pytest.raises(InputError, match="11 of 10"):
        wilson_interval(11, 10)
    with pytest.raises(InputError, match="level"):
        wilson_interval(1, 10, level=1.5)


def test_bootstrap_interval_of_a_mean_covers_it_and_is_seeded():
    values = torch.randn(400, generator=torch.Generator().manual_seed(0)) + 3
    lo, hi = bootstrap_mean_interval(values, torch.Generator().manual_seed(1))
    assert lo < float(values.mean()) < hi
    # the standard error is ~1/sqrt(400) = 0.05: the 95% interval spans ~4 of them
    assert hi - lo == pytest.approx(4 * 0.05, rel=0.2)
    assert bootstrap_mean_interval(values, torch.Generator().manual_seed(1)) == [lo, hi]
    constant = bootstrap_interval(lambda index: 7.0, 10, torch.Generator().manual_seed(0))
    assert constant == [7.0, 7.0]


def test_percentiles_interpolate_between_order_statistics():
    assert percentiles([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx({50: 3.0, 90: 4.6, 99: 4.96})
    with pytest.raises(InputError):
        percentiles([])


def test_polynomial_mmd_of_shifted_gaussians_has_the_known_value():
    """d = 1, k(x, y) = (xy + 1)^3, x ~ N(0, 1), y ~ N(mu, 1), independent: with the moments
    E y = mu, E y^2 = mu^2 + 1, E y^3 = mu^3 + 3 mu, MMD^2 = E k(x,x') + E k(y,y') - 2 E k(x,y)
    = 4 + [(mu^3 + 3 mu)^2 + 3 (mu^2 + 1)^2 + 3 mu^2 + 1] - 2 (3 mu^2 + 4) = 22 at mu = 1.
    The kernel's 6th moments make the estimate noisy: over seeds, 4,000 samples a side scatter
    by ~6%."""
    gen = torch.Generator().manual_seed(0)
    mu = 1.0
    expected = 4 + (mu**3 + 3 * mu) ** 2 + 3 * (mu**2 + 1) ** 2 + 3 * mu**2 + 1 - 2 * (
        3 * mu**2 + 4)
    assert expected == pytest.approx(22.0)
    a = torch.randn(4000, 1, generator=gen, dtype=torch.float64)
    b = mu + torch.randn(4000, 1, generator=gen, dtype=torch.float64)
    assert polynomial_mmd2(a, b) == pytest.approx(expected, rel=0.15)
    point, (lo, hi) = kid_estimate(a[:500], KidReference(b), torch.Generator().manual_seed(1))
    assert point == pytest.approx(expected, rel=0.3)
    assert lo < point < hi and lo < expected < hi


def test_kid_of_one_distribution_is_about_zero():
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 2000, 8, generator=gen, dtype=torch.float64)
    point, (lo, hi) = kid_estimate(a, KidReference(b), torch.Generator().manual_seed(3))
    assert abs(point) < 0.02
    assert lo < 0 < hi
    with pytest.raises(InputError, match="2 reference samples"):
        KidReference(b[:1])

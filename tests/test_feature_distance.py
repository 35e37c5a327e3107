"""The Frechet and KID intervals cover the value they report: seeded repeats on distributions
whose answer is known in closed form (Gaussians for the Frechet distance, a finite support for
KID), counted against the 95% they claim."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from diffbench.core.errors import InputError
from diffbench.measure.feature_distance import (
    MIN_FRECHET_DIGITS,
    FeatureReference,
    FrechetReference,
    KidReference,
    cubic_kernel,
    frechet_difference,
    frechet_estimate,
    kid_estimate,
    polynomial_mmd2,
)

REPEATS = 200
HALF_SAMPLES = 200


def gaussian_frechet(mean_a, cov_a, mean_b, cov_b) -> float:
    """The Frechet distance of two Gaussians from their parameters, with scipy's sqrtm."""
    gap = mean_a - mean_b
    return float(gap @ gap + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real))


def random_covariance(d: int, generator: torch.Generator) -> torch.Tensor:
    """A covariance with spread-out eigenvalues and random eigenvectors (so no two commute)."""
    mix = torch.randn(d, d, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(mix)
    return q @ torch.diag(torch.logspace(0, -1.5, d, dtype=torch.float64)) @ q.T


@pytest.mark.parametrize("n", [32, 128])
@pytest.mark.parametrize("case", ["equal", "apart"])
def test_the_frechet_interval_covers_the_true_distance(n, case):
    """10 dimensions, as the shipped metric measures: the reference is N(0, S_b) exactly
    (its parameters, as a fixed reference set is a constant), the outputs N(mu, S_a). The
    plain estimate sits above the truth by O(d / n); the corrected one is centred on it and its
    interval covers it in about 95% of repeats. Seen: equal 200 (n=32), 200 (128); apart 190
    (32), 192 (128), of 200 (at the truth 0 of equal distributions, conservative)."""
    g = torch.Generator().manual_seed(11)
    d = 10
    cov_b = random_covariance(d, g)
    mean_b = torch.zeros(d, dtype=torch.float64)
    if case == "equal":
        mean_a, cov_a = mean_b, cov_b
    else:
        mean_a = 0.3 * torch.randn(d, generator=g, dtype=torch.float64)
        cov_a = 0.6 * random_covariance(d, g)
    truth = gaussian_frechet(mean_a.numpy(), cov_a.numpy(), mean_b.numpy(), cov_b.numpy())
    reference = FrechetReference(mean_b, cov_b)
    chol = torch.linalg.cholesky(cov_a)
    covered = inside = 0
    plain, corrected = [], []
    for _ in range(REPEATS):
        x = mean_a + torch.randn(n, d, generator=g, dtype=torch.float64) @ chol.T
        point, (lo, hi) = frechet_estimate(x, reference, g, HALF_SAMPLES)
        covered += lo <= truth <= hi
        inside += lo <= point <= hi
        plain.append(reference.distance(x))
        corrected.append(point)
    assert inside == REPEATS
    assert 0.91 * REPEATS <= covered <= REPEATS, covered
    spread = float(np.std(corrected))
    assert np.mean(plain) - truth > 2 * spread / np.sqrt(REPEATS)  # the bias it removes
    assert abs(np.mean(corrected) - truth) < 0.5 * spread  # centred within half a spread


def test_the_uncorrected_bootstrap_would_not_cover():
    """The interval this replaces (the plain distance recomputed on resamples drawn with
    replacement) lies above the truth: the check above can fail."""
    g = torch.Generator().manual_seed(5)
    d, n = 10, 64
    cov = random_covariance(d, g)
    reference = FrechetReference(torch.zeros(d, dtype=torch.float64), cov)
    chol = torch.linalg.cholesky(cov)
    covered = 0
    for _ in range(40):
        x = torch.randn(n, d, generator=g, dtype=torch.float64) @ chol.T
        index = torch.randint(0, n, (200, n), generator=g)
        resampled = reference.distances(x[index])
        covered += float(torch.quantile(resampled, 0.025)) <= 0.0
    assert covered == 0  # the truth is 0: every plain bootstrap interval misses it


def test_the_paired_frechet_difference_cancels_what_two_rows_share():
    """Two output sets of the same digits, one a slightly noisier copy of the other: their
    paired difference is resolved above 0 while their own intervals overlap, and a row against
    itself differs by exactly 0."""
    g = torch.Generator().manual_seed(3)
    d, n = 10, 256
    cov = random_covariance(d, g)
    reference = FrechetReference(torch.zeros(d, dtype=torch.float64), cov)
    a = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    b = a + 0.2 * torch.randn(n, d, generator=torch.Generator().manual_seed(1),
                              dtype=torch.float64)
    difference, (lo, hi) = frechet_difference(b, a, reference, torch.Generator().manual_seed(0))
    _, own_a = frechet_estimate(a, reference, torch.Generator().manual_seed(0))
    _, own_b = frechet_estimate(b, reference, torch.Generator().manual_seed(0))
    assert own_b[0] < own_a[1]  # separately: overlapping
    assert 0 < lo <= difference <= hi  # paired: resolved
    assert frechet_difference(a, a, reference, g) == (0.0, [0.0, 0.0])
    with pytest.raises(InputError, match="one shape"):
        frechet_difference(a, a[:-1], reference, g)
    with pytest.raises(InputError, match=f">= {MIN_FRECHET_DIGITS} digits"):
        frechet_estimate(a[: MIN_FRECHET_DIGITS - 1], reference, g)


def test_the_feature_reference_measures_on_its_principal_components():
    """Features that vary only in 3 of 12 directions: the top components span them, so the
    projected distance equals the full one; fewer digits than the minimum give no Frechet."""
    g = torch.Generator().manual_seed(8)
    basis, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    def sample(n, scale):
        return (scale * torch.randn(n, 3, generator=g, dtype=torch.float64)) @ basis[:, :3].T
    real = sample(2000, 1.0)
    reference = FeatureReference(real, components=3)
    outputs = sample(300, 1.5)
    full = FrechetReference.fit(real).distance(outputs)
    projected = reference.frechet.distance(reference.project(outputs))
    assert projected == pytest.approx(full, rel=1e-6)
    scores = reference.score(outputs[:29], g)
    assert scores["frechet_distance"] is None and scores["frechet_distance_ci95"] is None
    assert scores["kid"] is not None


def finite_support(seed: int):
    """30 points in 8 dimensions and two weightings of them; the reference is 3,000 draws."""
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(30, 8, generator=g, dtype=torch.float64)
    q = torch.distributions.Dirichlet(torch.ones(30, dtype=torch.float64)).sample()
    return g, support, q


@pytest.mark.parametrize("n", [32, 128])
@pytest.mark.parametrize("case", ["equal", "apart"])
def test_the_kid_interval_covers_the_squared_mmd_to_the_reference(n, case):
    """Outputs drawn from weights p on a finite support: given the reference set Y, the value
    KID estimates is E_p k(x, x') - 2 E_p mean_y k(x, y) + the reference's within-set mean,
    a finite sum here. Seen: equal 199 (n=32), 200 (128); apart 198 (32), 192 (128), of 200:
    conservative where the distributions match."""
    torch.manual_seed(0)  # Dirichlet draws use the global generator
    g, support, q = finite_support(21)
    p = q if case == "equal" else 0.5 * q + 0.5 * torch.distributions.Dirichlet(
        torch.ones(30, dtype=torch.float64)).sample()
    y = support[torch.multinomial(q, 3000, replacement=True, generator=g)]
    k_yy = cubic_kernel(y, y)
    within_y = (k_yy.sum() - k_yy.trace()) / (len(y) * (len(y) - 1))
    k_ss = cubic_kernel(support, support)
    truth = float(p @ k_ss @ p - 2 * p @ cubic_kernel(support, y).mean(1) + within_y)
    reference = KidReference(y)
    covered = inside = 0
    for _ in range(REPEATS):
        x = support[torch.multinomial(p, n, replacement=True, generator=g)]
        point, (lo, hi) = kid_estimate(x, reference, g, resamples=400)
        covered += lo <= truth <= hi
        inside += lo <= point <= hi
    assert inside == REPEATS
    assert 0.92 * REPEATS <= covered <= REPEATS, covered


def test_kid_is_the_unbiased_mmd_against_the_whole_reference():
    """The point is polynomial_mmd2 of all outputs against all reference digits."""
    g = torch.Generator().manual_seed(4)
    a = torch.randn(50, 6, generator=g, dtype=torch.float64)
    b = torch.randn(400, 6, generator=g, dtype=torch.float64) + 0.2
    point, _ = kid_estimate(a, KidReference(b), g)
    assert point == pytest.approx(polynomial_mmd2(a, b), rel=1e-10)
    with pytest.raises(InputError, match="2 samples"):
        kid_estimate(a[:1], KidReference(b), g)


@pytest.mark.parametrize("n", [32, 128])
def test_the_paired_frechet_interval_covers_the_true_difference(n):
    """Two systems' outputs of the same digits: a ~ N(0, S_a), b = a + 0.3 e with e ~ N(0, I)
    (so b ~ N(0, S_a + 0.09 I), correlated with a digit by digit); the truth is the difference
    of their Gaussians' distances to the reference N(0, S_b), by scipy. Seen: 193 (n=32), 190
    (n=128), of 200."""
    g = torch.Generator().manual_seed(13)
    d = 10
    cov_a, cov_b = random_covariance(d, g), random_covariance(d, g)
    zero = np.zeros(d)
    cov_noisy = cov_a.numpy() + 0.09 * np.eye(d)
    truth = (gaussian_frechet(zero, cov_noisy, zero, cov_b.numpy())
             - gaussian_frechet(zero, cov_a.numpy(), zero, cov_b.numpy()))
    reference = FrechetReference(torch.zeros(d, dtype=torch.float64), cov_b)
    chol = torch.linalg.cholesky(cov_a)
    covered = 0
    for _ in range(REPEATS):
        a = torch.randn(n, d, generator=g, dtype=torch.float64) @ chol.T
        b = a + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
        _, (lo, hi) = frechet_difference(b, a, reference, g, HALF_SAMPLES)
        covered += lo <= truth <= hi
    assert 0.91 * REPEATS <= covered <= REPEATS, covered

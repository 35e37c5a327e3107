"""Distances between the outputs' and real digits' classifier features, with 95% intervals that
cover the value they report (coverage on known answers: tests/test_feature_distance.py).

The reference is a fixed set of held-out real digits
(:data:`diffbench.measure.scoring.REFERENCE_SLICE`),
a constant of the benchmark: the intervals describe the outputs' sampling, given it.

* **Frechet distance** (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule") on
  the reference features' top :data:`COMPONENTS` principal components. On the shipped classifier
  those hold 98.7% of the reference's feature variance (nine directions separate ten class
  means); in all 128 dimensions the plain estimate's upward bias, O(d / n) (Chong & Forsyth 2020,
  "Effectively Unbiased FID and Inception Score and where to find them"), exceeds the
  differences between systems at the 32-512 digits scored here. The bias is removed by
  extrapolating linearly in 1 / n from the n digits and from half-samples of m = n // 2 drawn
  without replacement, ``(n FD_n - m mean FD_m) / (n - m)`` (Chong & Forsyth's FD-infinity with
  two sizes). The interval is the estimate plus the half-samples' spread about their mean: a
  half-sample without replacement varies about the whole sample as the whole sample varies about
  the population (half-sampling, McCarthy 1969). Unbiased, so it can be slightly negative when the
  two distributions match; it needs :data:`MIN_FRECHET_DIGITS` digits (fewer: ``None``).
* **KID** (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased squared MMD with the
  kernel (x.y / d + 1)^3 between all outputs and the whole reference set, in all dimensions. The
  interval is a percentile bootstrap over the outputs that leaves out the pairs of a digit with
  its own copies, so every resample's estimate is unbiased as well.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffbench.core.errors import InputError
from diffbench.measure.stats import RESAMPLES, bootstrap_indices, percentile_interval

COMPONENTS = 10
"""Principal components of the reference features the Frechet distance is measured in."""
MIN_FRECHET_DIGITS = 3 * COMPONENTS
"""Fewest digits whose bias-corrected Frechet distance covers (checked down to 24 at 10
components; at 16 the extrapolation no longer holds)."""


def _root(cov: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(cov)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def _covariances(samples: Tensor) -> Tensor:
    """Unbiased covariance of each of a batch of samples [B, m, d] -> [B, d, d]."""
    centred = samples - samples.mean(1, keepdim=True)
    return centred.transpose(1, 2) @ centred / (samples.shape[1] - 1)


class FrechetReference:
    """The reference side of the Frechet distance (mean, covariance and its square root), fitted
    once, so many samples (half-samples, other systems) are measured against it cheaply."""

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        self.mean, self.cov = mean.double(), cov.double()
        self.root = _root(self.cov)

    @classmethod
    def fit(cls, features: Tensor) -> FrechetReference:
        """The Gaussian fit of ``features`` [N, d]."""
        b = features.double()
        return cls(b.mean(0), torch.cov(b.T))

    def distances(self, samples: Tensor) -> Tensor:
        """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) for each sample of a batch
        [B, m, d] -> [B], in float64. Tr((S_a S_b)^(1/2)) is the sum of the square roots of the
        eigenvalues of S_b^(1/2) S_a S_b^(1/2), which is symmetric, so ``eigvalsh`` suffices."""
        a = samples.double()
        cov_a = _covariances(a)
        cross = torch.linalg.eigvalsh(self.root @ cov_a @ self.root).clamp_min(0).sqrt().sum(-1)
        return ((a.mean(1) - self.mean).pow(2).sum(-1) + cov_a.diagonal(dim1=1, dim2=2).sum(-1)
                + self.cov.trace() - 2 * cross)

    def distance(self, features: Tensor) -> float:
        """The plain (biased) Frechet distance of one feature set [N, d]."""
        return float(self.distances(features[None])[0].clamp_min(0))


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """The plain Frechet distance between Gaussian fits of two feature sets (Heusel et al.
    2017), biased upward at small samples; :func:`frechet_estimate` corrects it."""
    return FrechetReference.fit(features_b).distance(features_a)


def _half_samples(n: int, generator: torch.Generator, count: int) -> Tensor:
    """``count`` rows of n // 2 distinct indices of ``n`` digits."""
    return torch.stack([torch.randperm(n, generator=generator)[: n // 2] for _ in range(count)])


def _extrapolated(features: Tensor, reference: FrechetReference, halves: Tensor
                  ) -> tuple[Tensor, Tensor]:
    """The bias-corrected distance, and the half-sample distances minus their mean [B]."""
    n, m = len(features), halves.shape[1]
    whole = reference.distances(features[None])[0]
    half = reference.distances(features.double()[halves])
    return (n * whole - m * half.mean()) / (n - m), half - half.mean()


def _check_digits(n: int) -> None:
    if n < MIN_FRECHET_DIGITS:
        raise InputError(f"the Frechet estimate needs >= {MIN_FRECHET_DIGITS} digits, got {n}")


def frechet_estimate(
    features: Tensor, reference: FrechetReference, generator: torch.Generator,
    half_samples: int = RESAMPLES,
) -> tuple[float, list[float]]:
    """The bias-corrected Frechet distance of ``features`` [N, d] to ``reference`` and its 95%
    half-sampling interval (module docstring)."""
    _check_digits(len(features))
    point, spread = _extrapolated(features, reference, _half_samples(len(features), generator,
                                                                      half_samples))
    lo, hi = percentile_interval(spread)
    return float(point), [float(point) + lo, float(point) + hi]


def frechet_difference(
    features: Tensor, other: Tensor, reference: FrechetReference, generator: torch.Generator,
    half_samples: int = RESAMPLES,
) -> tuple[float, list[float]]:
    """The paired difference of two bias-corrected Frechet distances, ``features`` minus
    ``other`` (row i of each from the same source digit), and its 95% interval: both measured on
    the same half-samples, so what the digits share cancels."""
    if features.shape != other.shape:
        raise InputError(f"paired features need one shape, got {tuple(features.shape)} and "
                         f"{tuple(other.shape)}")
    _check_digits(len(features))
    halves = _half_samples(len(features), generator, half_samples)
    point_a, spread_a = _extrapolated(features, reference, halves)
    point_b, spread_b = _extrapolated(other, reference, halves)
    point = float(point_a - point_b)
    lo, hi = percentile_interval(spread_a - spread_b)
    return point, [point + lo, point + hi]


def cubic_kernel(a: Tensor, b: Tensor) -> Tensor:
    """k(x, y) = (x.y / d + 1)^3 between the rows of ``a`` and ``b`` (Binkowski et al. 2018,
    eq. 4: degree 3, gamma 1/d, coef 1), in float64."""
    return (a.double() @ b.double().T / a.shape[1] + 1).pow(3)


def _within(kernel: Tensor) -> Tensor:
    """Mean kernel value over pairs of distinct rows (the U-statistic's within term)."""
    m = len(kernel)
    return (kernel.sum() - kernel.diagonal().sum()) / (m * (m - 1))


def polynomial_mmd2(features_a: Tensor, features_b: Tensor) -> float:
    """The unbiased estimate of the squared MMD with :func:`cubic_kernel`."""
    m, n = len(features_a), len(features_b)
    if m < 2 or n < 2:
        raise InputError(f"the unbiased MMD needs >= 2 samples a side, got {m} and {n}")
    return float(_within(cubic_kernel(features_a, features_a))
                 + _within(cubic_kernel(features_b, features_b))
                 - 2 * cubic_kernel(features_a, features_b).mean())


class KidReference:
    """The reference side of KID: its features and their within-set kernel mean, computed once."""

    def __init__(self, features: Tensor) -> None:
        if len(features) < 2:
            raise InputError(f"KID needs >= 2 reference samples, got {len(features)}")
        self.features = features.double()
        self.within = _within(cubic_kernel(self.features, self.features))


def kid_estimate(
    features: Tensor, reference: KidReference, generator: torch.Generator,
    resamples: int = RESAMPLES,
) -> tuple[float, list[float]]:
    """KID of ``features`` [N, d] against the whole reference and its 95% percentile-bootstrap
    interval over the outputs (module docstring). A resample with multiplicities c averages the
    kernel over pairs of distinct digits: (c'Kc - sum c_i^2 K_ii) / (N^2 - sum c_i^2)."""
    n = len(features)
    if n < 2:
        raise InputError(f"KID needs >= 2 samples, got {n}")
    kernel = cubic_kernel(features, features)
    cross = cubic_kernel(features, reference.features).mean(1)  # [N]
    point = _within(kernel) - 2 * cross.mean() + reference.within
    index = bootstrap_indices(n, generator, resamples).cpu()
    counts = torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(
        1, index, torch.ones(resamples, n, dtype=torch.float64))
    pairs = (counts @ kernel * counts).sum(1) - (counts.pow(2) * kernel.diagonal()).sum(1)
    within = pairs / (n * n - counts.pow(2).sum(1))
    estimates = within - 2 * (counts @ cross) / n + reference.within
    # a resample of one digit repeated has no pair of distinct digits (likely only at tiny n)
    lo, hi = percentile_interval(estimates[~estimates.isnan()])
    # widened to hold the point where rounding (resamples equal to the sample) puts it outside
    return float(point), [min(lo, float(point)), max(hi, float(point))]


class FeatureReference:
    """Held-out real digits' classifier features, fitted once for both distances."""

    def __init__(self, features: Tensor, components: int = COMPONENTS) -> None:
        f = features.double()
        vectors = torch.linalg.eigh(torch.cov(f.T)).eigenvectors
        self.basis = vectors[:, -components:]  # the top principal directions [d, k]
        self.frechet = FrechetReference.fit(f @ self.basis)
        self.kid = KidReference(f)

    def project(self, features: Tensor) -> Tensor:
        """Features [N, d] on the reference's principal components [N, k], in float64."""
        return features.double() @ self.basis

    def score(self, features: Tensor, generator: torch.Generator) -> dict[str, float | None
                                                                         | list[float]]:
        """frechet_distance and kid of ``features``, each with its ``_ci95`` (the Frechet pair
        ``None`` below :data:`MIN_FRECHET_DIGITS` digits)."""
        scores: dict[str, float | None | list[float]] = {
            "frechet_distance": None, "frechet_distance_ci95": None}
        if len(features) >= MIN_FRECHET_DIGITS:
            scores["frechet_distance"], scores["frechet_distance_ci95"] = frechet_estimate(
                self.project(features), self.frechet, generator)
        scores["kid"], scores["kid_ci95"] = kid_estimate(features, self.kid, generator)
        return scores

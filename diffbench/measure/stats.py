"""The statistics behind every interval diffbench reports, each a 95% interval by default.

* shares (preservation, noised accuracy, generation shares): the Wilson score interval
  (Wilson 1927, "Probable inference, the law of succession, and statistical inference"), which
  stays inside [0, 1] and is honest at 0 and 1 successes, unlike the normal approximation;
* means over digits (mse, psnr, ssim) and any other statistic of the digits: the percentile
  bootstrap (Efron 1979, "Bootstrap methods: another look at the jackknife"), resampling digits
  with replacement from a seeded generator;
* latency percentiles: linear interpolation between order statistics (numpy's default).

Intervals are ``[lo, hi]`` lists, so they go into JSON as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import torch
from torch import Tensor

from diffbench.core.errors import InputError

LEVEL = 0.95
RESAMPLES = 1000


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise InputError(f"confidence level must be in (0, 1), got {level!r}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> list[float]:
    """Wilson's score interval for a share ``successes / n`` (Wilson 1927)."""
    z = _check_level(level)
    if n < 1 or not 0 <= successes <= n:
        raise InputError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # p always lies inside; min/max keep it there when rounding says otherwise (k = 0 or n)
    return [min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))]


def share_interval(flags: Tensor, level: float = LEVEL) -> list[float]:
    """Wilson interval of the share of true ``flags``."""
    return wilson_interval(int(flags.sum()), len(flags), level)


def bootstrap_indices(n: int, generator: torch.Generator, resamples: int = RESAMPLES) -> Tensor:
    """``resamples`` rows of ``n`` indices drawn with replacement (Efron's bootstrap)."""
    if n < 1 or resamples < 1:
        raise InputError(f"need n >= 1 and resamples >= 1, got n={n}, resamples={resamples}")
    return torch.randint(0, n, (resamples, n), generator=generator, device=generator.device)


def percentile_interval(estimates: Tensor, level: float = LEVEL) -> list[float]:
    """The central ``level`` share of ``estimates``: the percentile interval."""
    _check_level(level)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = torch.quantile(estimates.double().cpu(), q).tolist()
    return [lo, hi]


def bootstrap_mean_interval(
    values: Tensor,
    generator: torch.Generator,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
) -> list[float]:
    """Percentile-bootstrap interval of the mean of per-digit ``values`` (Efron 1979)."""
    values = values.double().flatten().cpu()
    index = bootstrap_indices(len(values), generator, resamples).cpu()
    return percentile_interval(values[index].mean(1), level)


def bootstrap_interval(
    statistic: Callable[[Tensor], float],
    n: int,
    generator: torch.Generator,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
) -> list[float]:
    """Percentile-bootstrap interval of ``statistic(indices)`` over resamples of ``n`` digits."""
    index = bootstrap_indices(n, generator, resamples).cpu()
    return percentile_interval(torch.tensor([statistic(row) for row in index]), level)


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[int, float]:
    """q -> the q-th percentile of ``values`` (linear interpolation between order statistics)."""
    if not values:
        raise InputError("percentiles of no values")
    data = torch.tensor(list(values), dtype=torch.float64)
    points = torch.quantile(data, torch.tensor([q / 100 for q in qs], dtype=torch.float64))
    return dict(zip(qs, points.tolist(), strict=True))

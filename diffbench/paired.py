"""The verdict of a base-against-head timing: paired log-ratios, their median and its interval.

Each pair is one call of each version, back to back in random order, so drift that is slower
than a pair cancels in ``ln(t_head / t_base)`` (randomised multiple interleaved trials: Abedi &
Brecht, ICPE 2017; duet benchmarking: Bulej et al., ICPE 2020). The statistic is the median of
the paired log-ratios, robust to the spikes a shared machine adds to single calls; its interval
is the distribution-free one from order statistics (the sign-test interval: Conover, *Practical
Nonparametric Statistics*, 3rd ed., sec. 3.2), exact for any continuous distribution.

The rule (thresholds on the ratio ``exp(median)``, chosen by calibration on a 2-core machine,
``docs/regression_gate.md``):

* ``slower``: the interval's lower bound is above ``+LOWER_BOUND`` and the estimate at least
  ``+MIN_EFFECT``; ``faster`` the mirror image;
* ``same``: the whole interval lies within ``±SAME_BAND``;
* ``inconclusive``: none of these when the case's pairs or time run out.

Pairs are added in rounds of ``ROUND`` after the first ``MIN_PAIRS`` until a verdict is reached
(``same`` also stops a case early) or the budget is spent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import binom

from diffbench.errors import InputError

LEVEL = 0.99
LOWER_BOUND = 0.02  # slower: the 99% interval excludes anything under +2% ...
MIN_EFFECT = 0.03  # ... and the estimate is at least +3%
SAME_BAND = 0.03  # same: the 99% interval lies within -3% .. +3%
MIN_PAIRS = 20  # no verdict on fewer pairs
ROUND = 10  # pairs added between two looks at the interval
MAX_PAIRS = 400
VERDICTS = ("slower", "faster", "same", "inconclusive", "not comparable")


def log_ratios(head: Sequence[float], base: Sequence[float]) -> list[float]:
    """``ln(head_i / base_i)`` for each pair of seconds."""
    if len(head) != len(base):
        raise InputError(f"pairs need as many head as base times, got {len(head)} and "
                         f"{len(base)}")
    if any(not (t > 0 and math.isfinite(t)) for t in (*head, *base)):
        raise InputError("call times must be positive and finite")
    return [math.log(h / b) for h, b in zip(head, base)]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise InputError("the median of no values is undefined")
    return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2


def median_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The order-statistic interval ``[x_(k), x_(n+1-k)]`` for the median, with the largest
    ``k`` whose two-sided coverage ``1 - 2 P(Binomial(n, 1/2) < k)`` is at least ``level``.
    A ValueError when ``n`` is too small for ``level`` (for 99%: fewer than 8 values)."""
    if not 0 < level < 1:
        raise InputError(f"confidence level must be in (0, 1), got {level!r}")
    ordered, n = sorted(values), len(values)
    k = int(binom.ppf((1 - level) / 2, n, 0.5))  # P(B <= k) >= alpha/2 at the smallest such k
    if binom.cdf(k, n, 0.5) > (1 - level) / 2:
        k -= 1  # now P(B <= k) <= alpha/2, so P(B < k + 1) <= alpha/2
    if k < 0:
        raise InputError(f"{n} values are too few for a {level:.0%} interval of the median")
    return ordered[k], ordered[n - 1 - k]


def verdict(lo: float, estimate: float, hi: float) -> str | None:
    """``slower``, ``faster`` or ``same`` from a log-ratio interval and estimate; None while
    undecided."""
    if lo > math.log1p(LOWER_BOUND) and estimate >= math.log1p(MIN_EFFECT):
        return "slower"
    if hi < -math.log1p(LOWER_BOUND) and estimate <= -math.log1p(MIN_EFFECT):
        return "faster"
    if lo > -math.log1p(SAME_BAND) and hi < math.log1p(SAME_BAND):
        return "same"
    return None


def decide(ratios: Sequence[float], final: bool) -> str | None:
    """The verdict on the log-ratios so far; ``final`` (the budget is spent): ``inconclusive``
    instead of None."""
    if len(ratios) >= MIN_PAIRS:
        lo, hi = median_interval(ratios)
        found = verdict(lo, median(ratios), hi)
        if found is not None:
            return found
    return "inconclusive" if final else None


def sequential(ratios: Sequence[float], max_pairs: int) -> tuple[str, int]:
    """(verdict, pairs used) of the stopping rule replayed on a sequence of log-ratios: look
    after ``MIN_PAIRS`` and every ``ROUND`` more, stop at the first verdict or ``max_pairs``.
    Used to estimate false-alarm and detection rates by resampling measured pairs."""
    n = MIN_PAIRS
    while True:
        n = min(n, max_pairs, len(ratios))
        final = n >= max_pairs or n >= len(ratios)
        found = decide(ratios[:n], final)
        if found is not None:
            return found, n
        n += ROUND


def summary(head: Sequence[float], base: Sequence[float]) -> dict[str, float | list[float]]:
    """ratio (exp of the median log-ratio), its 99% interval, both medians, pair count."""
    ratios = log_ratios(head, base)
    lo, hi = median_interval(ratios)
    return {"ratio": math.exp(median(ratios)), "ci99": [math.exp(lo), math.exp(hi)],
            "head_median_s": median(head), "base_median_s": median(base), "pairs": len(ratios)}

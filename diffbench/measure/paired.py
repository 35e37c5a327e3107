"""The verdict of a base-against-head timing: paired log-ratios over several worker pairs.

Each pair is one call of each version, back to back in random order, so drift that is slower
than a pair cancels in ``ln(t_head / t_base)`` (randomised multiple interleaved trials: Abedi &
Brecht, ICPE 2017; duet benchmarking: Bulej et al., ICPE 2020).

Drift is not the only noise. Two processes running the same code on the same core were
measured up to 11% apart for their whole life (pixel DDIM-50 at batch 1, six processes, the
spread of their medians about 3%), whatever alternation does; disabling address-space
randomisation, fixing the hash seed or re-allocating the weights did not remove it. So a
worker process is a random effect, and the unit of replication is the worker pair, not the
call (Kalibera & Jones, "Rigorous benchmarking in reasonable time", ISMM 2013: repeat at the
level whose variance dominates). Each case runs ``PROCESSES`` worker pairs; each pair's
estimate is the median of its log-ratios (robust to the spikes a shared machine adds to single
calls); the case's estimate is their mean, and its interval Student's t over the pairs.

The rule (thresholds on the ratio, ``docs/regression_gate.md``), designed so that its error
rates hold with its looks:

* ``same``: the whole 99% interval lies within ``±SAME_BAND``. Applied after ``MIN_ROUNDS``
  rounds and after every round from then on; it stops a case early. (Stopping early on
  ``same`` cannot raise the false-alarm rate, and a case slower by more than the band passes
  one of these looks only when its interval misses the truth by more than the band's distance
  from it.)
* ``slower`` / ``faster``: decided at the final look only (after ``MAX_ROUNDS`` rounds or when
  the budget is spent), when the 99% interval lies wholly above ``+SLOWER_BOUND`` (below
  ``-SLOWER_BOUND``). One look, so a change-free case is called ``slower`` at most half of
  1% of the time, whatever the earlier looks did.
* ``inconclusive``: none of these at the final look.

Every timed case gets ``MIN_ROUNDS`` rounds whatever the budget; the budget buys the rounds
after them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy.stats import binom, t

from diffbench.core.errors import InputError

LEVEL = 0.99
SLOWER_BOUND = 0.01  # slower (final look): the 99% interval lies wholly above +1%
SAME_BAND = 0.03  # same (any look): the 99% interval lies within -3% .. +3%
PROCESSES = 8  # worker pairs per case: the interval's degrees of freedom are one fewer
MIN_ROUNDS = 3  # pairs per worker pair before the first look, whatever the budget
MAX_ROUNDS = 4  # the final look: a bounded extension for a case still undecided
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
    """``statistics.median``, with an empty input as an :class:`InputError`."""
    if len(values) == 0:
        raise InputError("the median of no values is undefined")
    return statistics.median(values)


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


def verdict(lo: float, hi: float, final: bool) -> str | None:
    """The verdict on a log-ratio interval: ``same`` at any look; ``slower``, ``faster`` or
    ``inconclusive`` at the final one only; None while undecided."""
    if lo > -math.log1p(SAME_BAND) and hi < math.log1p(SAME_BAND):
        return "same"
    if not final:
        return None
    if lo > math.log1p(SLOWER_BOUND):
        return "slower"
    if hi < -math.log1p(SLOWER_BOUND):
        return "faster"
    return "inconclusive"


def process_interval(estimates: Sequence[float], level: float = LEVEL
                     ) -> tuple[float, float, float]:
    """(lower, mean, upper): Student's t interval for the mean of the worker pairs' estimates."""
    if not 0 < level < 1:
        raise InputError(f"confidence level must be in (0, 1), got {level!r}")
    n = len(estimates)
    if n < 2:
        raise InputError(f"an interval over worker pairs needs at least 2, got {n}")
    mean = statistics.fmean(estimates)
    half = t.ppf((1 + level) / 2, n - 1) * statistics.stdev(estimates) / math.sqrt(n)
    return mean - half, mean, mean + half


def estimate(ratios_by_process: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """(lower, estimate, upper) of the log-ratio from each worker pair's log-ratios."""
    return process_interval([median(r) for r in ratios_by_process])


def decide(ratios_by_process: Sequence[Sequence[float]], final: bool) -> str | None:
    """The verdict on each worker pair's log-ratios so far; ``final`` (the budget is spent):
    ``inconclusive`` instead of None."""
    rounds = min((len(r) for r in ratios_by_process), default=0)
    if len(ratios_by_process) < 2 or rounds < MIN_ROUNDS:
        return "inconclusive" if final else None
    lo, _, hi = estimate(ratios_by_process)
    return verdict(lo, hi, final)


def sequential(ratios_by_process: Sequence[Sequence[float]], max_rounds: int
               ) -> tuple[str, int]:
    """(verdict, rounds used) of the stopping rule replayed on each worker pair's sequence of
    log-ratios: look after ``MIN_ROUNDS`` rounds and after every round, stop at ``same`` or at
    ``max_rounds`` (the final look). Used to estimate false-alarm and detection rates by resampling
    measured worker pairs."""
    available = min(len(r) for r in ratios_by_process)
    n = min(MIN_ROUNDS, max_rounds, available)
    while True:
        final = n >= max_rounds or n >= available
        found = decide([r[:n] for r in ratios_by_process], final)
        if found is not None:
            return found, n
        n += 1


def summary(head: Sequence[float], base: Sequence[float]) -> dict[str, float | list[float]]:
    """One stream of pairs (one process a side): ratio (exp of the median log-ratio), its 99%
    order-statistic interval, both medians, pair count."""
    ratios = log_ratios(head, base)
    lo, hi = median_interval(ratios)
    return {"ratio": math.exp(median(ratios)), "ci99": [math.exp(lo), math.exp(hi)],
            "head_median_s": median(head), "base_median_s": median(base), "pairs": len(ratios)}


def process_summary(head: Sequence[Sequence[float]], base: Sequence[Sequence[float]]
                    ) -> dict[str, float | list[float]]:
    """Several worker pairs: ratio (exp of the mean of their median log-ratios), its 99% t
    interval, each pair's ratio, both medians over every call, pair and round counts."""
    ratios = [log_ratios(h, b) for h, b in zip(head, base, strict=True)]
    lo, mid, hi = estimate(ratios)
    return {"ratio": math.exp(mid), "ci99": [math.exp(lo), math.exp(hi)],
            "process_ratios": [math.exp(median(r)) for r in ratios],
            "head_median_s": median([s for h in head for s in h]),
            "base_median_s": median([s for b in base for s in b]),
            "pairs": sum(map(len, ratios)), "processes": len(ratios),
            "rounds": min(map(len, ratios))}

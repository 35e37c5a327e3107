"""The paired log-ratio statistics of ``diffbench ab``: the median's order-statistic interval
against published tables and its coverage by simulation, and the verdict rule at its edges."""

from __future__ import annotations

import math
import random

import pytest

from diffbench import paired
from diffbench.errors import InputError


def test_interval_matches_the_sign_test_table():
    # Conover (1999), Table A3 / the binomial: n = 20 at 95% is [x_(6), x_(15)] (coverage 95.9%),
    # n = 8 at 99% is [x_(1), x_(8)] (99.2%), n = 25 at 99% is [x_(6), x_(20)] (99.6%).
    assert paired.median_interval(list(range(1, 21)), 0.95) == (6, 15)
    assert paired.median_interval(list(range(1, 9)), 0.99) == (1, 8)
    assert paired.median_interval(list(range(1, 26)), 0.99) == (6, 20)
    assert paired.median_interval([3, 1, 2, 8, 7, 4, 6, 5], 0.99) == (1, 8)  # order-free


def test_too_few_values_for_the_level_is_an_error():
    with pytest.raises(InputError, match="7 values are too few for a 99% interval"):
        paired.median_interval([1.0] * 7, 0.99)


def test_interval_covers_the_median_at_least_as_often_as_claimed():
    """Exponential draws (true median ln 2): the 99% interval misses in under 1% + noise."""
    rng = random.Random(0)
    trials, misses = 2000, 0
    for _ in range(trials):
        lo, hi = paired.median_interval([rng.expovariate(1.0) for _ in range(40)])
        misses += not lo <= math.log(2) <= hi
    assert misses / trials < 0.01 + 3 * math.sqrt(0.01 * 0.99 / trials)


def test_log_ratios_reject_bad_times():
    assert paired.log_ratios([2.0], [1.0]) == [pytest.approx(math.log(2))]
    with pytest.raises(InputError, match="as many head as base"):
        paired.log_ratios([1.0, 1.0], [1.0])
    with pytest.raises(InputError, match="positive and finite"):
        paired.log_ratios([float("nan")], [1.0])


@pytest.mark.parametrize("lo, estimate, hi, expected", [
    (math.log(1.025), math.log(1.05), math.log(1.08), "slower"),
    (math.log(1.025), math.log(1.028), math.log(1.03), None),  # a real but small change: undecided
    (math.log(1.01), math.log(1.05), math.log(1.10), None),  # the interval reaches +1%
    (-math.log(1.08), -math.log(1.05), -math.log(1.025), "faster"),
    (-math.log(1.02), 0.0, math.log(1.02), "same"),
    (-math.log(1.04), 0.0, math.log(1.02), None),  # reaches -4%: not same
])
def test_verdict_rule(lo, estimate, hi, expected):
    assert paired.verdict(lo, estimate, hi) == expected


def test_no_verdict_before_the_minimum_pairs_and_inconclusive_when_final():
    tight = [0.0] * (paired.MIN_PAIRS - 1)
    assert paired.decide(tight, final=False) is None
    assert paired.decide(tight, final=True) == "inconclusive"
    assert paired.decide([0.0] * paired.MIN_PAIRS, final=False) == "same"


def test_sequential_stops_at_the_first_verdict():
    slower = [math.log(1.2)] * 100
    assert paired.sequential(slower, 100) == ("slower", paired.MIN_PAIRS)
    wild = [(-1) ** i * 0.5 for i in range(60)]  # +-65%: never decided
    assert paired.sequential(wild, 60) == ("inconclusive", 60)


def test_summary_reports_ratio_interval_and_medians():
    head, base = [1.1, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8], [1, 2, 3, 4, 5, 6, 7, 8]
    found = paired.summary(head, base)
    assert found["ratio"] == pytest.approx(1.1)
    assert found["ci99"] == [pytest.approx(1.1), pytest.approx(1.1)]
    assert found["head_median_s"] == pytest.approx(4.95) and found["base_median_s"] == 4.5
    assert found["pairs"] == 8

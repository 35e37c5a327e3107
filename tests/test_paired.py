"""The paired log-ratio statistics of ``diffbench ab``: the median's order-statistic interval and
the t interval over worker pairs against published tables, their coverage by simulation, and the
verdict rule at its edges."""

from __future__ import annotations

import math
import random

import pytest

from diffbench.core.errors import InputError
from diffbench.measure import paired


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


@pytest.mark.parametrize("lo, hi, final, expected", [
    (math.log(1.025), math.log(1.08), True, "slower"),
    (math.log(1.025), math.log(1.08), False, None),  # slower is decided at the final look only
    (math.log(1.011), math.log(1.029), True, "same"),  # within the band: same, even if real
    (math.log(1.005), math.log(1.10), True, "inconclusive"),  # reaches under +1%
    (-math.log(1.08), -math.log(1.025), True, "faster"),
    (-math.log(1.08), -math.log(1.025), False, None),
    (-math.log(1.02), math.log(1.02), False, "same"),  # same stops at any look
    (-math.log(1.04), math.log(1.02), True, "inconclusive"),  # reaches -4%: not same
    (-math.log(1.04), math.log(1.02), False, None),
])
def test_verdict_rule(lo, hi, final, expected):
    assert paired.verdict(lo, hi, final) == expected


def test_t_interval_over_worker_pairs_matches_the_table():
    # Student's t, 4 degrees of freedom, two-sided 95%: 2.776 (any t table); sd of 1..5 is
    # sqrt(2.5), so the half-width is 2.776 * sqrt(2.5) / sqrt(5) = 1.963.
    lo, mean, hi = paired.process_interval([1, 2, 3, 4, 5], 0.95)
    assert mean == 3
    assert (lo, hi) == (pytest.approx(3 - 1.963, abs=1e-3), pytest.approx(3 + 1.963, abs=1e-3))
    with pytest.raises(InputError, match="at least 2, got 1"):
        paired.process_interval([0.1])


def test_interval_over_worker_pairs_covers_despite_a_process_effect():
    """Each simulated worker pair carries its own fixed offset (sd 3%, as measured between
    processes of the same code) on top of call noise: an interval over calls would miss the
    true ratio often, the one over worker pairs misses in about 1% of repeats."""
    rng = random.Random(1)
    trials, misses = 1000, 0
    for _ in range(trials):
        ratios = []
        for _ in range(paired.PROCESSES):
            offset = rng.gauss(0, 0.03)
            ratios.append([offset + rng.gauss(0, 0.05) for _ in range(10)])
        lo, _, hi = paired.estimate(ratios)
        misses += not lo <= 0.0 <= hi
    assert misses / trials < 0.01 + 3 * math.sqrt(0.01 * 0.99 / trials)


def test_no_verdict_before_the_minimum_rounds_and_inconclusive_when_final():
    short = [[0.0] * (paired.MIN_ROUNDS - 1)] * 4
    assert paired.decide(short, final=False) is None
    assert paired.decide(short, final=True) == "inconclusive"
    tight = [[0.001 * i] * paired.MIN_ROUNDS for i in range(4)]
    assert paired.decide(tight, final=False) == "same"


def test_sequential_stops_early_on_same_and_decides_slower_at_the_final_look():
    slower = [[math.log(1.2) + 0.001 * i] * 30 for i in range(4)]
    assert paired.sequential(slower, 30) == ("slower", 30)
    unchanged = [[0.001 * i] * 30 for i in range(4)]
    assert paired.sequential(unchanged, 30) == ("same", paired.MIN_ROUNDS)
    wild = [[(-1) ** j * 0.5] * 30 for j in range(4)]  # worker pairs +-65% apart
    assert paired.sequential(wild, 30) == ("inconclusive", 30)


def test_summary_reports_ratio_interval_and_medians():
    head, base = [1.1, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8], [1, 2, 3, 4, 5, 6, 7, 8]
    found = paired.summary(head, base)
    assert found["ratio"] == pytest.approx(1.1)
    assert found["ci99"] == [pytest.approx(1.1), pytest.approx(1.1)]
    assert found["head_median_s"] == pytest.approx(4.95) and found["base_median_s"] == 4.5
    assert found["pairs"] == 8


def test_process_summary_averages_the_worker_pairs_log_ratios():
    # Two worker pairs reading 1.1x and 1.21x: the estimate is their geometric mean, 1.1537.
    head = [[1.1, 1.1, 1.1], [2.42, 2.42, 2.42]]
    base = [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    found = paired.process_summary(head, base)
    assert found["ratio"] == pytest.approx(math.sqrt(1.1 * 1.21))
    assert found["process_ratios"] == [pytest.approx(1.1), pytest.approx(1.21)]
    assert found["pairs"] == 6 and found["processes"] == 2 and found["rounds"] == 3
    lo, hi = found["ci99"]
    assert lo < found["ratio"] < hi

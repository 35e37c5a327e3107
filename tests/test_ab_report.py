"""``diffbench ab``'s exit statuses, one meaning each, from the two verdicts of every case:
0 certified, 1 a regression, 3 no verdict (undecided, an invalid control, nothing comparable,
an unfinished run)."""

from __future__ import annotations

import pytest

from diffbench.gate import ab_report

TIMED = {"ratio": 1.0, "ci99": [0.99, 1.01], "processes": 12, "rounds": 3}
RATIOS = {"python_instructions": 1.0, "tensor_ops": 1.0, "tensor_bytes": 1.0}


def case(name, speed="same", fidelity="identical", time=None, **extra):
    """A joined entry whose work counts read ``speed`` (and whose timing reads ``time``)."""
    work = {"case": name, "verdict": "slower" if extra.pop("work_slower", False) else speed,
            "ratios": RATIOS}
    timing = None if time is None else {"case": name, "verdict": time, **TIMED}
    fid = {"verdict": fidelity, "bitwise": True, **extra.pop("fid", {})}
    joined = ab_report.join([name], [work], [timing] if timing else [], {name: fid},
                            extra.pop("control", None))[0]
    return {**joined, **extra, **({"verdict": speed} if "error" in extra else {})}


def result(*cases, control="same", complete=True):
    return {"cases": list(cases), "complete": complete,
            "control": {**TIMED, "case": "control", "verdict": control}}


@pytest.mark.parametrize("cases, control, status", [
    ([case("a"), case("b", "faster", "same")], "same", 0),
    ([case("a", time="inconclusive")], "same", 0),  # the work counts certify; timing reports
    ([case("a", time="slower")], "same", 1),  # a slower timing is a regression all the same
    ([case("a", fidelity="not scored")], "same", 0),  # a training step has no image output
    ([case("a"), case("b", "slower")], "same", 1),
    ([case("a", fidelity="worse")], "same", 1),
    ([case("a", "slower"), case("b", "inconclusive")], "slower", 1),  # a regression wins
    ([case("a", "inconclusive")], "same", 3),
    ([case("a", fidelity="inconclusive")], "same", 3),
    ([case("a")], "slower", 0),  # a biased control voids the timing; the counts certify
    ([case("a", time="slower", control={"verdict": "inconclusive"})], "inconclusive", 0),
    ([case("a", time="slower", control={"verdict": "faster"})], "faster", 0),
    ([case("a", work_slower=True, control={"verdict": "faster"})], "faster", 1),
    ([case("a", "not comparable", error={"base": "no such API"})], "same", 3),  # nothing compared
])
def test_exit_status(cases, control, status):
    found, message = ab_report.exit_status(result(*cases, control=control))
    assert found == status
    assert bool(message) == (status != 0)


def test_a_case_the_head_cannot_run_is_a_regression_one_the_base_cannot_is_new():
    head_broke = case("a", "not comparable", error={"head": "ImportError"})
    new = case("b", "not comparable", error={"base": "ImportError"})
    assert ab_report.exit_status(result(head_broke, case("c")))[0] == 1
    assert ab_report.exit_status(result(new, case("c")))[0] == 0
    assert ab_report.case_outcome(new) == "NEW"


def test_an_unfinished_run_gives_no_verdict():
    assert ab_report.exit_status(result(case("a"), complete=False)) == (
        3, "the run did not finish")


def test_the_lines_carry_both_verdicts_and_the_intervals():
    worse = case("img2img-x", "same", "worse",
                 fid={"mse_ratio": 1.031, "mse_ratio_ci99": [1.02, 1.04], "digits": 256,
                      "preservation_difference": -0.004,
                      "preservation_difference_ci99": [-0.012, 0.004]})
    line = ab_report.case_line(worse)
    assert line.startswith("FAIL      img2img-x: speed same (work same: instructions 1.0000, "
                           "ops 1.0000, bytes 1.0000)")
    assert "fidelity worse (MSE 1.031 [1.020, 1.040], preservation -0.4 points" in line
    timed = ab_report.case_line(case("b", time="same"))
    assert "; time same 1.000 [0.990, 1.010] 99%, 12 worker pairs x 3)" in timed

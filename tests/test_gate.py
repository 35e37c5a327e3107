"""The fidelity gate fails a planted regression with a message naming the case and numbers."""

from __future__ import annotations

import pytest

from diffbench.core.errors import InputError
from diffbench.gate.baseline import BaselineError, FidelityBaseline, Tolerance, check_case

BASE = {"mse": 0.0300, "preservation": 0.9700}


def test_within_tolerance_passes():
    assert check_case("pixel-ddim-50-s0.3", {"mse": 0.0320, "preservation": 0.95}, BASE,
                      Tolerance()) == []


@pytest.mark.parametrize(
    "measured, expected",
    [
        ({"mse": 0.0400, "preservation": 0.97},
         "pixel-ddim-50-s0.3: mse 0.04000 is worse than the baseline 0.03000 (limit 0.03500)"),
        ({"mse": 0.0300, "preservation": 0.90},
         "pixel-ddim-50-s0.3: preservation 0.9000 is worse than the baseline 0.9700 "
         "(limit 0.9350)"),
    ],
)
def test_planted_regression_fails_naming_case_and_both_numbers(measured, expected):
    assert check_case("pixel-ddim-50-s0.3", measured, BASE, Tolerance()) == [expected]


def test_baseline_round_trip(tmp_path):
    baseline = FidelityBaseline(tmp_path / "baseline.json", create=True)
    baseline.record("a", {"mse": 0.03, "preservation": 0.97, "psnr": 20.0})
    baseline.save()
    reloaded = FidelityBaseline(tmp_path / "baseline.json")
    assert reloaded.cases == {"a": {"mse": 0.03, "preservation": 0.97}}
    assert len(reloaded.check("a", {"mse": 1.0, "preservation": 0.0})) == 2


def test_a_case_without_an_entry_fails_naming_the_command(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text('{"a": {"mse": 0.03, "preservation": 0.97}}')
    (problem,) = FidelityBaseline(path).check("cpu-new-case", {"mse": 0.0, "preservation": 1.0})
    assert problem == (f"cpu-new-case: no entry in the fidelity baseline {path}; record one with "
                       "`pytest <benches> -k 'cpu-new-case' --diffbench-update-fidelity-baseline`")


@pytest.mark.parametrize("content", [None, "{not json", '["a list"]', '{"a": {"mse": 1}}'])
def test_a_missing_or_unreadable_baseline_is_an_error(tmp_path, content):
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BaselineError, match=f"fidelity baseline {path} cannot be read"):
        FidelityBaseline(path)


@pytest.mark.parametrize("key", ["mse", "preservation"])
def test_a_nan_fails(key):
    measured = {"mse": 0.0300, "preservation": 0.97, key: float("nan")}
    problems = check_case("pixel-ddim-50-s0.3", measured, BASE, Tolerance())
    assert len(problems) == 1 and f"{key} is nan" in problems[0]


@pytest.mark.parametrize("value", ["NaN", "Infinity", '"0.03"', "true"])
def test_a_baseline_value_that_is_not_a_finite_number_is_an_error(tmp_path, value):
    """Before, a NaN or infinite baseline passed any measurement."""
    path = tmp_path / "baseline.json"
    path.write_text('{"a": {"mse": ' + value + ', "preservation": 0.97}}')
    with pytest.raises(BaselineError, match="a: mse is .*, not a finite number"):
        FidelityBaseline(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_measurement_is_never_recorded(tmp_path, value):
    baseline = FidelityBaseline(tmp_path / "baseline.json", create=True)
    with pytest.raises(InputError, match="cannot record a: its preservation is"):
        baseline.record("a", {"mse": 0.03, "preservation": value})
    assert baseline.cases == {} and not (tmp_path / "baseline.json").exists()

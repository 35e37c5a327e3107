"""The timing gate on crafted pytest-benchmark JSON: slower beyond the noise fails, slower
within it passes."""

from __future__ import annotations

import json

import pytest

from diffbench.gate.benchgate import Timing, compare, limit, main


def run(path, cases):
    path.write_text(json.dumps({"benchmarks": [
        {"fullname": name, "stats": {"median": median, "iqr": iqr, "rounds": 5}}
        for name, (median, iqr) in cases.items()]}))
    return path


def test_limit_is_the_larger_of_the_noise_and_the_floor():
    ref = Timing(1.0, 0.1, 5)
    assert limit(ref, Timing(1.0, 0.05, 5)) == pytest.approx(1.2)  # 1.0 + 2 * 0.1
    assert limit(ref, Timing(1.0, 0.3, 5)) == pytest.approx(1.6)  # the new run was noisier
    assert limit(Timing(1.0, 0.0, 5), Timing(1.0, 0.01, 5)) == pytest.approx(1.1)  # floor


def test_gate_fails_only_beyond_the_noise(tmp_path, capsys):
    ref = run(tmp_path / "ref.json", {"quiet": (1.0, 0.01), "noisy": (1.0, 0.3),
                                      "gone": (1.0, 0.0)})
    within = run(tmp_path / "within.json", {"quiet": (1.05, 0.01), "noisy": (1.5, 0.3),
                                            "added": (2.0, 0.1)})
    assert main([str(within), "--reference", str(ref)]) == 0
    out = capsys.readouterr().out
    assert "new       added" in out and "gone" not in out
    beyond = run(tmp_path / "beyond.json", {"quiet": (1.15, 0.01), "noisy": (1.5, 0.3)})
    assert main([str(beyond), "--reference", str(ref)]) == 1
    assert "SLOWER    quiet: median 1.15 s against 1 s" in capsys.readouterr().out
    regressions, _ = compare({"noisy": Timing(1.7, 0.3, 5)}, {"noisy": Timing(1.0, 0.3, 5)})
    assert len(regressions) == 1  # 1.7 > 1.0 + 2 * 0.3


def test_gate_names_an_unreadable_file(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{}")
    assert main([str(tmp_path / "bad.json"), "--reference", str(tmp_path / "bad.json")]) == 2
    assert "not a readable pytest-benchmark JSON" in capsys.readouterr().err


def test_gate_fails_when_it_compared_nothing(tmp_path, capsys):
    ref = run(tmp_path / "ref.json", {"old-name": (1.0, 0.01)})
    renamed = run(tmp_path / "renamed.json", {"new-name": (1.0, 0.01)})
    assert main([str(renamed), "--reference", str(ref)]) == 3  # no verdict, not a regression
    assert "nothing was compared" in capsys.readouterr().err
    empty = run(tmp_path / "empty.json", {})
    assert main([str(empty), "--reference", str(ref)]) == 3


def test_a_nan_median_fails(tmp_path, capsys):
    ref = run(tmp_path / "ref.json", {"case": (1.0, 0.01), "other": (1.0, 0.01)})
    nan = run(tmp_path / "nan.json", {"case": (float("nan"), 0.01), "other": (1.0, 0.01)})
    assert main([str(nan), "--reference", str(ref)]) == 1
    assert "NOT A TIME case: median nan s" in capsys.readouterr().out


@pytest.mark.parametrize("median, iqr", [(float("nan"), 0.01), (float("inf"), 0.01),
                                         (1.0, float("nan")), (1.0, float("inf")), (0.0, 0.01)])
def test_a_reference_time_that_is_not_finite_is_bad_input(median, iqr, tmp_path, capsys):
    """Before, a NaN or infinite reference let a 10x slowdown pass (exit 0)."""
    ref = run(tmp_path / "ref.json", {"case": (median, iqr)})
    slow = run(tmp_path / "slow.json", {"case": (10.0, 0.01)})
    assert main([str(slow), "--reference", str(ref)]) == 2
    assert f"reference {ref}: case has median {median} s and IQR {iqr} s" in (
        capsys.readouterr().err)


@pytest.mark.parametrize("option", ["--k", "--floor"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_tolerance_that_is_not_a_finite_non_negative_number_is_bad_input(option, value,
                                                                           tmp_path, capsys):
    ref = run(tmp_path / "ref.json", {"case": (1.0, 0.01)})
    slow = run(tmp_path / "slow.json", {"case": (10.0, 0.01)})
    with pytest.raises(SystemExit) as stop:
        main([str(slow), "--reference", str(ref), option, value])
    assert stop.value.code == 2
    assert f"argument {option}: {value!r}: allowed, a finite number >= 0" in (
        capsys.readouterr().err)

"""The pytest plugin (diffbench.bench.plugin) in a user's project: a test file outside the
repository benches DDIM-10 on the shipped checkpoints and digits, records its fidelity baseline
the first time (pytest-benchmark turned off) and fails against a much better one naming the
regression. Importing the plugin loads no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_architecture import loaded_after

from diffbench.core.errors import InputError

USER_TESTS = '''
from diffbench.core.system import generator_for

DDIM_10 = {"space": "pixel", "sampler": "ddim", "steps": 10}


def test_fidelity(diffbench_system, diffbench_digits, diffbench_fidelity):
    system = diffbench_system(DDIM_10)
    images = diffbench_digits.images[:16]
    assert system(images, 0.3, generator=generator_for(system, 0)).shape == images.shape
    row = diffbench_fidelity(system, 0.3, count=16)
    assert 0 <= row["preservation"] <= 1


@pytest.mark.quick
def test_speed(benchmark, diffbench_system, diffbench_digits):
    system = diffbench_system(DDIM_10)
    images = diffbench_digits.images[:1]
    benchmark(lambda: system(images, 0.3, generator=generator_for(system, 0)))
'''


def run_user_pytest(folder, *args):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DIFFBENCH_DATA_DIR", "DIFFBENCH_MLFLOW", "PYTEST_ADDOPTS")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_user_project_records_then_checks_its_fidelity_baseline(tmp_path):
    """The first run, pytest-benchmark turned off, records the baseline; the second, against a
    much better baseline, fails the fidelity test naming the regression (the timed one passes)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\n")
    (tmp_path / "test_mine.py").write_text("import pytest\n" + USER_TESTS)
    baseline = tmp_path / "diffbench_fidelity.json"

    first = run_user_pytest(tmp_path, "-p", "no:benchmark", "-k", "test_fidelity")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"diffbench: recorded the fidelity baseline {baseline}" in first.stdout
    recorded = json.loads(baseline.read_text())
    (case,) = recorded
    assert case == "cpu-DDIM-10-s0.3" and set(recorded[case]) == {"mse", "preservation"}

    baseline.write_text(json.dumps({case: {"mse": 0.0, "preservation": 1.0}}))
    second = run_user_pytest(tmp_path, "--benchmark-disable")
    assert second.returncode == 1, second.stdout[-3000:] + second.stderr[-3000:]
    assert (f"fidelity regression: {case}: mse {recorded[case]['mse']:.5f} is worse than the "
            f"baseline 0.00000") in second.stdout
    assert "rerun with --diffbench-update-fidelity-baseline" in second.stdout
    assert "1 failed, 1 passed" in second.stdout
    assert "recorded the fidelity baseline" not in second.stdout


def test_the_plugin_imports_no_torch_mlflow_nor_pydantic():
    assert loaded_after("import diffbench.bench.plugin, diffbench.bench.benchmark_json") == []


def test_a_system_mapping_that_names_no_sampler_is_one_clear_error(diffbench_system):
    with pytest.raises(InputError, match=r"sampler: Input should be 'ddpm'.*\(got 'nope'\)"):
        diffbench_system({"space": "pixel", "sampler": "nope"})
    with pytest.raises(InputError, match="allowed: a compare-config mapping"):
        diffbench_system("pixel-ddim-10")

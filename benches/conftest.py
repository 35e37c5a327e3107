"""Fixtures and options of the benchmark suite (pytest-benchmark).

Options: ``--checkpoints DIR`` (default fixtures/checkpoints), ``--system YAML`` (bench a
registered or plug-in system too, as a compare config names it), ``--mlflow`` (or
``DIFFBENCH_MLFLOW=1``: one MLflow run per session with every benchmark's statistics and
extra_info, and the benchmark JSON as an artifact), ``--profile DIR`` (per benchmark a
torch.profiler trace for Perfetto and its ``key_averages()`` table beside it),
``--fidelity-baseline FILE`` (CPU cases) and ``--fidelity-baseline-cuda FILE`` (CUDA cases;
written by the first GPU run), ``--update-fidelity-baseline``.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchlib import REPO, BenchEnv, sanitize
from diffbench.core.files import write_atomic_text
from diffbench.results.tracking import start_run


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("diffbench")
    group.addoption("--checkpoints", default=str(REPO / "fixtures" / "checkpoints"),
                    help="folder of trained checkpoints (default: fixtures/checkpoints)")
    group.addoption("--mlflow", action="store_true",
                    default=os.environ.get("DIFFBENCH_MLFLOW") == "1",
                    help="log the session to MLflow (also DIFFBENCH_MLFLOW=1)")
    group.addoption("--profile", metavar="DIR", default=None,
                    help="write a Perfetto trace and a key_averages table per benchmark under DIR")
    group.addoption("--fidelity-baseline", default=str(REPO / "benches" / "fidelity_baseline.json"),
                    help="the CPU cases' fidelity baseline (must exist)")
    group.addoption("--fidelity-baseline-cuda",
                    default=str(REPO / "benches" / "fidelity_baseline_cuda.json"),
                    help="the CUDA cases' baseline (written the first time they run on a GPU)")
    group.addoption("--update-fidelity-baseline", action="store_true",
                    help="record this run's fidelity as the new baseline instead of checking it")
    group.addoption("--system", action="append", default=[], metavar="YAML",
                    help="also bench this system in test_img2img: a compare-config system, e.g. "
                         "'{name: my-euler, space: pixel, sampler: \"mypkg.samplers:Euler\", "
                         "steps: 20}'; repeatable")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--mlflow") and not (
        config.getoption("benchmark_json") or config.getoption("benchmark_autosave")
        or config.getoption("benchmark_save")
    ):
        config.option.benchmark_autosave = True  # the JSON reaches disk whatever MLflow does


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The peer group is opt-in: it runs only when ``-m`` names it (e.g. ``-m peer``)."""
    if "peer" in (config.getoption("markexpr") or ""):
        return
    opt_in = pytest.mark.skip(reason="opt-in bench group: run with -m peer")
    for item in items:
        if item.get_closest_marker("peer"):
            item.add_marker(opt_in)


@pytest.fixture(scope="session")
def bench_env(request: pytest.FixtureRequest) -> BenchEnv:
    env = BenchEnv(request.config)
    yield env
    env.save_baselines()


@pytest.hookimpl
def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list, output_json: dict[str, Any]
) -> None:
    """Record what reproduces the run under the JSON's "diffbench" key (seed, torch, devices,
    sha256 of each checkpoint file); with --mlflow, write the JSON under results/benchmarks/
    first, then log the session (a dead tracking server costs a warning, not the JSON)."""
    from diffbench.core.environment import environment_facts
    from diffbench.io.checkpoints import checkpoint_sha256

    checkpoints = config.getoption("--checkpoints")
    facts = environment_facts()
    output_json["diffbench"] = {
        "seed": 0,  # every benchmark draws from translator.generator(0)
        "noise_device": "device",  # that generator lives on the case's device
        "torch": facts["torch"],
        "devices": sorted({(b.get("params") or {}).get("device", "cpu")
                           for b in output_json["benchmarks"]}),
        "cuda_device": facts["cuda_device"],
        "checkpoints": str(checkpoints),
        "checkpoint_sha256": checkpoint_sha256(checkpoints),
        "environment": facts,
    }
    if not config.getoption("--mlflow"):
        return
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = write_atomic_text(Path("results") / "benchmarks" / f"bench-{stamp}.json",
                             json.dumps(output_json, indent=2))
    machine = output_json.get("machine_info", {})
    params = {"machine": machine.get("node"), "cpu": machine.get("cpu", {}).get("brand_raw"),
              "commit": output_json.get("commit_info", {}).get("id"),
              "benchmarks": len(output_json["benchmarks"])}
    with start_run("diffbench-benches", run_name=f"benches-{stamp}", params=params) as run:
        for bench in output_json["benchmarks"]:
            prefix = sanitize(bench["fullname"].split("::")[-1])
            stats = {k: v for k, v in bench["stats"].items()
                     if k in ("min", "max", "mean", "median", "stddev", "iqr", "ops", "rounds")}
            extra = {k: v for k, v in bench.get("extra_info", {}).items()
                     if isinstance(v, int | float) and not isinstance(v, bool)}
            run.log_metrics({f"{prefix}/{k}": v for k, v in {**stats, **extra}.items()})
        run.log_artifact(path)

"""pytest-benchmark's hook, registered by :mod:`diffbench.bench.plugin` only where
pytest-benchmark is installed: what reproduces the run goes under the benchmark JSON's
"diffbench" key, and with --diffbench-mlflow (or ``DIFFBENCH_MLFLOW=1``) the session is one
MLflow parent run with a nested run per benchmark case. Imports its work on first use, as the
plugin does."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from diffbench.bench.plugin import checkpoints


def pytest_configure(config: pytest.Config) -> None:
    """With --diffbench-mlflow the JSON reaches disk whatever MLflow does: autosave it unless
    another pytest-benchmark option writes it."""
    if config.getoption("diffbench_mlflow") and not (
        config.getoption("benchmark_json") or config.getoption("benchmark_autosave")
        or config.getoption("benchmark_save")
    ):
        config.option.benchmark_autosave = True


@pytest.hookimpl
def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list, output_json: dict[str, Any]
) -> None:
    """Record what reproduces the run under the JSON's "diffbench" key (seed, torch, devices,
    sha256 of each checkpoint file); with --diffbench-mlflow, write the JSON under
    results/benchmarks/ first, then log the session (a dead tracking server costs a warning,
    not the JSON)."""
    output_json["diffbench"] = reproducibility(checkpoints(config), output_json["benchmarks"])
    if config.getoption("diffbench_mlflow"):
        log_session(output_json)


def reproducibility(folder: Path, benchmarks: list[dict]) -> dict[str, Any]:
    """The seed, torch, devices and machine of a run, and the sha256 of each checkpoint file."""
    from diffbench.core.environment import environment_facts
    from diffbench.io.checkpoints import checkpoint_sha256

    facts = environment_facts()
    return {
        "seed": 0,  # every benchmark draws from translator.generator(0)
        "noise_device": "device",  # that generator lives on the case's device
        "torch": facts["torch"],
        "devices": sorted({(b.get("params") or {}).get("device", "cpu") for b in benchmarks}),
        "cuda_device": facts["cuda_device"],
        "checkpoints": str(folder),
        "checkpoint_sha256": checkpoint_sha256(folder),
        "environment": facts,
    }


def log_session(output_json: dict[str, Any]) -> None:
    """Write the JSON under results/benchmarks/, then one MLflow parent run for the session
    (experiment "diffbench-benches", the JSON as its artifact) and one nested run per benchmark
    case: its params as params, its statistics and numeric extra_info as metrics (an interval
    ``[lo, hi]`` as ``<name>_lo`` and ``_hi``), its text extra_info as tags."""
    from diffbench.core.files import write_atomic_text
    from diffbench.results.tracking import start_run

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = write_atomic_text(Path("results") / "benchmarks" / f"bench-{stamp}.json",
                             json.dumps(output_json, indent=2))
    machine = output_json.get("machine_info", {})
    params = {"machine": machine.get("node"), "cpu": machine.get("cpu", {}).get("brand_raw"),
              "commit": output_json.get("commit_info", {}).get("id"),
              "benchmarks": len(output_json["benchmarks"])}
    with start_run("diffbench-benches", run_name=f"benches-{stamp}", params=params) as run:
        for bench in output_json["benchmarks"]:
            metrics, tags = case_figures(bench)
            with start_run("diffbench-benches", run_name=bench["fullname"].split("::")[-1],
                           params=bench.get("params") or {}, nested=True,
                           tags={"benchmark": bench["fullname"], "group": bench.get("group"),
                                 **tags}) as case:
                case.log_metrics(metrics)
        run.log_artifact(path)


def case_figures(bench: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """A benchmark's (metrics, tags): its timing statistics and numeric extra_info, each
    interval's ends; its text and true/false extra_info."""
    metrics = {k: v for k, v in bench["stats"].items()
               if k in ("min", "max", "mean", "median", "stddev", "iqr", "ops", "rounds")}
    tags = {}
    for key, value in bench.get("extra_info", {}).items():
        if isinstance(value, bool | str):
            tags[key] = str(value)[:5000]
        elif isinstance(value, int | float):
            metrics[key] = value
        elif (isinstance(value, list) and len(value) == 2
              and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
            metrics[f"{key}_lo"], metrics[f"{key}_hi"] = value
    return metrics, tags

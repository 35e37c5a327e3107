"""pytest-benchmark's hook, registered by :mod:`diffbench.bench.plugin` only where
pytest-benchmark is installed: what reproduces the run goes under the benchmark JSON's
"diffbench" key, and with --diffbench-mlflow (or ``DIFFBENCH_MLFLOW=1``) the session is one
MLflow run. Imports its work on first use, as the plugin does."""

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
    """Write the JSON under results/benchmarks/, then one MLflow run (experiment
    "diffbench-benches") with every benchmark's statistics and numeric extra_info, and the JSON
    as its artifact."""
    from diffbench.bench.env import sanitize
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
            prefix = sanitize(bench["fullname"].split("::")[-1])
            stats = {k: v for k, v in bench["stats"].items()
                     if k in ("min", "max", "mean", "median", "stddev", "iqr", "ops", "rounds")}
            extra = {k: v for k, v in bench.get("extra_info", {}).items()
                     if isinstance(v, int | float) and not isinstance(v, bool)}
            run.log_metrics({f"{prefix}/{k}": v for k, v in {**stats, **extra}.items()})
        run.log_artifact(path)

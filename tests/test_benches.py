"""The benchmark suite's plumbing, run for real on tiny checkpoints: JSON with extra_info,
MLflow export, profiler traces, and the fidelity gate failing a planted regression."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
IMG2IMG = "benches/test_img2img.py::test_img2img[cpu-pixel-ddim-10-s0.3-b1]"
VAE = "benches/test_vae.py::test_vae[cpu-encode-1]"


def run_benches(tmp_path, checkpoints, mnist_dir, *args):
    env = dict(os.environ, DIFFBENCH_DATA_DIR=str(mnist_dir),
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--rootdir={REPO}",
         "-c", str(REPO / "pyproject.toml"),  # its ini: the baselines, required (fail closed)
         "--diffbench-checkpoints", str(checkpoints), *(str(REPO / a) for a in (IMG2IMG, VAE)),
         *args],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )


def test_bench_session_writes_json_mlflow_run_and_traces(tiny_checkpoints, mnist_dir, tmp_path):
    result = run_benches(
        tmp_path, tiny_checkpoints, mnist_dir, "--diffbench-mlflow",
        "--diffbench-profile", str(tmp_path / "traces"),
        "--benchmark-json", str(tmp_path / "bench.json"),
        "--diffbench-fidelity-baseline", str(tmp_path / "baseline.json"),
        "--diffbench-update-fidelity-baseline",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    benchmarks = json.loads((tmp_path / "bench.json").read_text())["benchmarks"]
    img2img = next(b for b in benchmarks if b["name"].startswith("test_img2img"))
    for key in ("mse", "mse_ci95", "psnr", "ssim", "preservation", "preservation_ci95",
                "noised_accuracy", "noised_accuracy_ci95", "kid", "kid_ci95", "steps", "nfe",
                "strength", "batch", "device", "parameters", "flops_per_image",
                "sec_per_image_p50", "sec_per_image_p90", "sec_per_image_p99",
                "peak_memory_bytes", "peak_memory_method"):
        assert key in img2img["extra_info"], key
    info = img2img["extra_info"]
    assert info["mse_ci95"][0] <= info["mse"] <= info["mse_ci95"][1]
    assert info["peak_memory_bytes"] > 0
    assert img2img["extra_info"]["nfe"] == 3 and img2img["extra_info"]["batch"] == 1
    # --diffbench-mlflow: the JSON reached disk, then one parent run for the session (the JSON
    # its artifact) and a nested run per case with its statistics and intervals as metrics
    (saved,) = (tmp_path / "results" / "benchmarks").glob("bench-*.json")
    assert len(json.loads(saved.read_text())["benchmarks"]) == 2
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("diffbench-benches").experiment_id])
    (run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == [saved.name]
    cases = {r.info.run_name: r for r in runs if r is not run}
    assert set(cases) == {"test_img2img[cpu-pixel-ddim-10-s0.3-b1]", "test_vae[cpu-encode-1]"}
    assert all(r.data.tags["mlflow.parentRunId"] == run.info.run_id for r in cases.values())
    img2img_run = cases["test_img2img[cpu-pixel-ddim-10-s0.3-b1]"]
    assert img2img_run.data.metrics["median"] == img2img["stats"]["median"]
    assert [img2img_run.data.metrics[f"mse_ci95_{end}"] for end in ("lo", "hi")] == info["mse_ci95"]
    assert img2img_run.data.params["device"] == "cpu"
    assert "flops_per_image" in cases["test_vae[cpu-encode-1]"].data.metrics
    # --diffbench-profile: per benchmark a folder with a Perfetto (Chrome-format) trace and the
    # operator table beside it.
    traces = sorted((tmp_path / "traces").rglob("*.pt.trace.json"))
    assert [p.parent.name for p in traces] == ["img2img-cpu-pixel-ddim-10-s0.3-b1",
                                               "vae-cpu-encode-b1"]
    for trace in traces:
        assert json.loads(trace.read_text())["traceEvents"]
        assert "Self CPU" in (trace.parent / "key_averages.txt").read_text()
    baseline = json.loads((tmp_path / "baseline.json").read_text())
    assert set(baseline) == {"cpu-pixel-ddim-10-s0.3"}


def test_fidelity_gate_fails_a_planted_regression(tiny_checkpoints, mnist_dir, tmp_path):
    planted = {"cpu-pixel-ddim-10-s0.3": {"mse": 0.0, "preservation": 1.0}}
    (tmp_path / "baseline.json").write_text(json.dumps(planted))
    result = run_benches(tmp_path, tiny_checkpoints, mnist_dir,
                         "--diffbench-fidelity-baseline", str(tmp_path / "baseline.json"))
    assert result.returncode == 1
    assert "fidelity regression: cpu-pixel-ddim-10-s0.3: mse" in result.stdout
    assert "worse than the baseline 0.00000" in result.stdout


def test_fidelity_gate_fails_closed_without_a_baseline(tiny_checkpoints, mnist_dir, tmp_path):
    """No baseline file: the gated case errors naming the file, instead of passing unchecked."""
    result = run_benches(tmp_path, tiny_checkpoints, mnist_dir,
                         "--diffbench-fidelity-baseline", str(tmp_path / "missing.json"))
    assert result.returncode == 1
    assert f"fidelity baseline {tmp_path / 'missing.json'} cannot be read" in result.stdout

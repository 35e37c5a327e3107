"""Long comparisons lose nothing: rows reach results.jsonl as they are measured, a killed run
resumes to the numbers of an uninterrupted one, and a changed config is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from diffbench.cli import main
from diffbench.results.rowstore import ResumeError, RowStore, TruncatedRowWarning, first_difference

REPO = Path(__file__).resolve().parents[1]
FIDELITY = ("mse", "mse_ci95", "psnr", "ssim", "preservation", "preservation_ci95",
            "noised_accuracy", "frechet_distance", "kid", "start_timestep", "steps", "nfe")


def compare_args(checkpoints, mnist_dir, out, *extra):
    return ["compare", "--checkpoints", str(checkpoints), "--out", str(out),
            "--data-dir", str(mnist_dir), "--num-images", "200", "--device", "cpu",
            "--strength", "0.3", "--strength", "0.5",
            "--set", "systems=[{space: pixel, sampler: ddim, steps: 50}, "
                     "{space: pixel, sampler: dpmsolver++, steps: 20}]",
            "--set", "grid_images=2", "--set", "timing_batch=1", "--set", "repeats=1", *extra]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def start(args, tmp_path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
           "OMP_NUM_THREADS": "1"}
    # SIGINT as a terminal delivers it: a shell's background job (CI's, say) starts with SIGINT
    # ignored, which children inherit, and then Python installs no KeyboardInterrupt handler.
    return subprocess.Popen([sys.executable, "-m", "diffbench", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop_after_rows(process: subprocess.Popen, jsonl: Path, rows: int, signum: int) -> None:
    deadline = time.monotonic() + 300
    while len(lines(jsonl)) < rows:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no rows in time"
        time.sleep(0.02)
    process.send_signal(signum)


@pytest.fixture(scope="module")
def uninterrupted(tiny_checkpoints, mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out}/mlflow.db")
        assert main(compare_args(tiny_checkpoints, mnist_dir, out)) == 0
    return json.loads((out / "results.json").read_text())


def test_a_killed_run_resumes_to_the_uninterrupted_numbers(
    uninterrupted, tiny_checkpoints, mnist_dir, tmp_path, monkeypatch
):
    out = tmp_path / "killed"
    process = start(compare_args(tiny_checkpoints, mnist_dir, out), tmp_path)
    stop_after_rows(process, out / "results.jsonl", 2, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    kept = lines(out / "results.jsonl")
    assert 2 <= len(kept) < len(uninterrupted), "the kill came too late to test a resume"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert main(compare_args(tiny_checkpoints, mnist_dir, out, "--resume")) == 0
    resumed = json.loads((out / "results.json").read_text())
    assert [(r["name"], r["strength"]) for r in resumed] == [
        (r["name"], r["strength"]) for r in uninterrupted]
    for got, expected in zip(resumed, uninterrupted, strict=True):
        # equal, to float64 rounding (this run's process has another thread count)
        for key in FIDELITY:
            assert got[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    # paired against another system, into another folder: the run's own files stay
    assert main(["report", str(out), "--reference", "DPM++2M-20",
                 "--out", str(tmp_path / "other")]) == 0
    other = json.loads((tmp_path / "other" / "results.json").read_text())
    assert [r.get("vs_reference") for r in other] == [
        "DPM++2M-20" if r["name"] == "DDIM-50" else None for r in other]
    assert [r.get("vs_reference") for r in resumed] == [
        "DDIM-50" if r["name"] == "DPM++2M-20" else None for r in resumed]
    # the rows measured before the kill were kept, not rerun
    assert [json.loads(line) for line in kept] == json.loads(
        "[" + ",".join(lines(out / "results.jsonl")[: len(kept)]) + "]")
    assert_one_finished_comparison(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"), out, resumed)


def assert_one_finished_comparison(client: MlflowClient, out: Path, results: list[dict]) -> None:
    """The first attempt's parent run (its id in mlflow_run.json) was continued to FINISHED:
    one nested run per row, each once, with its intervals as metrics and verdicts as tags."""
    experiment = client.get_experiment_by_name("diffbench-compare").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_id == json.loads((out / "mlflow_run.json").read_text())["run_id"]
    assert parent.info.status == "FINISHED"
    assert [d.dataset.name for d in parent.inputs.dataset_inputs] == ["mnist-test"]
    rows = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(rows) == len(results) == len({r.data.tags["diffbench.row"] for r in rows})
    for result in results:
        (row,) = [r for r in rows if r.info.run_name == f"{result['name']} {result['view']} "
                                                        f"s{result['strength']:g}"]
        assert row.info.status == "FINISHED"
        for name in ("mse", "preservation"):
            assert [row.data.metrics[f"{name}_ci95_{end}"] for end in ("lo", "hi")] == (
                pytest.approx(result[f"{name}_ci95"]))
        if result.get("vs_reference"):  # the paired difference: interval metrics, verdict tags
            assert row.data.metrics["mse_vs_reference_ci95_lo"] == pytest.approx(
                result["mse_vs_reference_ci95"][0])
            assert row.data.tags["mse_vs_reference_verdict"] in ("lower", "higher",
                                                                 "not resolved")
            assert "mse_vs_reference_resolved" not in row.data.metrics


def test_sigint_leaves_a_valid_partial_run_and_a_resume_hint(tiny_checkpoints, mnist_dir,
                                                            tmp_path):
    out = tmp_path / "interrupted"
    process = start(compare_args(tiny_checkpoints, mnist_dir, out), tmp_path)
    stop_after_rows(process, out / "results.jsonl", 1, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted (SIGINT)")
    assert "--resume" in stderr
    rows = [json.loads(line) for line in lines(out / "results.jsonl")]
    assert rows and all(r["name"] for r in rows)
    assert main(["report", str(out)]) == 0  # the partial run's tables, from its rows
    assert len(json.loads((out / "results.json").read_text())) == len(rows)



def test_a_half_written_last_row_is_dropped_with_a_warning(tmp_path):
    store = RowStore.open(tmp_path, {"strengths": [0.3]}, resume=False)
    row = {"name": "DDIM-10", "view": "equal_strength", "strength": 0.3, "seed": 0,
           "num_images": 2}
    store.append(row, {"outputs": torch.zeros(1, 1, 2, 2)})
    with (tmp_path / "results.jsonl").open("a") as file:
        file.write('{"name": "DDIM-5')  # killed mid-write
    with pytest.warns(TruncatedRowWarning, match="line 2: half-written last row dropped"):
        resumed = RowStore.open(tmp_path, {"strengths": [0.3]}, resume=True)
    assert resumed.rows() == [row]
    resumed.append({**row, "name": "DDIM-20"}, {"outputs": torch.ones(1, 1, 2, 2)})
    assert [json.loads(line)["name"] for line in lines(tmp_path / "results.jsonl")] == [
        "DDIM-10", "DDIM-20"]
    assert torch.equal(resumed.tensors(1)["outputs"], torch.ones(1, 1, 2, 2))


def test_a_corrupt_row_before_the_last_is_an_error(tmp_path):
    RowStore.open(tmp_path, {}, resume=False)
    row = json.dumps({"name": "a", "view": "equal_strength", "strength": 0.3, "seed": 0,
                      "num_images": 2})
    (tmp_path / "results.jsonl").write_text(f"{row}\nnot json\n{row}\n")
    with pytest.raises(ValueError, match="line 2: not a JSON row"):
        RowStore.read(tmp_path)


def test_resuming_a_changed_config_is_one_error_naming_the_difference(
    uninterrupted, tiny_checkpoints, mnist_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    out = tmp_path / "run"
    (out / "results.jsonl").parent.mkdir()
    RowStore.open(out, {"num_images": 48, "seed": 0}, resume=False)
    code = main(compare_args(tiny_checkpoints, mnist_dir, out, "--resume", "--seed", "1"))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot resume {out}: its run differs in ")
    with pytest.raises(ResumeError, match=r"num_images: 48 -> 64"):
        RowStore.open(out, {"num_images": 64, "seed": 0}, resume=True)


def test_first_difference_names_the_key_path():
    old = {"systems": [{"sampler": "ddim", "steps": 10}], "seed": 0}
    assert first_difference(old, old) is None
    new = {"systems": [{"sampler": "ddim", "steps": 20}], "seed": 0}
    assert first_difference(old, new) == "systems[0].steps: 10 -> 20"
    assert first_difference(old, {**old, "seed": 3}) == "seed: 0 -> 3"


def test_run_json_records_the_environment_and_a_resume_does_not_compare_it(tmp_path):
    RowStore.open(tmp_path, {"seed": 0, "environment": {"git_commit": "a"}}, resume=False)
    assert RowStore.read(tmp_path).run() == {"seed": 0, "environment": {"git_commit": "a"}}
    RowStore.open(tmp_path, {"seed": 0, "environment": {"git_commit": "b"}}, resume=True)
    with pytest.raises(ResumeError, match=r"seed: 0 -> 1"):
        RowStore.open(tmp_path, {"seed": 1, "environment": {"git_commit": "a"}}, resume=True)

"""Shards: a deterministic, cost-balanced split of a comparison's systems; torchrun launches
them; `diffbench merge` joins them to the numbers of one process, and refuses what is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from diffbench.cli import main
from diffbench.core.errors import InputError
from diffbench.results.shards import Neighbours, assign, parse_shard, shard_from_env, shares_machine
from diffbench.results.tracking import TrackingWarning

REPO = Path(__file__).resolve().parents[1]
FIDELITY = ("mse", "mse_ci95", "preservation", "preservation_ci95", "noised_accuracy",
            "frechet_distance", "kid", "steps", "nfe", "start_timestep")
SYSTEMS = ("systems=[{space: pixel, sampler: ddim, steps: 50}, "
           "{space: pixel, sampler: dpmsolver++, steps: 10}, {space: latent, sampler: ddim, "
           "steps: 10}]")


def args(checkpoints, mnist_dir, out, *extra):
    return ["compare", "--checkpoints", str(checkpoints), "--out", str(out), "--data-dir",
            str(mnist_dir), "--num-images", "8", "--device", "cpu", "--strength", "0.3",
            "--set", SYSTEMS, "--set", "grid_images=2", "--set", "timing_batch=1",
            "--set", "repeats=1", *extra]


def test_assign_balances_costs_longest_first():
    assert assign([10, 1, 1, 8], 2) == [0, 1, 1, 1]  # loads 10 and 10
    assert assign([5, 5, 5], 3) == [0, 1, 2]
    assert assign([1, 2], 4) == [1, 0]  # more shards than items: some stay empty


@pytest.mark.parametrize("environ, shard", [
    ({"RANK": "1", "WORLD_SIZE": "2"}, (1, 2)),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"},
     (2, 4)),
    ({"JOB_COMPLETION_INDEX": "0", "JOB_COMPLETIONS": "3"}, (0, 3)),
    ({"RANK": "0", "WORLD_SIZE": "1"}, None),
    ({}, None),
])
def test_the_shard_comes_from_the_launchers_environment(environ, shard):
    assert shard_from_env(environ) == shard


def test_bad_shards_are_one_clear_error():
    for text in ("2/2", "1", "-1/2", "a/b"):
        with pytest.raises(InputError, match="--shard must be I/N with 0 <= I < N"):
            parse_shard(text)
    assert shares_machine({"LOCAL_WORLD_SIZE": "2"}) and not shares_machine({})


def test_two_shards_under_torchrun_merge_to_one_process(tiny_checkpoints, mnist_dir, tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each shard's process runs: the same float32 sums
    try:
        assert main(args(tiny_checkpoints, mnist_dir, tmp_path / "one")) == 0
    finally:
        torch.set_num_threads(threads)
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow-shards.db"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
         "-m", "diffbench", *args(tiny_checkpoints, mnist_dir, tmp_path / "sharded")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]
    shards = sorted((tmp_path / "sharded").glob("shard-*-of-2"))
    assert [p.name for p in shards] == ["shard-0-of-2", "shard-1-of-2"]
    per_shard = [json.loads((p / "results.json").read_text()) for p in shards]
    assert all(rows for rows in per_shard) and sum(map(len, per_shard)) == len(one)
    assert all(r["shared_machine"] for rows in per_shard for r in rows)
    with warnings.catch_warnings():  # the shards' runs are in another store: not an error
        warnings.simplefilter("error", TrackingWarning)
        assert main(["merge", *map(str, shards), "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert [r["name"] for r in merged] == [r["name"] for r in one]
    for got, expected in zip(merged, one, strict=True):
        # equal, to float64 rounding
        for key in FIDELITY:
            if expected[key] is None:  # the Frechet distance of too few digits
                assert got[key] is None, key
                continue
            assert got[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    assert (tmp_path / "merged" / "i2i_comparison.png").is_file()


def test_merge_refuses_shards_of_different_runs(tiny_checkpoints, mnist_dir, tmp_path, capsys,
                                                monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert main(args(tiny_checkpoints, mnist_dir, tmp_path / "a", "--shard", "0/2")) == 0
    assert main(args(tiny_checkpoints, mnist_dir, tmp_path / "b", "--shard", "1/2",
                     "--seed", "3")) == 0
    capsys.readouterr()
    first, second = tmp_path / "a" / "shard-0-of-2", tmp_path / "b" / "shard-1-of-2"
    code = main(["merge", str(first), str(second), "--out", str(tmp_path / "merged")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "is a shard of another run" in err[0] and "seed: 0 -> 3" in err[0]
    code = main(["merge", str(tmp_path / "a" / "shard-0-of-2"), "--out", str(tmp_path / "m")])
    assert code == 2
    assert "merge needs shards 0..1 of 2 once each, got 0/2" in capsys.readouterr().err


def test_neighbours_are_the_other_live_shards_of_the_run(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        with Neighbours("run-a", tmp_path) as mine:
            assert not mine.busy()  # alone: only its own file
            (mine.folder / dead).touch()  # a shard that has exited: stale, not counted
            assert not mine.busy()
            (mine.folder / str(sleeper.pid)).touch()  # a live one
            assert mine.busy()
            assert not Neighbours("run-b", tmp_path).busy()  # another run's shards do not count
        assert not mine.mine.exists()  # unregistered on exit
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_shard_beside_a_live_shard_of_its_run_flags_its_rows(tiny_checkpoints, mnist_dir,
                                                                tmp_path, monkeypatch):
    """Two shards on one host without torchrun (a SLURM array's tasks on one node, two commands
    by hand): the rows timed while the other was alive say shared_machine; alone they do not."""
    from diffbench import compare

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert main(args(tiny_checkpoints, mnist_dir, tmp_path / "alone", "--shard", "0/2")) == 0
    alone = json.loads((tmp_path / "alone" / "shard-0-of-2" / "results.json").read_text())
    assert alone and not any(r["shared_machine"] for r in alone)

    out = tmp_path / "beside"
    monkeypatch.setattr(compare, "run_digest", lambda config: "one-run")
    other = tmp_path / "tmp" / "diffbench-shards" / "one-run"
    other.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (other / str(sleeper.pid)).touch()  # shard 1/2 of the same run, alive on this host
        assert main(args(tiny_checkpoints, mnist_dir, out, "--shard", "0/2")) == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    beside = json.loads((out / "shard-0-of-2" / "results.json").read_text())
    assert beside and all(r["shared_machine"] for r in beside)


def test_a_merged_comparison_is_one_mlflow_parent_run_over_its_shard_runs(
        tiny_checkpoints, mnist_dir, tmp_path, monkeypatch):
    """`diffbench merge` logs one parent run with every row nested (intervals as metrics) and
    nests the shard runs under it: the experiment's top level shows one comparison."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for shard in ("0/2", "1/2"):
        assert main(args(tiny_checkpoints, mnist_dir, tmp_path / "run", "--shard", shard)) == 0
    shards = [tmp_path / "run" / f"shard-{i}-of-2" for i in (0, 1)]
    assert main(["merge", *map(str, shards), "--out", str(tmp_path / "run")]) == 0
    merged = json.loads((tmp_path / "run" / "results.json").read_text())
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("diffbench-compare").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    shard_ids = [json.loads((d / "mlflow_run.json").read_text())["run_id"] for d in shards]
    assert parent.info.run_name.endswith(" merged") and parent.info.status == "FINISHED"
    assert parent.data.tags["diffbench.shard_runs"] == ",".join(shard_ids)
    assert parent.data.tags["config_digest"] and parent.inputs.dataset_inputs
    for shard_id in shard_ids:
        tags = client.get_run(shard_id).data.tags
        assert tags["mlflow.parentRunId"] == tags["diffbench.merged_into"] == parent.info.run_id
    rows = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
            and "diffbench.row" in r.data.tags]
    assert len(rows) == len(merged)
    for row in rows:
        assert row.data.metrics["mse_ci95_lo"] <= row.data.metrics["mse"]
        assert row.data.metrics["mse"] <= row.data.metrics["mse_ci95_hi"]
    assert sum("mse_vs_reference_ci95_hi" in r.data.metrics for r in rows) == sum(
        "vs_reference" in r for r in merged) > 0  # paired across shards: known at the merge

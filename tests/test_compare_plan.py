"""A comparison plans its rows before it measures: the plan's count and order, the shards and
the resume read it; a row's key holds everything that changes its outputs; systems are named
apart, and true duplicates refused."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_hardening import assert_one_error
from test_rowstore import lines, start, stop_after_rows

from diffbench.cli import main
from diffbench.compare import owned_systems
from diffbench.compare.plan import PlannedSystem, plan_rows, row_identity, system_costs
from diffbench.compare.systems import distinct_names
from diffbench.io.config import SystemConfig
from diffbench.results.rowstore import ResumeError, RowStore, row_key

STRENGTHS = st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.7, 1.0]), min_size=1, max_size=4,
                     unique=True)


def planned(index: int, strengths, flow: bool = False, **facts) -> PlannedSystem:
    """A system whose equal-SNR strength is its own (VP) or a lower one (flow)."""
    snr = {s: (round(s / 3, 6) if flow else s) for s in strengths}
    nfe = {s: max(1, int(10 * s)) for s in (*strengths, *snr.values())}
    return PlannedSystem(index, f"S{index}", 4, {"seed": 0, **facts}, snr, nfe)


@given(strengths=STRENGTHS, flows=st.lists(st.booleans(), min_size=1, max_size=4),
       information=st.sampled_from([None, 0.6]), snr=st.booleans())
def test_the_plan_lists_each_systems_rows_in_order(strengths, flows, information, snr):
    systems = [planned(k, strengths, flow) for k, flow in enumerate(flows)]
    timesteps = {s: int(s * 1000) - 1 for s in strengths} if snr else None
    plan = plan_rows(systems, strengths, information, timesteps)
    per_system = len(strengths) * (2 if snr else 1) + (information is not None)
    assert len(plan) == len(systems) * per_system
    assert [row.system for row in plan] == [k for k in range(len(systems))
                                            for _ in range(per_system)]
    views = ["equal_strength"] * len(strengths) + ["equal_information"] * (
        information is not None) + ["equal_snr"] * (len(strengths) if snr else 0)
    assert [row.view for row in plan[:per_system]] == views
    for position, row in enumerate(plan):
        if row.view == "equal_information":
            assert row.strength is None and row.extra == {"match_information": information}
        if row.view != "equal_snr":
            assert row.reuses is None
            continue
        assert row.extra["matched_timestep"] == timesteps[row.extra["match_snr_of_strength"]]
        assert row.strength == systems[row.system].snr_strengths[
            row.extra["match_snr_of_strength"]]
        if row.strength not in strengths:  # a strength of its own (a flow start): measured
            assert row.reuses is None and flows[row.system]
        else:  # one of the system's equal-strength starts (always, on the VP path): reused
            reused = plan[row.reuses]
            assert reused.view == "equal_strength" and reused.system == row.system
            assert reused.strength == row.strength and row.reuses < position


@given(strengths=STRENGTHS, flows=st.lists(st.booleans(), min_size=1, max_size=6),
       count=st.integers(1, 4))
def test_the_shards_split_the_plans_systems_by_its_costs(strengths, flows, count):
    systems = [planned(k, strengths, flow) for k, flow in enumerate(flows)]
    plan = plan_rows(systems, strengths, None, {s: int(s * 1000) - 1 for s in strengths})
    costs = system_costs(plan, systems)
    for system, cost in zip(systems, costs):  # reused rows cost nothing
        measured = [r for r in plan if r.system == system.index and r.reuses is None]
        assert cost == sum(system.nfe[r.strength] * system.num_images for r in measured)
    shards = [owned_systems(plan, systems, (i, count)) for i in range(count)]
    assert sorted(k for shard in shards for k in shard) == list(range(len(systems)))
    assert owned_systems(plan, systems, None) == list(range(len(systems)))


def test_two_systems_differing_only_in_eta_have_distinct_keys_on_disk(tmp_path):
    """The keys the plan gives two rows that differ only in their system's config stay apart
    once the rows are stored and read back (what --resume reads)."""
    configs = [{"space": "pixel", "sampler": "ddim", "steps": 2, "eta": eta}
               for eta in (0.0, 1.0)]
    systems = [PlannedSystem(k, "DDIM-2", 2, {"seed": 0, "system_config": c})
               for k, c in enumerate(configs)]
    identities = [row_identity(s, "equal_strength", 0.5) for s in systems]
    assert row_key(identities[0]) != row_key(identities[1])
    store = RowStore.open(tmp_path, {}, resume=False)
    store.append(identities[0], {"outputs": torch.zeros(1, 1, 2, 2)})
    resumed = RowStore.open(tmp_path, {}, resume=True).done()
    assert row_key(identities[0]) in resumed and row_key(identities[1]) not in resumed


def test_rows_written_before_keys_held_the_config_are_refused_by_a_resume(tmp_path):
    RowStore.open(tmp_path, {}, resume=False).append(
        {"schema_version": 3, "name": "DDIM-2", "view": "equal_strength", "strength": 0.5,
         "seed": 0, "num_images": 2}, {"outputs": torch.zeros(1, 1, 2, 2)})
    with pytest.raises(ResumeError, match=r"line 1 \(DDIM-2\) is of row schema version 3.*"
                                          r"eta, shift, spacing, model.*--overwrite"):
        RowStore.open(tmp_path, {}, resume=True).done()
    assert RowStore.read(tmp_path).rows()  # a report still reads them


def system(**fields) -> SystemConfig:
    return SystemConfig(**{"space": "pixel", "sampler": "ddim", "steps": 2, **fields})


def test_generated_names_are_told_apart_by_the_fields_that_differ():
    assert distinct_names([system(), system(eta=1.0)], ["DDIM-2"] * 2) == [
        "DDIM-2", "DDIM-2 eta=1"]
    models = [system(model="plugin_models:make_eps_model"),
              system(model="plugin_models:make_other_eps_model")]
    assert distinct_names(models, ["DDIM-2"] * 2) == [
        "DDIM-2 model=plugin_models:make_eps_model",
        "DDIM-2 model=plugin_models:make_other_eps_model"]
    # names the config gives, and names no other system generates, are kept
    assert distinct_names([system(name="a"), system(eta=1.0, name="b"), system(steps=3)],
                          ["a", "b", "DDIM-3"]) == ["a", "b", "DDIM-3"]


def compare_args(tiny_checkpoints, mnist_dir, out, systems, *extra):
    return ["compare", "--checkpoints", str(tiny_checkpoints), "--out", str(out),
            "--data-dir", str(mnist_dir), "--device", "cpu", "--strength", "0.5",
            "--set", f"systems={systems}", "--set", "match_snr=false", "--set", "grid_images=2",
            "--set", "timing_batch=1", "--set", "repeats=1", "--set", "warmup=0", *extra]


def test_two_systems_sharing_a_name_are_one_error(tiny_checkpoints, mnist_dir, tmp_path,
                                                   capsys):
    systems = "[{space: pixel, sampler: ddim, steps: 2}, {space: pixel, sampler: ddim, steps: 2}]"
    code = main(compare_args(tiny_checkpoints, mnist_dir, tmp_path / "out", systems))
    assert_one_error(code, capsys.readouterr().err, "two systems are named 'DDIM-2'",
                     "systems[0] {space: pixel, sampler: ddim, steps: 2}",
                     "systems[1] {space: pixel, sampler: ddim, steps: 2}", "distinct names")
    named = "[{space: pixel, sampler: ddim, steps: 2, name: x}, {space: pixel, sampler: ddpm, " \
            "steps: 2, name: x}]"
    code = main(compare_args(tiny_checkpoints, mnist_dir, tmp_path / "out", named))
    assert_one_error(code, capsys.readouterr().err, "two systems are named 'x'",
                     "systems[1] {space: pixel, sampler: ddpm, steps: 2, name: x}")
    assert not [p for p in (tmp_path / "out").rglob("*")]  # refused before any file


@pytest.mark.parametrize("systems, names", [
    ("[{space: pixel, sampler: ddim, steps: 2, eta: 0}, "
     "{space: pixel, sampler: ddim, steps: 2, eta: 1}]", ["DDIM-2", "DDIM-2 eta=1"]),
    ("[{space: pixel, sampler: ddim, steps: 2, model: 'plugin_models:make_eps_model'}, "
     "{space: pixel, sampler: ddim, steps: 2, model: 'plugin_models:make_other_eps_model'}]",
     ["DDIM-2 model=plugin_models:make_eps_model",
      "DDIM-2 model=plugin_models:make_other_eps_model"]),
], ids=["eta", "plug-in-models"])
def test_a_run_killed_after_its_first_row_resumes_to_both_rows_measured(
    systems, names, tiny_checkpoints, mnist_dir, tmp_path, monkeypatch, capsys
):
    """Two systems differing only in eta (or only in their plug-in model), killed after the
    first row and resumed: both rows are there, apart, with their own numbers."""
    out = tmp_path / "killed"
    args = compare_args(tiny_checkpoints, mnist_dir, out, systems, "--num-images", "500")
    monkeypatch.setenv("PYTHONPATH", _tests_on_path())  # the subprocess imports plugin_models
    process = start(args, tmp_path)
    stop_after_rows(process, out / "results.jsonl", 1, signal.SIGKILL)
    process.wait(timeout=60)
    kept = lines(out / "results.jsonl")
    assert len(kept) == 1, "the kill came too late to test a resume"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    partial = tmp_path / "partial-report"  # the killed run's report names what it lacks
    assert main(["report", str(out), "--out", str(partial)]) == 0
    report = (partial / "results.md").read_text()
    assert report.startswith("## Not measured: 1 planned row(s)")
    assert f"- {names[1]}, equal_strength, strength 0.5" in report
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "2 rows planned: 1 on disk from before, 1 measured" in capsys.readouterr().err
    stored = [json.loads(line) for line in lines(out / "results.jsonl")]
    assert stored[0] == json.loads(kept[0])  # the row from before the kill, not rerun
    assert [r["name"] for r in stored] == names
    assert len({row_key(r) for r in stored}) == 2
    assert stored[0]["system_config"] != stored[1]["system_config"]
    for row in stored:
        assert not row.get("failure") and row["mse"] > 0 and row["sec_per_image"] > 0
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results] == names
    assert "Not measured" not in (out / "results.md").read_text()


def _tests_on_path() -> str:
    """PYTHONPATH for a `python -m diffbench` subprocess that imports tests/plugin_models."""
    here = Path(__file__).resolve().parent
    return os.pathsep.join([str(here.parent), str(here), os.environ.get("PYTHONPATH", "")])


def test_a_resume_refuses_rows_of_the_older_schema_and_changes_nothing(
    tiny_checkpoints, mnist_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    systems = "[{space: pixel, sampler: ddim, steps: 2}]"
    args = compare_args(tiny_checkpoints, mnist_dir, tmp_path / "out", systems,
                        "--num-images", "2")
    assert main(args) == 0
    jsonl = tmp_path / "out" / "results.jsonl"
    old = [{**{k: v for k, v in json.loads(line).items() if k != "system_config"},
            "schema_version": 3} for line in lines(jsonl)]
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in old))
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    capsys.readouterr()
    code = main([*args, "--resume"])
    assert_one_error(code, capsys.readouterr().err, "is of row schema version 3", "--overwrite")
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before


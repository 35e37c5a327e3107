"""`diffbench compare` end to end on tiny random-init checkpoints and two real digits."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from diffbench.cli import main
from diffbench.core.environment import environment_facts
from diffbench.io.checkpoints import load_model
from diffbench.io.data import load_mnist
from diffbench.results.report import CELL, GAP, HEADER
from diffbench.results.row import SCHEMA_VERSION
from diffbench.systems.translate import Translator


@pytest.fixture(scope="module")
def compared(tiny_checkpoints, mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{out}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        code = main([
            "compare", "--checkpoints", str(tiny_checkpoints), "--out", str(out / "results"),
            "--data-dir", str(mnist_dir), "--num-images", "2", "--device", "cpu",
            "--steps", "10", "--set", "grid_images=2", "--set", "timing_batch=2",
            "--set", "repeats=2", "--set", "systems.0.steps=20", "--set", "systems.4.steps=20",
        ])
    assert code == 0
    return out, uri


def test_results_json_has_one_object_per_system_and_strength(compared):
    out, _ = compared
    results = json.loads((out / "results" / "results.json").read_text())
    names = ("DDPM-20", "DDIM-10", "DPM++2M-10", "LDM-DDIM-10", "LDM-DDPM-20", "RF-Euler-10",
             "LDM-RF-Euler-10", "CM-10", "LDM-CM-10", "MF-10", "LDM-MF-10")
    assert [(r["name"], r["strength"]) for r in results if r["view"] == "equal_strength"] == [
        (name, s) for name in names for s in (0.3, 0.5)]
    snr = [r for r in results if r["view"] == "equal_snr"]
    assert [r["name"] for r in snr] == [name for name in names for _ in (0.3, 0.5)]
    vp = [r for r in snr if r["prediction"] in ("eps", "v")]
    assert vp and all(r["strength"] == r["match_snr_of_strength"] for r in vp)
    results = [r for r in results if r["view"] == "equal_strength"]
    measured = {"view", "name", "space", "prediction", "sampler", "steps", "nfe", "strength",
                "start_timestep", "start_snr", "num_images", "scoring_sec_per_image",
                "sec_per_image", "sec_per_image_p50", "sec_per_image_p90", "sec_per_image_p99",
                "peak_memory_bytes", "mse", "mse_ci95", "psnr", "preservation", "noised_accuracy",
                "frechet_distance", "kid", "train_seconds", "flops_per_image", "seed"}
    for row in results:
        assert measured <= set(row) and row["schema_version"] == SCHEMA_VERSION
        if row["name"] in ("DDIM-10", "DDPM-20"):  # n steps; int(n * strength) evaluations
            n = int(row["name"].split("-")[1])
            assert (row["steps"], row["nfe"]) == (n, int(n * row["strength"]))
        assert row["num_images"] == 2 and row["timing_repeats"] == 2 and row["timing_warmup"] == 1
        assert row["noised_space"] == row["space"]
        for key in (k.removesuffix("_ci95") for k in row if k.endswith("_ci95")):
            if row[key] is not None:  # every point inside its own interval
                lo, hi = row[f"{key}_ci95"]
                assert lo <= row[key] <= hi, key
        assert row["sec_per_image_p50"] <= row["sec_per_image_p90"] <= row["sec_per_image_p99"]
        assert row["peak_memory_bytes"] > 0
        assert row["sec_per_image_min"] <= row["sec_per_image"] <= row["sec_per_image_max"]
        assert row["train_seconds"] == 1.5 * (2 if row["space"] == "latent" else 1)
        assert row["train_cpu_seconds"] == 1.25 * (2 if row["space"] == "latent" else 1)
    assert {r["space"] for r in results} == {"pixel", "latent"}
    table = (out / "results" / "results.md").read_text().split("\n## ")[0].rstrip("\n") + "\n"
    assert table.count("\n") == 2 + len(results) and "LDM-DDPM-20" in table
    ddim = next(r for r in results if r["name"] == "DDIM-10")
    lo, hi = ddim["mse_ci95"]
    assert f"{ddim['mse']:.4f} [{lo:.4f}, {hi:.4f}]" in table


def test_run_json_records_the_installed_versions_of_the_constrained_packages(compared):
    out, _ = compared
    facts = json.loads((out / "results" / "run.json").read_text())["environment"]
    now = environment_facts()
    assert set(facts) == set(now) and facts["packages"] == now["packages"]
    assert facts["packages"]["torch"] == metadata.version("torch")
    assert facts["constraints"] == now["constraints"]  # "matched", or the differing packages


def test_a_row_matches_fidelity_computed_by_hand(compared, tiny_checkpoints, mnist_dir):
    """DDIM-10 at 0.3 (deterministic): translate the same two digits with the row's seed and
    score them here, by the definitions (mean squared error; argmax of the classifier)."""
    out, _ = compared
    row = next(r for r in json.loads((out / "results" / "results.json").read_text())
               if r["name"] == "DDIM-10" and r["strength"] == 0.3)
    test = load_mnist("test", mnist_dir, limit=2)
    translator = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddim", num_steps=10)
    with torch.inference_mode():
        output = translator(test.images, 0.3, generator=torch.Generator().manual_seed(row["seed"]))
        classifier = load_model(tiny_checkpoints / "classifier.safetensors")[0].eval()
        predicted = classifier(output).argmax(1)
    assert row["mse"] == pytest.approx(float((output - test.images).pow(2).mean()), rel=1e-5)
    assert row["preservation"] == float((predicted == test.labels).float().mean())


def test_grid_has_a_row_per_digit_and_a_column_per_image_kind(compared):
    out, _ = compared
    with Image.open(out / "results" / "i2i_comparison.png") as grid:
        # Two blocks (strengths 0.3, 0.5) of 13 columns: source, noised, eleven systems; 2 rows.
        assert grid.size == (2 * 13 * CELL + GAP, HEADER + 2 * CELL)
    for name in ("pareto.png", "fidelity_vs_strength.png"):
        assert (out / "results" / name).stat().st_size > 10_000


def test_compare_is_an_mlflow_run_with_a_nested_run_per_row(compared):
    """Each row is logged as it is measured: one nested run with the row's system and strength
    as params and its figures as metrics; the parent holds the files and the whole table."""
    _, uri = compared
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("diffbench-compare").experiment_id])
    parent = next(r for r in runs if r.info.run_name.startswith("compare results "))
    assert parent.info.run_name == f"compare results {parent.data.tags['config_digest'][:8]}"
    assert {"git_commit", "cpu", "torch", "constraints"} <= set(parent.data.tags)
    results = json.loads((compared[0] / "results" / "results.json").read_text())
    assert len(runs) == 1 + len(results)
    ddim = next(r for r in results if r["name"] == "DDIM-10" and r["strength"] == 0.3)
    row_run = next(r for r in runs if r.info.run_name == "DDIM-10 equal_strength s0.3")
    assert row_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert row_run.data.params["sampler"] == "ddim" and row_run.data.params["strength"] == "0.3"
    assert row_run.data.params["steps"] == "10" and row_run.data.params["nfe"] == "3"
    assert row_run.data.params["space"] == "pixel" and "seed" not in row_run.data.metrics
    assert row_run.data.metrics["mse"] == pytest.approx(ddim["mse"])
    assert [row_run.data.metrics[f"mse_ci95_{end}"] for end in ("lo", "hi")] == pytest.approx(
        ddim["mse_ci95"])  # the interval too, as two metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.json", "results.md", "i2i_comparison.png", "pareto.png",
            "results_table.json"} <= artifacts


def test_bad_compare_config_is_one_clear_error(capsys, tiny_checkpoints, tmp_path):
    assert main(["compare", "--strength", "0", "--checkpoints", str(tiny_checkpoints),
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "strength" in err


def test_an_nfe_sweep_is_recognised_and_plotted(tmp_path):
    from diffbench.results.plots import plot_nfe, sweeps_nfe

    def row(sampler, name, nfe, mse, space="pixel"):
        return {"space": space, "sampler": sampler, "name": name, "strength": 0.3, "nfe": nfe,
                "start_timestep": 299, "mse": mse, "preservation": 0.9, "noised_accuracy": 0.95}

    single = [row("ddim", "DDIM-50", 15, 0.04), row("ddpm", "DDPM-1000", 300, 0.07)]
    assert not sweeps_nfe(single)
    swept = [*single, row("ddim", "DDIM-10", 3, 0.05), row("ddim", "LDM-DDIM-10", 3, 0.05,
                                                           "latent")]
    assert sweeps_nfe(swept)
    plot_nfe(swept, tmp_path / "fidelity_vs_nfe.png")
    with Image.open(tmp_path / "fidelity_vs_nfe.png") as image:
        width, height = image.size  # two columns (pixel and latent) of 4.2 x 7 inches at 100
        assert width > 2 * 420 and 600 < height <= 700  # dpi, the legend beside them


def test_fewest_nfe_finds_each_samplers_first_match_against_ddim_50():
    """The NFE sweep's match rule: MSE <= DDIM-50's x 1.05 and preservation >= DDIM-50's - 0.01."""
    from diffbench.compare import results_markdown
    from diffbench.measure.nfe import fewest_nfe, matches

    def row(sampler, name, nfe, mse, preservation, num_images=512):
        return {"view": "equal_strength", "space": "pixel", "strength": 0.3, "sampler": sampler,
                "name": name, "nfe": nfe, "mse": mse, "preservation": preservation,
                "num_images": num_images}

    reference = row("ddim", "DDIM-50", 15, 0.040, 0.98)
    assert matches(row("x", "x", 3, 0.042, 0.97), reference)  # +5%, -1 point: the edges
    assert not matches(row("x", "x", 3, 0.0421, 0.98), reference)
    assert not matches(row("x", "x", 3, 0.030, 0.969), reference)
    results = [reference, row("ddim", "DDIM-10", 3, 0.050, 0.98),
               row("ddim", "DDIM-34", 10, 0.041, 0.975),
               row("heun", "Heun-7", 3, 0.039, 0.99), row("heun", "Heun-27", 15, 0.05, 0.99),
               row("euler", "Euler-10", 3, 0.09, 0.5, num_images=64)]
    answers = {a["sampler"]: a for a in fewest_nfe(results)}
    assert answers["ddim"]["fewest_nfe"] == 10 and answers["ddim"]["matching_nfe"] == [10, 15]
    assert answers["heun"]["fewest_nfe"] == 3 and answers["heun"]["matching_nfe"] == [3]
    assert answers["euler"]["fewest_nfe"] is None and answers["euler"]["num_images"] == 64
    text = results_markdown(results)
    assert "### pixel, strength 0.3: **3 NFE** (Heun-7)" in text
    assert "| euler | none |  |  |  | none | [] / [3] |" in text
    assert "| heun | 3 | 0.0390 | 0.990 | n/a | none | [3] / [3, 15] |" in text
    # Frechet: a match whose paired Frechet difference is resolved above 0 is not "as sharp";
    # one not resolved is
    results[2].update(vs_reference="DDIM-50", mse_vs_reference_ci95=[0.0, 0.04],
                      preservation_vs_reference_ci95=[-0.008, 0.0], frechet_vs_reference=0.5,
                      frechet_vs_reference_ci95=[0.1, 0.9])  # DDIM-34 (10 NFE): blurrier
    assert {a["sampler"]: a for a in fewest_nfe(results)}["ddim"]["fewest_nfe_as_sharp"] == 15
    results[2]["frechet_vs_reference_ci95"] = [-0.1, 0.9]
    assert {a["sampler"]: a for a in fewest_nfe(results)}["ddim"]["fewest_nfe_as_sharp"] == 10
    assert fewest_nfe([row("ddim", "DDIM-10", 3, 0.05, 0.98)]) == []  # no reference: no answer


def test_the_nfe_rule_judges_paired_rows_at_their_interval_bounds():
    """With paired figures against the reference, a match needs the upper bound of the MSE
    difference <= +5% and the lower bound of the preservation difference >= -1 point."""
    from diffbench.measure.nfe import matches

    reference = {"name": "DDIM-50", "mse": 0.040, "preservation": 0.98}
    point_match = {"name": "DDIM-10", "mse": 0.041, "preservation": 0.98,
                   "vs_reference": "DDIM-50", "mse_vs_reference_ci95": [-0.01, 0.049],
                   "preservation_vs_reference_ci95": [-0.009, 0.01]}
    assert matches(point_match, reference)
    assert not matches({**point_match, "mse_vs_reference_ci95": [-0.01, 0.051]}, reference)
    assert not matches({**point_match, "preservation_vs_reference_ci95": [-0.011, 0.0]},
                       reference)
    # paired against another system: judged at the point estimates
    assert matches({**point_match, "vs_reference": "DDIM-17",
                    "mse_vs_reference_ci95": [0.5, 0.6]}, reference)


def test_match_information_adds_an_equal_information_row(tiny_checkpoints, mnist_dir, tmp_path,
                                                         monkeypatch):
    """With a crafted noised-accuracy curve crossing 0.6 at t = 150, the row runs at the
    smallest strength whose start timestep reaches 150 (0.151 for DDPM-1000's exact start)."""
    curve = [(0, 1.0), (100, 0.8), (200, 0.4), (999, 0.1)]
    monkeypatch.setattr("diffbench.measure.information.information_curve", lambda *a, **k: curve)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    code = main(["compare", "--checkpoints", str(tiny_checkpoints), "--out", str(tmp_path),
                 "--data-dir", str(mnist_dir), "--num-images", "2", "--device", "cpu",
                 "--strength", "0.3", "--match-information", "0.6", "--set", "match_snr=false",
                 "--set", "systems=[{space: pixel, sampler: ddpm, steps: 1000}]",
                 "--set", "grid_images=1", "--set", "timing_batch=1", "--set", "repeats=1"])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["view"], r["strength"]) for r in results] == [
        ("equal_strength", 0.3), ("equal_information", 0.151)]
    matched = results[1]
    assert matched["matched_timestep"] == matched["start_timestep"] == 150
    assert matched["match_information"] == 0.6
    assert matched["noised_accuracy_curve"] == [list(p) for p in curve]
    assert "## Equal information: noised accuracy 0.6" in (tmp_path / "results.md").read_text()


def test_a_slow_system_scores_fewer_digits_and_is_paired_on_them(tiny_checkpoints, mnist_dir,
                                                                 tmp_path):
    systems = ("systems=[{space: pixel, sampler: ddim, steps: 10}, "
               "{space: pixel, sampler: ddpm, steps: 10, num_images: 2}]")
    base = ["compare", "--checkpoints", str(tiny_checkpoints), "--data-dir", str(mnist_dir),
            "--device", "cpu", "--set", systems, "--set", "reference=DDIM-10",
            "--set", "strengths=[0.3]", "--set", "match_snr=false", "--set", "grid_images=2",
            "--set", "timing_batch=2", "--set", "repeats=1"]
    assert main([*base, "--num-images", "4", "--out", str(tmp_path / "a")]) == 0
    ddim, ddpm = json.loads((tmp_path / "a" / "results.json").read_text())
    assert (ddim["num_images"], ddpm["num_images"]) == (4, 2)
    assert ddpm["vs_reference"] == "DDIM-10" and ddpm["vs_reference_images"] == 2
    # a system's count is at most the comparison's: a smaller --num-images is a quick run
    assert main([*base, "--num-images", "2", "--out", str(tmp_path / "b")]) == 0
    rows = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [r["num_images"] for r in rows] == [2, 2]


def test_a_systems_count_below_the_grid_is_one_clear_error(tiny_checkpoints, tmp_path, capsys):
    # The config's own error comes first, even where the output folder holds an earlier run.
    out = tmp_path / "earlier"
    out.mkdir()
    (out / "results.jsonl").write_text("kept\n")
    code = main(["compare", "--checkpoints", str(tiny_checkpoints), "--out", str(out), "--set",
                 "systems=[{space: pixel, sampler: ddim, steps: 10, num_images: 2}]",
                 "--set", "grid_images=4"])
    assert code == 2
    assert capsys.readouterr().err.startswith(
        "error: systems[0].num_images 2 is below grid_images 4")
    assert (out / "results.jsonl").read_text() == "kept\n"

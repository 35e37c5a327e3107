"""Bring your own sampler or model: a sampler defined and registered here, and a model
from a plain nn.Module factory (plugin_models.py), measured like the built-in systems by
compare, evaluate and the benches; bad plug-ins are one clear error."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from diffbench import compare
from diffbench.cli import main
from diffbench.evaluate import evaluate
from diffbench.results.report import CELL, GAP, HEADER
from diffbench.sampling import SAMPLERS, DDIMSampler, Sampler, register_sampler
from diffbench.sampling.schedule import NoiseSchedule
from diffbench.systems.translate import Translator

REPO = Path(__file__).resolve().parents[1]
SPEC = "test_plugins:DPMSolverPP2M"  # importable: pytest puts tests/ on sys.path


class DPMSolverPP2M(Sampler):
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): a second-order multistep
    solver on the data prediction. Its history, the previous x0 estimate and step size, lives in
    the per-call ``state``, as ``old_denoised`` in k-diffusion's ``sample_dpmpp_2m``."""

    label = "My++DPM"

    def advance(self, eps, t, x_t, state, generator):
        a_t, a_next = self.alpha_bars(t)
        x0 = self.predict_x0(eps, x_t, a_t)
        if a_next == 1.0:  # the last step lands on alpha_bar = 1: the x0 estimate itself
            return x0
        h = 0.5 * (math.log(a_next / (1 - a_next)) - math.log(a_t / (1 - a_t)))
        d = x0
        if "x0" in state:  # second order from the previous step's x0
            r = state["h"] / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * state["x0"]
        state.update(x0=x0, h=h)
        return math.sqrt((1 - a_next) / (1 - a_t)) * x_t - math.sqrt(a_next) * math.expm1(-h) * d


@pytest.fixture
def registered():
    """``my-dpm++`` registered for one test (left registered, every later error message listing
    the allowed samplers would name it too)."""
    register_sampler("my-dpm++", "My++DPM")(DPMSolverPP2M)
    yield "my-dpm++"
    del SAMPLERS["my-dpm++"]
    DPMSolverPP2M.name = None


def test_a_multistep_sampler_keeps_its_history_per_call():
    schedule = NoiseSchedule.linear()
    x0 = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64) * 2 - 1

    def oracle(x_t, t):  # knows x0: the exact eps, so an exact solver lands on x0
        return schedule.eps_from_x0(x_t, x0, t)

    sampler = DPMSolverPP2M(schedule, 20)
    before = dict(vars(sampler))
    first = sampler.img2img(oracle, x0, 0.6, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(first, x0, atol=1e-6)
    again = sampler.img2img(oracle, x0, 0.6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and vars(sampler).keys() == before.keys()
    # First order only (DDIM's eta = 0 update) would differ: the history is used.
    ddim = DDIMSampler(schedule, 20, clip_sample=True)
    model = lambda x_t, t: torch.tanh(x_t)  # noqa: E731
    assert not torch.allclose(sampler.img2img(model, x0, 0.6, noise=x0),
                              ddim.img2img(model, x0, 0.6, noise=x0))


def test_a_registered_sampler_joins_config_names_and_evaluate(registered, tiny_checkpoints,
                                                              mnist_dir):
    translator = Translator.from_checkpoints(tiny_checkpoints, "latent", registered, 10)
    assert translator.name == "LDM-My++DPM-10" and translator.sampler_name == "my-dpm++"
    report = evaluate(tiny_checkpoints, str(mnist_dir), "cpu", num_images=2, ddpm_images=2,
                      sweep=(), generation_samples=4, progress=False)
    names = {row["name"] for row in report["img2img"]}
    assert {"My++DPM-50", "LDM-My++DPM-50"} <= names
    row = next(r for r in report["img2img"] if r["name"] == "My++DPM-50")
    assert row["sampler"] == "my-dpm++" and row["nfe"] == 15 and row["num_images"] == 2


def test_compare_config_runs_plug_ins_outside_the_package(tiny_checkpoints, mnist_dir,
                                                          tmp_path, monkeypatch):
    config = yaml.safe_load((REPO / "configs" / "compare.yaml").read_text())
    config["systems"] = [
        {"name": "my-dpm", "space": "pixel", "sampler": SPEC, "steps": 10},
        {"space": "pixel", "sampler": "ddim", "steps": 10, "model": "plugin_models:make_eps_model"},
    ]
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "results"
    code = main(["compare", "--config", str(tmp_path / "compare.yaml"), "--checkpoints",
                 str(tiny_checkpoints), "--out", str(out), "--data-dir", str(mnist_dir),
                 "--num-images", "2", "--device", "cpu", "--set", "grid_images=2",
                 "--set", "timing_batch=2", "--set", "repeats=1", "--set", "warmup=0",
                 "--set", "match_snr=false"])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["name"], r["strength"]) for r in rows] == [
        (name, s) for name in ("my-dpm", "DDIM-10") for s in (0.3, 0.5)]
    assert rows[0]["sampler"] == SPEC and rows[0]["nfe"] == 3 and rows[0]["mse"] >= 0
    assert "pixel.safetensors" in rows[0]["checkpoint_sha256"]
    assert "pixel.safetensors" not in rows[2]["checkpoint_sha256"]  # its model is the plug-in
    assert math.isnan(rows[2]["train_seconds"]) and rows[2]["flops_per_image"] > 0
    with Image.open(out / "i2i_comparison.png") as grid:  # source, noised, two systems
        assert grid.size == (2 * 4 * CELL + GAP, HEADER + 2 * CELL)
    assert (out / "pareto.png").is_file() and (out / "fidelity_vs_strength.png").is_file()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("diffbench-compare").experiment_id])
    row_run = next(r for r in runs if r.info.run_name == "my-dpm equal_strength s0.3")
    assert row_run.data.metrics["mse"] == rows[0]["mse"]
    names = [r.info.run_name for r in runs]
    parents = [name for name in names if name.startswith(f"compare {out.name} ")]
    assert len(parents) == 1  # the parent, named by its folder and config digest
    assert set(names) - set(parents) == {f"{r['name']} equal_strength s{r['strength']:g}"
                                         for r in rows}


def test_compare_from_python_takes_system_objects(registered, tiny_checkpoints, mnist_dir,
                                                  tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mine = Translator.from_checkpoints(tiny_checkpoints, "pixel", registered, 10, name="mine")
    rows = compare.run([mine, {"space": "latent", "sampler": registered, "steps": 10}],
                       checkpoints=str(tiny_checkpoints), out=str(tmp_path / "out"),
                       data_dir=str(mnist_dir), num_images=2, grid_images=2, timing_batch=2,
                       repeats=1, warmup=0, strengths=[0.5], device="cpu")
    assert [r["name"] for r in rows] == ["LDM-My++DPM-10", "mine"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (experiment,) = [client.get_experiment_by_name("diffbench-compare").experiment_id]
    row_run = next(r for r in client.search_runs([experiment])
                   if r.info.run_name == "LDM-My++DPM-10 equal_strength s0.5")
    assert row_run.data.metrics["mse"] == rows[0]["mse"]
    with pytest.raises(ValueError, match="is not a diffbench System: it lacks name"):
        compare.run([object()], checkpoints=str(tiny_checkpoints), out=str(tmp_path / "x"),
                    data_dir=str(mnist_dir), device="cpu")


def test_a_bench_runs_a_plug_in_sampler(tiny_checkpoints, mnist_dir, tmp_path):
    system = "{name: my-dpm, space: pixel, sampler: '" + SPEC + "', steps: 10}"
    path = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, DIFFBENCH_DATA_DIR=str(mnist_dir), PYTHONPATH=path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--rootdir={REPO}",
         "--diffbench-checkpoints", str(tiny_checkpoints), "--diffbench-system", system,
         f"{REPO}/benches/test_img2img.py::test_img2img[cpu-my-dpm-s0.3-b1]",
         "--benchmark-json", str(tmp_path / "bench.json"),
         "--diffbench-fidelity-baseline", str(tmp_path / "baseline.json"),
         "--diffbench-update-fidelity-baseline"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (bench,) = json.loads((tmp_path / "bench.json").read_text())["benchmarks"]
    assert bench["extra_info"]["nfe"] == 3
    recorded = json.loads((tmp_path / "baseline.json").read_text())  # gated like any system
    assert recorded == {"cpu-my-dpm-s0.3": {"mse": bench["extra_info"]["mse"],
                                            "preservation": bench["extra_info"]["preservation"]}}
    assert bench["group"] == f"img2img pixel-{SPEC} b1"


@pytest.mark.parametrize("setting, fragments", [
    ("systems.0.sampler=nowhere.mod:Nope",
     ["plug-in 'nowhere.mod:Nope' cannot be imported", "a plug-in sampler is 'package.module"]),
    ("systems.0.sampler=plugin_models:make_eps_model",
     ["is <function make_eps_model", "not a Sampler subclass"]),
    ("systems.0.sampler=plugin_models:Missing", ["plugin_models has no Missing"]),
    ("systems.0.model=plugin_models:make_wrong_shape",
     ["model 'plugin_models:make_wrong_shape' returned (1, 2, 28, 28) for x_t (1, 1, 28, 28)",
      "a plug-in model is 'package.module:factory'"]),
    ("systems.0.model=plugin_models:not_a_factory", ["is 42, not a callable"]),
])
def test_bad_plug_ins_are_one_error_line(setting, fragments, tiny_checkpoints, capsys,
                                         tmp_path):
    code = main(["compare", "--checkpoints", str(tiny_checkpoints), "--out", str(tmp_path),
                 "--device", "cpu", "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err

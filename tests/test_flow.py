"""Rectified flow outside the samplers' parity: the one place predictions become (x0, eps), the
equal-SNR currency, flow systems in a Translator and a comparison, and the training objective."""

from __future__ import annotations

import json
import math

import pytest
import torch

from diffbench import NoiseSchedule
from diffbench.cli import main
from diffbench.core.errors import InputError
from diffbench.io.checkpoints import load_metadata
from diffbench.io.config import ConfigError, load_train_config
from diffbench.sampling import make_sampler
from diffbench.sampling.prediction import check_prediction, x0_eps
from diffbench.systems.translate import Translator

LINEAR = NoiseSchedule.linear()
AB = LINEAR.alphas_cumprod


def eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear eps predictor (as in the VP parity tests)."""
    ab = AB.float()[t.long()].view(-1, 1, 1, 1)
    return (1 - ab).sqrt() * x / (0.25 * ab + 1 - ab) + 0.2 * torch.tanh(2 * x)


def v_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The same network written as v = sqrt(ab) eps - sqrt(1 - ab) x0 (Salimans & Ho 2022)."""
    ab = AB.float()[t.long()].view(-1, 1, 1, 1)
    eps = eps_model(x, t)
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    return ab.sqrt() * eps - (1 - ab).sqrt() * x0


def test_prediction_conversions_invert_their_paths():
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    ab, sigma = 0.37, 0.62
    x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
    for prediction, output in (("eps", eps), ("v", math.sqrt(ab) * eps - math.sqrt(1 - ab) * x0)):
        got_x0, got_eps = x0_eps(prediction, output, x_t, math.sqrt(ab), math.sqrt(1 - ab))
        torch.testing.assert_close(got_x0, x0, atol=1e-6, rtol=0)
        torch.testing.assert_close(got_eps, eps, atol=1e-6, rtol=0)
    got_x0, got_eps = x0_eps("flow", eps - x0, (1 - sigma) * x0 + sigma * eps, 1 - sigma, sigma)
    torch.testing.assert_close(got_x0, x0, atol=1e-6, rtol=0)
    torch.testing.assert_close(got_eps, eps, atol=1e-6, rtol=0)


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++", "heun"])
def test_a_v_network_samples_as_its_eps_twin(sampler):
    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    as_eps = make_sampler(sampler, LINEAR, 10, clip_sample=False)
    as_v = make_sampler(sampler, LINEAR, 10, clip_sample=False, prediction="v")
    expected = as_eps.img2img(eps_model, x0, 0.5, noise=noise, start="exact")
    got = as_v.img2img(v_model, x0, 0.5, noise=noise, start="exact")
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_a_flow_name_refuses_a_network_of_another_path():
    with pytest.raises(InputError, match="'flow-euler' reads networks predicting flow, but this "
                                         "network predicts 'eps'"):
        check_prediction("eps", make_sampler("flow-euler", LINEAR).predictions, "flow-euler")
    with pytest.raises(InputError, match="'flow-heun' reads networks predicting flow, but this "
                                         "network predicts 'v'"):
        make_sampler("flow-heun", LINEAR, prediction="v")
    with pytest.raises(InputError, match="unknown prediction 'x0'; allowed: eps, v, flow"):
        check_prediction("x0", ("eps",), "ddim")


def velocity_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear velocity predictor on the flow path (``s = t / 1000``)."""
    s = (t.double() / 1000).view(-1, 1, 1, 1)
    return ((s - (1 - s) * 0.25) / ((1 - s) ** 2 * 0.25 + s**2) * x
            + 0.2 * torch.tanh(2 * x)).to(x.dtype)


@pytest.mark.parametrize("prediction,model", [("eps", eps_model), ("flow", velocity_model)])
def test_ddim_and_euler_are_one_step_on_every_path(prediction, model):
    """DDIM with eta = 0 and Euler on the path's ODE take the same step from the same x0 and
    eps (Karras et al. 2022, sec. 4), on the VP path and on the flow path alike."""
    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    spacing = "linspace"
    ddim = make_sampler("ddim", LINEAR, 10, clip_sample=False, spacing=spacing,
                        prediction=prediction)
    euler = make_sampler("euler", LINEAR, 10, clip_sample=False, spacing=spacing,
                         prediction=prediction)
    assert ddim.path.kind == euler.path.kind == ("flow" if prediction == "flow" else "vp")
    got = ddim.img2img(model, x0, 0.5, noise=noise)
    torch.testing.assert_close(got, euler.img2img(model, x0, 0.5, noise=noise), atol=2e-5,
                               rtol=0)
    assert not torch.allclose(got, x0, atol=1e-2)  # it did something


@pytest.mark.parametrize("name", ["euler", "heun", "dpmsolver++"])
def test_a_solver_on_a_flow_network_is_its_flow_name(name):
    """``euler`` given a flow network is the solver ``flow-euler`` names: one definition."""
    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    plain = make_sampler(name, LINEAR, 10, prediction="flow", shift=3.0)
    named = make_sampler(f"flow-{name}", LINEAR, 10, shift=3.0)
    assert plain.spacing == named.spacing and plain.sigmas == named.sigmas
    torch.testing.assert_close(plain.img2img(velocity_model, x0, 0.5, noise=noise),
                               named.img2img(velocity_model, x0, 0.5, noise=noise), atol=0, rtol=0)


@pytest.mark.parametrize("t", [0, 1, 125, 299, 500, 998, 999])
def test_timestep_for_snr_finds_the_timestep_of_an_snr(t):
    assert LINEAR.timestep_for_snr(LINEAR.snr(t)) == t


def test_a_flow_start_is_the_vp_timestep_of_its_snr(tiny_checkpoints):
    """sigma 0.3: SNR (0.7 / 0.3)^2 = 5.44, which the linear schedule has near t = 125, between
    the SNRs of its neighbours; a VP input at t = 299 has an SNR of about 0.66."""
    flow = Translator.from_checkpoints(tiny_checkpoints, "pixel", "euler", 10, prediction="flow")
    vp = Translator.from_checkpoints(tiny_checkpoints, "pixel", "ddim", 10)
    assert flow.plan(0.3).start_sigma == 0.3 and vp.plan(0.3).start_sigma is None
    assert flow.plan(0.3).start_snr == pytest.approx((0.7 / 0.3) ** 2)
    assert vp.plan(0.3).start_snr == pytest.approx(float(AB[299] / (1 - AB[299])))
    assert vp.plan(0.3).start_snr == pytest.approx(0.66, abs=0.005)
    t = flow.plan(0.3).start_timestep
    snr = flow.plan(0.3).start_snr
    assert LINEAR.snr(t + 1) < snr * 1.02 and LINEAR.snr(t - 1) > snr / 1.02


def test_flow_systems_are_named_and_loaded_from_their_own_checkpoints(tiny_checkpoints):
    pixel = Translator.from_checkpoints(tiny_checkpoints, "pixel", "euler", 10, prediction="flow")
    latent = Translator.from_checkpoints(tiny_checkpoints, "latent", "heun", 5, prediction="flow")
    assert (pixel.name, pixel.sampler_name) == ("RF-Euler-10", "flow-euler")
    assert pixel.prediction == "flow"
    assert latent.name == "LDM-RF-Heun-5"
    assert set(pixel.checkpoint_sha256()) == {"pixel_flow.safetensors"}
    out = pixel(torch.zeros(2, 1, 28, 28), 0.5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()
    assert pixel.plan(0.5).nfe == 5


def test_a_checkpoint_of_another_prediction_is_refused(tiny_checkpoints, tmp_path):
    (tmp_path / "pixel_flow.safetensors").symlink_to(tiny_checkpoints / "pixel.safetensors")
    with pytest.raises(InputError, match="predicting 'eps', not 'flow'"):
        Translator.from_checkpoints(tmp_path, "pixel", "euler", 10, prediction="flow")
    with pytest.raises(InputError, match="'flow-euler' reads networks predicting flow"):
        Translator.from_checkpoints(tiny_checkpoints, "pixel", "flow-euler", 10, prediction="eps")


def test_compare_adds_equal_snr_rows(tiny_checkpoints, mnist_dir, tmp_path, monkeypatch):
    """A VP system's equal-SNR row is its equal-strength row (its start is the VP start); a
    flow system's runs at the higher strength whose SNR is the VP start's."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    code = main(["compare", "--checkpoints", str(tiny_checkpoints), "--out", str(tmp_path),
                 "--data-dir", str(mnist_dir), "--num-images", "2", "--device", "cpu",
                 "--strength", "0.3",
                 "--set", "systems=[{space: pixel, sampler: ddim, steps: 10}, "
                          "{space: pixel, prediction: flow, sampler: euler, steps: 10}]",
                 "--set", "match_snr=true", "--set", "reference=DDIM-10",
                 "--set", "grid_images=1", "--set", "timing_batch=1", "--set", "repeats=1"])
    assert code == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["name"], r["view"]) for r in rows] == [
        ("DDIM-10", "equal_strength"), ("DDIM-10", "equal_snr"),
        ("RF-Euler-10", "equal_strength"), ("RF-Euler-10", "equal_snr")]
    ddim, ddim_snr, flow, flow_snr = rows
    assert ddim_snr["strength"] == 0.3 and ddim_snr["mse"] == ddim["mse"]
    assert flow["prediction"] == "flow" and flow["start_sigma"] == 0.3
    assert flow_snr["match_snr_of_strength"] == 0.3 and flow_snr["matched_timestep"] == 299
    assert flow_snr["start_timestep"] >= 299 and flow_snr["strength"] > 0.5
    assert flow_snr["start_snr"] == pytest.approx(ddim["start_snr"], rel=0.02)
    assert flow_snr["vs_reference"] == flow["vs_reference"] == "DDIM-10"
    assert "mse_vs_reference" not in ddim and len(flow_snr["mse_vs_reference_ci95"]) == 2
    text = (tmp_path / "results.md").read_text()
    assert "## Equal SNR" in text and "resolved" in text


def test_flow_training_records_its_prediction(tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    code = main(["train", "pixel", "--config", "configs/train_pixel_flow.yaml", "--out",
                 str(tmp_path), "--data-dir", str(mnist_dir), "--steps", "3", "--batch-size", "8",
                 "--device", "cpu", "--set", "train_images=300", "--set", "model.base_channels=8",
                 "--set", "checkpoint_every=3", "--set", "warmup_steps=1"])
    assert code == 0
    metadata = load_metadata(tmp_path / "pixel_flow.safetensors")
    assert metadata["prediction"] == "flow" and metadata["step"] == 3
    assert math.isfinite(metadata["final_loss"]) and metadata["final_loss"] > 0
    Translator.from_checkpoints(tmp_path, "pixel", "euler", 4, prediction="flow")


@pytest.mark.parametrize("override,message", [
    ("min_snr_gamma=5", "min_snr_gamma weights the eps loss only"),
])
def test_flow_training_refuses_what_it_cannot_use(override, message, mnist_dir):
    from diffbench.train.tasks import build_task
    config = load_train_config("pixel", "configs/train_pixel_flow.yaml",
                               [override, f"data_dir={mnist_dir}", "train_images=300"])
    with pytest.raises(ConfigError, match=message):
        build_task(config, torch.device("cpu"))

"""The few-step solvers: DPM-Solver++(2M), Euler, Heun, UniPC. Their algebra against
closed forms (an oracle model, Gaussian data), network evaluations, per-call state, the clip
policy, names and configs. Parity with diffusers is tests/test_parity_solvers.py."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from diffbench import NoiseSchedule, Translator
from diffbench.cli import main
from diffbench.core.resources import configs_dir
from diffbench.io.config import ConfigError, load_compare_config
from diffbench.sampling import ORIGINS, SPACINGS, STARTS, DDIMSampler, make_sampler
from diffbench.sampling import SAMPLERS as REGISTERED
from diffbench.sampling.solvers import (
    DPMSolverPlusPlusSampler,
    EulerSampler,
    HeunSampler,
    UniPCSampler,
)

LINEAR = NoiseSchedule.linear()
SOLVERS = ["dpmsolver++", "euler", "heun", "unipc"]
FLOW_SAMPLERS = ["flow-euler", "flow-heun", "flow-dpmsolver++"]  # tests/test_parity_flow.py
SAMPLERS = {name: cls for name, cls in REGISTERED.items() if name not in ORIGINS}
"""The built-in samplers (not those an installed package declares)."""
VP_SAMPLERS = [name for name, cls in SAMPLERS.items() if "eps" in cls.predictions]
AB = LINEAR.alphas_cumprod
DATA_STD = 0.5


def images(batch: int = 2, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed),
                      dtype=dtype) * 2 - 1


def gaussian_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact eps predictor for data ~ N(0, DATA_STD^2) per pixel: E[eps | x_t] =
    sqrt(1 - ab) x_t / (ab c^2 + 1 - ab). Its probability-flow ODE has a closed form."""
    ab = AB[t].to(x_t.dtype).view(-1, 1, 1, 1)
    return (1 - ab).sqrt() * x_t / (ab * DATA_STD**2 + 1 - ab)


def gaussian_flow(x_t: torch.Tensor, t: int) -> torch.Tensor:
    """Where the ODE takes x_t at t at alpha_bar = 1: the quantile-preserving rescaling."""
    ab = AB[t].item()
    return DATA_STD / math.sqrt(ab * DATA_STD**2 + 1 - ab) * x_t


class Recording:
    """A model that records the timesteps it is called at."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, []

    def __call__(self, x_t, t):
        assert t.dtype == torch.long and t.shape == (x_t.shape[0],)
        self.calls.append(int(t[0]))
        return self.model(x_t, t)


# -- registry and names ----------------------------------------------------------------------


def test_the_solvers_are_registered_with_their_labels():
    assert list(SAMPLERS) == ["ddpm", "ddim", *SOLVERS, *FLOW_SAMPLERS, "consistency", "meanflow"]
    assert [*VP_SAMPLERS] == ["ddpm", "ddim", *SOLVERS]
    assert {name: SAMPLERS[name].label for name in SOLVERS} == {
        "dpmsolver++": "DPM++2M", "euler": "Euler", "heun": "Heun", "unipc": "UniPC"}
    assert (SAMPLERS["dpmsolver++"], SAMPLERS["unipc"]) == (DPMSolverPlusPlusSampler,
                                                           UniPCSampler)
    for cls in (DPMSolverPlusPlusSampler, EulerSampler, HeunSampler, UniPCSampler):
        assert "arXiv" in cls.__doc__ and "diffusers" in cls.__doc__
        assert cls(LINEAR, 10).spacing == "trailing"


@pytest.mark.parametrize("space, prefix", [("pixel", ""), ("latent", "LDM-")])
def test_system_names_derive_from_the_labels(tiny_checkpoints, space, prefix):
    names = {Translator.from_checkpoints(tiny_checkpoints, space, name, 10).name
             for name in SOLVERS}
    assert names == {f"{prefix}{label}-10" for label in ("DPM++2M", "Euler", "Heun", "UniPC")}


def test_compare_configs_accept_the_new_samplers_and_list_them_when_wrong():
    config = load_compare_config(overrides=["systems.0.sampler=dpmsolver++",
                                            "systems.0.steps=10"])
    assert (config.systems[0].sampler, config.systems[0].steps) == ("dpmsolver++", 10)
    # the built-ins, then any an installed package declares
    allowed = ("'ddpm', 'ddim', 'dpmsolver++', 'euler', 'heun', 'unipc', 'flow-euler', "
               "'flow-heun', 'flow-dpmsolver++', 'consistency'")
    with pytest.raises(ConfigError, match=re.escape(allowed) + "(,| or) 'meanflow'"):
        load_compare_config(overrides=["systems.0.sampler=lms"])
    with pytest.raises(ValueError, match=re.escape("allowed: ddpm, ddim, dpmsolver++, euler, "
                                                   "heun, unipc, flow-euler, flow-heun, "
                                                   "flow-dpmsolver++, consistency, meanflow")
                       + ".* or 'package.module:Name'"):
        make_sampler("lms", LINEAR)


@pytest.mark.filterwarnings("error::diffbench.results.tracking.TrackingWarning")
def test_diffbench_compare_runs_a_solver_chosen_with_set(tiny_checkpoints, mnist_dir, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    out = tmp_path / "results"
    # (MLflow refuses the "+" of DPM++2M in a metric name: a TrackingWarning would fail this.)
    code = main(["compare", "--checkpoints", str(tiny_checkpoints), "--out", str(out),
                 "--data-dir", str(mnist_dir), "--num-images", "2", "--device", "cpu",
                 "--set", "systems=[{space: pixel, sampler: ddim, steps: 10}]",
                 "--set", "systems.0.sampler=dpmsolver++", "--set", "match_snr=false",
                 "--set", "grid_images=2", "--set", "timing_batch=2", "--set", "repeats=1",
                 "--set", "warmup=0"])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["name"], r["strength"], r["nfe"]) for r in rows] == [
        ("DPM++2M-10", 0.3, 3), ("DPM++2M-10", 0.5, 5)]
    assert [r["start_timestep"] for r in rows] == [299, 499]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: make_sampler("heun", LINEAR, 10, eta=0.5), "eta applies to the DDIM sampler only"),
        (lambda: UniPCSampler(LINEAR, 0), "num_steps must be in [1, 1000], got 0"),
        (lambda: EulerSampler(LINEAR, 10, spacing="karras"),
         "unknown spacing 'karras'; allowed: leading, trailing, linspace"),
        (lambda: HeunSampler(LINEAR, 10).nfe(0.5, "middle"),
         "unknown start 'middle'; allowed: exact, diffusers"),
        (lambda: DPMSolverPlusPlusSampler(LINEAR, 10).nfe(1.5), "strength must be a number in"),
    ],
)
def test_bad_arguments_name_the_value_and_what_is_allowed(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


# -- network evaluations ---------------------------------------------------------------------


@pytest.mark.parametrize("name", VP_SAMPLERS)
@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("strength", [0.3, 0.5, 1.0])
def test_nfe_counts_the_model_calls(name, start, strength):
    sampler = make_sampler(name, LINEAR, 10)
    model = Recording(gaussian_model)
    sampler.img2img(model, images(), strength, start=start,
                    generator=torch.Generator().manual_seed(0))
    steps = sampler.img2img_timesteps(strength, start).tolist()
    assert len(model.calls) == sampler.nfe(strength, start)
    if name == "heun":  # each step but the last evaluates at its start and at its end
        assert model.calls == [t for pair in zip(steps, steps[1:]) for t in pair] + steps[-1:]
        assert len(model.calls) == 2 * len(steps) - 1
    else:
        assert model.calls == steps


# -- the algebra -----------------------------------------------------------------------------


@given(st.sampled_from(SOLVERS), st.floats(0.002, 1.0), st.integers(1, 60),
       st.sampled_from(SPACINGS), st.sampled_from(STARTS))
def test_with_an_oracle_model_every_solver_lands_on_x0(name, strength, num_steps, spacing, start):
    """The oracle's x0 prediction is exact at every step, so each solver's step is exact: no
    history term or correction moves it off the forward trajectory."""
    assume(start == "exact" or int(num_steps * strength) >= 1)
    x0 = images()
    sampler = SAMPLERS[name](LINEAR, num_steps, spacing=spacing)
    out = sampler.img2img(lambda x_t, t: LINEAR.eps_from_x0(x_t, x0, t), x0, strength,
                          noise=images(seed=1), start=start)
    assert torch.allclose(out, x0, atol=1e-6)


@pytest.mark.parametrize("strength, start", [(1.0, "diffusers"), (0.5, "exact")])
def test_second_order_solvers_converge_faster_than_euler_on_gaussian_data(strength, start):
    x_t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def error(name, num_steps):
        sampler = make_sampler(name, LINEAR, num_steps, clip_sample=False)
        timesteps = sampler.img2img_timesteps(strength, start)
        out = sampler.denoise(gaussian_model, x_t, timesteps)
        return float((out - gaussian_flow(x_t, int(timesteps[0]))).abs().max())

    errors = {name: (error(name, 20), error(name, 40)) for name in SOLVERS}
    euler_20, euler_40 = errors["euler"]
    assert 1.8 < euler_20 / euler_40 < 2.2  # first order
    for name in ("dpmsolver++", "heun", "unipc"):
        coarse, fine = errors[name]
        assert coarse < euler_20 / 2 and fine < euler_40 / 4
        assert coarse / fine > 2.5  # second order (or better), the first-order last step aside


@pytest.mark.parametrize("spacing", SPACINGS)
def test_euler_without_clipping_is_ddim(spacing):
    """Karras et al. (sec. 3): DDIM's eta = 0 step is Euler's in sigma = sqrt((1 - ab) / ab)."""
    x0, noise = images(), images(seed=1)
    euler = EulerSampler(LINEAR, 10, spacing=spacing, clip_sample=False)
    ddim = DDIMSampler(LINEAR, 10, spacing=spacing, clip_sample=False)
    for start in STARTS:
        a, b = (s.img2img(gaussian_model, x0, 0.6, noise=noise, start=start) for s in (euler, ddim))
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["dpmsolver++", "unipc"])
def test_multistep_solvers_take_first_order_first_and_last_steps(name):
    """With two steps there is no second-order step: the first has no history, the last lands
    on x0 first order (lower_order_final). So DPM++ and UniPC equal DDIM; with three they
    do not."""
    x0, noise = images(), images(seed=1)
    for steps, equal in ((1, True), (2, True), (3, False)):
        solver = make_sampler(name, LINEAR, steps, clip_sample=False)
        ddim = DDIMSampler(LINEAR, steps, spacing="trailing", clip_sample=False)
        a, b = (s.img2img(gaussian_model, x0, 1.0, noise=noise) for s in (solver, ddim))
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12) is equal


@pytest.mark.parametrize("name", SOLVERS)
def test_solvers_are_deterministic_keep_no_state_and_use_no_randomness(name):
    sampler = make_sampler(name, LINEAR, 8)
    before = dict(vars(sampler))
    x0, noise = images(), images(seed=1)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    first = sampler.img2img(gaussian_model, x0, 0.7, noise=noise, generator=gen)
    again = sampler.img2img(gaussian_model, x0, 0.7, noise=noise, start="exact")
    assert torch.equal(first, again) and torch.equal(gen.get_state(), state)
    assert vars(sampler).keys() == before.keys()
    assert all(vars(sampler)[key] is value for key, value in before.items())


@pytest.mark.parametrize("name", SOLVERS)
def test_clip_sample_clips_every_x0_prediction(name):
    """The base class's policy: pixel space clips x0 to [-1, 1]; the last step lands on x0."""
    def wild(x_t, t):
        return -3 * x_t

    x0 = images()
    clipped = make_sampler(name, LINEAR, 10, clip_sample=True).img2img(wild, x0, 0.5, noise=x0)
    free = make_sampler(name, LINEAR, 10, clip_sample=False).img2img(wild, x0, 0.5, noise=x0)
    assert float(clipped.abs().max()) <= 1 < float(free.abs().max())


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_solvers_keep_the_input_dtype(name, dtype):
    out = make_sampler(name, LINEAR, 5).img2img(gaussian_model, images(dtype=dtype), 1.0,
                                                generator=torch.Generator().manual_seed(0))
    assert out.dtype == dtype and out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


# -- configs/nfe_sweep.yaml, configs/nfe_sweep_flow.yaml -------------------------------------


def test_the_nfe_sweep_configs_hit_every_nfe_for_every_sampler_space_and_strength():
    """The eps sweep at 0.3 and 0.5; the flow sweep at five strengths and equal SNR, with each
    space's DDIM-50 as its reference; between them every sampler of both spaces."""
    names = ("nfe_sweep.yaml", "nfe_sweep_flow.yaml")
    eps, flow = (load_compare_config(configs_dir() / name) for name in names)
    for name, config in zip(names, (eps, flow)):
        raw = yaml.safe_load((configs_dir() / name).read_text())
        assert len(raw["systems"]) == len(config.systems)
    assert eps.strengths == [0.3, 0.5] and not eps.match_snr
    assert flow.strengths == [0.3, 0.5, 0.7, 0.9, 1.0] and flow.match_snr
    assert {(s.space, s.sampler, s.steps) for s in flow.systems if s.prediction != "flow"} == {
        ("pixel", "ddim", 50), ("latent", "ddim", 50)}
    targets = {3, 5, 8, 10, 15, 25}
    for space in ("pixel", "latent"):
        for name in (name for name in SAMPLERS if name not in ONE_STEP):
            config = flow if SAMPLERS[name].predictions[0] == "flow" else eps
            systems = [s for s in config.systems if (s.space, s.sampler) == (space, name)]
            assert {s.prediction for s in systems} == {SAMPLERS[name].predictions[0]}
            for strength in (0.3, 0.5):
                nfes = {make_sampler(name, LINEAR, s.steps).nfe(strength, "exact")
                        for s in systems}
                # Heun's NFE is odd (2k - 1): 8 and 10 are bracketed by 7, 9 and 11.
                wanted = targets if "heun" not in name else {3, 5, 7, 9, 11, 15, 25}
                assert wanted <= nfes, (space, name, strength, sorted(nfes))


ONE_STEP = ("consistency", "meanflow")


def test_the_one_step_config_hits_one_two_and_four_nfe_beside_ddim_50():
    """configs/one_step.yaml: each one-step sampler on its own network at 1, 2 and 4 network
    evaluations from either strength, each space's DDIM-50 as the reference, at equal SNR, on
    the 512 digits the NFE rule asks for."""
    config = load_compare_config(configs_dir() / "one_step.yaml")
    assert config.strengths == [0.3, 0.5] and config.match_snr and config.num_images == 512
    for space in ("pixel", "latent"):
        assert [s.steps for s in config.systems if (s.space, s.sampler) == (space, "ddim")] == [50]
        for name in ONE_STEP:
            systems = [s for s in config.systems if (s.space, s.sampler) == (space, name)]
            assert {s.prediction for s in systems} == {name}
            for strength in (0.3, 0.5):
                assert {make_sampler(name, LINEAR, s.steps).nfe(strength) for s in systems} == {
                    1, 2, 4}

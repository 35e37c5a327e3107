"""Parity with diffusers' DDPMScheduler and DDIMScheduler, the field's reference numerics.

diffusers is an optional dev dependency (`pip install -e .[parity]`); without it these skip.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from diffbench import DDIMSampler, DDPMSampler, NoiseSchedule, make_timesteps

diffusers = pytest.importorskip("diffusers")

SCHEDULES = [
    ("linear", NoiseSchedule.linear, {}),
    ("squaredcos_cap_v2", NoiseSchedule.cosine, {}),
    ("scaled_linear", NoiseSchedule.scaled_linear, {"beta_start": 0.00085, "beta_end": 0.012}),
]


@pytest.mark.parametrize("name, build, kwargs", SCHEDULES)
def test_schedules_match_diffusers(name, build, kwargs):
    ours = build(1000, **kwargs)
    theirs = diffusers.DDPMScheduler(beta_schedule=name, **kwargs)
    assert torch.allclose(ours.betas.float(), theirs.betas, rtol=1e-6, atol=1e-8)
    assert torch.allclose(ours.alphas_cumprod.float(), theirs.alphas_cumprod, rtol=1e-5, atol=1e-8)


@given(st.sampled_from(["leading", "trailing", "linspace"]), st.integers(1, 1000))
def test_timesteps_match_diffusers(spacing, num_steps):
    theirs = diffusers.DDIMScheduler(timestep_spacing=spacing)
    theirs.set_timesteps(num_steps)
    if len(theirs.timesteps) != num_steps:
        # diffusers' trailing spacing uses np.arange with a float step, which for some n
        # (e.g. 61) yields n + 1 timesteps; we always give n.
        assert spacing == "trailing"
        return
    assert torch.equal(make_timesteps(1000, num_steps, spacing), theirs.timesteps)


def _inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, 1, 8, 8, generator=gen) * 1.5, torch.randn(2, 1, 8, 8, generator=gen)


@pytest.mark.parametrize("num_steps", [1000, 50, 7])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_ddpm_step_matches_diffusers(num_steps, variance):
    ours = DDPMSampler(NoiseSchedule.linear(), num_steps=num_steps, variance=variance)
    theirs = diffusers.DDPMScheduler(variance_type=variance)
    theirs.set_timesteps(num_steps)
    for seed, t in enumerate(ours.timesteps.tolist()[:: max(1, num_steps // 9)] + [0]):
        x_t, eps = _inputs(seed)
        expected = theirs.step(
            eps, t, x_t, generator=torch.Generator().manual_seed(seed)
        ).prev_sample
        got = ours.step(eps, t, x_t, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), t


@pytest.mark.parametrize("spacing, num_steps", [("leading", 50), ("leading", 13), ("trailing", 50)])
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_ddim_step_matches_diffusers(spacing, num_steps, eta):
    """Where the spacing steps by T // n, diffusers' t - T // n is the next timestep too."""
    ours = DDIMSampler(NoiseSchedule.linear(), num_steps=num_steps, eta=eta, spacing=spacing)
    theirs = diffusers.DDIMScheduler(timestep_spacing=spacing)
    theirs.set_timesteps(num_steps)
    for seed, t in enumerate(ours.timesteps.tolist()):
        x_t, eps = _inputs(seed)
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(100 + seed))
        expected = theirs.step(eps, t, x_t, eta=eta, variance_noise=noise).prev_sample
        assert torch.allclose(ours.step(eps, t, x_t, noise=noise), expected, rtol=1e-5, atol=1e-5)


def _diffusers_img2img(scheduler, model, x0, strength, noise, generator=None, **step_kwargs):
    """The denoising loop of diffusers' StableDiffusionImg2ImgPipeline, without the pipeline."""
    n = scheduler.num_inference_steps
    init = min(int(n * strength), n)
    timesteps = scheduler.timesteps[n - init :]
    x = scheduler.add_noise(x0, noise, timesteps[:1].repeat(x0.shape[0]))
    for t in timesteps:
        eps = model(x, t.repeat(x0.shape[0]))
        x = scheduler.step(eps, t, x, generator=generator, **step_kwargs).prev_sample
    return x


def model(x_t, t):
    return torch.tanh(x_t) * 0.7 + (t.float() / 1000).view(-1, 1, 1, 1)


@pytest.mark.parametrize("strength", [0.3, 0.5, 1.0])
def test_ddim_img2img_matches_diffusers_loop(strength):
    x0, noise = _inputs(0)
    x0 = x0.clamp(-1, 1)
    theirs = diffusers.DDIMScheduler()
    theirs.set_timesteps(50)
    expected = _diffusers_img2img(theirs, model, x0, strength, noise, eta=0.0)
    got = DDIMSampler(NoiseSchedule.linear(), 50).img2img(model, x0, strength, noise=noise,
                                                          start="diffusers")
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("strength", [0.3, 0.6])
def test_ddpm_img2img_matches_diffusers_loop_with_the_same_generator(strength):
    """Same seed, same draws in the same order: the stochastic trajectories coincide."""
    x0, noise = _inputs(1)
    x0 = x0.clamp(-1, 1)
    theirs = diffusers.DDPMScheduler()
    theirs.set_timesteps(1000)
    expected = _diffusers_img2img(
        theirs, model, x0, strength, noise, generator=torch.Generator().manual_seed(3)
    )
    got = DDPMSampler(NoiseSchedule.linear()).img2img(
        model, x0, strength, noise=noise, generator=torch.Generator().manual_seed(3),
        start="diffusers",
    )
    assert torch.allclose(got, expected, atol=1e-4)

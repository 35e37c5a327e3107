"""Parity with diffusers' DPMSolverMultistepScheduler, EulerDiscreteScheduler,
HeunDiscreteScheduler and UniPCMultistepScheduler: whole trajectories from x_T and the img2img
loop of diffusers' pipelines, on a deterministic analytic model.

Each diffusers configuration matched is written out below (``SCHEDULERS``). Mapping the two
parametrisations: DPM-Solver and UniPC work on the VP x_t as we do. Euler and Heun work in
"sigma space", x = x_t / sqrt(ab) with s = sqrt((1 - ab) / ab): their ``add_noise`` is ``x0 + s *
noise`` (our x_t divided by sqrt(ab)), their ``scale_model_input`` divides by sqrt(s^2 + 1) (so
the model sees our x_t), and at the end s = 0 their x is our x_0. From pure noise, our x_T is
their ``x_T * sqrt(s_0^2 + 1)`` (which is diffusers' ``init_noise_sigma`` for leading spacing;
for trailing it uses s_0, see the solvers' module docstring). Their timesteps are floats (Euler,
Heun) or ints, the same integers as ours; the model takes ``t.long()``.

diffusers is an optional dev dependency (`pip install -e .[parity]`); without it these skip.
"""

from __future__ import annotations

import pytest
import torch

from diffbench import NoiseSchedule
from diffbench.sampling import SAMPLERS, make_sampler

diffusers = pytest.importorskip("diffusers")
# diffusers 0.42 calls np.array on torch tensors the way numpy 2 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

BETAS = {"beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
         "num_train_timesteps": 1000, "prediction_type": "epsilon"}
SCHEDULERS = {
    "dpmsolver++": lambda spacing: diffusers.DPMSolverMultistepScheduler(
        **BETAS, algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
        lower_order_final=True, euler_at_final=False, final_sigmas_type="zero",
        thresholding=False, use_karras_sigmas=False, timestep_spacing=spacing, steps_offset=0),
    "euler": lambda spacing: diffusers.EulerDiscreteScheduler(
        **BETAS, interpolation_type="linear", use_karras_sigmas=False, timestep_type="discrete",
        final_sigmas_type="zero", timestep_spacing=spacing, steps_offset=0),
    "heun": lambda spacing: diffusers.HeunDiscreteScheduler(
        **BETAS, use_karras_sigmas=False, clip_sample=False, timestep_spacing=spacing,
        steps_offset=0),
    "unipc": lambda spacing: diffusers.UniPCMultistepScheduler(
        **BETAS, solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True,
        disable_corrector=[], solver_p=None, thresholding=False, use_karras_sigmas=False,
        final_sigmas_type="zero", timestep_spacing=spacing, steps_offset=0),
}
SIGMA_SPACE = {"euler", "heun"}
# Euler and Heun define "leading" as we do; DPM-Solver and UniPC do not (module docstring).
CASES = [(name, "trailing") for name in SCHEDULERS] + [("euler", "leading"), ("heun", "leading")]
LINEAR = NoiseSchedule.linear()
AB = LINEAR.alphas_cumprod.float()


def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear eps predictor that denoises like a network: the exact one for data ~
    N(0, 0.5^2), plus a nonlinear term, so that trajectories stay O(1) and errors show."""
    ab = AB[t.long()].view(-1, 1, 1, 1)
    return (1 - ab).sqrt() * x_t / (0.25 * ab + 1 - ab) + 0.2 * torch.tanh(2 * x_t)


def inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x0 = (torch.randn(2, 1, 8, 8, generator=gen) * 0.7).clamp(-1, 1)
    return x0, torch.randn(2, 1, 8, 8, generator=gen)


def diffusers_loop(scheduler, x: torch.Tensor, timesteps: torch.Tensor, eps_model=model):
    """The denoising loop of diffusers' pipelines."""
    for t in timesteps:
        eps = eps_model(scheduler.scale_model_input(x, t), t.repeat(x.shape[0]))
        x = scheduler.step(eps, t, x).prev_sample
    return x


def diffusers_img2img(scheduler, x0, strength, noise, eps_model=model) -> torch.Tensor:
    """StableDiffusionImg2ImgPipeline's get_timesteps, prepare_latents and loop."""
    n = scheduler.num_inference_steps
    t_start = n - min(int(n * strength), n)
    timesteps = scheduler.timesteps[t_start * scheduler.order:]
    scheduler.set_begin_index(t_start * scheduler.order)
    x = scheduler.add_noise(x0, noise, timesteps[:1].repeat(x0.shape[0]))
    return diffusers_loop(scheduler, x, timesteps, eps_model)


def set_up(name: str, spacing: str, num_steps: int):
    theirs = SCHEDULERS[name](spacing)
    theirs.set_timesteps(num_steps)
    ours = SAMPLERS[name](LINEAR, num_steps, spacing=spacing, clip_sample=False)
    # Both visit the same integer timesteps (Heun's repeat each but the first, for its 2nd order).
    assert torch.equal(theirs.timesteps.unique_consecutive().long(), ours.timesteps)
    return ours, theirs


@pytest.mark.parametrize("name, spacing", CASES)
@pytest.mark.parametrize("num_steps", [4, 10, 25])
def test_whole_trajectories_match_diffusers(name, spacing, num_steps):
    ours, theirs = set_up(name, spacing, num_steps)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(num_steps))
    start = x_T
    if name in SIGMA_SPACE:  # the VP x_T in sigma space: divided by sqrt(ab) at the first step
        start = x_T * (theirs.sigmas[0] ** 2 + 1) ** 0.5
    expected = diffusers_loop(theirs, start, theirs.timesteps)
    got = ours.sample(model, x_T)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), (got - expected).abs().max()
    assert not torch.allclose(got, x_T, atol=0.1)  # it did something
    # In float64 the difference is diffusers' float32 arithmetic, still within 1e-5.
    got64 = ours.sample(model, x_T.double())
    assert torch.allclose(got64.float(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, spacing", CASES)
@pytest.mark.parametrize("num_steps, strength", [(10, 0.3), (10, 0.5), (25, 0.3), (25, 0.6),
                                                 (7, 1.0), (50, 0.3)])
def test_img2img_loops_match_diffusers(name, spacing, num_steps, strength):
    ours, theirs = set_up(name, spacing, num_steps)
    x0, noise = inputs(num_steps)
    expected = diffusers_img2img(theirs, x0, strength, noise)
    got = ours.img2img(model, x0, strength, noise=noise, start="diffusers")
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), (got - expected).abs().max()


@pytest.mark.parametrize("strength", [0.3, 0.6])
def test_heun_clips_both_x0_predictions_as_diffusers_clip_sample(strength):
    theirs = diffusers.HeunDiscreteScheduler(**BETAS, clip_sample=True, clip_sample_range=1.0,
                                             timestep_spacing="trailing")
    theirs.set_timesteps(10)
    ours = make_sampler("heun", LINEAR, 10, clip_sample=True)
    x0, noise = inputs(3)

    def wild(x_t, t):  # eps pointing far out, so that clipping changes x0
        return model(x_t, t) - 2 * torch.sign(x_t)

    expected = diffusers_img2img(theirs, x0, strength, noise, wild)
    got = ours.img2img(wild, x0, strength, noise=noise, start="diffusers")
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    unclipped = make_sampler("heun", LINEAR, 10, clip_sample=False).img2img(wild, x0, strength,
                                                                            noise=noise,
                                                                            start="diffusers")
    assert not torch.allclose(got, unclipped, atol=1e-3)

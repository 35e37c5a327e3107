"""Parity of the flow samplers with diffusers' FlowMatchEulerDiscreteScheduler,
FlowMatchHeunDiscreteScheduler and DPMSolverMultistepScheduler(use_flow_sigmas=True): whole
trajectories from pure noise and the img2img loop of diffusers' StableDiffusion3Img2ImgPipeline,
on a deterministic analytic velocity model.

The configurations matched (``SCHEDULERS``): each at ``shift`` 1 and SD3's 3, with
``num_train_timesteps=1000``; Euler with ``stochastic_sampling=False`` and no dynamic shifting,
Karras, exponential or beta sigmas; DPM-Solver++ with ``prediction_type="flow_prediction"``,
``algorithm_type="dpmsolver++"``, ``solver_order=2``, ``solver_type="midpoint"``,
``lower_order_final=True``, ``final_sigmas_type="zero"``. The model takes diffusers' timesteps
as they come (floats for the flow-matching schedulers, int64 for DPM-Solver).

diffusers is an optional dev dependency (`pip install -e .[parity]`); without it these skip.
"""

from __future__ import annotations

import pytest
import torch

from diffbench import NoiseSchedule
from diffbench.core.errors import InputError
from diffbench.sampling import make_sampler

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SCHEDULERS = {
    "flow-euler": lambda shift: diffusers.FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=shift, use_dynamic_shifting=False,
        stochastic_sampling=False, use_karras_sigmas=False, use_exponential_sigmas=False,
        use_beta_sigmas=False, shift_terminal=None, invert_sigmas=False),
    "flow-heun": lambda shift: diffusers.FlowMatchHeunDiscreteScheduler(
        num_train_timesteps=1000, shift=shift),
    "flow-dpmsolver++": lambda shift: diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, use_flow_sigmas=True, flow_shift=shift,
        prediction_type="flow_prediction", algorithm_type="dpmsolver++", solver_order=2,
        solver_type="midpoint", lower_order_final=True, euler_at_final=False,
        final_sigmas_type="zero", thresholding=False),
}
CASES = [(name, shift) for name in SCHEDULERS for shift in (1.0, 3.0)]
T = NoiseSchedule.linear()
SPREAD = 0.5  # the model's data ~ N(0, SPREAD^2)


def velocity_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[eps - x0 | x_s] for data ~ N(0, 0.5^2) on the straight path, plus a nonlinear term, so
    that trajectories stay O(1) and errors show; ``s = t / 1000`` (any float or int ``t``)."""
    s = (t.double() / 1000).view(-1, 1, 1, 1)
    variance = (1 - s) ** 2 * SPREAD**2 + s**2
    return ((s - (1 - s) * SPREAD**2) / variance * x + 0.2 * torch.tanh(2 * x)).to(x.dtype)


def inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x0 = (torch.randn(2, 1, 8, 8, generator=gen) * 0.7).clamp(-1, 1)
    return x0, torch.randn(2, 1, 8, 8, generator=gen)


def diffusers_loop(scheduler, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    for t in timesteps:
        v = velocity_model(x, t.repeat(x.shape[0]))
        x = scheduler.step(v, t, x).prev_sample
    return x


def diffusers_img2img(scheduler, x0, strength, noise) -> torch.Tensor:
    """StableDiffusion3Img2ImgPipeline's get_timesteps, prepare_latents and loop."""
    n = scheduler.num_inference_steps
    init_timestep = min(n * strength, n)
    t_start = int(max(n - init_timestep, 0))
    timesteps = scheduler.timesteps[t_start * scheduler.order:]
    scheduler.set_begin_index(t_start * scheduler.order)
    start = timesteps[:1].repeat(x0.shape[0])
    if hasattr(scheduler, "scale_noise"):
        x = scheduler.scale_noise(x0, start, noise)
    else:  # DPM-Solver's add_noise is the same (1 - s) x0 + s noise on flow sigmas
        x = scheduler.add_noise(x0, noise, start)
    return diffusers_loop(scheduler, x, timesteps)


@pytest.mark.parametrize("name,shift", CASES)
@pytest.mark.parametrize("steps", [1, 4, 10])
def test_sigmas_and_timesteps_match_diffusers(name, shift, steps):
    scheduler = SCHEDULERS[name](shift)
    scheduler.set_timesteps(steps)
    ours = make_sampler(name, T, steps, shift=shift)
    sigmas = scheduler.sigmas.double()
    if name == "flow-heun":  # diffusers repeats each inner sigma for the corrector
        sigmas = torch.cat([sigmas[:1], sigmas[1:-1:2], sigmas[-1:]])
    torch.testing.assert_close(torch.tensor([*ours.sigmas, 0.0], dtype=torch.float64), sigmas,
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("name,shift", CASES)
@pytest.mark.parametrize("steps", [2, 5, 10, 14])
def test_trajectory_from_noise_matches_diffusers(name, shift, steps):
    scheduler = SCHEDULERS[name](shift)
    scheduler.set_timesteps(steps)
    _, noise = inputs()
    expected = diffusers_loop(scheduler, noise.clone(), scheduler.timesteps)
    ours = make_sampler(name, T, steps, shift=shift).sample(velocity_model, noise.clone())
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-5)


@pytest.mark.parametrize("name,shift", CASES)
@pytest.mark.parametrize("steps,strength", [(10, 0.3), (10, 0.5), (14, 0.75), (4, 1.0)])
def test_img2img_loop_matches_sd3_pipeline(name, shift, steps, strength):
    scheduler = SCHEDULERS[name](shift)
    scheduler.set_timesteps(steps)
    x0, noise = inputs(1)
    expected = diffusers_img2img(scheduler, x0, strength, noise)
    sampler = make_sampler(name, T, steps, shift=shift)
    ours = sampler.img2img(velocity_model, x0, strength, noise=noise, start="diffusers")
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-5)


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("steps,strength", [(10, 0.3), (50, 0.3), (7, 0.45), (1, 1.0)])
def test_exact_start_begins_at_the_strength(name, steps, strength):
    sampler = make_sampler(name, T, steps)
    sigmas = sampler.img2img_sigmas(strength, "exact")
    assert sigmas[0] == strength
    assert len(sigmas) == max(1, int(steps * strength))
    assert all(later < s for s, later in zip(sigmas, sigmas[1:]))
    x0, noise = inputs(2)
    # The translation starts from (1 - s) x0 + s noise: a model predicting the true velocity
    # eps - x0 for this pair takes every sampler back to x0 exactly.
    def oracle(x, t):
        return noise - x0
    out = sampler.img2img(oracle, x0, strength, noise=noise, start="exact")
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def test_one_step_from_the_start_is_the_x0_prediction():
    sampler = make_sampler("flow-euler", T, 1)
    x0, noise = inputs(3)
    x = 0.7 * x0 + 0.3 * noise
    out = sampler.img2img(velocity_model, x0, 0.3, noise=noise, start="exact")
    t = torch.full((2,), 300.0)
    torch.testing.assert_close(out, x - 0.3 * velocity_model(x, t), rtol=0, atol=1e-6)


def test_heun_counts_two_evaluations_a_step_but_the_last():
    calls = []
    def counting(x, t):
        calls.append(float(t[0]))
        return velocity_model(x, t)
    sampler = make_sampler("flow-heun", T, 10)
    x0, noise = inputs()
    sampler.img2img(counting, x0, 0.5, noise=noise, start="exact")
    assert len(calls) == sampler.nfe(0.5, "exact") == 2 * 5 - 1


@pytest.mark.parametrize("bad", [0, -1.0, 1.5, True, "0.3"])
def test_bad_strength_is_one_clear_error(bad):
    with pytest.raises(InputError, match="strength"):
        make_sampler("flow-euler", T, 10).img2img_sigmas(bad, "exact")


@pytest.mark.parametrize("bad", [0, -2.0, True])
def test_bad_shift_is_one_clear_error(bad):
    with pytest.raises(InputError, match="shift"):
        make_sampler("flow-euler", T, 10, shift=bad)

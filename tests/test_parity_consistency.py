"""Parity of the consistency sampler with diffusers' CMStochasticIterativeScheduler (Song et
al. 2023, Algorithm 1), and of the MeanFlow sampler with the paper's equations.

diffusers runs in the variance-exploding (EDM) convention: states ``x0 + sigma z``, the model
read through ``c_skip`` and ``c_out``; diffbench runs on the flow path, states ``(1 - s) x0 +
s z`` with ``s = sigma / (1 + sigma)``, the network read as ``x0 = x - s F``. Both read the same
analytic denoiser ``D(x_ve, sigma)``, each through its own parametrisation, and draw the same
noise from the same generator, so the trajectories agree state by state (ours = theirs times
``1 - s``), ``sigma_min`` included (``clip_denoised=False``: the flow path does not clip).

diffusers is an optional dev dependency (`pip install -e .[parity]`); without it the parity
tests skip (the MeanFlow ones do not need it).
"""

from __future__ import annotations

import pytest
import torch

from diffbench import NoiseSchedule
from diffbench.core.errors import InputError
from diffbench.sampling import make_sampler
from diffbench.sampling.one_step import ConsistencySampler, MeanFlowSampler

T = NoiseSchedule.linear()
DATA = 0.5  # the analytic denoiser's data ~ N(0, DATA^2)


def denoiser(x_ve: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x0 + sigma z] for data ~ N(0, 0.5^2), plus a nonlinear term so errors show."""
    sigma = sigma.double().view(-1, 1, 1, 1)
    return (x_ve * DATA**2 / (sigma**2 + DATA**2) + 0.1 * torch.tanh(x_ve / (1 + sigma))).to(
        x_ve.dtype)


def flow_consistency_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The consistency network on the flow path: ``F = (x - D(x / (1 - s), s / (1 - s))) / s``."""
    s = (t.double() / 1000).view(-1, 1, 1, 1)
    x0 = denoiser((x.double() / (1 - s)).to(x.dtype), (s / (1 - s)).flatten())
    return ((x.double() - x0.double()) / s).to(x.dtype)


@pytest.mark.parametrize("timesteps", [[0], [22, 0], [30, 17, 6], [35, 30, 20, 10, 0]])
# sigma_min exact in float32 (2^-9 and 2^-4, the paper's 0.002 and a larger one): diffusers
# takes the float32 sigma_min squared from the float64 one at the last step, and the root of that
# rounding (2e-5 at 0.05) would be noise it adds after the end.
@pytest.mark.parametrize("sigma_min", [2.0**-9, 2.0**-4])
def test_consistency_trajectory_matches_diffusers(timesteps, sigma_min):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.CMStochasticIterativeScheduler(
        num_train_timesteps=40, sigma_min=sigma_min, sigma_max=80.0, sigma_data=DATA, rho=7.0,
        clip_denoised=False)
    scheduler.set_timesteps(timesteps=timesteps)
    sigmas = scheduler.sigmas[:-1].double()  # the last is sigma_min, the end
    flow_sigmas = sigmas / (1 + sigmas)
    start = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))

    theirs, states = start * scheduler.init_noise_sigma, []
    generator = torch.Generator().manual_seed(7)
    for t, sigma in zip(scheduler.timesteps, scheduler.sigmas):
        states.append(theirs)
        scheduler.scale_model_input(theirs, t)
        c_skip, c_out = scheduler.get_scalings_for_boundary_condition(sigma)
        output = (denoiser(theirs, sigma.repeat(3)) - c_skip * theirs) / c_out
        theirs = scheduler.step(output, t, theirs, generator=generator).prev_sample

    sampler = ConsistencySampler(T, len(timesteps), sigma_min=sigma_min)
    seen = []
    ours = sampler.denoise(flow_consistency_model, start * scheduler.init_noise_sigma
                           * (1 - float(flow_sigmas[0])), flow_sigmas * 1000,
                           generator=torch.Generator().manual_seed(7),
                           callback=lambda step: seen.append(step["x"]))
    for index, (state, s) in enumerate(zip(states, flow_sigmas)):
        torch.testing.assert_close(seen[index], state * (1 - float(s)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def oracle_consistency(x0: torch.Tensor):
    """A consistency network that recovers ``x0`` from any point of its path."""
    def model(x, t):
        s = (t.double() / 1000).view(-1, 1, 1, 1)
        return ((x.double() - x0.double()) / s).to(x.dtype)
    return model


def oracle_meanflow(x0: torch.Tensor, bend: float = 0.0):
    """MeanFlow's u(z, r, t) for one data point: ``(z - x0) / t`` (the straight path's constant
    velocity, so the average over any [r, t]), plus ``bend * (t - r)`` when bent."""
    def model(z, t, r=None):
        t_ = (t.double() / 1000).view(-1, 1, 1, 1)
        r_ = torch.zeros_like(t_) if r is None else (r.double() / 1000).view(-1, 1, 1, 1)
        return ((z.double() - x0.double()) / t_ + bend * (t_ - r_)).to(z.dtype)
    return model


def digits(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(2, 1, 8, 8, generator=gen) * 2 - 1), torch.randn(2, 1, 8, 8, generator=gen)


@pytest.mark.parametrize("name,oracle", [("consistency", oracle_consistency),
                                         ("meanflow", oracle_meanflow)])
@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("strength", [0.3, 0.5, 1.0])
def test_an_oracle_network_is_recovered_at_every_step_count(name, oracle, steps, strength):
    x0, noise = digits(steps)
    sampler = make_sampler(name, T, steps)
    assert sampler.nfe(strength) == steps  # every step from any start: one evaluation each
    out = sampler.img2img(oracle(x0), x0, strength, noise=noise,
                          generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("steps,strength", [(1, 0.5), (2, 0.5), (2, 1.0), (4, 0.3)])
def test_meanflow_steps_are_the_papers_equation(steps, strength):
    """z_r = z_t - (t - r) u(z_t, r, t) (Geng et al. 2025, eq. 12), by hand, on a bent oracle
    whose u depends on r, from z = (1 - s) x0 + s noise over the trailing sigmas s j / n."""
    x0, noise = digits(10 + steps)
    model = oracle_meanflow(x0, bend=0.7)
    top = strength if strength < 1 else 1 - 1 / 1000
    points = [top * j / steps for j in range(steps, 0, -1)] + [0.0]
    z = (1 - points[0]) * x0 + points[0] * noise if strength < 1 else noise.clone()
    for t, r in zip(points, points[1:]):
        u = model(z, torch.full((2,), t * 1000), torch.full((2,), r * 1000))
        z = z - (t - r) * u
    sampler = MeanFlowSampler(T, steps)
    if strength < 1:
        ours = sampler.img2img(model, x0, strength, noise=noise)
    else:
        ours = sampler.sample(model, noise.clone())
    torch.testing.assert_close(ours, z, rtol=0, atol=1e-6)


def test_consistency_sampler_renoises_with_fresh_noise_between_jumps():
    """Algorithm 1: a two-step call differs from a one-step call only through the second
    evaluation at the renoised point, which a seed fixes."""
    x0, noise = digits(3)
    model = lambda x, t: flow_consistency_model(x, t)  # noqa: E731 - a plain callable
    sampler = make_sampler("consistency", T, 2)
    first = sampler.img2img(model, x0, 0.5, noise=noise, generator=torch.Generator().manual_seed(4))
    again = sampler.img2img(model, x0, 0.5, noise=noise, generator=torch.Generator().manual_seed(4))
    other = sampler.img2img(model, x0, 0.5, noise=noise, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)


def test_one_step_samplers_refuse_other_networks_and_bad_sigma_min():
    with pytest.raises(InputError, match="meanflow"):
        make_sampler("meanflow", T, 1, prediction="consistency")
    with pytest.raises(InputError, match="consistency or meanflow"):
        make_sampler("consistency", T, 1, prediction="flow")
    with pytest.raises(InputError, match="sigma_min"):
        ConsistencySampler(T, 1, sigma_min=-1.0)
